"""PRM-guided beam search (search-and-learn ``beam_search``), with optional greedy lookahead.

N beams, beam width M: sample N first steps; score every prefix with the PRM; beams that ended
(EOS, length, an empty step) move to "completed"; the best N/M of the others survive and each
samples M next steps; up to ``iterations`` rounds, the last generated to the end. With lookahead k,
each candidate step is scored at the end of a greedy rollout of k more steps (the beam advances by
the first step only). The completed candidates go through weighted best-of-N.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.events import NodePruned
from engine.protocol import Generate, Generated, GenItem, Release, RunContext, StrategyGen
from engine.search.common import added, choose, finished_event, is_done, score, scored_event, started
from engine.search.registry import Param, Strategy, multiple_of, register, selection_param


@dataclass
class Beam:
    node_id: int
    text: str
    tokens: int
    reason: str = "stop"


def rollout(ctx: RunContext, beams: list[Beam], k: int, tokens_used: list[int] | None = None):
    """Greedy rollouts of k steps from each beam; returns the rollout text of each. Costs up to
    k generations per beam, counted like any other (and their tokens added to ``tokens_used[0]``)."""
    tokens_used = tokens_used if tokens_used is not None else [0]
    extra = ["" for _ in beams]
    heads = {i: (b.node_id, b.tokens) for i, b in enumerate(beams)}
    made: list[int] = []
    for _ in range(k):
        if not heads:
            break
        items = []
        order = sorted(heads)
        for i in order:
            nid = ctx.new_node()
            parent, used = heads[i]
            want = ctx.token_cap(tokens_used[0], len(order), ctx.max_tokens - used)
            items.append(GenItem(nid, ctx.sampling(nid, want, greedy=True), parent=parent))
        res: list[Generated] = yield Generate(tuple(items))
        tokens_used[0] += sum(g.n_tokens for g in res)
        for i, item, g in zip(order, items, res, strict=True):
            yield added(ctx, g, item.parent, "lookahead")
            made.append(g.node_id)
            extra[i] += g.text
            used = heads[i][1] + g.n_tokens
            if is_done(g, used, ctx):
                del heads[i]
            else:
                heads[i] = (g.node_id, used)
    if made:
        yield Release(tuple(made))
    return extra


def beam_search(
    ctx: RunContext,
    n: int = 4,
    beam_width: int = 4,
    iterations: int = 40,
    lookahead: int = 0,
    selection: str = "weighted",
) -> StrategyGen:
    m = max(1, min(beam_width, n))
    keep = max(1, n // m)
    yield started(
        ctx,
        "beam_search",
        {"n": n, "beam_width": m, "iterations": iterations, "lookahead": lookahead, "selection": selection},
    )
    active: list[Beam] = []
    completed: list[tuple[Beam, float]] = []
    msgs = ctx.question_messages()
    tokens_used = [0]  # generated tokens, for a token budget
    for it in range(iterations):
        last = it == iterations - 1
        if it == 0:
            parents: list[Beam | None] = [None] * n
        else:  # each survivor gets M children; fill up to N round-robin as search-and-learn does
            parents = [active[i % len(active)] for i in range(n)]
        items = []
        for p in parents:
            nid = ctx.new_node()
            used = p.tokens if p else 0
            params = ctx.sampling(nid, ctx.token_cap(tokens_used[0], n, ctx.max_tokens - used), stop=not last)
            items.append(GenItem(nid, params, parent=p.node_id) if p else GenItem(nid, params, messages=msgs))
        res: list[Generated] = yield Generate(tuple(items))
        tokens_used[0] += sum(g.n_tokens for g in res)
        children = []
        for p, g in zip(parents, res, strict=True):
            yield added(ctx, g, p.node_id if p else None, "step")
            children.append(
                Beam(
                    g.node_id,
                    (p.text if p else "") + g.text,
                    (p.tokens if p else 0) + g.n_tokens,
                    g.finish_reason,
                )
            )
        if active:
            yield Release(tuple(b.node_id for b in active))
        done = [is_done(g, c.tokens, ctx) or last for g, c in zip(res, children, strict=True)]
        texts = [c.text for c in children]
        if lookahead > 0:
            open_ = [c for c, d in zip(children, done, strict=True) if not d]
            extra = yield from rollout(ctx, open_, lookahead, tokens_used)
            ext = dict(zip((c.node_id for c in open_), extra, strict=True))
            texts = [c.text + ext.get(c.node_id, "") for c in children]
        if ctx.out_of_tokens(tokens_used[0]):  # a token budget spent: every beam ends here
            done = [True] * len(children)
        scored = yield from score(ctx, texts, done)
        survivors: list[tuple[Beam, float]] = []
        for c, d, s in zip(children, done, scored, strict=True):
            yield scored_event(ctx, c.node_id, s)
            if d:
                completed.append((c, s.score))
                yield finished_event(ctx, c.node_id, c.text, c.reason)
            else:
                survivors.append((c, s.score))
        if len(completed) >= n or not survivors:
            dropped = [c for c, _ in survivors]
            active = []
        else:
            survivors.sort(key=lambda cs: cs[1], reverse=True)
            active = [c for c, _ in survivors[:keep]]
            dropped = [c for c, _ in survivors[keep:]]
        for c in dropped:
            yield NodePruned(ctx.run_id, c.node_id, it)
        if dropped:
            yield Release(tuple(c.node_id for c in dropped))
        if not active:
            break
    yield choose(
        ctx,
        [c.node_id for c, _ in completed],
        [c.text for c, _ in completed],
        [s for _, s in completed],
        selection,
    )


def _for_budget(budget: int, user: dict) -> dict:
    k = int(user.get("lookahead", 0))
    n = multiple_of("Beam search", budget, k + 1, f"with lookahead {k} every beam costs {k + 1} generations")
    return {"n": n, "beam_width": min(int(user.get("beam_width", 4)), n), "lookahead": k}


register(
    Strategy(
        name="beam_search",
        label="Beam search",
        summary="PRM-guided beam search: N beams step by step, the best N/M kept each round",
        shown=("n", "beam_width", "lookahead"),
        run=beam_search,
        for_budget=_for_budget,
        cost=lambda p: int(p["n"]) * (int(p.get("lookahead", 0)) + 1),
        # N children, the completed beams (fewer than N) and k x N lookahead rollouts
        sequences=lambda p: (2 + int(p.get("lookahead", 0))) * int(p["n"]) + 1,
        candidates=lambda p: int(p["n"]),
        params=(
            Param(
                "beam_width",
                4,
                "Beam width M",
                "Children per surviving beam; N/M beams survive each round",
                1,
                16,
            ),
            Param(
                "lookahead", 0, "Lookahead k", "Greedy steps rolled out before scoring; costs N x (k+1)", 0, 4
            ),
            Param(
                "iterations",
                40,
                "Rounds",
                "The most rounds (steps) a beam takes; the last one runs to the end",
                1,
                200,
            ),
            selection_param(),
        ),
        token_rule="expected",
        drawn_as="tree",
        answer_is_path=True,
        colour="#D55E00",
        order=20,
        default=True,
    )
)
