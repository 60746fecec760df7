"""The sessions browser (a dock): saved sessions, searched and filtered as you type. The query runs
off the GUI thread, a quarter second after the last keystroke, and only the newest answer is shown.
Open, Export and Delete act on the selected session."""

from __future__ import annotations

import os
from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QHBoxLayout,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from engine.errors import PonderError
from gui.offload import Offload

DEBOUNCE_MS = 250


def list_sessions(db: str | None, filters: dict[str, Any]) -> list:
    """The query itself (on the worker thread): the sessions matching the filters, newest first."""
    from engine.store import Store

    try:
        with Store.open(db, readonly=True) as store:
            return store.list_sessions(**filters)
    except PonderError as e:
        if "no session database" in str(e).lower():
            return []
        raise


class SessionsDock(QDockWidget):
    open_requested = Signal(str)
    message = Signal(str)
    refreshed = Signal()  # the list shows the newest answer

    def __init__(self, parent: QWidget, db: str | None, offload: Offload) -> None:
        super().__init__("Sessions", parent)
        self.setObjectName("sessionsDock")
        self.db = db
        self.offload = offload
        self.queries = 0  # queries run (tests: typing a word runs one, not one per key)
        host = QWidget()
        dl = QVBoxLayout(host)
        self.session_search = QLineEdit()
        self.session_search.setPlaceholderText("search problems…")
        self.session_list = QListWidget()
        self.session_list.setWordWrap(True)
        self.session_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open  (Ctrl+O)")
        self.delete_button = QPushButton("Delete")
        self.export_button = QPushButton("Export…")
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.delete_button)
        filters = QHBoxLayout()
        self.session_model = QLineEdit()
        self.session_model.setPlaceholderText("model…")
        self.session_correct = QComboBox()
        self.session_correct.addItems(["any result", "a correct run", "a wrong run"])
        self.session_since = QLineEdit()
        self.session_since.setPlaceholderText("since YYYY-MM-DD")
        filters.addWidget(self.session_model)
        filters.addWidget(self.session_correct)
        dl.addWidget(self.session_search)
        dl.addLayout(filters)
        since_row = QHBoxLayout()
        since_row.addWidget(self.session_since, 1)
        self.session_sweeps = QCheckBox("sweep runs")
        self.session_sweeps.setToolTip(
            "Also list the sessions sweeps ran (one per problem, strategy and budget)"
        )
        since_row.addWidget(self.session_sweeps)
        dl.addLayout(since_row)
        dl.addWidget(self.session_list, 1)
        dl.addLayout(buttons)
        self.setWidget(host)
        self._debounce = QTimer(self, singleShot=True, interval=DEBOUNCE_MS)
        self._debounce.timeout.connect(self.refresh)
        for edit in (self.session_search, self.session_model, self.session_since):
            edit.textChanged.connect(lambda *_: self._debounce.start())
        self.session_correct.currentIndexChanged.connect(self.refresh)
        self.session_sweeps.toggled.connect(self.refresh)
        self.open_button.clicked.connect(self.open_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.export_button.clicked.connect(self.export_selected)
        self.session_list.itemDoubleClicked.connect(lambda _i: self.open_selected())

    def filters(self) -> dict[str, Any]:
        return {
            "search": self.session_search.text().strip() or None,
            "model": self.session_model.text().strip() or None,
            "correct": (None, True, False)[self.session_correct.currentIndex()],
            "since": self.session_since.text().strip() or None,
            "limit": 500,
            "sweeps": self.session_sweeps.isChecked(),
        }

    def refresh(self) -> None:
        """Ask the store again (off the GUI thread); the list changes when the answer is back."""
        self._debounce.stop()
        self.queries += 1
        db, filters = self.db, self.filters()
        self.offload.latest("sessions", lambda: list_sessions(db, filters), self._show)

    def _show(self, sessions: Any) -> None:
        if isinstance(sessions, BaseException):
            self.message.emit(str(sessions))
            self.refreshed.emit()
            return
        selected = self.selected_session()
        self.session_list.clear()
        for s in sessions:
            marks = " ".join(
                f"{r.strategy[:4]}:{'✓' if r.correct else '✗' if r.correct is False else '·'}"
                + ("" if r.status == "done" else f"({r.status})")
                for r in s.runs
            )
            item = QListWidgetItem(f"{s.created[5:16].replace('T', ' ')}  {s.title[:40]}\n{marks}")
            item.setData(Qt.ItemDataRole.UserRole, s.id)
            item.setToolTip(s.problem[:400])
            self.session_list.addItem(item)
            if s.id == selected:
                self.session_list.setCurrentItem(item)
        self.refreshed.emit()

    def selected_session(self) -> str | None:
        item = self.session_list.currentItem() or (
            self.session_list.item(0) if self.session_list.count() else None
        )
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def open_selected(self) -> None:
        sid = self.selected_session()
        if sid:
            self.open_requested.emit(sid)

    def export_selected(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        sid = self.selected_session()
        if not sid:
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export session",
            f"ponder-{sid}.html",
            "Web page (*.html);;JSON (*.json);;JSON lines (*.jsonl)",
        )
        if path:
            self.export_session(sid, path)

    def export_session(self, session_id: str, path: str) -> None:
        """HTML, JSON or JSONL by the file's extension; a failure is a message, the old file stays."""
        from engine.run.export import export_session
        from engine.store import Store, write_export

        ext = os.path.splitext(path)[1].lower().lstrip(".")
        try:
            with Store.open(self.db, readonly=True) as store:
                text = export_session(store, session_id, ext if ext in ("html", "jsonl") else "json")
            out = write_export(path, text)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", f"Export failed: {e}")
            return
        self.message.emit(f"Exported session {session_id} to {out}")

    def delete_selected(self) -> None:
        sid = self.selected_session()
        if not sid:
            return
        answer = QMessageBox.question(self, "Ponder", f"Delete session {sid} and all its runs?")
        if answer != QMessageBox.StandardButton.Yes:
            return
        from engine.store import Store

        try:
            with Store.open(self.db, readonly=False) as store:
                store.delete_session(sid)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
        self.refresh()
