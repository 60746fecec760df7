"""The event vocabulary: self-checking, JSON round-trip, and the fold every consumer shares."""

from __future__ import annotations

import json

import pytest

from engine.errors import InvalidRequestError
from engine.events import (
    NodeAdded,
    NodeFinished,
    NodePruned,
    NodeScored,
    RunFinished,
    RunStarted,
    Selected,
    TextDelta,
    event_from_dict,
    fold,
)


def a_run() -> list:
    r = "run-1"
    return [
        RunStarted(r, "beam_search", {"n": 2, "m": 2}, {"path": "m.gguf"}, {"name": "judge"}, 7, "1+1?", "2"),
        NodeAdded(r, 0, None, "step", "One plus one.\n\n", 5, -1.5, [-0.5, -0.5, -0.2, -0.2, -0.1]),
        TextDelta(r, 1, "So"),
        NodeAdded(r, 1, 0, "step", "So 2.", 3, -0.3, [-0.1, -0.1, -0.1]),
        NodeAdded(r, 2, 0, "step", "So 3.", 3, -2.0, [-0.1, -1.8, -0.1]),
        NodeScored(r, 1, [0.9, 0.8], 0.8, "judge"),
        NodeScored(r, 2, [0.9, 0.1], 0.1, "judge"),
        NodePruned(r, 2, 1),
        NodeFinished(r, 1, "2", "eos"),
        Selected(r, "2", 1, "weighted", {"2": 0.8}),
        RunFinished(r, "done", "", 11, 20, 30, 1.25),
    ]


def test_round_trip_through_json_gives_the_same_events_and_the_same_fold():
    events = a_run()
    wire = [json.loads(json.dumps(e.to_dict())) for e in events]
    back = [event_from_dict(d) for d in wire]
    assert back == events
    assert fold(back) == fold(events)


def test_the_fold_builds_the_tree():
    t = fold(a_run())
    assert t.roots == [0] and t.nodes[0].children == [1, 2]
    assert t.nodes[2].pruned_at == 1 and t.nodes[1].pruned_at is None
    assert t.nodes[1].scores == {"judge": 0.8} and t.nodes[1].step_scores["judge"] == [0.9, 0.8]
    assert t.nodes[1].answer == "2" and t.nodes[1].finish_reason == "eos"
    assert t.selected.node_id == 1 and t.finished.generated_tokens == 11
    assert t.text_of(1) == "One plus one.\n\nSo 2."
    assert t.path_to(2) == [0, 2]


@pytest.mark.parametrize(
    "bad",
    [
        lambda: NodeAdded("r", 1, None, "thought", "x", 1, 0.0),
        lambda: NodeAdded("r", 1, 1, "step", "x", 1, 0.0),
        lambda: NodeScored("r", 1, [float("nan")], 0.5, "judge"),
        lambda: NodeFinished("r", 1, "2", "exploded"),
        lambda: Selected("r", "2", 1, "vibes", {}),
        lambda: RunFinished("r", "maybe"),
        lambda: RunStarted("r", "", {}, {}, {}, 0, "p"),
        lambda: RunStarted("r", "bon", {}, {}, {}, 0, "   "),
    ],
)
def test_events_check_themselves(bad):
    with pytest.raises(InvalidRequestError):
        bad()


def test_the_fold_rejects_impossible_streams():
    ev = a_run()
    with pytest.raises(InvalidRequestError, match="first event"):
        fold(ev[1:])
    with pytest.raises(InvalidRequestError, match="unknown parent"):
        fold([ev[0], NodeAdded("run-1", 5, 99, "step", "x", 1, 0.0)])
    with pytest.raises(InvalidRequestError, match="added twice"):
        fold([ev[0], ev[1], ev[1]])
    with pytest.raises(InvalidRequestError, match="follow RunFinished"):
        fold([*ev, NodePruned("run-1", 1, 3)])
    with pytest.raises(InvalidRequestError, match="trace of"):
        fold([ev[0], NodeAdded("run-2", 0, None, "step", "x", 1, 0.0)])


def test_unknown_or_damaged_dicts_are_clear_errors():
    with pytest.raises(InvalidRequestError, match="Unknown event kind"):
        event_from_dict({"kind": "teleported", "run_id": "r"})
    with pytest.raises(InvalidRequestError, match="unknown fields"):
        event_from_dict({"kind": "node_pruned", "run_id": "r", "node_id": 1, "iteration": 0, "x": 1})
    with pytest.raises(InvalidRequestError, match="incomplete"):
        event_from_dict({"kind": "node_pruned", "run_id": "r"})
