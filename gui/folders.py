"""The folders Ponder scans for GGUF files (one list with ``ponder models``)."""

from __future__ import annotations

from typing import Any, Protocol

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QDialog,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QPushButton,
    QVBoxLayout,
)

from engine.errors import PonderError


class Rescans(Protocol):
    """What the dialog asks of its window when the folders change."""

    def rescan_models(self) -> None: ...


class FoldersDialog(QDialog):
    """The folders Ponder scans for GGUF files (saved for ``ponder models`` too)."""

    def __init__(self, window: Any) -> None:
        """``window``: the dialog's parent, a widget with ``rescan_models()`` (the model bar; the
        main window forwards it) — a widget and :class:`Rescans` at once, hence ``Any``."""
        super().__init__(window)
        self.owner: Rescans = window
        self.setWindowTitle("Model folders")
        self.resize(560, 320)
        lay = QVBoxLayout(self)
        lay.addWidget(
            QLabel(
                "Ponder lists the GGUF files in these folders (and their subfolders), besides the "
                "embedded model, models/, the Hugging Face cache and LM Studio's folder."
            )
        )
        self.list = QListWidget()
        lay.addWidget(self.list, 1)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add folder…")
        self.remove_button = QPushButton("Remove")
        close = QPushButton("Close")
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        row.addWidget(close)
        lay.addLayout(row)
        self.add_button.clicked.connect(self._pick)
        self.remove_button.clicked.connect(self.remove_selected)
        close.clicked.connect(self.accept)
        self.refresh()

    def refresh(self) -> None:
        from engine.models import saved_model_dirs

        self.list.clear()
        for d in saved_model_dirs():
            item = QListWidgetItem(str(d) + ("" if d.is_dir() else "   (missing)"))
            item.setData(Qt.ItemDataRole.UserRole, str(d))
            self.list.addItem(item)
        self.remove_button.setEnabled(self.list.count() > 0)

    def _pick(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path = QFileDialog.getExistingDirectory(self, "A folder with GGUF models")
        if path:
            self.add_folder(path)

    def add_folder(self, path: str) -> None:
        from engine.models import add_model_dir

        try:
            add_model_dir(path)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        self.refresh()
        self.owner.rescan_models()

    def remove_selected(self) -> None:
        from engine.models import remove_model_dir

        item = self.list.currentItem() or (self.list.item(0) if self.list.count() else None)
        if item is None:
            return
        try:
            remove_model_dir(item.data(Qt.ItemDataRole.UserRole))
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        self.refresh()
        self.owner.rescan_models()
