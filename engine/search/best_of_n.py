"""Best-of-N: N independent solutions, each scored by the PRM; the answer by selection."""

from __future__ import annotations

from engine.protocol import Generate, Generated, GenItem, Release, RunContext, StrategyGen
from engine.search.common import added, choose, finished_event, score, scored_event, started
from engine.search.registry import Strategy, register, selection_param


def best_of_n(ctx: RunContext, n: int = 4, selection: str = "weighted") -> StrategyGen:
    yield started(ctx, "best_of_n", {"n": n, "selection": selection})
    ids = [ctx.new_node() for _ in range(n)]
    msgs = ctx.question_messages()
    res: list[Generated] = yield Generate(
        tuple(GenItem(i, ctx.sampling(i, stop=False), messages=msgs) for i in ids)
    )
    for g in res:
        yield added(ctx, g, None, "solution")
    texts = [g.text for g in res]
    # Released after scoring: a judge on the policy model reads the solutions from their KV cells.
    scored = yield from score(ctx, texts, [True] * n)
    yield Release(tuple(ids))
    for g, s in zip(res, scored, strict=True):
        yield scored_event(ctx, g.node_id, s)
        yield finished_event(ctx, g.node_id, g.text, g.finish_reason)
    yield choose(ctx, ids, texts, [s.score for s in scored], selection)


register(
    Strategy(
        name="best_of_n",
        label="Best-of-N",
        short="best-of-N",
        summary="N independent solutions scored by the PRM; the answer by selection",
        shown=("n",),
        run=best_of_n,
        for_budget=lambda budget, user: {"n": budget},
        cost=lambda p: int(p["n"]),
        sequences=lambda p: int(p["n"]) + 1,  # the shared prompt and N samples
        candidates=lambda p: int(p["n"]),
        params=(selection_param(),),
        drawn_as="column",
        sweep_reads="subsets",
        colour="#0072B2",
        order=10,
        default=True,
        baseline=True,
    )
)
