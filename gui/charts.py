"""Sweep charts drawn with QPainter: accuracy against budget, and the same split by difficulty.

One painter function per chart serves both the PNG files ``ponder sweep`` writes (on a QImage) and
the app's Sweeps tab (in a widget's paintEvent), so the two always look alike. The charts read a
sweep summary (``engine.sweep.analyse``); they draw on their own white card in any theme.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from PySide6.QtCore import QPointF, QRectF, QSize, Qt
from PySide6.QtGui import QColor, QFont, QFontMetricsF, QGuiApplication, QImage, QPainter, QPainterPath, QPen
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.search import registry

# Colour-blind-safe (Okabe-Ito), one per strategy; selections differ by dash.
COMPUTE_OPTIMAL = QColor("#222222")


def strategy_colour(name: str) -> QColor:
    s = registry.find(name)
    return QColor(s.colour) if s is not None else QColor("#222222")


INK = QColor("#222222")
GRID = QColor("#dddddd")
MUTED = QColor("#666666")


def _series(summary: dict[str, Any], acc: dict[str, Any], with_extras: bool) -> list[dict[str, Any]]:
    """The lines to draw: each strategy with weighted selection; best-of-N by majority vote (no
    verifier) and the compute-optimal curve when ``with_extras``."""
    budgets = summary["spec"]["budgets"]
    out = []
    for s in acc:
        out.append(
            {
                "label": f"{registry.title(s)} (weighted)",
                "colour": strategy_colour(s),
                "dash": Qt.PenStyle.SolidLine,
                "width": 2.4,
                "points": [(b, acc[s]["weighted"][b]) for b in budgets],
            }
        )
    if with_extras and "best_of_n" in acc:
        out.append(
            {
                "label": "best-of-N (majority, no verifier)",
                "colour": strategy_colour("best_of_n"),
                "dash": Qt.PenStyle.DotLine,
                "width": 2.0,
                "points": [(b, acc["best_of_n"]["majority"][b]) for b in budgets],
            }
        )
    if with_extras:
        co = summary["compute_optimal"]
        out.append(
            {
                "label": "compute-optimal (best per difficulty bin, in-sample)",
                "colour": COMPUTE_OPTIMAL,
                "dash": Qt.PenStyle.DashLine,
                "width": 2.0,
                "points": [(b, co[b]) for b in budgets],
            }
        )
    if with_extras and "compute_optimal_held_out" in summary:
        ho = summary["compute_optimal_held_out"]
        out.append(
            {
                "label": "compute-optimal, held out (picked on the other half)",
                "colour": QColor("#888888"),
                "dash": Qt.PenStyle.DashDotLine,
                "width": 2.0,
                "points": [(b, ho[b]) for b in budgets],
            }
        )
    return out


def _nice_top(v: float) -> float:
    """The y-axis top: the smallest of 10%, 20%, 30%, 50%, 75%, 100% above the data."""
    for t in (0.1, 0.2, 0.3, 0.5, 0.75, 1.0):
        if v <= t + 1e-9:
            return t
    return 1.0


def _plot(
    p: QPainter,
    rect: QRectF,
    budgets: list[int],
    series: list[dict[str, Any]],
    top: float,
    title: str,
    font_px: float,
    y_label: bool = True,
    x_label: str = "generation budget N",
) -> QRectF:
    """Axes, grid, lines and markers in ``rect``; returns the data area."""
    f = QFont(p.font())
    f.setPixelSize(int(font_px))
    p.setFont(f)
    fm = QFontMetricsF(f)
    left = fm.horizontalAdvance("100%") + 10 if y_label else 8
    area = QRectF(rect.left() + left, rect.top() + fm.height() * 1.8, rect.width() - left - 12, 0)
    area.setBottom(rect.bottom() - fm.height() * 2.6)
    bold = QFont(f)
    bold.setBold(True)
    p.setFont(bold)
    p.setPen(INK)
    p.drawText(
        QRectF(rect.left(), rect.top(), rect.width(), fm.height() * 1.5),
        Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
        title,
    )
    p.setFont(f)
    steps = 5
    for k in range(steps + 1):
        y = area.bottom() - area.height() * k / steps
        p.setPen(QPen(GRID, 1))
        p.drawLine(QPointF(area.left(), y), QPointF(area.right(), y))
        if y_label:
            p.setPen(MUTED)
            p.drawText(
                QRectF(rect.left(), y - fm.height() / 2, left - 6, fm.height()),
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
                f"{100 * top * k / steps:.0f}%",
            )
    n = len(budgets)

    def x_of(b: int) -> float:  # budgets are evenly spaced (they are usually powers of two)
        i = budgets.index(b)
        return area.left() + (area.width() * (i + 0.5) / n)

    for b in budgets:
        x = x_of(b)
        p.setPen(QPen(GRID, 1))
        p.drawLine(QPointF(x, area.bottom()), QPointF(x, area.bottom() + 4))
        p.setPen(MUTED)
        p.drawText(
            QRectF(x - 40, area.bottom() + 4, 80, fm.height()),
            Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop,
            str(b),
        )
    p.drawText(
        QRectF(area.left(), area.bottom() + 4 + fm.height(), area.width(), fm.height() * 1.3),
        Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
        x_label,
    )
    p.setPen(QPen(INK, 1))
    p.drawLine(area.bottomLeft(), area.bottomRight())
    p.drawLine(area.bottomLeft(), area.topLeft())
    p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
    for j, s in enumerate(series):
        # lines that coincide (several strategies at 0%, say) are dodged a little so each shows
        dx = (j - (len(series) - 1) / 2) * 2.5
        pts = [
            QPointF(x_of(b) + dx, area.bottom() - area.height() * min(v, top) / top) for b, v in s["points"]
        ]
        pen = QPen(s["colour"], s["width"], s["dash"])
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        p.setPen(pen)
        path = QPainterPath(pts[0])
        for q in pts[1:]:
            path.lineTo(q)
        p.setBrush(Qt.BrushStyle.NoBrush)
        p.drawPath(path)
        p.setPen(QPen(s["colour"], 1.2))
        p.setBrush(QColor("white") if s["dash"] != Qt.PenStyle.SolidLine else s["colour"])
        for q in pts:
            p.drawEllipse(q, 3.6, 3.6)
    p.setBrush(Qt.BrushStyle.NoBrush)
    return area


def _legend(p: QPainter, x: float, y: float, series: list[dict[str, Any]], font_px: float) -> None:
    fm = QFontMetricsF(p.font())
    row = fm.height() * 1.35
    width = max(fm.horizontalAdvance(s["label"]) for s in series) + 44
    box = QRectF(x, y, width, row * len(series) + 8)
    p.setPen(QPen(GRID, 1))
    p.setBrush(QColor(255, 255, 255, 235))
    p.drawRoundedRect(box, 4, 4)
    for i, s in enumerate(series):
        cy = y + 4 + row * (i + 0.5)
        p.setPen(QPen(s["colour"], s["width"], s["dash"]))
        p.drawLine(QPointF(x + 8, cy), QPointF(x + 32, cy))
        p.setPen(INK)
        p.drawText(
            QRectF(x + 38, cy - row / 2, width - 40, row),
            Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
            s["label"],
        )
    p.setBrush(Qt.BrushStyle.NoBrush)


def _subtitle(summary: dict[str, Any]) -> str:
    sw, pr = summary["sweep"], summary["problems"]
    return (
        f"{sw['problem_set_name']}, {pr['complete']} problems · {sw['model_name']} · PRM {sw['prm']} · "
        f"{sw['max_tokens']} tokens max · seed {sw['seed']}"
    )


def _x_label(summary: dict[str, Any]) -> str:
    if summary["spec"].get("budget_kind") == "tokens":
        return "token budget T (generated tokens per strategy)"
    return "generation budget N"


def paint_accuracy_vs_budget(p: QPainter, rect: QRectF, summary: dict[str, Any]) -> None:
    p.fillRect(rect, QColor("white"))
    budgets = summary["spec"]["budgets"]
    series = _series(summary, summary["accuracy"], with_extras=True)
    top = _nice_top(max((v for s in series for _, v in s["points"]), default=0.0))
    font_px = max(11.0, rect.height() / 42)
    inner = rect.adjusted(16, 10, -16, -30)
    tokens = summary["spec"].get("budget_kind") == "tokens"
    area = _plot(
        p,
        inner,
        budgets,
        series,
        top,
        "Accuracy against token budget" if tokens else "Accuracy against generation budget",
        font_px,
        x_label=_x_label(summary),
    )
    p.setPen(MUTED)
    p.drawText(
        QRectF(rect.left(), rect.bottom() - 26, rect.width(), 22),
        Qt.AlignmentFlag.AlignHCenter,
        _subtitle(summary),
    )
    _legend(p, area.left() + 10, area.top() + 8, series, font_px)


def paint_by_difficulty(p: QPainter, rect: QRectF, summary: dict[str, Any]) -> None:
    p.fillRect(rect, QColor("white"))
    bins = summary["bins"]
    budgets = summary["spec"]["budgets"]
    font_px = max(10.0, min(rect.height() / 38, rect.width() / 95))
    f = QFont(p.font())
    f.setPixelSize(int(font_px))
    p.setFont(f)
    fm = QFontMetricsF(f)
    head = fm.height() * 2.2
    foot = fm.height() * 4.2
    diff = "pass@1" if summary["method"]["difficulty"] == "pass1" else "mean PRM score"
    bold = QFont(f)
    bold.setBold(True)
    bold.setPixelSize(int(font_px * 1.15))
    p.setFont(bold)
    p.setPen(INK)
    p.drawText(
        QRectF(rect.left(), rect.top() + 4, rect.width(), head),
        Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignVCenter,
        f"Accuracy by difficulty: {len(bins)} quantile bins of the model's own {diff} (1 = easiest)",
    )
    p.setFont(f)
    if not bins:
        p.drawText(rect, Qt.AlignmentFlag.AlignCenter, "No complete problems yet.")
        return
    w = (rect.width() - 24) / len(bins)
    for k, b in enumerate(bins):
        cell = QRectF(
            rect.left() + 12 + k * w, rect.top() + head + 4, w - 6, rect.height() - head - foot - 30
        )
        series = _series(summary, b["accuracy"], with_extras=False)
        lo, hi = b["difficulty_range"]
        rng = f"{lo:.2f}" if math.isclose(lo, hi) else f"{lo:.2f}-{hi:.2f}"
        _plot(
            p,
            cell,
            budgets,
            series,
            1.0,
            f"bin {b['bin']} · n={len(b['problems'])}",
            font_px,
            k == 0,
            _x_label(summary),
        )
        best = b["best"]
        lines = [f"{diff} {rng}"]
        if best["accuracy"] > 0:
            name = f"{registry.title(best['strategy'])} {best['selection']}"
            lines.append(f"best: {name} at N={best['budget']}: {100 * best['accuracy']:.0f}%")
        else:
            lines.append("nothing solved at these budgets")
        gains = [
            (n, c["gain"])
            for n, c in b["best_per_budget"].items()
            if c["gain"] is not None and c["gain"] > 1e-9
        ]
        if gains:
            n, g = max(gains, key=lambda t: t[1])
            lines.append(f"gain over best-of-N: +{100 * g:.0f} pts at N={n}")
        else:
            lines.append("no gain over best-of-N (weighted)")
        p.setPen(INK)
        for i, t in enumerate(lines):
            p.drawText(
                QRectF(
                    cell.left(), cell.bottom() + 4 + i * fm.height() * 1.2, cell.width(), fm.height() * 1.2
                ),
                Qt.AlignmentFlag.AlignHCenter,
                fm.elidedText(t, Qt.TextElideMode.ElideRight, cell.width()),
            )
    series = _series(summary, summary["accuracy"], with_extras=False)
    x = rect.left() + 12
    y = rect.bottom() - 24
    for s in series:
        p.setPen(QPen(s["colour"], s["width"], s["dash"]))
        p.drawLine(QPointF(x, y + 9), QPointF(x + 24, y + 9))
        p.setPen(INK)
        tw = fm.horizontalAdvance(s["label"])
        p.drawText(QRectF(x + 30, y, tw + 4, 20), Qt.AlignmentFlag.AlignVCenter, s["label"])
        x += tw + 60
    p.setPen(MUTED)
    room = rect.right() - x - 8
    p.drawText(
        QRectF(x, y, room, 20),
        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter,
        fm.elidedText(_subtitle(summary), Qt.TextElideMode.ElideRight, room),
    )


CHARTS = {
    "accuracy_vs_budget.png": (paint_accuracy_vs_budget, QSize(1000, 620)),
    "by_difficulty.png": (paint_by_difficulty, QSize(1600, 560)),
}


def write_sweep_charts(summary: dict[str, Any], folder: Path) -> list[Path]:
    """The two PNGs into ``folder``, drawn at 2x for sharp text (works offscreen)."""
    from PySide6.QtWidgets import QApplication

    if QGuiApplication.instance() is None:
        import os

        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
        _keep.append(QApplication([]))
    out = []
    for name, (paint, size) in CHARTS.items():
        img = QImage(size * 2, QImage.Format.Format_ARGB32)
        img.setDevicePixelRatio(2.0)
        img.fill(QColor("white"))
        p = QPainter(img)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        paint(p, QRectF(0, 0, size.width(), size.height()), summary)
        p.end()
        path = Path(folder) / name
        tmp = path.with_name(path.name + ".part.png")
        if not img.save(str(tmp), "PNG"):
            from engine.errors import PonderError

            raise PonderError(f"Cannot write {path}.")
        tmp.replace(path)
        out.append(path)
    return out


_keep: list[Any] = []  # the QApplication made for drawing, kept alive for the process


class SweepChart(QWidget):
    """One of the charts in a widget, redrawn from a summary."""

    def __init__(self, kind: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.paint_fn, self.base = CHARTS[kind]
        self.summary: dict[str, Any] | None = None
        self.setMinimumSize(480, 300)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_summary(self, summary: dict[str, Any] | None) -> None:
        self.summary = summary
        self.update()

    def paintEvent(self, _ev: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.TextAntialiasing, True)
        r = QRectF(self.rect())
        if self.summary is None or not self.summary["problems"]["complete"]:
            p.fillRect(r, QColor("white"))
            p.setPen(MUTED)
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "No finished problems in this sweep yet.")
        else:
            self.paint_fn(p, r, self.summary)
        p.end()

    def sizeHint(self) -> QSize:  # noqa: N802
        return self.base / 1.6
