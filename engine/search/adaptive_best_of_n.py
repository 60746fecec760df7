"""Adaptive best-of-N: sample in rounds and stop when the vote is settled (Adaptive-Consistency).

Aggarwal et al. 2023 ("Let's Sample Step by Step: Adaptive-Consistency for Efficient Reasoning with
LLMs"), whose Beta stopping rule its_hub's adaptive self-consistency also uses: after each round of
``round_size`` solutions, group the answers by equivalence (math-verify), take the votes of the
leading answer ``v1`` and of the runner-up ``v2``, and stop when the posterior probability that the
leading answer is the more likely of the two, ``P(p > 1/2)`` for ``p ~ Beta(v1 + 1, v2 + 1)``, exceeds
``threshold``; else sample another round, up to the budget ``n``. ``weighting="prm"`` counts each
vote by its PRM score (the Beta's pseudo-counts are then score sums) and picks by weighted
selection; ``"votes"`` is plain self-consistency with majority selection.

Its budget is a maximum: on an easy problem it spends a fraction of it, which is the cheapest form
of compute-optimal allocation per problem. How many generations it spent is the number of its
solutions (:func:`generations_spent`); the summary, the sweep report and the app's footer say it.
"""

from __future__ import annotations

import math

from engine.answers import group_answers
from engine.events import Trace
from engine.protocol import Generate, Generated, GenItem, Release, RunContext, StrategyGen
from engine.search.common import added, choose, finished_event, score, scored_event, started
from engine.search.registry import Param, Strategy, register

WEIGHTINGS = ("votes", "prm")


def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def beta_cdf(x: float, a: float, b: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``: P(X <= x) for X ~ Beta(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def confidence(lead: float, second: float) -> float:
    """P(p > 1/2) for p ~ Beta(lead + 1, second + 1): how sure the vote is that the leading answer
    beats the runner-up (Adaptive-Consistency's Beta criterion)."""
    return 1.0 - beta_cdf(0.5, lead + 1.0, second + 1.0)


def tally(answers: list[str | None], weights: list[float]) -> list[tuple[int, float]]:
    """(group, votes) of every answer group, most votes first (no answer: no vote)."""
    groups = group_answers(answers)
    votes: dict[int, float] = {}
    for g, w in zip(groups, weights, strict=True):
        if g is not None:
            votes[g] = votes.get(g, 0.0) + w
    return sorted(votes.items(), key=lambda gv: (-gv[1], gv[0]))


def settled(answers: list[str | None], weights: list[float], threshold: float) -> tuple[bool, float]:
    """(whether to stop, the confidence) after the solutions so far."""
    ranked = tally(answers, weights)
    if not ranked:
        return False, 0.0
    lead = ranked[0][1]
    second = ranked[1][1] if len(ranked) > 1 else 0.0
    conf = confidence(lead, second)
    return conf >= threshold, conf


def adaptive_best_of_n(
    ctx: RunContext, n: int = 16, round_size: int = 4, threshold: float = 0.95, weighting: str = "votes"
) -> StrategyGen:
    yield started(
        ctx,
        "adaptive_best_of_n",
        {"n": n, "round_size": round_size, "threshold": threshold, "weighting": weighting},
    )
    msgs = ctx.question_messages()
    ids: list[int] = []
    texts: list[str] = []
    scores: list[float] = []
    answers: list[str | None] = []
    tokens_used = [0]
    while len(ids) < n and not ctx.out_of_tokens(tokens_used[0]):
        m = min(max(1, round_size), n - len(ids))
        new = [ctx.new_node() for _ in range(m)]
        items = []
        for i in new:
            want = ctx.token_cap(tokens_used[0], m, ctx.max_tokens)
            items.append(GenItem(i, ctx.sampling(i, want, stop=False), messages=msgs))
        res: list[Generated] = yield Generate(tuple(items))
        tokens_used[0] += sum(g.n_tokens for g in res)
        for g in res:
            yield added(ctx, g, None, "solution")
        round_texts = [g.text for g in res]
        scored = yield from score(ctx, round_texts, [True] * m)
        yield Release(tuple(new))
        for g, s in zip(res, scored, strict=True):
            yield scored_event(ctx, g.node_id, s)
            yield finished_event(ctx, g.node_id, g.text, g.finish_reason)
        ids += new
        texts += round_texts
        scores += [s.score for s in scored]
        answers += [ctx.answer(t) for t in round_texts]
        weights = scores if weighting == "prm" else [1.0] * len(answers)
        stop, _ = settled(answers, weights, threshold)
        if stop:
            break
    yield choose(ctx, ids, texts, scores, "weighted" if weighting == "prm" else "majority")


def generations_spent(trace: Trace) -> int:
    """Generations the run spent: its solutions."""
    return sum(1 for nid in trace.roots if trace.nodes[nid].role == "solution")


register(
    Strategy(
        name="adaptive_best_of_n",
        label="Adaptive best-of-N",
        short="adaptive best-of-N",
        summary="Best-of-N in rounds, stopping when the vote is settled (Beta posterior); budget a maximum",
        shown=("n", "round_size", "threshold"),
        run=adaptive_best_of_n,
        for_budget=lambda budget, user: {"n": budget},
        cost=lambda p: int(p["n"]),
        sequences=lambda p: min(int(p["n"]), int(p.get("round_size", 4))) + 1,
        candidates=lambda p: int(p["n"]),
        params=(
            Param("round_size", 4, "Round size", "Solutions sampled before each check of the vote", 1, 64),
            Param(
                "threshold",
                0.95,
                "Confidence",
                "Stop when P(the leading answer beats the runner-up) exceeds this",
                0.5,
                0.999,
            ),
            Param(
                "weighting",
                "votes",
                "Votes",
                "votes: one per solution (majority); prm: each weighted by its PRM score (weighted)",
                choices=WEIGHTINGS,
            ),
        ),
        drawn_as="column",
        budget_is_maximum=True,
        count_spent=generations_spent,
        colour="#44AA99",  # Tol's teal
        order=15,
    )
)
