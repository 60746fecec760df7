"""Picking the final answer from scored candidates by a registered selector (``selectors/``: weighted,
majority and naive as Snell et al. 2024 compare them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine import selectors
from engine.answers import group_answers
from engine.errors import InvalidRequestError
from engine.selectors import Ballot


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
    method: str | None = None,
    groups: Sequence[int | None] | None = None,
) -> Selection:
    """The pick of selector ``method`` (see each module of ``selectors/``). Candidates without an
    answer are in no group. ``groups``: equivalence labels already known for these answers (any
    numbering; None for no answer)."""
    selector = selectors.get(method) if method is not None else selectors.selectors()[0]
    method = selector.name
    if len(answers) != len(scores) or (groups is not None and len(groups) != len(answers)):
        raise InvalidRequestError("select needs one score (and group) per answer")
    if not answers:
        return Selection(None, None, method, {})
    groups = group_answers(list(answers)) if groups is None else first_positions(groups)
    members: dict[int, list[int]] = {}
    for i, g in enumerate(groups):
        if g is not None:
            members.setdefault(g, []).append(i)
    index, tally = selector.pick(Ballot(answers, scores, members))
    return Selection(None if index is None else answers[index], index, method, tally)
