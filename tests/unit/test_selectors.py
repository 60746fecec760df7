"""Answer selectors (engine/selectors/, one module each): what each picks and tallies, the
strategies' menus and the sweep analysis following the registry, and a new selector added by one
module."""

from __future__ import annotations

import pytest

from engine import selectors
from engine.errors import InvalidRequestError
from engine.events import Selected
from engine.search import registry
from engine.search.selection import select
from engine.selectors import Ballot, Selector

# "7" twice with low scores, "9" once with the best score, one candidate without an answer.
ANSWERS = ["7", "9", "7", None]
SCORES = [0.3, 0.9, 0.4, 0.95]


def test_the_three_selectors_in_menu_order():
    assert selectors.names() == ("weighted", "majority", "naive")
    assert all(s.label and s.summary for s in selectors.selectors())


def test_each_selector_picks_and_tallies_its_own_way():
    w = select(ANSWERS, SCORES, "weighted")
    assert (w.answer, w.index, w.method) == ("9", 1, "weighted")  # 0.9 > 0.3 + 0.4
    assert w.tally == pytest.approx({"7": 0.7, "9": 0.9})
    m = select(ANSWERS, SCORES, "majority")
    assert (m.answer, m.index) == ("7", 2) and m.tally == {"7": 2.0, "9": 1.0}  # the best "7" shown
    n = select(ANSWERS, SCORES, "naive")
    assert (n.answer, n.index) == (None, 3) and n.tally == {"7": 0.4, "9": 0.9}  # no answer may win
    assert select(ANSWERS, SCORES).method == "weighted"  # the first selector is the default


def test_no_answer_at_all():
    assert select([None, None], [0.2, 0.1], "weighted").answer is None
    assert select([None, None], [0.2, 0.1], "naive").index == 0
    assert select([], [], "majority").index is None


def test_an_unknown_selector_is_one_clear_error():
    with pytest.raises(InvalidRequestError, match="selection must be one of weighted, majority, naive"):
        select(ANSWERS, SCORES, "borda")
    with pytest.raises(InvalidRequestError, match="selection must be one of"):
        registry.get("best_of_n").budget_params(4, {"selection": "borda"})


def test_a_new_selector_is_one_register_call():
    """What a selector module does: strategies offer it, select() runs it, the event records it."""

    def lowest(b: Ballot):
        i = min(range(len(b.answers)), key=lambda k: b.scores[k])
        return i, {b.answer(g): min(b.scores[k] for k in m) for g, m in b.members.items()}

    selectors.register(Selector("lowest", "Lowest", "the lowest-scored candidate (a test)", lowest, order=40))
    try:
        assert selectors.names()[-1] == "lowest"
        params = registry.get("best_of_n").budget_params(4, {"selection": "lowest"})
        assert params["selection"] == "lowest"
        assert "lowest" in registry.selection_param().options()
        s = select(ANSWERS, SCORES, "lowest")
        assert (s.answer, s.index) == ("7", 0)
        assert Selected("r", s.answer, s.index, s.method, s.tally).method == "lowest"
    finally:
        selectors.unregister("lowest")
    with pytest.raises(ValueError, match="identifier"):
        selectors.register(Selector("not a name", "x", "x", lowest))


def test_the_sweep_analysis_reads_every_registered_selector():
    """A sweep is read by each selector, a new one included, without generating anything."""
    import random

    from engine.sweeps.analysis import _accuracy, _Candidates

    c = _Candidates([["3", "3", "4"]], [[0.2, 0.2, 0.9]], [[True, True, False]])
    assert _accuracy("best_of_n", 3, c, 4, random.Random(0)) == {
        "weighted": 0.0,
        "majority": 1.0,
        "naive": 0.0,
    }
    lowest = Selector("lowest", "Lowest", "a test", lambda b: (0, {}), order=40)
    selectors.register(lowest)
    try:
        acc = _accuracy("best_of_n", 3, c, 4, random.Random(0))
        assert acc["lowest"] == 1.0 and set(acc) == {"weighted", "majority", "naive", "lowest"}
    finally:
        selectors.unregister("lowest")
