"""Diverse verifier tree search (search-and-learn ``dvts``).

N/M independent subtrees. Each round every live subtree samples M next steps from its own current
node, the PRM scores them, and the subtree continues with its best one; subtrees never exchange
beams. A subtree ends when its best step ends (EOS, length, empty step) or at the last round (which
generates to the end). The output is the M alternatives of each subtree's last expansion (N
completions), chosen from by weighted best-of-N.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import NodePruned
from engine.protocol import Generate, Generated, GenItem, Release, RunContext, StrategyGen
from engine.search.common import added, choose, finished_event, is_done, score, scored_event, started
from engine.search.registry import Param, Strategy, multiple_of, register, selection_param


@dataclass
class Subtree:
    index: int
    node_id: int | None = None  # its current node (None: the prompt)
    text: str = ""
    tokens: int = 0
    done: bool = False
    alternatives: list[tuple[int, str, float, str]] = field(default_factory=list)  # id, text, score, reason


def dvts(
    ctx: RunContext, n: int = 4, beam_width: int = 4, iterations: int = 40, selection: str = "weighted"
) -> StrategyGen:
    m = max(1, min(beam_width, n))
    subtrees = [Subtree(i) for i in range(max(1, n // m))]
    yield started(
        ctx,
        "dvts",
        {
            "n": n,
            "beam_width": m,
            "subtrees": len(subtrees),
            "iterations": iterations,
            "selection": selection,
        },
    )
    msgs = ctx.question_messages()
    tokens_used = 0  # generated tokens, for a token budget
    for it in range(iterations):
        live = [s for s in subtrees if not s.done]
        if not live:
            break
        last = it == iterations - 1
        items: list[GenItem] = []
        owner: list[Subtree] = []
        for s in live:
            for _ in range(m):
                nid = ctx.new_node()
                want = ctx.token_cap(tokens_used, len(live) * m, ctx.max_tokens - s.tokens)
                params = ctx.sampling(nid, want, stop=not last)
                items.append(
                    GenItem(nid, params, parent=s.node_id)
                    if s.node_id is not None
                    else GenItem(nid, params, messages=msgs)
                )
                owner.append(s)
        res: list[Generated] = yield Generate(tuple(items))
        tokens_used += sum(g.n_tokens for g in res)
        for s, g in zip(owner, res, strict=True):
            yield added(ctx, g, s.node_id, "step")
        old = [s.node_id for s in live if s.node_id is not None]
        if old:
            yield Release(tuple(old))
        texts = [s.text + g.text for s, g in zip(owner, res, strict=True)]
        out_of_tokens = ctx.out_of_tokens(tokens_used)  # a token budget spent: every subtree ends here
        ends = [
            last or out_of_tokens or is_done(g, s.tokens + g.n_tokens, ctx)
            for s, g in zip(owner, res, strict=True)
        ]
        scored = yield from score(ctx, texts, ends)
        for s in live:
            mine = [k for k, o in enumerate(owner) if o is s]
            for k in mine:
                yield scored_event(ctx, res[k].node_id, scored[k])
            best = max(mine, key=lambda k: (scored[k].score, -k))
            s.alternatives = [(res[k].node_id, texts[k], scored[k].score, res[k].finish_reason) for k in mine]
            s.done = ends[best]
            if s.done:
                for k in mine:
                    yield finished_event(ctx, res[k].node_id, texts[k], res[k].finish_reason)
                yield Release(tuple(res[k].node_id for k in mine))
            else:
                for k in mine:
                    if k != best:
                        yield NodePruned(ctx.run_id, res[k].node_id, it)
                yield Release(tuple(res[k].node_id for k in mine if k != best))
                s.node_id, s.text, s.tokens = res[best].node_id, texts[best], s.tokens + res[best].n_tokens
    cands = [a for s in subtrees for a in s.alternatives]
    yield choose(ctx, [c[0] for c in cands], [c[1] for c in cands], [c[2] for c in cands], selection)


def _for_budget(budget: int, user: dict) -> dict:
    m = min(int(user.get("beam_width", 4)), budget)
    multiple_of(
        "DVTS",
        budget,
        m,
        f"it splits the budget into subtrees of beam width {m} (or set a beam width that divides it)",
    )
    return {"n": budget, "beam_width": m}


def _cost(p: dict) -> int:
    """N/M subtrees of M alternatives each round (a remainder of N runs nothing)."""
    m = max(1, min(int(p["beam_width"]), int(p["n"])))
    return int(p["n"]) // m * m


register(
    Strategy(
        name="dvts",
        label="DVTS",
        short="DVTS",
        summary="Diverse verifier tree search: N/M independent subtrees, each keeping its best step",
        shown=("n", "beam_width"),
        run=dvts,
        for_budget=_for_budget,
        cost=_cost,
        sequences=lambda p: int(p["n"]) + 1,  # the shared prompt and every subtree's M alternatives
        candidates=lambda p: int(p["n"]),
        params=(
            Param(
                "beam_width",
                4,
                "Beam width M",
                "Alternatives per subtree each round; the budget makes N/M subtrees",
                1,
                16,
            ),
            Param(
                "iterations",
                40,
                "Rounds",
                "The most rounds (steps) a subtree takes; the last one runs to the end",
                1,
                200,
            ),
            selection_param(),
        ),
        token_rule="expected",
        drawn_as="tree",
        answer_is_path=True,
        colour="#CC79A7",
        order=30,
    )
)
