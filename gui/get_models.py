"""Get models…: policies, PRMs and thinking models from the Hugging Face Hub, each with its size, its
fit on this machine (with the PRM or policy already chosen beside it) and its role; a box for any
Hub repository id lists that repository's GGUFs. A download shows bytes, rate and time left, can be
cancelled (its bytes kept: the next one resumes), and once its sha256 is checked the model bar lists
the file with its role.

All Hub traffic runs off the GUI thread through :class:`gui.offload.Offload`: listings and the
selected model's header (a few MB, for its KV cache) on a pool of six (one request per repository),
the download on a thread of its own, so it starts at once; its progress comes back through a queued
signal. The engine's ``engine.hub`` does the work.
"""

from __future__ import annotations

import re
import threading
from typing import Any

from PySide6.QtCore import QCoreApplication, QObject, Qt, Signal
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
)

from engine import hub
from engine.errors import PonderError
from engine.gguf_info import human_params, human_size
from gui.offload import Offload

COLUMNS = ("Model", "Role", "Quantization", "Size", "Fit here", "Status")
FIT_KEYS = {"fits": "ok", "needs GPU offload": "warn", "too big": "bad"}  # gui.theme.colours()


class _Relay(QObject):
    """A download's progress, from its thread to the GUI thread (a queued signal). ``send`` drops
    what arrives after the dialog is gone (closed while the download stopped)."""

    progress = Signal(object)  # hub.Progress

    def send(self, p: Any) -> None:
        try:
            self.progress.emit(p)
        except RuntimeError:
            pass


def _line(result: BaseException) -> str:
    """An exception a worker returned, as the one line the dialog shows."""
    return str(result) if isinstance(result, PonderError) else f"{type(result).__name__}: {result}"


class _Row:
    """One line of the table: a catalog offer (its quantization chosen in the row) or a file of a
    repository the user looked up."""

    def __init__(self, offer: hub.Offer | None, model: hub.HubModel | None = None, role: str = "policy"):
        self.offer = offer
        self.model = model  # known once the repository is listed
        self.listing: hub.Listing | None = None
        self.error: str | None = None
        self.role = offer.role if offer is not None else role
        self.header: Any = None  # GGUFInfo once read

    @property
    def repo(self) -> str:
        return self.offer.repo if self.offer is not None else self.model.repo  # type: ignore[union-attr]  # a row has an offer or a model

    @property
    def title(self) -> str:
        if self.offer is not None:  # the description's first words: "Qwen2.5-3B-Instruct (its …" -> the name
            return re.split(r" \(|[:,]", self.offer.entry.description, maxsplit=1)[0].strip()
        return self.model.name if self.model is not None else self.repo


class GetModelsDialog(QDialog):
    def __init__(self, bar: Any) -> None:
        """``bar``: the model bar (the chosen policy and PRM, the context, and ``rediscover``)."""
        super().__init__(bar)
        self.bar = bar
        self.setWindowTitle("Get models")
        self.resize(1040, 560)
        self._relay = _Relay(self)
        self._relay.progress.connect(self._progress)
        self._hub = Offload(self, "ponder-hub", workers=6)
        self._downloads = Offload(self, "ponder-download")
        # Quitting with the dialog open stops a download too (the interpreter waits for its thread).
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self._stop)
        self._cancel: threading.Event | None = None
        self._downloading: _Row | None = None
        self._machine = hub.this_machine()
        self.rows: list[_Row] = []
        self.last_path: str | None = None
        self._headers: dict[str, Any] = {}  # local PRM GGUFs' headers, read once

        lay = QVBoxLayout(self)
        self.intro = QLabel()
        self.intro.setWordWrap(True)
        self.intro.setTextFormat(Qt.TextFormat.RichText)
        lay.addWidget(self.intro)
        search = QHBoxLayout()
        self.repo_edit = QLineEdit()
        self.repo_edit.setPlaceholderText("Any Hub repository id, e.g. bartowski/Llama-3.2-1B-Instruct-GGUF")
        self.list_button = QPushButton("List its GGUFs")
        self.catalog_button = QPushButton("Catalog")
        search.addWidget(QLabel("Repository"))
        search.addWidget(self.repo_edit, 1)
        search.addWidget(self.list_button)
        search.addWidget(self.catalog_button)
        lay.addLayout(search)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.verticalHeader().setVisible(False)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        head = self.table.horizontalHeader()
        head.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, len(COLUMNS)):
            head.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        lay.addWidget(self.table, 1)
        self.detail = QLabel()
        self.detail.setWordWrap(True)
        self.detail.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.detail.setMinimumHeight(40)
        lay.addWidget(self.detail)
        self.bar_progress = QProgressBar()
        self.bar_progress.setTextVisible(True)
        self.bar_progress.setVisible(False)
        lay.addWidget(self.bar_progress)
        buttons = QHBoxLayout()
        self.status = QLabel()
        self.status.setWordWrap(True)
        self.download_button = QPushButton("Download")
        self.download_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel download")
        self.cancel_button.setEnabled(False)
        close = QPushButton("Close")
        buttons.addWidget(self.status, 1)
        buttons.addWidget(self.download_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(close)
        lay.addLayout(buttons)

        self.list_button.clicked.connect(self.look_up)
        self.repo_edit.returnPressed.connect(self.look_up)
        self.catalog_button.clicked.connect(self.show_catalog)
        self.table.itemSelectionChanged.connect(self._selected)
        self.download_button.clicked.connect(self.download)
        self.cancel_button.clicked.connect(self.cancel)
        close.clicked.connect(self.close)
        self._say_intro()
        self.show_catalog()

    # --- what is offered ---------------------------------------------------------------------------

    def _say_intro(self) -> None:
        m = self._machine
        gpu = f" and {human_size(m.gpu_free)} of GPU" if m.gpu_free else " (this build has no GPU offload)"
        self.intro.setText(
            "Policies, process reward models (PRMs) and thinking models from the Hugging Face Hub "
            f"({_html(hub.endpoint())}), downloaded into its cache, {_html(str(hub.hf_cache_dir()))}, "
            "where Ponder lists them. A gated model needs HF_TOKEN set (Ponder never stores it).<br>"
            f"<b>Fit here</b>: what the model needs at context {self._ctx():,}, a PRM counted with the "
            "policy chosen in the model bar and a policy with the PRM GGUF chosen (if any), against "
            f"{human_size(m.ram_available)} of memory available{gpu}. Select a model to read its header "
            "for its KV cache."
        )

    def _ctx(self) -> int:
        spin = getattr(self.bar, "ctx_spin", None)
        return int(spin.value()) if spin is not None else 16384

    def show_catalog(self) -> None:
        self.rows = [_Row(o) for o in hub.catalog_offers()]
        self._fill()
        self.status.setText("Asking the Hub for sizes…")
        for row in self.rows:
            self._list_async(row, row.repo)

    def look_up(self) -> None:
        text = self.repo_edit.text().strip()
        if not text:
            return
        try:
            repo = hub.check_repo_id(text)
        except PonderError as e:
            self.status.setText(str(e))
            return
        self.rows = []
        self._fill()
        self.status.setText(f"Listing {repo}…")
        self._list_async(None, repo)

    def _list_async(self, row: _Row | None, repo: str) -> None:
        self._hub.submit(lambda: hub.list_repo(repo), lambda result: self._listed(row, result))

    def _listed(self, row: _Row | None, result: Any) -> None:
        listing, error = (None, _line(result)) if isinstance(result, BaseException) else (result, None)
        if row is None:  # a repository the user looked up: its GGUFs become the rows
            if listing is None:
                self.status.setText(error or "")
                return
            o = hub.find_offer(listing.repo)
            role = o.role if o is not None else "policy"
            self.rows = []
            for m in listing.ggufs():
                r = _Row(None, m, role=hub.role_of_file(m.name) or role)
                r.listing = listing
                self.rows.append(r)
            self._fill()
            n = len(self.rows)
            self.status.setText(
                f"{listing.repo}: {n} GGUF model{'s' if n != 1 else ''}"
                if n
                else f"{listing.repo} holds no GGUF file."
            )
            if self.rows:
                self.table.selectRow(0)
            return
        if row not in self.rows:
            return  # the table shows something else now
        row.listing, row.error = listing, error
        if listing is not None and row.offer is not None:
            self._pick_quant(row)
        self._update(row)
        if all(r.listing is not None or r.error for r in self.rows):
            failed = [r.error for r in self.rows if r.error]
            self.status.setText(
                failed[0]
                if failed and len(set(failed)) == 1 and len(failed) == len(self.rows)
                else f"{len(self.rows) - len(failed)} of {len(self.rows)} listed."
            )

    def _pick_quant(self, row: _Row) -> None:
        assert row.offer is not None and row.listing is not None
        try:
            row.model = hub.pick(row.listing, file=row.offer.file)
            row.error = None
        except PonderError as e:
            row.model, row.error = None, str(e)
        row.header = None

    # --- the table ---------------------------------------------------------------------------------

    def _fill(self) -> None:
        self.table.setRowCount(len(self.rows))
        for i, row in enumerate(self.rows):
            self.table.setItem(i, 0, QTableWidgetItem(row.title))
            self.table.setItem(i, 1, QTableWidgetItem(row.role))
            if row.offer is not None and len(row.offer.quants) > 1:
                combo = QComboBox()
                combo.addItems(list(row.offer.quants))
                combo.currentTextChanged.connect(lambda q, r=row: self._quant_changed(r, q))
                self.table.setCellWidget(i, 2, combo)
            else:
                q = row.offer.quant if row.offer is not None else (row.model.quant if row.model else "")
                self.table.setItem(i, 2, QTableWidgetItem(q or "?"))
            for c in (3, 4, 5):
                self.table.setItem(i, c, QTableWidgetItem(""))
            self._update(row)

    def _quant_changed(self, row: _Row, quant: str) -> None:
        assert row.offer is not None
        row.offer = hub.offer(row.offer.entry, quant)
        if row.listing is not None:
            self._pick_quant(row)
        self._update(row)
        if self._current() is row:
            self._selected()

    def _update(self, row: _Row) -> None:
        if row not in self.rows:
            return
        i = self.rows.index(row)
        size = self.table.item(i, 3)
        fit_item = self.table.item(i, 4)
        status = self.table.item(i, 5)
        if size is None or fit_item is None or status is None:
            return
        if row.error:
            size.setText("?")
            fit_item.setText("")
            status.setText("not on the Hub" if "has no file" in row.error else "cannot list")
            status.setToolTip(row.error)
            return
        if row.model is None:
            size.setText("…")
            return
        size.setText(human_size(row.model.size) if row.model.size is not None else "?")
        need = hub.need_bytes(row.model.size, row.header, self._ctx(), self._partner(row))
        verdict = hub.fit(need, self._machine) if need is not None else ""
        fit_item.setText(verdict)
        fit_item.setForeground(_colour(verdict))
        fit_item.setToolTip(
            f"needs about {human_size(need)}"
            + (
                " with its KV cache"
                if row.header is not None
                else " (from the file size; select it to read its header)"
            )
            if need is not None
            else ""
        )
        if self._downloading is row:
            status.setText("downloading")
        elif hub.cached(row.model) is not None:
            status.setText("downloaded")
        else:
            kept = hub.partial_bytes(row.model)
            status.setText(f"{human_size(kept)} kept: resumes" if kept else "")

    def _partner(self, row: _Row) -> Any:
        """The model the fit counts beside this one: the chosen policy beside a PRM, the chosen PRM
        GGUF beside a policy."""
        if row.role == "PRM":
            return self.bar.policy_info
        prm = getattr(self.bar, "prm_path", None)
        if not prm:
            return None
        if prm not in self._headers:  # read once: the table asks for every row
            from engine.gguf_info import read_gguf

            try:
                self._headers[prm] = read_gguf(prm)
            except PonderError:
                self._headers[prm] = None
        return self._headers[prm]

    def _current(self) -> _Row | None:
        i = self.table.currentRow()
        return self.rows[i] if 0 <= i < len(self.rows) else None

    def select(self, predicate: Any) -> _Row | None:
        """Select the first row ``predicate(row)`` holds for (tests and scripts)."""
        for i, row in enumerate(self.rows):
            if predicate(row):
                self.table.selectRow(i)
                return row
        return None

    def _selected(self) -> None:
        row = self._current()
        if row is None:
            self.detail.setText("")
            return
        self._show_detail(row)
        if row.model is not None and row.header is None and not row.error:
            model = row.model
            self._hub.submit(lambda: hub.remote_header(model), lambda info: self._header_read(model, info))

    def _show_detail(self, row: _Row, note: str = "") -> None:
        parts = []
        if row.offer is not None:
            parts.append(_html(row.offer.entry.description))
        where = f"{row.repo}/{row.model.file}" if row.model is not None else row.repo
        parts.append(f"<span style='color:gray'>{_html(where)}</span>")
        if row.error:
            parts.append(f"<span style='color:{_colour('too big').name()}'>{_html(row.error)}</span>")
        h = row.header
        if h is not None:
            ctx = f"{h.context_length:,}" if h.context_length else "?"
            parts.append(
                f"{_html(h.architecture)} · {human_params(h.n_params)} parameters · "
                f"{h.n_layer or '?'} layers · {_html(h.quantization)} · trained context {ctx}"
            )
        if note:
            parts.append(note)
        self.detail.setText("<br>".join(parts))

    def _header_read(self, model: hub.HubModel, info: Any) -> None:
        for row in self.rows:
            if row.model == model:
                if isinstance(info, BaseException):
                    if self._current() is row:
                        self._show_detail(
                            row,
                            f"<span style='color:{_colour('needs GPU offload').name()}'>"
                            f"Header not read: {_html(_line(info))}</span>",
                        )
                    continue
                row.header = info
                self._update(row)
                if self._current() is row:
                    self._show_detail(row)

    # --- download ----------------------------------------------------------------------------------

    def download(self) -> None:
        row = self._current()
        if row is None or self._downloading is not None:
            return
        if row.model is None:
            self.status.setText(row.error or "Still asking the Hub about this model…")
            return
        if row.listing is not None and row.listing.gated and not hub.has_token():
            self.status.setText(hub.gated_line(row.repo))
            return
        model = row.model
        self._downloading = row
        self._cancel = threading.Event()
        cancel = self._cancel
        self.download_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.bar_progress.setVisible(True)
        self.bar_progress.setRange(0, 1000)
        self.bar_progress.setValue(0)
        self.status.setText(f"Downloading {model.name}…")
        self._update(row)

        self._downloads.submit(lambda: hub.download(model, self._relay.send, cancel), self._finished)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
            self.status.setText("Stopping…")

    def _progress(self, p: hub.Progress) -> None:
        if p.total:
            self.bar_progress.setValue(int(1000 * min(p.done, p.total) / p.total))
        eta = f" · {p.eta:.0f} s left" if p.eta is not None and p.phase == "downloading" else ""
        of = f" of {human_size(p.total)}" if p.total else ""
        phase = "checking sha256" if p.phase == "checking" else p.phase
        self.bar_progress.setFormat(
            f"{p.file}: {phase} · {human_size(p.done)}{of} · {human_size(int(p.rate))}/s{eta}"
        )

    def _finished(self, result: Any) -> None:
        row = self._downloading
        self._downloading = None
        self._cancel = None
        self.download_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if row is not None:
            self._update(row)
        if isinstance(result, BaseException):
            self.status.setText(_line(result))
            return
        path = str(result)
        self.bar_progress.setValue(1000)
        self.last_path = path
        where = "the PRM list" if row is not None and row.role == "PRM" else "the model list"
        self.status.setText(f"Downloaded and checked: {path}. It is in {where} now.")
        self.bar.rediscover()

    def _stop(self) -> None:
        """Closing stops a download (its bytes are kept for the next one) and the listings."""
        if self._cancel is not None:
            self._cancel.set()
        self._hub.shutdown()
        self._downloads.shutdown()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self._stop()
        super().closeEvent(event)

    def reject(self) -> None:  # Esc
        self._stop()
        super().reject()


def _colour(verdict: str) -> Any:
    """The verdict's colour, legible on the light and the dark theme."""
    from PySide6.QtGui import QColor

    from gui.theme import colours, is_dark

    c = {**colours(), "warn": "#e0a030" if is_dark() else "#9a5a00"}
    return QColor(c[FIT_KEYS.get(verdict, "muted")])


def _html(text: str) -> str:
    import html

    return html.escape(text)
