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


# --- chains of attempts (revisions) ---------------------------------------------------------------


@dataclass(frozen=True)
class ChainPick:
    answer: str | None
    chain: int | None
    attempt: int | None
    tally: dict[str, float]


def chain_groups(answers: list[list[str | None]]) -> list[list[int | None]]:
    """Equivalence labels for every attempt of every chain, decided once over all of them (the
    shape of ``answers``)."""
    labels = iter(group_answers([a for chain in answers for a in chain]))
    return [[next(labels) for _ in chain] for chain in answers]


def select_chains(
    answers: list[list[str | None]],
    scores: list[list[float]],
    method: str = "weighted",
    groups: list[list[int | None]] | None = None,
) -> ChainPick:
    """The answer of chains of attempts (revisions: answers and scores per chain, attempts in order;
    a strategy whose ``sweep_reads`` is ``chains`` is read so).
    ``weighted``: weighted selection within each chain, then weighted across the chain winners (each
    weighing its winning answer's summed score); ``naive`` / ``majority``: over all attempts.
    ``groups``: equivalence labels shared by all chains, when already known."""
    flat = [(c, j) for c, chain in enumerate(answers) for j in range(len(chain))]
    if groups is None:
        groups = chain_groups(answers)
    if method != "weighted":
        sel = select(
            [answers[c][j] for c, j in flat],
            [scores[c][j] for c, j in flat],
            method,
            [groups[c][j] for c, j in flat],
        )
        if sel.index is None:
            return ChainPick(sel.answer, None, None, sel.tally)
        c, j = flat[sel.index]
        return ChainPick(sel.answer, c, j, sel.tally)
    winners = []  # (chain, attempt, answer, weight)
    for c, chain in enumerate(answers):
        sel = select(chain, scores[c], "weighted", groups[c])
        if sel.index is not None:
            winners.append((c, sel.index, sel.answer, sel.tally.get(sel.answer, 0.0)))  # type: ignore[arg-type]  # weighted: a pick has an answer
    final = select(
        [w[2] for w in winners], [w[3] for w in winners], "weighted", [groups[w[0]][w[1]] for w in winners]
    )
    if final.index is None:
        return ChainPick(final.answer, None, None, final.tally)
    c, j = winners[final.index][:2]
    return ChainPick(final.answer, c, j, final.tally)
