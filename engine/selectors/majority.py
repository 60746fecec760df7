"""Majority (self-consistency): the most frequent answer, whatever the scores."""

from __future__ import annotations

from engine.selectors import Ballot, Pick, Selector, register


def pick(b: Ballot) -> Pick:
    votes = {g: float(len(m)) for g, m in b.members.items()}
    return b.winner(votes), {b.answer(g): v for g, v in votes.items()}


register(
    Selector(
        "majority",
        "Majority",
        "the most frequent answer (ties: the one seen first)",
        pick,
        order=20,
        tally_means="votes",
    )
)
