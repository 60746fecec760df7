"""A run's trace drawn as a graph (QGraphicsView), fed only by :class:`engine.events.Trace`.

As in Qt's elasticnodes example and Orange's tree viewer, nodes are QGraphicsItems and the layout is
computed outside them (:func:`layout`): a tidy tree for beam search, DVTS and revision chains
(parents centred over their children), a ranked column for best-of-N. Every node is tinted by its
PRM score on the app's one colour scale (red 0, amber 0.5, green 1; grey unscored), pruned nodes
are faded and the chosen path is outlined. Wheel zooms, dragging pans, a double click fits the view.
"""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont, QPainter, QPen
from PySide6.QtWidgets import (
    QGraphicsItem,
    QGraphicsRectItem,
    QGraphicsScene,
    QGraphicsSimpleTextItem,
    QGraphicsView,
)

from engine.events import Trace
from engine.report import GREY, GREY_STRONG, score_hsl
from gui.theme import colours

NODE_W, NODE_H = 190.0, 54.0
GAP_X, GAP_Y = 14.0, 30.0


def drawn_as_tree(strategy: str) -> bool:
    """Trees (steps) and chains (attempts, segments) are drawn joined; the rest as a ranked column."""
    from engine.search.registry import find

    s = find(strategy)
    return s is not None and s.drawn_as in ("tree", "chain")


MIN_FIT_SCALE = 0.5


def score_qcolor(score: float | None, strong: bool = False) -> QColor:
    """The app's one score scale (:func:`engine.report.score_hsl`) as a QColor."""
    if score is None:
        return QColor(GREY_STRONG if strong else GREY)
    h, sat, light = score_hsl(score, strong)
    return QColor.fromHslF(h / 360.0, sat, light)


def layout(trace: Trace, strategy: str) -> dict[int, tuple[float, float]]:
    """Top-left corner of every node. Pure: no Qt items are touched."""
    pos: dict[int, tuple[float, float]] = {}
    if not drawn_as_tree(strategy):  # best-of-N: one ranked column
        ranked = sorted(trace.roots, key=lambda i: -(trace.nodes[i].score or 0.0))
        for row, nid in enumerate(ranked):
            pos[nid] = (0.0, row * (NODE_H + GAP_Y / 2))
        return pos
    slot = [0.0]

    def place(nid: int, depth: int) -> float:
        kids = trace.nodes[nid].children
        if kids:
            xs = [place(k, depth + 1) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        else:
            x = slot[0]
            slot[0] += NODE_W + GAP_X
        pos[nid] = (x, depth * (NODE_H + GAP_Y))
        return x

    for r in trace.roots:
        place(r, 0)
    return pos


class NodeItem(QGraphicsRectItem):
    def __init__(
        self,
        view: TraceView,
        nid: int,
        text: str,
        score: float | None,
        pruned: bool,
        chosen: bool,
        note: str = "",
    ):
        super().__init__(0, 0, NODE_W, NODE_H)
        self.view = view
        self.nid = nid
        self.setBrush(QBrush(score_qcolor(score)))
        pen = QPen(
            QColor(colours()["chosen"]) if chosen else score_qcolor(score, strong=True), 3 if chosen else 1.2
        )
        self.setPen(pen)
        if pruned:
            self.setOpacity(0.35)
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIsSelectable, True)
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        label = f"#{nid}" + (f"  {score:.2f}" if score is not None else "") + (f"  {note}" if note else "")
        head = QGraphicsSimpleTextItem(label, self)
        f = QFont()
        f.setPointSizeF(7.5)
        f.setBold(True)
        head.setFont(f)
        head.setBrush(QBrush(QColor("#222")))
        head.setPos(5, 3)
        body = QGraphicsSimpleTextItem(_elide(text), self)
        f2 = QFont()
        f2.setPointSizeF(7.5)
        body.setFont(f2)
        body.setBrush(QBrush(QColor("#222")))
        body.setPos(5, 18)
        self.setToolTip(text[:600])

    def mousePressEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.view.node_clicked.emit(self.nid)
        super().mousePressEvent(event)


def card_notes(trace: Trace) -> dict[int, str]:
    """A best-of-N card's answer and its votes (candidates with an equivalent answer): "→ 18 ×3"."""
    from engine.answers import group_answers

    ids = [i for i in trace.roots if trace.nodes[i].answer is not None]
    groups = group_answers([trace.nodes[i].answer for i in ids])
    votes = {g: groups.count(g) for g in set(groups)}
    return {i: f"→ {trace.nodes[i].answer[:12]} ×{votes[g]}" for i, g in zip(ids, groups, strict=True)}


def tree_notes(trace: Trace) -> dict[int, str]:
    """What a step card says beside its score: a particle's weight and copies when it was resampled
    ("w .42 ×3"; ×0: it died), a forced continuation ("Wait") or answer, and an ended node's answer."""
    out = {}
    wait = str((trace.started.params if trace.started else {}).get("wait") or "Wait")
    for nid, n in trace.nodes.items():
        bits = []
        if n.weight is not None:
            bits.append(f"w {n.weight:.2f} ×{n.copies}")
        if n.role == "continuation":  # made to go on ("Wait"), or cut short and going on
            bits.append(f"“{wait}”" if n.text.lstrip().startswith(wait) else "continued")
        elif n.role == "answer":
            bits.append("forced answer")
        if n.answer is not None and n.finish_reason is not None:
            bits.append(f"→ {n.answer[:10]}")
        if bits:
            out[nid] = " · ".join(bits)
    return out


def _elide(text: str, width: int = 34, lines: int = 2) -> str:
    words = " ".join(text.split())
    out = [words[i : i + width] for i in range(0, min(len(words), width * lines), width)]
    if len(words) > width * lines:
        out[-1] = out[-1][:-1] + "…"
    return "\n".join(out) or "…"


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
        self._auto_fit = True
        self._focus: int | None = None  # the chosen node, kept in view when the tree is wide

    def show_trace(self, trace: Trace, strategy: str, live: dict[int, str] | None = None) -> None:
        """Redraw from the trace (live: text still streaming for nodes not yet added)."""
        scene = self.scene()
        scene.clear()
        self.items_by_node = {}
        pos = layout(trace, strategy)
        tree = drawn_as_tree(strategy)
        chosen = trace.chosen()
        self._focus = trace.selected.node_id if chosen and trace.selected is not None else None
        edge_pen = QPen(QColor("#9a9a9a"), 1.2)
        for nid, (x, y) in pos.items():
            n = trace.nodes[nid]
            if n.parent_id is not None and n.parent_id in pos and tree:
                px, py = pos[n.parent_id]
                line = scene.addLine(px + NODE_W / 2, py + NODE_H, x + NODE_W / 2, y, edge_pen)
                line.setZValue(-1)
                if n.pruned_at is not None:
                    line.setOpacity(0.35)
        notes = card_notes(trace) if not tree else tree_notes(trace)
        for nid, (x, y) in pos.items():
            n = trace.nodes[nid]
            item = NodeItem(
                self, nid, n.text, n.score, n.pruned_at is not None, nid in chosen, notes.get(nid, "")
            )
            item.setPos(x, y)
            scene.addItem(item)
            self.items_by_node[nid] = item
        if live:  # streaming nodes, drawn below what exists
            y0 = (max((y for _, y in pos.values()), default=-NODE_H - GAP_Y)) + NODE_H + GAP_Y
            for k, (nid, text) in enumerate(sorted(live.items())):
                if nid in trace.nodes:
                    continue
                r = scene.addRect(0, 0, NODE_W, NODE_H, QPen(QColor("#888"), 1, Qt.PenStyle.DashLine))
                r.setPos(k * (NODE_W + GAP_X), y0)
                t = scene.addSimpleText(_elide(text))
                f = QFont()
                f.setPointSizeF(7.5)
                t.setFont(f)
                t.setPos(k * (NODE_W + GAP_X) + 5, y0 + 18)
                r.setToolTip("still generating")
        scene.setSceneRect(scene.itemsBoundingRect().adjusted(-10, -10, 10, 10))
        if self._auto_fit:
            self.fit()

    def fit(self) -> None:
        rect = self.scene().sceneRect()
        if rect.isEmpty():
            return
        self.fitInView(rect, Qt.AspectRatioMode.KeepAspectRatio)
        # Never blow small traces up beyond 1:1 (text stays crisp), nor shrink them below 0.6 (text
        # stays legible; a wider tree scrolls and pans instead).
        k = self.transform().m11()
        if k > 1.0 or k < MIN_FIT_SCALE:
            self.resetTransform()
            if k < MIN_FIT_SCALE:
                self.scale(MIN_FIT_SCALE, MIN_FIT_SCALE)
            # Too wide to fit legibly: start at the top, over the chosen path if there is one.
            focus = self.items_by_node.get(self._focus) if self._focus is not None else None
            x = focus.sceneBoundingRect().center().x() if focus is not None else rect.left()
            self.centerOn(x, rect.top() + self.viewport().height() / (2 * MIN_FIT_SCALE))

    def wheelEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._auto_fit = False
        factor = 1.15 if event.angleDelta().y() > 0 else 1 / 1.15
        self.scale(factor, factor)

    def mouseDoubleClickEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._auto_fit = True
        self.fit()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self._auto_fit:
            self.fit()
