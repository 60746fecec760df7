"""Search trees laid out by round: the pure layout, and the view's stubs, chosen path and
incremental redraws (offscreen)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import QPointF, Qt  # noqa: E402

from engine.events import NodeAdded, NodeFinished, NodePruned, NodeScored, RunStarted, Selected, fold  # noqa: E402
from gui.tree_layout import CARD_H, layout  # noqa: E402


def beam_events(rounds: int = 3, width: int = 8, keep: int = 2) -> list:
    """A beam search's events: each round ``width`` candidates from the kept ones, the best ``keep``
    survive, the rest are pruned; the last round's best is chosen."""
    evs: list = [RunStarted("r", "beam_search", {"n": width}, {}, {}, 0, "p")]
    kept: list[int | None] = [None]
    nid = 0
    for rnd in range(rounds):
        cands = []
        for k in range(width):
            parent = kept[k % len(kept)]
            evs.append(NodeAdded("r", nid, parent, "step", f"step {rnd}.{k}: 3 * {nid} = {3 * nid}", 5, -1.0))
            score = ((nid * 37) % 100) / 100
            evs.append(NodeScored("r", nid, [score], score, "judge"))
            cands.append((score, nid))
            nid += 1
        cands.sort(reverse=True)
        for _, i in cands[keep:]:
            evs.append(NodePruned("r", i, rnd))
        kept = [i for _, i in cands[:keep]]
    best = kept[0]
    evs.append(NodeFinished("r", best, "42", "eos"))
    evs.append(Selected("r", "42", best, "naive", {"42": 1.0}))
    return evs


def test_a_search_is_laid_out_by_round_with_pruned_candidates_collapsed():
    t = fold(beam_events(rounds=3, width=8, keep=2))
    lay = layout(t, "beam_search")
    ys = sorted({y for _, y in lay.pos.values()})
    assert len(ys) == 3  # one row a round
    for rnd, y in enumerate(ys):
        row = [i for i, (_, yy) in lay.pos.items() if yy == y]
        assert len(row) == 2  # the two kept candidates; six pruned are one stub
        stub = lay.stubs[rnd]
        assert len(stub.nodes) == 6 and stub.pos[1] == y and not stub.expanded
        assert stub.best == max(t.nodes[i].score for i in stub.nodes)
        assert all(t.nodes[i].pruned_at is not None for i in stub.nodes)
    # children sit below their parents' row
    for nid, (_, y) in lay.pos.items():
        p = t.nodes[nid].parent_id
        if p is not None:
            assert lay.pos[p][1] < y
    wide = layout(t, "beam_search", expanded={1})
    from gui.tree_layout import depth_of

    assert sum(1 for i in wide.pos if depth_of(t, i) == 1) == 8  # (wrapped onto two lines at 6 a line)
    assert len({y for _, y in wide.pos.values()}) == 4
    assert wide.stubs[1].expanded and not wide.stubs[0].expanded
    # a row wider than the view wraps: 8 candidates (none pruned yet) at 4 a line take two lines
    live = fold(beam_events(rounds=1, width=8, keep=8))
    two = layout(live, "beam_search", per_line=4)
    assert len({y for _, y in two.pos.values()}) == 2 and not two.stubs
    assert max(x for x, _ in two.pos.values()) < max(
        x for x, _ in layout(live, "beam_search", per_line=8).pos.values()
    )


def test_chains_stay_a_tidy_tree_and_best_of_n_a_column():
    evs = [RunStarted("r", "revisions", {}, {}, {}, 0, "p")]
    evs += [NodeAdded("r", 0, None, "solution", "a", 1, 0.0), NodeAdded("r", 1, 0, "revision", "b", 1, 0.0)]
    evs += [NodeAdded("r", 2, 0, "revision", "c", 1, 0.0), NodeAdded("r", 3, None, "solution", "d", 1, 0.0)]
    pos = layout(fold(evs), "revisions").pos
    assert pos[0][0] == (pos[1][0] + pos[2][0]) / 2 and pos[1][1] == pos[2][1] > pos[0][1] == pos[3][1]
    bon = layout(
        fold(
            [
                RunStarted("r", "best_of_n", {}, {}, {}, 0, "p"),
                NodeAdded("r", 5, None, "solution", "x", 1, 0.0),
            ]
        ),
        "best_of_n",
    )
    assert {x for x, _ in bon.pos.values()} == {0.0} and not bon.joined


def test_the_view_expands_a_stub_on_click_outlines_the_chosen_path_and_redraws_in_place(qtbot):
    from gui.theme import colours
    from gui.trace_view import TraceView

    evs = beam_events(rounds=3, width=8, keep=2)
    view = TraceView()
    qtbot.addWidget(view)
    view.resize(900, 700)
    view.show()
    # grow it event by event, as a live run does: items are made once and then only updated
    t = fold(evs[:1])
    for ev in evs[1:]:
        t.apply(ev)
        view.show_trace(t, "beam_search")
    made = view.builds
    assert set(view.items_by_node) == set(view.layout.pos) and len(view.stubs) == 3
    assert made <= len(t.nodes) + 3 + 8  # each node, stub (and streaming card) made once, not per redraw
    view.show_trace(t, "beam_search")
    assert view.builds == made  # a redraw with nothing new makes nothing
    # the chosen path: every node on it outlined in the chosen colour, and its edges too
    path = t.path_to(t.selected.node_id)
    chosen = colours()["chosen"].lower()
    for nid in path:
        assert view.items_by_node[nid].pen().color().name() == chosen
        assert view.items_by_node[nid].pen().widthF() > 3
    for a, b in zip(path, path[1:], strict=False):
        assert view.edges[(a, b)].pen().color().name() == chosen
    others = [i for i in view.items_by_node if i not in path]
    assert others and all(view.items_by_node[i].pen().color().name() != chosen for i in others)
    # the card of the chosen leaf shows its answer; hovering any card gives its step text
    leaf = view.items_by_node[path[-1]]
    assert "→ 42" in leaf.body.text() and t.nodes[path[-1]].text in leaf.toolTip()
    # a click on round 2's stub shows its six pruned cards, faded; a second click hides them again
    stub = view.stubs[1]
    pruned = list(view.layout.stubs[1].nodes)
    assert not any(i in view.items_by_node for i in pruned)
    view.centerOn(stub.item)  # (in view whatever the scale the fit chose)
    qtbot.mouseClick(
        view.viewport(), Qt.MouseButton.LeftButton, pos=view.mapFromScene(stub.sceneBoundingRect().center())
    )
    assert all(i in view.items_by_node for i in pruned) and 1 in view.expanded
    assert all(view.items_by_node[i].opacity() < 0.5 for i in pruned)
    assert "hide" in view.stubs[1].label.text()
    stub = view.stubs[1]
    view.centerOn(stub.item)  # (in view whatever the scale the fit chose)
    qtbot.mouseClick(
        view.viewport(), Qt.MouseButton.LeftButton, pos=view.mapFromScene(stub.sceneBoundingRect().center())
    )
    assert not any(i in view.items_by_node for i in pruned) and not view.expanded
    # the whole search fits at a readable size: scale between the legible minimum and 1:1
    view.fit()
    k = view.transform().m11()
    assert 0.6 <= k <= 1.0
    assert view.mapFromScene(QPointF(0, CARD_H)).y() - view.mapFromScene(QPointF(0, 0)).y() >= 0.6 * CARD_H


def _mcts_events(n: int = 8) -> list:
    """A real MCTS run (engine.search.mcts) driven by a scripted executor: steps end their solution
    every third generation; the PRM favours longer paths."""
    import itertools

    from engine.events import Event
    from engine.protocol import Generate, Generated, RunContext, Score
    from engine.search import get_strategy

    k = itertools.count(1)
    gen = get_strategy("mcts")(
        RunContext("r", "What is 6 * 7?", prm_record={"name": "scripted"}), n=n, children=2
    )
    events, value = [], None
    while True:
        try:
            item = gen.send(value)
        except StopIteration:
            return events
        value = None
        if isinstance(item, Event):
            events.append(item)
        elif isinstance(item, Generate):
            out = []
            for it in item.items:
                i = next(k)
                text, why = (f"So it is {40 + i % 3}.", "eos") if i % 3 == 0 else (f"step {i}\n\n", "stop")
                out.append(Generated(it.node_id, text, 4, (-0.1,), why))
            value = out
        elif isinstance(item, Score):
            value = [[min(1.0, 0.2 * len(c))] * len(c) for c in item.candidates]


def test_an_mcts_tree_shows_visits_and_values_on_its_cards_and_edges_by_visits(qtbot):
    from gui.trace_view import TraceView

    t = fold(_mcts_events())
    view = TraceView()
    qtbot.addWidget(view)
    view.resize(900, 700)
    view.show()
    view.show_trace(t, "mcts")
    valued = [i for i, n in t.nodes.items() if n.visits]
    assert valued and set(valued) <= set(view.items_by_node)
    for i in valued:
        head = view.items_by_node[i].head.text()
        assert f"N {t.nodes[i].visits}" in head, head
    # the most visited edge is drawn thickest, a once-visited one thinnest
    edges = {(p, c): e.pen().widthF() for (p, c), e in view.edges.items() if t.nodes[c].visits}
    most = max(edges, key=lambda pc: t.nodes[pc[1]].visits)
    least = min(edges, key=lambda pc: t.nodes[pc[1]].visits)
    assert t.nodes[most[1]].visits > t.nodes[least[1]].visits
    assert edges[most] > edges[least] >= 1.2
