"""The sweep charts in the app: the charts ``ponder sweep`` writes (``engine.sweeps.plots``, matplotlib's
Agg backend), drawn for the widget's own size and shape — off the GUI thread, when the data changes
and a moment after the widget is resized (meanwhile the last image is shown scaled)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from PySide6.QtCore import QSize, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QDialog, QSizePolicy, QSplitter, QTextBrowser, QVBoxLayout, QWidget

from engine.sweeps.plots import CHARTS, png_bytes
from engine.sweeps.summary import Summary

if TYPE_CHECKING:  # matplotlib loads where a chart is drawn
    from matplotlib.figure import Figure

D = TypeVar("D")  # what a chart is drawn from: a sweep's summary, an exchange report


class FigureView(QWidget, Generic[D]):
    """A chart of ``engine.sweeps.plots`` (``make(data)`` gives the figure), drawn off the GUI thread at the
    widget's size whenever the data or the size changes."""

    empty_text = "Nothing to draw yet."
    rendered = Signal()  # a new image is shown
    _done = Signal(int, bytes)
    DPI = 100
    _pool: ThreadPoolExecutor | None = None  # one drawing thread for all charts

    def __init__(self, make: Callable[[D], Figure], parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.make = make
        self.data: D | None = None
        self.pixmap = QPixmap()
        self.pending = 0  # drawings asked for and not back yet
        self._gen = 0
        self._done.connect(self._show)
        self._resize_timer = QTimer(self, singleShot=True, interval=150)
        self._resize_timer.timeout.connect(self._render)
        self.setMinimumSize(480, 300)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)

    def drawable(self, data: D) -> bool:
        return True

    def set_data(self, data: D | None) -> None:
        self.data = data
        self._render()

    def _render(self) -> None:
        self._gen += 1
        gen, data, make, dpi = self._gen, self.data, self.make, self.DPI
        if data is None or not self.drawable(data):
            self.pixmap = QPixmap()
            self.update()
            return
        w, h = max(self.width(), self.minimumWidth()), max(self.height(), self.minimumHeight())

        def draw() -> bytes:
            fig = make(data)
            fig.set_size_inches(w / dpi, h / dpi)  # the widget's shape: its labels at their own size
            return png_bytes(fig, dpi=dpi)

        def back(fut: Any) -> None:
            try:
                self._done.emit(gen, fut.result() if fut.exception() is None else b"")
            except RuntimeError:  # the widget is gone
                pass

        if FigureView._pool is None:
            FigureView._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ponder-charts")
        self.pending += 1
        FigureView._pool.submit(draw).add_done_callback(back)

    def _show(self, gen: int, png: bytes) -> None:
        self.pending -= 1
        if gen != self._gen:
            return  # a newer drawing is on its way
        pixmap = QPixmap()
        if png:
            pixmap.loadFromData(png, "PNG")
        self.pixmap = pixmap
        self.update()
        self.rendered.emit()

    def resizeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().resizeEvent(event)
        if self.data is not None:
            self._resize_timer.start()

    def paintEvent(self, _ev: Any) -> None:  # noqa: N802 - Qt's name
        p = QPainter(self)
        p.fillRect(self.rect(), QColor("white"))
        if self.pixmap.isNull():
            p.setPen(QColor("#666666"))
            p.drawText(
                self.rect(), Qt.AlignmentFlag.AlignCenter, "drawing…" if self.pending else self.empty_text
            )
        else:
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
            img = self.pixmap.scaled(
                self.size(), Qt.AspectRatioMode.KeepAspectRatio, Qt.TransformationMode.SmoothTransformation
            )
            p.drawPixmap((self.width() - img.width()) // 2, (self.height() - img.height()) // 2, img)
        p.end()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(800, 500)


class SweepChart(FigureView[Summary]):
    """One of the sweep charts (``accuracy_vs_budget`` or ``by_difficulty``), from a summary."""

    empty_text = "No finished problems in this sweep yet."

    def __init__(self, kind: str, parent: QWidget | None = None) -> None:
        self.kind = kind.removesuffix(".png")
        super().__init__(CHARTS[self.kind], parent)

    @property
    def summary(self) -> Summary | None:
        return self.data

    def drawable(self, data: Summary) -> bool:
        return bool(data["problems"]["complete"])

    def set_summary(self, summary: Summary | None) -> None:
        self.set_data(summary)


class ExchangeView(QDialog):
    """A two-model exchange report (``ponder sweep --models``'s exchange.json): its chart and table."""

    def __init__(self, report: dict[str, Any], parent: QWidget | None = None) -> None:
        from engine.sweeps.exchange import exchange_markdown
        from engine.sweeps.plots import exchange

        super().__init__(parent)
        self.setWindowTitle(f"Test-time compute against parameters: {report['small']['label']} vs "
                            f"{report['large']['label']}")  # fmt: skip
        self.chart: FigureView[dict[str, Any]] = FigureView(exchange, self)
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
