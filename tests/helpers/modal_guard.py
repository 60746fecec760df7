"""No modal dialog may wait for a click nobody makes.

Offscreen, a ``QMessageBox.warning`` or a dialog's ``exec()`` runs a nested event loop that only a
user ends. Python runs no signal handler while Qt waits there, so pytest-timeout's alarm never fires
and the whole suite hangs (CI hit its 90-minute limit that way). ``refuse_modals`` replaces every
modal entry point the app uses: it answers as a user who dismissed it would (No, Cancel, no file)
and records what it said; a test that did not expect it then fails with that text. A test that
expects a dialog patches it itself (its monkeypatch wins over this one).

tests/conftest.py applies it to every test that builds a window, wherever it lives: a test in
tests/gui, one that uses pytest-qt's ``qtbot`` or ``qapp``, and any test once Qt's widgets are
loaded in the process. ``builds_windows`` never imports Qt itself; pytest-qt loads Qt's widgets when
pytest starts, so where it is installed every test runs guarded (a few attribute patches each).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

QT_FIXTURES = ("qtbot", "qapp")
_GUI = Path(__file__).resolve().parents[1] / "gui"


def builds_windows(request: pytest.FixtureRequest) -> bool:
    """Whether the test can show a window: it lives in tests/gui, asks for a Qt fixture (itself or
    through another fixture), or runs once the process has loaded Qt's widgets."""
    if any(name in request.fixturenames for name in QT_FIXTURES):
        return True
    if "PySide6.QtWidgets" in sys.modules:
        return True
    return _GUI in request.node.path.resolve().parents


def refuse_modals(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch every modal entry point; what the dialogs would have said lands in the list returned."""
    from PySide6.QtWidgets import QDialog, QFileDialog, QMessageBox

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
    return said


def fail_if_shown(said: list[str]) -> None:
    if said:
        pytest.fail(
            "a modal dialog the test did not expect (it would have waited for a click): " + "; ".join(said)
        )
