"""Sequential revisions: chains of attempts, each written with the previous attempts in context.

``chains`` chains run in parallel, each ``length`` attempts long. Attempt 1 answers the question;
attempt j sees the question and the last ``context`` (4) attempts of its chain, and is asked to
revise. Every attempt is scored by the PRM. Since revising can turn a right answer wrong, the answer
is selected, not taken from the last attempt: ``weighted`` picks within each chain by weighted
PRM score, then weighted again across the chain winners; ``majority`` votes over all attempts;
``naive`` takes the top-scored attempt.
"""

from __future__ import annotations

from engine.answers import extract_answer
from engine.events import Selected
from engine.search.common import added, choose, finished_event, score, scored_event, started
from engine.search.protocol import Generate, GenItem, Messages, Release, RunContext, StrategyGen
from engine.search.selection import select

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
    ctx: RunContext, chains: int = 2, length: int = 4, context: int = 4, selection: str = "weighted"
) -> StrategyGen:
    yield started(
        ctx, "revisions", {"chains": chains, "length": length, "context": context, "selection": selection}
    )
    texts: list[list[str]] = [[] for _ in range(chains)]
    ids: list[list[int]] = [[] for _ in range(chains)]
    scores: list[list[float]] = [[] for _ in range(chains)]
    for j in range(length):
        items = []
        for c in range(chains):
            nid = ctx.new_node()
            items.append(
                GenItem(
                    nid, ctx.sampling(nid, stop=False), messages=revision_messages(ctx, texts[c], context)
                )
            )
        res = yield Generate(tuple(items))
        for c, g in enumerate(res):
            yield added(ctx, g, ids[c][-1] if ids[c] else None, "revision" if j else "solution")
        yield Release(tuple(g.node_id for g in res))
        scored = yield from score(ctx, [g.text for g in res], [True] * chains)
        for c, (g, s) in enumerate(zip(res, scored, strict=True)):
            yield scored_event(ctx, g.node_id, s)
            yield finished_event(ctx, g.node_id, g.text, g.finish_reason)
            texts[c].append(g.text)
            ids[c].append(g.node_id)
            scores[c].append(s.score)
    all_ids = [i for c in ids for i in c]
    all_texts = [t for c in texts for t in c]
    all_scores = [s for c in scores for s in c]
    if selection != "weighted":
        yield choose(ctx, all_ids, all_texts, all_scores, selection)
        return
    winners = []  # (node id, answer, weight) per chain
    for c in range(chains):
        answers = [extract_answer(t) for t in texts[c]]
        sel = select(answers, scores[c], "weighted")
        if sel.index is not None:
            winners.append((ids[c][sel.index], sel.answer, sel.tally.get(sel.answer, 0.0)))  # type: ignore[arg-type]
    final = select([w[1] for w in winners], [w[2] for w in winners], "weighted")
    node = winners[final.index][0] if final.index is not None else None
    yield Selected(ctx.run_id, final.answer, node, "weighted", final.tally)
