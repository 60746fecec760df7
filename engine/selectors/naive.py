"""Naive: the answer of the top-scoring candidate (a candidate without an answer may win)."""

from __future__ import annotations

from engine.selectors import Ballot, Pick, Selector, register


def pick(b: Ballot) -> Pick:
    i = max(range(len(b.answers)), key=lambda k: (b.scores[k], -k))
    return i, {b.answer(g): max(b.scores[k] for k in m) for g, m in b.members.items()}


register(
    Selector(
        "naive", "Naive", "the answer of the top-scoring candidate", pick, order=30, tally_means="best score"
    )
)
