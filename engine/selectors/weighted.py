"""Weighted (best-of-N weighted, Snell et al. 2024): the answer whose equivalent candidates have the
largest summed score."""

from __future__ import annotations

from engine.selectors import Ballot, Pick, Selector, register


def pick(b: Ballot) -> Pick:
    sums = {g: sum(b.scores[k] for k in m) for g, m in b.members.items()}
    return b.winner(sums), {b.answer(g): s for g, s in sums.items()}


register(
    Selector(
        "weighted",
        "Weighted",
        "the answer whose equivalent candidates have the largest summed score",
        pick,
        order=10,
        tally_means="summed score",
    )
)
