"""Inference servers in the app: the "Server…" dialog that adds an endpoint, and the probe that
asks a server what it serves (health, models, slots) off the GUI thread.

Servers the user added are kept in QSettings as (URL, model) pairs, with the local tokenizer a server
needs (a gateway's); an API key is kept only in memory for the session (or read from
``PONDER_API_KEY``), never written to disk.
"""

from __future__ import annotations

import os
import threading
from typing import Any, Protocol

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import (
    QDialog,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
)

from engine.errors import PonderError


def server_entry_label(entry: dict[str, Any], status: dict[str, Any] | None) -> str:
    """The model list's line for a server model: its name, the server, and what the probe said."""
    if status is None:
        state = "checking…"
    elif status.get("error"):
        state = "unreachable"
    else:
        state = f"{status.get('slots', '?')} slots"
    name = (status or {}).get("served_as") or entry["model"]  # a gateway lists "unknown"
    return f"{name}  ({entry['url']} · {state})"


def server_entry_tooltip(status: dict[str, Any] | None) -> str:
    """The tooltip of that line: the probe's error, or what the server is."""
    if status is None:
        return "asking the server…"
    if status.get("error"):
        return str(status["error"])
    build, ctx = status.get("build") or "?", status.get("n_ctx") or "?"
    return f"{status.get('dialect', '')} · build {build} · context {ctx}"


class ServerProbe(QObject):
    """Asks servers what they serve in a thread of its own; ``done`` carries (url, [info dicts]
    or None, error text)."""

    done = Signal(str, object, str)

    def probe(self, url: str, api_key: str | None, tokenizer: str | None = None) -> None:
        def work() -> None:
            from engine.backends.server.pool import describe_server

            try:
                infos = [
                    dict(i.__dict__, chat_template=None)
                    for i in describe_server(url, api_key, tokenizer=tokenizer)
                ]
            except PonderError as e:
                self.done.emit(url, None, str(e))
                return
            except Exception as e:  # noqa: BLE001 - shown to the user, never a crash
                self.done.emit(url, None, f"{type(e).__name__}: {e}")
                return
            self.done.emit(url, infos, "")

        threading.Thread(target=work, name="ponder-server-probe", daemon=True).start()


class AddsServerModels(Protocol):
    """What the dialog asks of its window once a server answered."""

    def add_server_models(self, infos: list[dict[str, Any]], api_key: str | None) -> None: ...


class ServerDialog(QDialog):
    """URL and (optional) API key; Connect asks the server, and on success its models join the
    model list."""

    def __init__(self, window: Any) -> None:
        """``window``: the dialog's parent, a widget with ``add_server_models()`` (the model bar; the
        main window forwards it) — a widget and :class:`AddsServerModels` at once, hence ``Any``."""
        super().__init__(window)
        self.owner: AddsServerModels = window
        self.setWindowTitle("Add an inference server")
        self.resize(560, 220)
        lay = QVBoxLayout(self)
        lay.addWidget(
            QLabel(
                "llama-server, vLLM, SGLang or any OpenAI-compatible server. "
                "<code>ponder serve MODEL.gguf</code> starts a llama-server here."
            )
        )
        form = QFormLayout()
        self.url = QLineEdit()
        self.url.setPlaceholderText("http://127.0.0.1:8080")
        self.key = QLineEdit(os.environ.get("PONDER_API_KEY", ""))
        self.key.setEchoMode(QLineEdit.EchoMode.Password)
        self.key.setPlaceholderText("optional; kept only while Ponder runs")
        self.tokenizer = QLineEdit()
        self.tokenizer.setPlaceholderText(
            "only for a gateway or proxy that cannot tokenize; else found by name"
        )
        self.tokenizer.setToolTip(
            "The served model's own tokenizer, for an endpoint that cannot tokenize or takes only text "
            "prompts (the SGLang Model Gateway, LiteLLM, Ollama's OpenAI face): a GGUF of the model, or its "
            "Hugging Face tokenizer.json. Left empty, Ponder looks for one by the served model's name "
            "among your models and the Hugging Face cache."
        )
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_tokenizer)
        tok_row = QHBoxLayout()
        tok_row.addWidget(self.tokenizer, 1)
        tok_row.addWidget(browse)
        form.addRow("URL", self.url)
        form.addRow("API key", self.key)
        form.addRow("Tokenizer", tok_row)
        lay.addLayout(form)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        lay.addWidget(self.status, 1)
        row = QHBoxLayout()
        row.addStretch(1)
        self.connect_button = QPushButton("Connect")
        self.connect_button.setDefault(True)
        close = QPushButton("Close")
        row.addWidget(self.connect_button)
        row.addWidget(close)
        lay.addLayout(row)
        self.probe = ServerProbe()
        self.probe.done.connect(self._probed)
        self.connect_button.clicked.connect(self.try_connect)
        close.clicked.connect(self.reject)

    def try_connect(self) -> None:
        url = self.url.text().strip()
        if not url:
            self.status.setText("Give the server's URL.")
            return
        self.connect_button.setEnabled(False)
        self.status.setText(f"Asking {url} …")
        self.probe.probe(url, self.key.text().strip() or None, self.tokenizer.text().strip() or None)

    def _browse_tokenizer(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "The served model's tokenizer", "", "GGUF or tokenizer.json (*.gguf tokenizer.json)"
        )
        if path:
            self.tokenizer.setText(path)

    def _probed(self, url: str, infos: list[dict[str, Any]] | None, error: str) -> None:
        self.connect_button.setEnabled(True)
        if infos is None:
            self.status.setText(f"<span style='color:#c0392b'>{_esc(error)}</span>")
            return
        self.owner.add_server_models(infos, self.key.text().strip() or None)
        self.accept()


def _esc(text: str) -> str:
    import html

    return html.escape(text)
