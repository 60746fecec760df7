"""Ponder's main window (the first cut: model bar, prompt, N samples side by side, live).

The search panels (best-of-N, beam tree, revisions) come with the GUI issue; this window already
shows the architecture they plug into: the engine runs in its own thread behind
:class:`gui.bridge.EngineBridge`, the window only reacts to signals.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from PySide6.QtCore import Qt
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from engine.backend import BackendConfig
from engine.errors import PonderError
from engine.gguf_info import human_params, human_size, read_gguf
from engine.models import default_model_path
from engine.sampling import SamplingParams
from gui.bridge import EngineBridge

DEFAULT_PROBLEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)


class SamplePanel(QFrame):
    """One sample: a header and its text, filled as tokens arrive."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.setObjectName("samplePanel")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(8, 6, 8, 8)
        self.header = QLabel(f"Sample {index + 1}")
        self.header.setObjectName("sampleHeader")
        self.body = QPlainTextEdit()
        self.body.setReadOnly(True)
        self.body.setMinimumHeight(160)
        self.footer = QLabel("waiting…")
        self.footer.setObjectName("sampleFooter")
        lay.addWidget(self.header)
        lay.addWidget(self.body, 1)
        lay.addWidget(self.footer)

    def set_text(self, text: str) -> None:
        if text != self.body.toPlainText():
            self.body.setPlainText(text)
            self.body.verticalScrollBar().setValue(self.body.verticalScrollBar().maximum())


class MainWindow(QMainWindow):
    def __init__(self, model_path: str | None = None, n_gpu_layers: int = 0) -> None:
        super().__init__()
        self.setWindowTitle("Ponder")
        self.resize(1200, 760)
        self.bridge: EngineBridge | None = None
        self.panels: list[SamplePanel] = []

        central = QWidget()
        root = QVBoxLayout(central)
        root.setContentsMargins(12, 10, 12, 10)
        root.setSpacing(8)

        # Model bar
        self.model_label = QLabel()
        self.model_label.setObjectName("modelLabel")
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        root.addWidget(self.model_label)

        # Problem bar
        self.prompt = QPlainTextEdit(DEFAULT_PROBLEM)
        self.prompt.setMaximumHeight(90)
        self.prompt.setPlaceholderText("Type a problem…")
        root.addWidget(self.prompt)

        controls = QHBoxLayout()
        controls.addWidget(QLabel("Samples"))
        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, 16)
        self.n_spin.setValue(4)
        controls.addWidget(self.n_spin)
        controls.addWidget(QLabel("Max tokens"))
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(8, 2048)
        self.tokens_spin.setValue(256)
        controls.addWidget(self.tokens_spin)
        controls.addWidget(QLabel("Seed"))
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2_000_000_000)
        controls.addWidget(self.seed_spin)
        controls.addStretch(1)
        self.run_button = QPushButton("Run  (Ctrl+Enter)")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel  (Esc)")
        self.cancel_button.setEnabled(False)
        controls.addWidget(self.run_button)
        controls.addWidget(self.cancel_button)
        root.addLayout(controls)

        # Samples, side by side
        self.grid_host = QWidget()
        self.grid = QGridLayout(self.grid_host)
        self.grid.setContentsMargins(0, 0, 0, 0)
        self.grid.setSpacing(8)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.grid_host)
        scroll.setFrameShape(QFrame.Shape.NoFrame)
        root.addWidget(scroll, 1)

        self.setCentralWidget(central)
        self.status = self.statusBar()

        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.start)
        QShortcut(QKeySequence("Ctrl+Enter"), self, activated=self.start)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self.cancel)

        self._set_model(model_path, n_gpu_layers)

    # --- model --------------------------------------------------------------------------------------

    def _set_model(self, model_path: str | None, n_gpu_layers: int) -> None:
        try:
            path = str(model_path or default_model_path())
            info = read_gguf(path)  # header only: the window opens at once, weights load on Run
        except PonderError as e:
            self.model_label.setText(f"<b>No usable model</b>: {e}")
            self.run_button.setEnabled(False)
            self.status.showMessage("Pick a model with --model PATH")
            return
        self.model_label.setText(
            f"<b>{info.name}</b> &nbsp; {info.architecture} · {human_params(info.n_params)} parameters · "
            f"{info.quantization} · {human_size(info.file_size)} · "
            f"context {info.context_length or '?'} &nbsp; <span style='color:gray'>{info.path}</span>"
        )
        self.bridge = EngineBridge(path, BackendConfig(n_ctx=4096, n_seq_max=32, n_gpu_layers=n_gpu_layers))
        self.bridge.loaded.connect(self._on_loaded)
        self.bridge.progress.connect(self._on_progress)
        self.bridge.finished.connect(self._on_finished)
        self.bridge.failed.connect(self._on_failed)
        self.status.showMessage("Ready. The model loads on the first run.")

    def _on_loaded(self, info: dict[str, Any]) -> None:
        self.status.showMessage(
            f"Loaded {info['name']} on {info['accelerator']} ({info['n_layers_offloaded']} layers offloaded)"
        )

    # --- running ------------------------------------------------------------------------------------

    def start(self) -> None:
        if self.bridge is None or self.bridge.busy:
            return
        text = self.prompt.toPlainText().strip()
        if not text:
            QMessageBox.information(self, "Ponder", "Type a problem first.")
            return
        n = self.n_spin.value()
        self._make_panels(n)
        params = SamplingParams(max_tokens=self.tokens_spin.value(), seed=self.seed_spin.value())
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.showMessage(f"Sampling {n} answers…")
        self.bridge.sample(text, n, params)

    def cancel(self) -> None:
        if self.bridge is not None and self.bridge.busy:
            self.bridge.cancel()
            self.status.showMessage("Cancelling…")

    def _make_panels(self, n: int) -> None:
        for p in self.panels:
            p.setParent(None)
            p.deleteLater()
        cols = min(n, 4)
        self.panels = [SamplePanel(i) for i in range(n)]
        for i, p in enumerate(self.panels):
            self.grid.addWidget(p, i // cols, i % cols)

    def _on_progress(self, updates: list, tokens: int) -> None:
        for idx, text in updates:
            if 0 <= idx < len(self.panels):
                self.panels[idx].set_text(text)
                self.panels[idx].footer.setText("generating…")
        self.status.showMessage(f"{tokens} tokens generated")

    def _on_finished(self, samples: list, seconds: float) -> None:
        total = 0
        for p, s in zip(self.panels, samples, strict=False):
            p.set_text(s["text"])
            p.footer.setText(f"{s['tokens']} tokens · {s['finish_reason']} · seed {s['seed']}")
            total += s["tokens"]
        rate = total / seconds if seconds > 0 else 0.0
        self.status.showMessage(f"Done: {total} tokens in {seconds:.1f} s ({rate:.0f} tokens/s)")
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _on_failed(self, message: str) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.showMessage("Failed")
        QMessageBox.warning(self, "Ponder", message)

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        if self.bridge is not None:
            self.bridge.shutdown()
        super().closeEvent(event)


STYLE = """
#modelLabel { padding: 4px 2px; }
#sampleHeader { font-weight: 600; }
#sampleFooter { color: palette(mid); }
"""


def run(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(prog="ponder", add_help=False)
    ap.add_argument("--model")
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    args, _rest = ap.parse_known_args(list(argv))
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("Ponder")
    app.setStyleSheet(STYLE)
    win = MainWindow(args.model, args.n_gpu_layers)
    win.show()
    return app.exec()
