"""The sweep charts in the app: the very images ``ponder sweep`` writes (``engine.plots``, matplotlib's
Agg backend), shown scaled to the widget. The chart is drawn when the summary changes, not on every
paint; resizing rescales the image."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QDialog, QSizePolicy, QSplitter, QTextBrowser, QVBoxLayout, QWidget

from engine.plots import CHARTS, png_bytes


class FigureView(QWidget):
    """A chart of ``engine.plots`` (``make(data)`` gives the figure), drawn once per data and shown
    scaled to the widget."""

    empty_text = "Nothing to draw yet."

    def __init__(self, make: Callable[[dict[str, Any]], Any], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.make = make
        self.data: dict[str, Any] | None = None
        self.pixmap = QPixmap()
        self.setMinimumSize(480, 300)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def drawable(self, data: dict[str, Any]) -> bool:
        return True

    def set_data(self, data: dict[str, Any] | None) -> None:
        self.data = data
        self.pixmap = QPixmap()
        if data is not None and self.drawable(data):
            self.pixmap.loadFromData(png_bytes(self.make(data), dpi=110), "PNG")
        self.update()

    def paintEvent(self, _ev: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("white"))
        if self.pixmap.isNull():
            p.setPen(QColor("#666666"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.empty_text)
        else:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            img = self.pixmap.scaled(
                self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            p.drawPixmap((self.width() - img.width()) // 2, (self.height() - img.height()) // 2, img)
        p.end()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(800, 500)


class SweepChart(FigureView):
    """One of the sweep charts (``accuracy_vs_budget`` or ``by_difficulty``), from a summary."""

    empty_text = "No finished problems in this sweep yet."

    def __init__(self, kind: str, parent: QWidget | None = None) -> None:
        self.kind = kind.removesuffix(".png")
        super().__init__(CHARTS[self.kind], parent)

    @property
    def summary(self) -> dict[str, Any] | None:
        return self.data

    def drawable(self, data: dict[str, Any]) -> bool:
        return bool(data["problems"]["complete"])

    def set_summary(self, summary: dict[str, Any] | None) -> None:
        self.set_data(summary)


class ExchangeView(QDialog):
    """A two-model exchange report (``ponder sweep --models``'s exchange.json): its chart and table."""

    def __init__(self, report: dict[str, Any], parent: QWidget | None = None) -> None:
        from engine.exchange import exchange_markdown
        from engine.plots import exchange

        super().__init__(parent)
        self.setWindowTitle(f"Test-time compute against parameters: {report['small']['label']} vs "
                            f"{report['large']['label']}")  # fmt: skip
        self.chart = FigureView(exchange, self)
        self.chart.empty_text = "No problem finished on both models."
        self.chart.set_data(report)
        self.text = QTextBrowser(self)
        self.text.setMarkdown(exchange_markdown(report))
        split = QSplitter(Qt.Orientation.Vertical, self)
        split.addWidget(self.chart)
        split.addWidget(self.text)
        split.setSizes([520, 360])
        lay = QVBoxLayout(self)
        lay.addWidget(split)
        self.resize(1400, 900)
