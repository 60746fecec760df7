"""GUI tests: no modal dialog may wait for a click nobody makes.

Offscreen, a ``QMessageBox.warning`` or a dialog's ``exec()`` runs a nested event loop that only a
user ends. Python runs no signal handler while Qt waits there, so pytest-timeout's alarm never fires
and the whole suite hangs (CI hit its 90-minute limit that way). Every modal entry point the app uses
is replaced here: it answers as a user who dismissed it would (No, Cancel, no file) and records what
it said; a test that did not expect it then fails with that text. A test that expects a dialog
patches it itself (its monkeypatch wins over this one).
"""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtWidgets import QDialog, QFileDialog, QMessageBox  # noqa: E402


@pytest.fixture(autouse=True)
def _no_modal_waits(monkeypatch):
    said: list[str] = []

    def box(kind: str, answer):
        def shown(*a, **k):
            text = a[2] if len(a) > 2 else k.get("text", "")
            said.append(f"QMessageBox.{kind}: {text}")
            return answer

        return shown

    for kind in ("warning", "information", "critical"):
        monkeypatch.setattr(QMessageBox, kind, box(kind, QMessageBox.StandardButton.Ok))
    monkeypatch.setattr(QMessageBox, "question", box("question", QMessageBox.StandardButton.No))

    def dialog_exec(self, *a, **k):
        said.append(f"{type(self).__name__}.exec(): {self.windowTitle()}")
        return QDialog.DialogCode.Rejected

    monkeypatch.setattr(QDialog, "exec", dialog_exec)
    for getter in ("getOpenFileName", "getSaveFileName"):
        monkeypatch.setattr(QFileDialog, getter, lambda *a, _g=getter, **k: (said.append(_g), ("", ""))[1])
    monkeypatch.setattr(
        QFileDialog, "getExistingDirectory", lambda *a, **k: (said.append("getExistingDirectory"), "")[1]
    )
    yield said
    if said:
        pytest.fail(
            "a modal dialog the test did not expect (it would have waited for a click): " + "; ".join(said)
        )
