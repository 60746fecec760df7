"""The sweep charts in the app: the very images ``ponder sweep`` writes (``engine.plots``, matplotlib's
Agg backend), shown scaled to the widget. The chart is drawn when the summary changes, not on every
paint; resizing rescales the image."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QSizePolicy, QWidget

from engine.plots import CHARTS, png_bytes


class SweepChart(QWidget):
    """One of the sweep charts (``accuracy_vs_budget`` or ``by_difficulty``), from a summary."""

    def __init__(self, kind: str, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.kind = kind.removesuffix(".png")
        self.make = CHARTS[self.kind]
        self.summary: dict[str, Any] | None = None
        self.pixmap = QPixmap()
        self.setMinimumSize(480, 300)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def set_summary(self, summary: dict[str, Any] | None) -> None:
        self.summary = summary
        self.pixmap = QPixmap()
        if summary is not None and summary["problems"]["complete"]:
            self.pixmap.loadFromData(png_bytes(self.make(summary), dpi=110), "PNG")
        self.update()

    def paintEvent(self, _ev: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("white"))
        if self.pixmap.isNull():
            p.setPen(QColor("#666666"))
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, "No finished problems in this sweep yet.")
        else:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            img = self.pixmap.scaled(
                self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            p.drawPixmap((self.width() - img.width()) // 2, (self.height() - img.height()) // 2, img)
        p.end()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(800, 500)
