"""Particle filtering (Puri et al. 2025, "A Probabilistic Inference Approach to Inference-Time Scaling
of LLMs using Particle-Based Monte Carlo Methods"; its_hub's ``ParticleFiltering``).

N particles start from the prompt. Each round every live particle generates one step and the PRM
scores its partial solution; each particle's weight is

    w_i = softmax_i( logit(r_i) / temperature ),   logit(r) = log(r / (1 - r)),  r clipped to [1e-6, 1 - 1e-6]

where r_i is its aggregated PRM score (a particle that has ended keeps its final score). Then N
particles are drawn from the current ones by those weights (``systematic`` or ``multinomial``
resampling, from a generator seeded by the run's seed, so a rerun reproduces): a particle drawn k
times continues as k copies, one never drawn dies. Rounds go on until every particle has ended (EOS,
its token budget, an empty step) or the round limit (the last round generates to the end). The
answer: ``selection`` over the final particles, each copy counting once (weighted: summed PRM
scores). A budget of N generations is N particles.

The trace: every step a node; a :class:`~engine.events.Resampled` event after each round with the
weights and which node each new particle was copied from; nodes that died are pruned.
"""

from __future__ import annotations

import math
from collections.abc import Generator, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from engine.events import Event, NodePruned, Resampled
from engine.protocol import Generate, Generated, GenItem, Release, Request, RunContext, StrategyGen
from engine.sampling import derive_seed
from engine.search.common import added, choose, finished_event, is_done, score, scored_event, started
from engine.search.registry import Param, Strategy, register, selection_param

RESAMPLING = ("systematic", "multinomial")
_CLIP = 1e-6


@dataclass(frozen=True)
class Particle:
    node_id: int | None  # its current node (None: the prompt)
    text: str = ""
    tokens: int = 0
    score: float = 0.5
    done: bool = False
    reason: str = "stop"


def weights(scores: Sequence[float], temperature: float = 1.0) -> list[float]:
    """Normalised particle weights: softmax of the scores' logits divided by ``temperature``."""
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    logits = []
    for r in scores:
        r = min(max(float(r), _CLIP), 1.0 - _CLIP)
        logits.append(math.log(r / (1.0 - r)) / temperature)
    top = max(logits)
    ex = [math.exp(x - top) for x in logits]
    total = sum(ex)
    return [e / total for e in ex]


def resample(w: Sequence[float], n: int, method: str, rng: np.random.Generator) -> list[int]:
    """``n`` indices drawn by weight ``w``. Systematic: one uniform offset u, then the points
    (u + k) / n, k = 0..n-1, each taking the index whose cumulative-weight interval holds it (low
    variance: a particle of weight w gets floor(n w) or ceil(n w) copies). Multinomial: n
    independent draws."""
    if method not in RESAMPLING:
        raise ValueError(f"resampling is one of {', '.join(RESAMPLING)}")
    cum = np.cumsum(np.asarray(w, dtype=np.float64))
    cum[-1] = 1.0  # no point may fall past the end through rounding
    if method == "systematic":
        points = (rng.random() + np.arange(n)) / n
    else:
        points = rng.random(n)
    return [int(i) for i in np.searchsorted(cum, points, side="right")]


def particle_filtering(
    ctx: RunContext,
    n: int = 4,
    temperature: float = 1.0,
    resampling: str = "systematic",
    iterations: int = 40,
    selection: str = "weighted",
) -> StrategyGen:
    yield started(
        ctx,
        "particle_filtering",
        {
            "n": n,
            "temperature": temperature,  # of the weights' softmax (sampling uses the run's)
            "resampling": resampling,
            "iterations": iterations,
            "selection": selection,
        },
    )
    rng = np.random.Generator(np.random.PCG64(derive_seed(ctx.seed, 0x5EED, n)))
    particles = [Particle(None) for _ in range(n)]
    msgs = ctx.question_messages()
    tokens_used = 0  # generated tokens, for a token budget
    for it in range(iterations):
        live = [k for k, p in enumerate(particles) if not p.done]
        if not live:
            break
        last = it == iterations - 1
        items = []
        for k in live:
            p = particles[k]
            nid = ctx.new_node()
            params = ctx.sampling(
                nid, ctx.token_cap(tokens_used, len(live), ctx.max_tokens - p.tokens), stop=not last
            )
            items.append(
                GenItem(nid, params, parent=p.node_id)
                if p.node_id is not None
                else GenItem(nid, params, messages=msgs)
            )
        res: list[Generated] = yield Generate(tuple(items))
        tokens_used += sum(g.n_tokens for g in res)
        last = last or ctx.out_of_tokens(tokens_used)  # a token budget spent: every particle ends here
        for k, g in zip(live, res, strict=True):
            yield added(ctx, g, particles[k].node_id, "step")
        old = sorted({node for k in live if (node := particles[k].node_id) is not None})
        if old:
            yield Release(tuple(old))  # every particle on these nodes has moved on
        grown = {}
        for k, g in zip(live, res, strict=True):
            p = particles[k]
            tokens = p.tokens + g.n_tokens
            grown[k] = Particle(
                g.node_id,
                p.text + g.text,
                tokens,
                done=last or is_done(g, tokens, ctx),
                reason=g.finish_reason,
            )
        scored = yield from score(ctx, [grown[k].text for k in live], [grown[k].done for k in live])
        for k, s in zip(live, scored, strict=True):
            yield scored_event(ctx, grown[k].node_id, s)  # type: ignore[arg-type]  # grown: on a new node
            particles[k] = replace(grown[k], score=s.score)
        ended = [particles[k].node_id for k in live if particles[k].done]
        if ended:
            yield Release(tuple(i for i in ended if i is not None))  # an ended particle grows no more
        if all(p.done for p in particles):
            break
        particles = yield from _resample_round(ctx, particles, it, n, temperature, resampling, rng)
    yield from _finish(ctx, particles, selection)


def _resample_round(
    ctx: RunContext,
    particles: list[Particle],
    it: int,
    n: int,
    temperature: float,
    resampling: str,
    rng: np.random.Generator,
) -> Generator[Event | Request, Any, list[Particle]]:
    """Round ``it``'s resampling over every particle (an ended one keeps its final score and may be
    copied): the ``n`` new particles, after the Resampled event, the dead nodes pruned and released."""
    nodes = sorted({p.node_id for p in particles if p.node_id is not None})
    w = weights([p.score for p in particles], temperature)
    node_w = {i: 0.0 for i in nodes}
    for p, wk in zip(particles, w, strict=True):
        node_w[p.node_id] += wk  # type: ignore[index]  # resampled particles have grown
    picks = resample(w, n, resampling, rng)
    new = [particles[j] for j in picks]
    yield Resampled(
        ctx.run_id,
        it,
        nodes,
        [node_w[i] for i in nodes],
        [p.node_id for p in new],  # type: ignore[misc]  # resampled particles have grown
    )
    kept = {p.node_id for p in new}
    dead = [i for i in nodes if i not in kept]
    for i in dead:
        yield NodePruned(ctx.run_id, i, it)
    live_dead = [p.node_id for p in particles if p.node_id in dead and not p.done]
    if live_dead:
        yield Release(tuple(sorted(set(live_dead))))
    return new


def _finish(ctx: RunContext, particles: list[Particle], selection: str) -> StrategyGen:
    """Each final particle's node finished once, then the answer chosen over every copy."""
    final = [p for p in particles if p.node_id is not None]
    seen = set()
    for p in final:
        if p.node_id not in seen:
            seen.add(p.node_id)
            yield finished_event(ctx, p.node_id, p.text, p.reason)  # type: ignore[arg-type]  # final: has a node
    yield choose(
        ctx,
        [p.node_id for p in final],  # type: ignore[misc]  # final: has a node
        [p.text for p in final],
        [p.score for p in final],
        selection,
    )


register(
    Strategy(
        name="particle_filtering",
        label="Particle filtering",
        summary="N particles step by step, resampled by PRM weight each round (Puri et al. 2025)",
        shown=("n", "resampling"),
        run=particle_filtering,
        for_budget=lambda budget, user: {"n": budget},
        cost=lambda p: int(p["n"]),
        sequences=lambda p: 2 * int(p["n"]) + 1,  # every particle's node and its new step
        candidates=lambda p: int(p["n"]),
        params=(
            Param(
                "temperature",
                1.0,
                "Weight temperature",
                "Softmax temperature of the particle weights (over the PRM scores' logits); "
                "lower concentrates copies on the best particles",
                0.01,
                100.0,
            ),
            Param(
                "resampling",
                "systematic",
                "Resampling",
                "systematic (low variance) or multinomial (independent draws)",
                choices=RESAMPLING,
            ),
            Param(
                "iterations",
                40,
                "Rounds",
                "The most rounds (steps); the last one runs to the end",
                1,
                200,
            ),
            selection_param(),
        ),
        token_rule="expected",
        drawn_as="tree",
        answer_is_path=True,
        colour="#E69F00",
        order=35,
    )
)
