"""The first window, offscreen, on the embedded model (pytest-qt)."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from gui.app import MainWindow  # noqa: E402


@pytest.fixture
def window(qtbot):
    w = MainWindow()
    qtbot.addWidget(w)
    w.show()
    yield w
    w.close()


def test_window_shows_the_embedded_model_without_loading_it(window):
    assert "Smollm2" in window.model_label.text() and "Q4_1" in window.model_label.text()
    assert window.run_button.isEnabled() and not window.cancel_button.isEnabled()
    assert window.bridge is not None and window.bridge._worker is None  # weights load on Run


def test_run_fills_one_panel_per_sample(window, qtbot, tmp_path):
    window.n_spin.setValue(3)
    window.tokens_spin.setValue(24)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    assert window.cancel_button.isEnabled()
    with qtbot.waitSignal(window.bridge.finished, timeout=120_000) as sig:
        pass
    samples, seconds = sig.args
    assert len(samples) == 3 and len(window.panels) == 3
    for panel, s in zip(window.panels, samples, strict=True):
        assert panel.body.toPlainText() == s["text"] and s["text"]
        assert f"{s['tokens']} tokens" in panel.footer.text()
    assert window.status.currentMessage().startswith("Done:")
    assert window.run_button.isEnabled()
    window.grab().save(str(tmp_path / "window.png"))


def test_cancel_mid_run_keeps_the_partial_text(window, qtbot):
    window.n_spin.setValue(4)
    window.tokens_spin.setValue(2048)
    window.start()
    qtbot.waitUntil(lambda: any(p.body.toPlainText() for p in window.panels), timeout=120_000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    with qtbot.waitSignal(window.bridge.finished, timeout=30_000) as sig:
        pass
    samples, _ = sig.args
    assert all(s["finish_reason"] in ("cancelled", "eos") for s in samples)
    assert any(s["finish_reason"] == "cancelled" for s in samples)
    assert any(s["text"] for s in samples)


def test_a_bad_model_is_a_message_not_a_crash(qtbot, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    w = MainWindow(str(bad))
    qtbot.addWidget(w)
    assert "No usable model" in w.model_label.text() and "not a GGUF" in w.model_label.text()
    assert not w.run_button.isEnabled()


def test_load_failure_at_run_shows_a_dialog(qtbot, tmp_path, monkeypatch, model_path):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    cut = tmp_path / "model.gguf"
    cut.write_bytes(open(model_path, "rb").read())
    w = MainWindow(str(cut))
    qtbot.addWidget(w)
    cut.write_bytes(b"GGUF")  # the file breaks after the window opened
    w.start()
    qtbot.waitUntil(lambda: bool(shown), timeout=30_000)
    assert "Cannot load model" in shown[0]
    assert w.run_button.isEnabled()
    w.close()
