"""First-use costs paid when the window opens, not during the first run: PySide6 makes its Python
enum classes on first use (tens of ms each), and math-verify's first import and check take most of
a second, partly holding the GIL (measured with ``ponder bench --gui``: 100-200 ms stalls without)."""

from __future__ import annotations

_WARM = [False]


def warm_up() -> None:
    """Draw a small search once, offscreen, when the window opens: PySide6 makes its Python enum
    classes on first use (tens of ms each time), which would otherwise stall the first redraw of
    the first run."""
    if _WARM[0]:
        return
    _WARM[0] = True
    from engine import selectors
    from engine.events import (
        Event,
        NodeAdded,
        NodeFinished,
        NodePruned,
        NodeScored,
        RunStarted,
        Selected,
        fold,
    )
    from engine.search import registry
    from gui.detail import node_html
    from gui.trace_view import TraceView

    # A strategy drawn as a tree, and a selector: whichever the registries list first.
    tree = next(s.name for s in registry.strategies() if s.drawn_as == "tree")
    evs: list[Event] = [RunStarted("w", tree, {}, {}, {}, 0, "p")]
    for i, parent in ((0, None), (1, None), (2, 0)):
        evs += [NodeAdded("w", i, parent, "step", "x", 1, -1.0), NodeScored("w", i, [0.5], 0.5, "warm-up")]
    evs += [
        NodePruned("w", 1, 0),
        NodeFinished("w", 2, "1", "eos"),
        Selected("w", "1", 2, selectors.names()[0], {"1": 1.0}),
    ]
    t = fold(evs)
    view = TraceView()
    view.resize(300, 200)
    view.show_trace(t, tree, {9: "live"})
    view.toggle_round(0)
    view.grab()
    node_html(t, tree, 2)
    view.deleteLater()


def warm_answers() -> None:
    from engine.answers import answers_equal

    answers_equal("x+1", "1+x")  # (not numbers: this one goes through math-verify's parser)
