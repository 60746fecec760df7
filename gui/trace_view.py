"""A run's trace drawn as a graph (QGraphicsView), fed only by :class:`engine.events.Trace`.

As in Qt's elasticnodes example and Orange's tree viewer, nodes are QGraphicsItems and the layout is
computed outside them (:func:`layout`, pure). A search (beam search, DVTS, particle filtering) is laid
out **by round**: each round a row of that round's candidates, the survivors joined to their parents
above, the pruned ones collapsed into one faded stub per round (their count and best score) that
expands on click. Revision chains are a tidy tree, best-of-N a ranked column. Every card is tinted by
its PRM score on the app's one colour scale (red 0, amber 0.5, green 1; grey unscored) and the chosen
path is outlined from root to leaf. Hovering a card shows its step text; clicking shows it in the
detail pane. A redraw during a run touches only new and changed items (no scene rebuild). Wheel zooms,
dragging pans, a double click fits the view.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsLineItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
)

from engine.events import Trace
from engine.present import GREY, GREY_STRONG, score_hsl
from engine.search.registry import answer_is_path
from gui.theme import colours
from gui.tree_layout import (  # noqa: F401 - the layout and notes are re-exported for callers
    CARD_GAP,
    CARD_H,
    CARD_W,
    GAP_X,
    GAP_Y,
    NODE_H,
    NODE_W,
    STUB_W,
    Layout,
    Stub,
    answer_ids,
    card_notes,
    drawn_as,
    drawn_as_tree,
    elide,
    exact_groups,
    layout,
    round_layout,
    tree_notes,
)

MIN_FIT_SCALE = 0.6
FONT_PT = 8.5


def score_qcolor(score: float | None, strong: bool = False) -> QColor:
    """The app's one score scale (:func:`engine.present.score_hsl`) as a QColor."""
    if score is None:
        return QColor(GREY_STRONG if strong else GREY)
    h, sat, light = score_hsl(score, strong)
    return QColor.fromHslF(h / 360.0, sat, light)


def _font(bold: bool = False, pt: float = FONT_PT) -> QFont:
    f = QFont()
    f.setPointSizeF(pt)
    f.setBold(bold)
    return f


class _Card:
    """A plain QGraphicsRectItem and the text on it, held (not subclassed): a Python subclass of a
    QGraphicsItem makes every paint ask Python for overrides, and each ask waits for the GIL, which
    the engine's threads hold in turns (a 100-card tree repainted while math-verify ran stalled the
    window 70-500 ms). Clicks are found by the view from ``item.data(0)``. Other attributes are the
    item's (``pen()``, ``pos()``, ``toolTip()`` ...)."""

    def __init__(self, kind: str, key: int, size: tuple[float, float]) -> None:
        self.item = QGraphicsRectItem(0, 0, *size)
        self.item.setData(0, (kind, key))
        self.item.setCursor(Qt.CursorShape.PointingHandCursor)
        self.look: tuple | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.item, name)

    def _text(self, x: float, y: float, bold: bool = False, colour: str = "#222") -> QGraphicsSimpleTextItem:
        t = QGraphicsSimpleTextItem("", self.item)
        t.setFont(_font(bold=bold))
        t.setBrush(QBrush(QColor(colour)))
        t.setPos(x, y)
        return t


class NodeItem(_Card):
    """A card: its score (and note) on top, below its answer when it ended, else its first words."""

    def __init__(self, view: TraceView, nid: int, size: tuple[float, float]):
        super().__init__("node", nid, size)
        self.nid = nid
        self.item.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        compact = size[1] < NODE_H
        self.head = self._text(5, 2 if compact else 3, bold=True)
        self.body = self._text(5, 17 if compact else 19)

    def set_look(
        self, text: str, score: float | None, pruned: bool, chosen: bool, note: str, answer: str | None
    ) -> None:
        look = (len(text), score, pruned, chosen, note, answer)
        if look == self.look:
            return  # nothing changed: no repaint
        self.look = look
        it = self.item
        it.setBrush(QBrush(score_qcolor(score)))
        chosen_pen = QPen(QColor(colours()["chosen"]), 3.5)
        it.setPen(chosen_pen if chosen else QPen(score_qcolor(score, strong=True), 1.2))
        it.setOpacity(0.4 if pruned else 1.0)
        it.setZValue(2 if chosen else 1)
        compact = it.rect().width() < NODE_W
        score_text = f"{score:.2f}" if score is not None else "…"
        self.head.setText(
            (f"{score_text}" if compact else f"#{self.nid}  {score_text if score is not None else ''}")
            + (f"  {note}" if note else "")
        )
        if compact:
            self.body.setText(f"→ {answer[:14]}" if answer is not None else elide(text, 17, 1))
        else:
            self.body.setText(elide(text))
        tip = f"#{self.nid}" + (f" · score {score:.3f}" if score is not None else "") + "\n\n" + text[:800]
        it.setToolTip(tip)


class StubItem(_Card):
    """A round's pruned candidates: "+12 pruned · best 0.61"; a click shows or hides them."""

    def __init__(self, view: TraceView, rnd: int):
        super().__init__("stub", rnd, (STUB_W, CARD_H))
        self.round = rnd
        self.item.setBrush(QBrush(QColor(GREY)))
        self.item.setPen(QPen(QColor("#888"), 1.2, Qt.PenStyle.DashLine))
        self.item.setZValue(1)  # over the edges, as the cards
        self.label = self._text(6, 3, colour="#3a3a3a")

    def set_look(self, stub: Stub) -> None:
        look = (len(stub.nodes), stub.best, stub.expanded)
        if look == self.look:
            return
        self.look = look
        n = len(stub.nodes)
        best = f"best {stub.best:.2f}" if stub.best is not None else "unscored"
        self.label.setText(f"− hide {n} pruned\n{best}" if stub.expanded else f"+{n} pruned\n{best}")
        self.item.setOpacity(0.9 if stub.expanded else 0.8)  # faded by its dashed edge and grey, text legible
        self.item.setToolTip(
            f"Round {stub.round + 1}: {n} candidate{'s' * (n != 1)} pruned ({best}). Click to "
            + ("hide them." if stub.expanded else "show them.")
        )


class TraceView(QGraphicsView):
    node_clicked = Signal(int)

    def __init__(self, parent: Any = None) -> None:
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setViewportUpdateMode(QGraphicsView.ViewportUpdateMode.MinimalViewportUpdate)
        self.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignHCenter)
        self.items_by_node: dict[int, NodeItem] = {}
        self.stubs: dict[int, StubItem] = {}
        self.bands: dict[int, QGraphicsRectItem] = {}  # a search's rounds
        self.edges: dict[tuple[int, Any], QGraphicsLineItem] = {}  # (parent, child id or ("stub", round))
        self.live_items: dict[int, tuple[QGraphicsRectItem, QGraphicsSimpleTextItem]] = {}
        self.expanded: set[int] = set()  # rounds whose pruned candidates are shown
        self.layout: Layout | None = None  # type: ignore[assignment]  # shadows QWidget.layout(), unused here; tests read it
        self._per_line: tuple[Any, int] = (None, 6)
        self.builds = 0  # items created, for tests and the GUI bench: a redraw reuses what exists
        self._auto_fit = True
        self._focus: int | None = None  # the chosen node, kept in view when the trace is wide
        self._last: tuple[Trace, str, dict[int, str] | None, dict[int, str] | None] | None = None

    def reset(self) -> None:
        self.scene().clear()
        self.items_by_node, self.stubs, self.edges, self.live_items, self.bands = {}, {}, {}, {}, {}
        self.expanded = set()
        self._last = None
        self._auto_fit = True

    def per_line(self, trace: Trace | None = None, strategy: str = "") -> int:
        """Cards a search's row holds before it wraps: what draws the whole search largest in this
        view (asked again when the view is resized or the trace grows a round)."""
        vw, vh = max(self.viewport().width() - 20, 100), max(self.viewport().height() - 20, 100)
        if trace is None or drawn_as(strategy) != "tree":
            return max(4, int(vw // (CARD_W + CARD_GAP)))
        from gui.tree_layout import fitting_per_line

        pruned = sum(1 for n in trace.nodes.values() if n.pruned_at is not None)
        key = (len(trace.nodes), pruned, frozenset(self.expanded), vw, vh)
        if self._per_line[0] != key:
            self._per_line = (key, fitting_per_line(trace, self.expanded, vw, vh))
        return self._per_line[1]

    def toggle_round(self, rnd: int) -> None:
        self.expanded ^= {rnd}
        if self._last is not None:
            self.show_trace(*self._last)

    def show_trace(
        self,
        trace: Trace,
        strategy: str,
        live: dict[int, str] | None = None,
        notes: dict[int, str] | None = None,
    ) -> None:
        """Bring the scene up to date with the trace (live: text still streaming for nodes not yet
        added; notes: what cards say beside their score, else :func:`tree_notes`). Items that exist
        are moved and restyled only when they changed."""
        self._last = (trace, strategy, live, notes)
        scene = self.scene()
        lay = layout(trace, strategy, self.expanded, self.per_line(trace, strategy))
        self.layout = lay
        chosen = trace.chosen(answer_is_path(strategy))
        self._focus = trace.selected.node_id if chosen and trace.selected is not None else None
        if notes is None:
            notes = tree_notes(trace, answers=lay.size[0] >= NODE_W) if lay.joined else {}
        w, h = lay.size
        for nid in [i for i in self.items_by_node if i not in lay.pos]:  # collapsed since
            scene.removeItem(self.items_by_node.pop(nid).item)
        for nid, (x, y) in lay.pos.items():
            n = trace.nodes[nid]
            item = self.items_by_node.get(nid)
            if item is None or item.rect().width() != w:
                if item is not None:
                    scene.removeItem(item.item)
                item = NodeItem(self, nid, lay.size)
                scene.addItem(item.item)
                self.items_by_node[nid] = item
                self.builds += 1
            item.set_look(
                n.text,
                n.score,
                n.pruned_at is not None,
                nid in chosen,
                notes.get(nid, ""),
                n.answer if n.finish_reason is not None else None,
            )
            if item.pos().x() != x or item.pos().y() != y:
                item.setPos(x, y)
        # stubs
        for rnd in [r for r in self.stubs if r not in lay.stubs]:
            scene.removeItem(self.stubs.pop(rnd).item)
        for rnd, stub in lay.stubs.items():
            s_item = self.stubs.get(rnd)
            if s_item is None:
                s_item = StubItem(self, rnd)
                scene.addItem(s_item.item)
                self.stubs[rnd] = s_item
                self.builds += 1
            s_item.set_look(stub)
            s_item.setPos(*stub.pos)
        self._sync_rounds(lay)
        self._sync_edges(trace, lay, chosen)
        self._sync_live(lay, live or {}, trace)
        rect = scene.itemsBoundingRect().adjusted(-10, -10, 10, 10)
        if rect != scene.sceneRect():
            scene.setSceneRect(rect)
        if self._auto_fit:
            self.fit()

    def _sync_edges(self, trace: Trace, lay: Layout, chosen: set[int]) -> None:
        want: dict[tuple[int, Any], tuple[float, float, float, float, str, float]] = {}
        most = max((n.visits or 0 for n in trace.nodes.values()), default=0)  # MCTS: edges by visits
        if lay.joined:
            w, h = lay.size
            for nid, (x, y) in lay.pos.items():
                p = trace.nodes[nid].parent_id
                if p is None or p not in lay.pos:
                    continue
                px, py = lay.pos[p]
                style = (
                    "chosen"
                    if nid in chosen and p in chosen
                    else "pruned"
                    if trace.nodes[nid].pruned_at is not None
                    else "kept"
                )
                want[(p, nid)] = (
                    px + w / 2,
                    py + h,
                    x + w / 2,
                    y,
                    style,
                    _visit_width(trace.nodes[nid].visits, most),
                )
        scene = self.scene()
        for k in [k for k in self.edges if k not in want]:
            scene.removeItem(self.edges.pop(k))
        grey = QColor("#9a9a9a")
        for k, (x1, y1, x2, y2, style, weight) in want.items():
            line = self.edges.get(k)
            if line is None:
                line = scene.addLine(x1, y1, x2, y2)
                line.setZValue(-1)
                self.edges[k] = line
            elif (
                line.line().x1() != x1
                or line.line().y1() != y1
                or line.line().x2() != x2
                or line.line().y2() != y2
            ):
                line.setLine(x1, y1, x2, y2)
            if line.data(1) != (style, weight):
                line.setData(1, (style, weight))
                if style == "chosen":
                    line.setPen(QPen(QColor(colours()["chosen"]), max(3.5, weight)))
                    line.setZValue(0)
                else:
                    line.setPen(
                        QPen(
                            grey, weight, Qt.PenStyle.DashLine if style == "pruned" else Qt.PenStyle.SolidLine
                        ),
                    )
                    line.setZValue(-1)
                line.setOpacity(0.45 if style == "pruned" else 1.0)

    def _sync_rounds(self, lay: Layout) -> None:
        """A faint band behind each round of a search, its number at the left: where one round
        ends and the next begins when rows wrap."""
        scene = self.scene()
        for rnd in [r for r in self.bands if r not in lay.rounds]:
            scene.removeItem(self.bands.pop(rnd))
        if not lay.rounds:
            return
        xs = [x for x, _ in lay.pos.values()] + [st.pos[0] for st in lay.stubs.values()]
        x0 = min(xs) - 30
        x1 = max(
            [x + lay.size[0] for x, _ in lay.pos.values()] + [st.pos[0] + STUB_W for st in lay.stubs.values()]
        )
        for rnd, (top, bottom) in lay.rounds.items():
            band = self.bands.get(rnd)
            if band is None:
                band = QGraphicsRectItem()
                band.setPen(QPen(Qt.PenStyle.NoPen))
                band.setBrush(QBrush(QColor(128, 128, 128, 26 if rnd % 2 == 0 else 10)))
                band.setZValue(-3)
                label = QGraphicsSimpleTextItem(str(rnd + 1), band)
                label.setFont(_font(bold=True))
                label.setBrush(QBrush(QColor("#888")))
                label.setToolTip(f"round {rnd + 1}")
                scene.addItem(band)
                self.bands[rnd] = band
            rect = (x0, top - 4, x1 - x0 + 6, bottom - top + 8)
            if band.rect().getRect() != rect:
                band.setRect(*rect)
                band.childItems()[0].setPos(x0 + 6, top + 2)

    def _sync_live(self, lay: Layout, live: dict[int, str], trace: Trace) -> None:
        """Nodes still generating: dashed cards in a row below what exists, their text as it streams."""
        scene = self.scene()
        streaming = {nid: t for nid, t in live.items() if nid not in trace.nodes}
        for nid in [i for i in self.live_items if i not in streaming]:
            rect, _ = self.live_items.pop(nid)
            scene.removeItem(rect)
        if not streaming:
            return
        w, h = lay.size
        y0 = max(
            (y for _, y in [*lay.pos.values(), *(s.pos for s in lay.stubs.values())]), default=-h - GAP_Y
        )
        y0 += h + GAP_Y
        per = max(1, self.per_line()) if lay.joined else 1
        for k, (nid, text) in enumerate(sorted(streaming.items())):
            got = self.live_items.get(nid)
            if got is None:
                rect = scene.addRect(0, 0, w, h, QPen(QColor("#888"), 1, Qt.PenStyle.DashLine))
                label = QGraphicsSimpleTextItem("", rect)
                label.setFont(_font())
                label.setPos(5, 5)
                rect.setToolTip("still generating")
                self.live_items[nid] = got = (rect, label)
                self.builds += 1
            rect, label = got
            x0 = -(min(len(streaming), per) * (w + GAP_X) - GAP_X) / 2 if lay.joined else 0.0
            rect.setPos(x0 + (k % per) * (w + GAP_X), y0 + (k // per) * (h + GAP_X))
            label.setText(elide(text[-200:], 17 if w < NODE_W else 34, 2))

    def fit(self) -> None:
        rect = self.scene().sceneRect()
        if rect.isEmpty():
            return
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        # Never blow small traces up beyond 1:1 (text stays crisp), nor shrink them below 0.6 (text
        # stays legible; a longer trace scrolls and pans instead).
        k = self.transform().m11()
        if k > 1.0 or k < MIN_FIT_SCALE:
            self.resetTransform()
            if k < MIN_FIT_SCALE:
                self.scale(MIN_FIT_SCALE, MIN_FIT_SCALE)
            # Too big to fit legibly: start at the top, over the chosen path if there is one.
            focus = self.items_by_node.get(self._focus) if self._focus is not None else None
            x = focus.sceneBoundingRect().center().x() if focus is not None else rect.center().x()
            self.centerOn(x, rect.top() + self.viewport().height() / (2 * MIN_FIT_SCALE))

    def _hit(self, event: Any) -> Any:
        """("node", id) or ("stub", round) of the card under the mouse (edges may lie over it)."""
        for hit in self.items(event.position().toPoint()):
            what = hit.topLevelItem().data(0)
            if isinstance(what, tuple):
                return what
        return None

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        """A click on a card shows its node; on a stub, shows or hides the round's pruned cards."""
        what = self._hit(event)
        if isinstance(what, tuple) and what[0] == "stub":
            self.toggle_round(what[1])
            event.accept()
            return
        if isinstance(what, tuple) and what[0] == "node":
            self.node_clicked.emit(what[1])
        super().mousePressEvent(event)

    def wheelEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._auto_fit = False
        factor = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
        self.scale(factor, factor)

    def mouseDoubleClickEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        what = self._hit(event)
        if isinstance(what, tuple) and what[0] == "stub":  # a second quick click on a stub: a click
            self.toggle_round(what[1])
            event.accept()
            return
        self._auto_fit = True
        self.fit()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self._last is not None and drawn_as(self._last[1]) == "tree":
            self.show_trace(*self._last)  # rows wrap at the new width
            return
        if self._auto_fit:
            self.fit()


def _visit_width(visits: int | None, most: int) -> float:
    """An edge's pen width: 1.2, or for a search that counts visits (MCTS) from 1.2 to 6 by the
    square root of its child's share of the most visits any node has (``most``)."""
    if not visits or not most:
        return 1.2
    return round(1.2 + 4.8 * (visits / most) ** 0.5, 1)
