"""Answer selectors: how the final answer is picked from scored candidates, one module each.

A selector is one module in this package that registers a :class:`Selector`: its name (what
``selection`` / ``--<strategy>-selection`` says, and what the run's ``Selected`` event records), a
label and summary for menus and help, and its ``pick``, which reads a :class:`Ballot` (the
candidates' answers, scores and equivalence groups, computed once by
:func:`engine.search.selection.select`) and returns the index of the candidate shown as the pick and
the tally per answer. Nothing else names a selector: adding one is one module here plus its test
(``tests/unit/test_selectors.py`` shows the shape). Every strategy that ends in a vote offers the
registered selectors (:func:`engine.search.registry.selection_param`), a ``Selected`` event names
one of them (:mod:`engine.events` checks), and the sweep analysis reads every sweep by each of them.
Selectors are pure functions of a ballot: the package sits with the foundation modules, under the
events and the strategies.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from engine.errors import InvalidRequestError
from engine.modules import import_all


@dataclass(frozen=True)
class Ballot:
    """What a selector reads: every candidate's answer (None: none found) and score, and the
    candidates grouped by equivalent answer (group key: its first member's index)."""

    answers: Sequence[str | None]
    scores: Sequence[float]
    members: dict[int, list[int]]

    def answer(self, group: int) -> str:
        """A group's answer (never None: a candidate without an answer is in no group)."""
        a = self.answers[group]
        assert a is not None
        return a

    def best_of(self, idx: Sequence[int]) -> int:
        """The best-scored of ``idx`` (ties: the first)."""
        return max(idx, key=lambda i: (self.scores[i], -i))

    def winner(self, weight: dict[int, float]) -> int | None:
        """The best-scored candidate of the group with the largest weight (ties: the group seen
        first); None when no candidate has an answer."""
        if not weight:
            return None
        win = max(weight, key=lambda g: (weight[g], -g))
        return self.best_of(self.members[win])


Pick = tuple[int | None, dict[str, float]]  # (the candidate shown as the pick, answer -> tally)


@dataclass(frozen=True)
class Selector:
    """One way to pick the final answer (see the module docstring)."""

    name: str
    label: str
    summary: str
    pick: Callable[[Ballot], Pick]
    order: int = 100  # place in menus; the first is a strategy's default
    tally_means: str = "score"  # what its tally counts, for a report: summed score, votes, best score


_REGISTRY: dict[str, Selector] = {}
_loaded = False


def register(selector: Selector) -> Selector:
    """Add (or replace) a selector. Called by the selector's own module."""
    if not selector.name.isidentifier():
        raise ValueError(f"a selector's name is an identifier, not {selector.name!r}")
    _REGISTRY[selector.name] = selector
    return selector


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def load() -> None:
    """Import every module of this package; each registers itself."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import_all(Path(__file__).parent, __name__)


def selectors() -> list[Selector]:
    """Every registered selector, in menu order."""
    load()
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def names() -> tuple[str, ...]:
    return tuple(s.name for s in selectors())


def get(name: str) -> Selector:
    load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidRequestError(f"selection must be one of {', '.join(names())}") from None


__all__ = ["Ballot", "Pick", "Selector", "get", "load", "names", "register", "selectors", "unregister"]
