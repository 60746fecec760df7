"""Picking the final answer from scored candidates: naive, weighted, majority (Snell et al. 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.answers import group_answers
from engine.errors import InvalidRequestError

METHODS = ("naive", "weighted", "majority")


@dataclass(frozen=True)
class Selection:
    answer: str | None
    index: int | None  # the candidate shown as the pick (the best-scored one of the winning answer)
    method: str
    tally: dict[str, float]  # answer -> summed score (weighted), votes (majority), best score (naive)


def first_positions(groups: Sequence[int | None]) -> list[int | None]:
    """Group labels renumbered as :func:`group_answers` numbers them: each member gets the index of
    its group's first member in this list. Lets a subset reuse labels computed once for a larger
    list (equivalence is decided once, not per subset)."""
    first: dict[int, int] = {}
    return [None if g is None else first.setdefault(g, i) for i, g in enumerate(groups)]


def select(
    answers: Sequence[str | None],
    scores: Sequence[float],
    method: str = "weighted",
    groups: Sequence[int | None] | None = None,
) -> Selection:
    """naive: the answer of the top-scoring candidate; weighted: the answer whose equivalent
    candidates have the largest summed score; majority: the most frequent answer (ties: the answer
    seen first). Candidates without an answer take no part, except in naive. ``groups``: equivalence
    labels already known for these answers (any numbering; None for no answer)."""
    if method not in METHODS:
        raise InvalidRequestError(f"selection must be one of {', '.join(METHODS)}")
    if len(answers) != len(scores) or (groups is not None and len(groups) != len(answers)):
        raise InvalidRequestError("select needs one score (and group) per answer")
    if not answers:
        return Selection(None, None, method, {})
    groups = group_answers(list(answers)) if groups is None else first_positions(groups)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        if g is not None:
            members.setdefault(g, []).append(i)

    def best_of(idx: list[int]) -> int:
        return max(idx, key=lambda i: (scores[i], -i))

    if method == "naive":
        i = max(range(len(answers)), key=lambda k: (scores[k], -k))
        tally = {answers[m[0]]: max(scores[k] for k in m) for m in members.values()}  # type: ignore[misc]
        return Selection(answers[i], i, method, tally)
    if not members:
        return Selection(None, None, method, {})
    if method == "weighted":
        sums = {g: sum(scores[k] for k in m) for g, m in members.items()}
        win = max(sums, key=lambda g: (sums[g], -g))
        tally = {answers[g]: sums[g] for g in members}  # type: ignore[misc]
    else:
        counts = {g: len(m) for g, m in members.items()}
        win = max(counts, key=lambda g: (counts[g], -g))
        tally = {answers[g]: float(counts[g]) for g in members}  # type: ignore[misc]
    i = best_of(members[win])
    return Selection(answers[win], i, method, tally)
