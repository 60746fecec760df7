"""Sequential revisions: chains of attempts, each written with the previous attempts in context.

``chains`` chains run in parallel, each ``length`` attempts long. Attempt 1 answers the question;
attempt j sees the question and the last ``context`` (4) attempts of its chain, and is asked to
revise. Every attempt is scored by the PRM. Since revising can turn a right answer wrong, the answer
is selected, not taken from the last attempt: ``weighted`` picks within each chain by weighted
PRM score, then weighted again across the chain winners; ``majority`` votes over all attempts;
``naive`` takes the top-scored attempt.
"""

from __future__ import annotations

from engine.errors import InvalidRequestError
from engine.events import Selected
from engine.protocol import Generate, Generated, GenItem, Messages, Release, RunContext, StrategyGen
from engine.search.common import added, finished_event, score, scored_event, started
from engine.search.registry import Param, Strategy, divisor_at_most, multiple_of, register, selection_param
from engine.search.selection import select_chains

REVISE_PROMPT = (
    "Review your previous solution. If it contains a mistake, correct it. Then write a complete "
    "revised solution that ends with the final answer in \\boxed{}."
)


def revision_messages(ctx: RunContext, attempts: list[str], context: int = 4) -> Messages:
    """The chat for the next attempt: the question, then the last ``context`` attempts, each
    followed by the request to revise."""
    msgs: list[tuple[str, str]] = list(ctx.question_messages())
    for a in attempts[-context:] if context > 0 else []:
        msgs += [("assistant", a), ("user", REVISE_PROMPT)]
    return tuple(msgs)


def revisions(
    ctx: RunContext,
    chains: int = 2,
    length: int = 4,
    context: int = 4,
    selection: str = "weighted",
    reuse: bool = True,
) -> StrategyGen:
    yield started(
        ctx,
        "revisions",
        {"chains": chains, "length": length, "context": context, "selection": selection, "reuse": reuse},
    )
    texts: list[list[str]] = [[] for _ in range(chains)]
    ids: list[list[int]] = [[] for _ in range(chains)]
    scores: list[list[float]] = [[] for _ in range(chains)]
    held: list[int] = []  # attempts whose cells the next attempt's chat reuses
    for j in range(length):
        last = j == length - 1
        items = []
        for c in range(chains):
            nid = ctx.new_node()
            msgs = revision_messages(ctx, texts[c], context)
            # While every earlier attempt is still in the chat (the window has not slid), the chat
            # begins with the last attempt's chat and text: continue its cells, decode only the rest.
            cont = reuse and ids[c] and len(texts[c]) <= context
            items.append(
                GenItem(
                    nid, ctx.sampling(nid, stop=False), parent=ids[c][-1] if cont else None, messages=msgs
                )
            )
        res: list[Generated] = yield Generate(tuple(items))
        for c, g in enumerate(res):
            yield added(ctx, g, ids[c][-1] if ids[c] else None, "revision" if j else "solution")
        if held:
            yield Release(tuple(held))
        # Kept while the next attempt's chat still holds every attempt so far (it continues them).
        keep = reuse and not last and j + 1 <= context
        held = [g.node_id for g in res] if keep else []
        if not keep:
            yield Release(tuple(g.node_id for g in res))
        scored = yield from score(ctx, [g.text for g in res], [True] * chains)
        for c, (g, s) in enumerate(zip(res, scored, strict=True)):
            yield scored_event(ctx, g.node_id, s)
            yield finished_event(ctx, g.node_id, g.text, g.finish_reason)
            texts[c].append(g.text)
            ids[c].append(g.node_id)
            scores[c].append(s.score)
    pick = select_chains([[ctx.answer(t) for t in c] for c in texts], scores, selection)
    node = ids[pick.chain][pick.attempt] if pick.chain is not None else None  # type: ignore[index]  # a picked chain has its attempt
    yield Selected(ctx.run_id, pick.answer, node, selection, pick.tally)


def _for_budget(budget: int, user: dict) -> dict:
    chains = int(user.get("chains") or 0)
    if chains > budget:
        raise InvalidRequestError(f"Revisions need 1 to {budget} chains at a budget of {budget}.")
    if not chains:  # auto: about a quarter of the budget, and a divisor of it
        chains = divisor_at_most(budget, max(1, budget // 4))
    length = multiple_of("Revisions", budget, chains, f"it runs {chains} chains of equal length")
    return {"chains": chains, "length": length}


register(
    Strategy(
        name="revisions",
        label="Revisions",
        summary="Chains of attempts, each revising the ones before it",
        shown=("chains", "length"),
        run=revisions,
        for_budget=_for_budget,
        cost=lambda p: int(p["chains"]) * int(p["length"]),
        sequences=lambda p: 2 * int(p["chains"]) + 1,  # each chain's last attempt and its revision
        candidates=lambda p: int(p["chains"]) * int(p["length"]),
        params=(
            Param(
                "chains", 0, "Chains", "Parallel chains; the budget is chains x length", 0, 64, special="auto"
            ),
            Param("context", 4, "Attempts in context", "How many earlier attempts a revision sees", 1, 8),
            Param(
                "reuse",
                True,
                "Continue cells",
                "Each attempt continues the cells of the one before (off: its whole chat is decoded again)",
            ),
            selection_param(),
        ),
        drawn_as="chain",
        sweep_reads="chains",
        colour="#009E73",
        order=40,
        default=True,
    )
)
