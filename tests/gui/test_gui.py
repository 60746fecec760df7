"""The main window, offscreen, on the embedded model (pytest-qt)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from engine.events import fold  # noqa: E402
from engine.store import Store  # noqa: E402
from gui.app import MainWindow  # noqa: E402


def ponder(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "gui.db")


@pytest.fixture
def window(qtbot, db):
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    w.show()
    settle(qtbot, w)
    yield w
    w.close()


def settle(qtbot, w):
    """Wait for the work the window sent off the GUI thread (discovery, session search, answer
    equivalence), firing a pending debounced search at once."""
    if w.sessions._debounce.isActive():
        w.sessions.refresh()
    qtbot.waitUntil(lambda: w.offload.pending == 0, timeout=30_000)


def small_run(w, tokens=40):
    w.budget_spin.setValue(2)
    w.tokens_spin.setValue(tokens)
    w.prm_combo.setCurrentText("arithmetic")


def test_window_shows_the_embedded_model_without_loading_it(window, qtbot):
    assert "Smollm2" in window.model_label.text() and "Q4_1" in window.model_label.text()
    assert window.run_button.isEnabled() and not window.cancel_button.isEnabled()
    assert window.bridge is not None and window.bridge._worker is None  # weights load on Run
    settle(qtbot, window)
    assert window.session_list.count() == 0


def test_problem_set_picker_fills_problem_and_reference(window):
    window.set_combo.setCurrentText("GSM8K")
    window.index_spin.setValue(0)
    window.load_problem()
    assert window.prompt.toPlainText().startswith("Janet")
    assert window.reference.text() == "18"
    window.random_problem()
    assert window.prompt.toPlainText() and window.reference.text()


def test_run_draws_one_panel_per_strategy_as_the_store_has_it(window, qtbot, db, tmp_path):
    small_run(window)
    qtbot.mouseClick(window.run_button, Qt.MouseButton.LeftButton)
    assert window.cancel_button.isEnabled()
    with qtbot.waitSignal(window.bridge.compared, timeout=180_000) as sig:
        pass
    sid, summaries = sig.args
    assert list(window.panels) == ["best_of_n", "beam_search", "revisions"]
    with Store.open(db, readonly=True) as store:
        s = store.session(sid)
        for r in s.runs:
            panel = window.panels[r.strategy]
            assert len(panel.trace.nodes) == r.n_nodes > 0  # what is drawn is what is saved
            assert len(panel.view.items_by_node) == r.n_nodes
            assert panel.trace == fold(store.events(r.id))
    for summ in summaries:
        footer = window.panels[summ["strategy"]].footer.text()
        assert f"answer <b>{summ['answer'] if summ['answer'] is not None else '-'}</b>" in footer
        assert f"{summ['generated_tokens']} tok" in footer
    settle(qtbot, window)
    assert window.session_list.count() == 1
    assert sid in window.status.currentMessage()
    # The run just watched is redrawn from the store and the timeline can replay it.
    assert window.timeline.isEnabled() and window.timeline.value() == window.timeline.maximum()
    assert window.timeline.maximum() == sum(r.n_events for r in s.runs)
    # Clicking a node shows its text and scores.
    panel = window.panels["beam_search"]
    nid = next(iter(panel.view.items_by_node))
    panel.view.node_clicked.emit(nid)
    assert panel.trace.nodes[nid].text.strip()[:20] in window.detail.toPlainText()
    window.grab().save(str(tmp_path / "window.png"))


def test_cancel_keeps_partial_runs_in_the_sessions_browser(window, qtbot, db):
    small_run(window, tokens=1500)
    window.start()
    qtbot.waitUntil(lambda: any(p.trace.nodes or p.live for p in window.panels.values()), timeout=120_000)
    qtbot.keyClick(window, Qt.Key.Key_Escape)
    with qtbot.waitSignal(window.bridge.compared, timeout=60_000) as sig:
        pass
    sid, summaries = sig.args
    assert any(s["status"] == "cancelled" for s in summaries)
    settle(qtbot, window)
    assert window.session_list.count() == 1
    with Store.open(db, readonly=True) as store:
        assert {r.status for r in store.session(sid).runs} <= {"cancelled", "done"}


def test_a_saved_session_reopens_and_replays_to_the_same_trees(window, qtbot, db):
    small_run(window)
    window.start()
    with qtbot.waitSignal(window.bridge.compared, timeout=180_000) as sig:
        pass
    live = {s: p.trace for s, p in window.panels.items()}
    settle(qtbot, window)
    window.session_list.setCurrentRow(0)
    window.budget_spin.setValue(3)  # the form then shows the session's settings again
    window.strategy_boxes["dvts"].setChecked(True)
    window.open_selected()
    settle(qtbot, window)
    assert window.session_id == sig.args[0]
    assert window.budget_spin.value() == 2 and window.tokens_spin.value() == 40
    assert [k for k, b in window.strategy_boxes.items() if b.isChecked()] == list(window.panels)
    assert {s: p.trace for s, p in window.panels.items()} == live
    # Replay: back to the start, then step to the end.
    window.timeline.setValue(0)
    assert all(not p.trace.nodes for p in window.panels.values())
    window.timeline.setValue(window.timeline.maximum() // 2)
    half = sum(len(p.trace.nodes) for p in window.panels.values())
    # part-way, a run that has started and not ended shows its progress bar
    running = [p for p in window.panels.values() if p.trace.started and not p.trace.finished]
    assert running and all(p.progress.isVisibleTo(p) for p in running)
    assert all(0 <= p.progress.value() <= p.progress.maximum() for p in running)
    window.toggle_play()
    qtbot.waitUntil(lambda: window.timeline.value() == window.timeline.maximum(), timeout=60_000)
    assert {s: p.trace for s, p in window.panels.items()} == live
    assert 0 < half <= sum(len(t.nodes) for t in live.values())
    assert not any(p.progress.isVisibleTo(p) for p in window.panels.values())  # all ended
    assert window.play_button.text() == "Play"


def test_best_of_n_cards_show_each_answer_and_its_votes():
    from engine.events import NodeAdded, NodeFinished, RunStarted
    from gui.trace_view import card_notes

    evs = [RunStarted("r", "best_of_n", {"n": 4}, {}, {}, 0, "p")]
    for i, ans in enumerate(["18", "18.0", "7", None]):
        evs += [NodeAdded("r", i, None, "solution", f"text {i}", 1, 0.0)]
        evs += [NodeFinished("r", i, ans, "eos")]
    notes = card_notes(fold(evs))
    assert notes == {0: "→ 18 ×2", 1: "→ 18.0 ×2", 2: "→ 7 ×1"}  # 18 and 18.0 are one answer


def test_strategy_parameters_reach_the_runs_and_bad_ones_are_refused(window, qtbot, db, monkeypatch):
    said = []
    monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: said.append(a[2]))
    small_run(window)  # budget 2
    window.strategy_params["revisions"]["chains"].setValue(3)
    window.start()
    assert said and "1 to 2 chains" in said[0] and not window.bridge.busy  # refused, nothing ran
    window.strategy_params["revisions"]["chains"].setValue(2)
    window.strategy_params["beam_search"]["beam_width"].setValue(1)
    window.strategy_params["best_of_n"]["selection"].setCurrentText("majority")
    window.start()
    with qtbot.waitSignal(window.bridge.compared, timeout=180_000) as sig:
        pass
    with Store.open(db, readonly=True) as store:
        params = {r.strategy: r.params for r in store.session(sig.args[0]).runs}
    assert params["revisions"]["chains"] == 2 and params["revisions"]["length"] == 1
    assert params["beam_search"]["beam_width"] == 1 and params["beam_search"]["n"] == 2
    assert params["best_of_n"]["selection"] == "majority"
    assert "beam_width=1" in window.panels["beam_search"].header.text()


def test_a_bad_model_is_a_message_not_a_crash(qtbot, tmp_path, db):
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    w = MainWindow(str(bad), db=db)
    qtbot.addWidget(w)
    assert "No usable model" in w.model_label.text() and "not a GGUF" in w.model_label.text()
    assert not w.run_button.isEnabled()


def test_load_failure_at_run_shows_a_dialog(qtbot, tmp_path, monkeypatch, model_path, db):
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    cut = tmp_path / "model.gguf"
    cut.write_bytes(open(model_path, "rb").read())
    w = MainWindow(str(cut), db=db)
    qtbot.addWidget(w)
    cut.write_bytes(b"GGUF")  # the file breaks after the window opened
    w.start()
    qtbot.waitUntil(lambda: bool(shown), timeout=30_000)
    assert "Cannot load model" in shown[0]
    assert w.run_button.isEnabled()
    w.close()


def test_screenshot_command_renders_a_saved_session(tmp_path):
    db = str(tmp_path / "shot.db")
    r = ponder(
        "compare",
        "What is 3 + 4?",
        "--budget",
        "2",
        "--max-tokens",
        "24",
        "--prm",
        "arithmetic",
        "--db",
        db,
        "--json",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    import json

    sid = json.loads(r.stdout)["session_id"]
    out = tmp_path / "shot.png"
    r = ponder(
        "screenshot", "--out", str(out), "--session", sid, "--db", db, "--size", "1600x900", timeout=120
    )
    assert r.returncode == 0, r.stderr
    from PySide6.QtGui import QImage

    img = QImage(str(out))
    assert (img.width(), img.height()) == (1600, 900)
    r = ponder("screenshot", "--out", str(out), "--session", "nosuch", "--db", db, timeout=120)
    assert r.returncode == 2 and "No session nosuch" in r.stderr and "Traceback" not in r.stderr


def test_the_qt_binding_keeps_none_alive(qapp):
    """PySide6 6.12.0 on Python 3.11 drops a reference to None in every void method, so a window
    that moves a few thousand items aborts the interpreter; pyproject.toml pins below it."""
    import sys as _sys

    from PySide6.QtWidgets import QGraphicsRectItem

    item = QGraphicsRectItem(0, 0, 10, 10)
    before = _sys.getrefcount(None)
    for i in range(2000):
        item.setPos(i, i)
    assert _sys.getrefcount(None) > before - 100


def test_pan_bench_reports_frames_per_second():
    r = ponder("bench", "--pan", "--nodes", "300", "--frames", "30", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    import json

    out = json.loads(r.stdout)
    assert out["nodes"] == 300 and out["frames"] == 30 and out["fps_median"] > 0


def test_node_detail_shades_tokens_and_shows_revision_changes(window, qtbot):
    small_run(window, tokens=48)
    window.start()
    with qtbot.waitSignal(window.bridge.compared, timeout=180_000):
        pass
    panel = window.panels["revisions"]
    rev = next(i for i, n in panel.trace.nodes.items() if n.role == "revision")
    node = panel.trace.nodes[rev]
    assert len(node.token_texts) == len(node.token_logprobs) == node.n_tokens
    assert "".join(node.token_texts) == node.text
    panel.view.node_clicked.emit(rev)
    html = window.detail.toHtml()
    assert f"Changes from attempt #{node.parent_id}" in window.detail.toPlainText()
    assert "shaded by the model's probability" in window.detail.toPlainText()
    assert html.count("background-color:#") >= node.n_tokens  # one shaded span per token


def test_model_bar_estimates_memory_and_remembers_an_added_model(qtbot, db, model_path, tmp_path):
    import shutil

    w = MainWindow(db=db)
    qtbot.addWidget(w)
    assert "RAM" in w.memory_label.text() and w.ngl_slider.maximum() == 30
    cpu_only = w.memory_label.text()
    w.ngl_slider.setValue(30)
    assert w.memory_label.text() != cpu_only and w.ngl_value.text() == "30/30"
    copy = tmp_path / "copy.gguf"
    shutil.copy(model_path, copy)
    w.add_model_path(str(copy))
    assert w.model_combo.currentData() == str(copy)
    from engine.models import saved_model_files

    assert saved_model_files() == [copy]  # the list the CLI reads too
    assert w.bridge is not None and w.bridge.model_path == str(copy)
    w.close()
    again = MainWindow(db=db)  # same settings file: the added model is listed and chosen
    qtbot.addWidget(again)
    settle(qtbot, again)
    assert again.model_combo.currentData() == str(copy)
    again.close()


def test_sessions_browser_filters_and_exports(window, qtbot, db, tmp_path, monkeypatch):
    small_run(window)
    window.reference.setText("72")
    window.start()
    with qtbot.waitSignal(window.bridge.compared, timeout=180_000) as sig:
        pass
    sid = sig.args[0]
    with Store.open(db, readonly=True) as store:
        runs = store.session(sid).runs
    settle(qtbot, window)
    assert window.session_list.count() == 1
    window.session_model.setText("no such model")
    settle(qtbot, window)
    assert window.session_list.count() == 0
    window.session_model.setText("Smollm2")
    settle(qtbot, window)
    assert window.session_list.count() == 1
    window.session_correct.setCurrentIndex(1)  # sessions with a correct run
    settle(qtbot, window)
    assert window.session_list.count() == int(any(r.correct for r in runs))
    window.session_correct.setCurrentIndex(2)  # sessions with a wrong run
    settle(qtbot, window)
    assert window.session_list.count() == int(any(r.correct is False for r in runs))
    window.session_correct.setCurrentIndex(0)
    window.session_since.setText("2999-01-01")
    settle(qtbot, window)
    assert window.session_list.count() == 0
    window.session_since.setText("")

    window.export_session(sid, str(tmp_path / "s.html"))
    page = (tmp_path / "s.html").read_text()
    assert "Natalia" in page and "best_of_n" in page
    window.export_session(sid, str(tmp_path / "s.json"))
    assert '"format": "ponder-session"' in (tmp_path / "s.json").read_text()
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    window.export_session(sid, str(tmp_path / "missing" / "s.html"))
    assert shown and "does not exist" in shown[0] and not (tmp_path / "missing").exists()


def test_screenshot_mid_run(tmp_path):
    out = tmp_path / "mid.png"
    r = ponder(
        "screenshot",
        "--out",
        str(out),
        "--db",
        str(tmp_path / "m.db"),
        "--run-until",
        "2",
        "--budget",
        "2",
        "--max-tokens",
        "64",
        "--prm",
        "arithmetic",
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    assert out.exists() and out.stat().st_size > 10_000
    with Store.open(tmp_path / "m.db", readonly=True) as store:
        (s,) = store.list_sessions()
        assert sum(r.n_nodes for r in s.runs) >= 2  # the picture's run was saved


def test_a_prm_gguf_is_offered_counted_in_memory_and_its_errors_shown(
    qtbot, db, model_path, tmp_path, monkeypatch
):
    import shutil

    folder = tmp_path / "prms"
    folder.mkdir()
    prm = folder / "math-shepherd-test.Q4_1.gguf"  # the catalog names it a Math-Shepherd token PRM
    shutil.copy(model_path, prm)
    monkeypatch.setenv("PONDER_MODEL_DIRS", str(folder))
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    settle(qtbot, w)
    i = w.prm_combo.findData(str(prm))
    assert i >= 0 and w.prm_combo.itemText(i).startswith("PRM:")
    assert w.model_combo.findData(str(prm)) < 0  # a PRM is not offered as the policy
    alone = w.memory_label.text()
    w.prm_combo.setCurrentIndex(i)
    assert w.memory_label.text() != alone and "PRM:" in w.memory_label.toolTip()
    shown = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: shown.append(a[2]))
    w.tokens_spin.setValue(16)
    w.budget_spin.setValue(1)
    w.start()
    qtbot.waitUntil(lambda: bool(shown), timeout=120_000)
    assert "step tag" in shown[0]  # SmolLM2's vocabulary has no 'ки'
    assert w.run_button.isEnabled()
    w.close()


def test_the_folders_dialog_adds_and_removes_a_scanned_folder(
    qtbot, db, model_path, tmp_path, isolated_dirs, monkeypatch
):
    from engine.models import saved_model_dirs
    from gui.folders import FoldersDialog

    folder = tmp_path / "my models"
    folder.mkdir()
    os.link(model_path, folder / "mine.gguf")  # a second name for the file (a symlink is listed once)
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    settle(qtbot, w)
    paths = lambda: [w.model_combo.itemData(i) for i in range(w.model_combo.count())]  # noqa: E731
    assert str(folder / "mine.gguf") not in paths()
    dialog = FoldersDialog(w)
    qtbot.addWidget(dialog)
    dialog.add_folder(str(folder))
    assert saved_model_dirs() == [folder.resolve()]
    assert dialog.list.count() == 1 and str(folder.resolve()) in dialog.list.item(0).text()
    settle(qtbot, w)
    assert str(folder.resolve() / "mine.gguf") in paths()  # the model bar scanned it (off the GUI thread)
    chosen = w.model_combo.currentData()
    said = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a: said.append(a[2]))
    dialog.add_folder(str(tmp_path / "no such folder"))  # a message, nothing saved
    assert said and "is not a folder" in said[0]
    assert saved_model_dirs() == [folder.resolve()]
    dialog.list.setCurrentRow(0)
    dialog.remove_selected()
    assert saved_model_dirs() == [] and dialog.list.count() == 0
    settle(qtbot, w)
    assert str(folder.resolve() / "mine.gguf") not in paths()
    assert w.model_combo.currentData() == chosen  # the chosen model stays chosen
    w.close()


def test_the_dark_theme_keeps_text_on_tints_dark_and_verdicts_legible(qapp, qtbot, db):
    from PySide6.QtGui import QColor

    from gui.theme import ON_TINT, apply_theme, colours, is_dark

    style, palette = qapp.style().name(), qapp.palette()
    try:
        assert apply_theme(qapp, "dark") and is_dark()
        w = MainWindow(db=db)
        qtbot.addWidget(w)
        bg = w.palette().color(w.backgroundRole())
        assert bg.lightnessF() < 0.3
        for key in ("ok", "bad", "chosen"):  # drawn on the dark window: must stand out from it
            assert abs(QColor(colours()[key]).lightnessF() - bg.lightnessF()) > 0.35, key
        panel = next(iter(w.panels.values()), None)
        if panel is not None:
            panel.set_footer("4", True, {"4": 1.0}, 10, 1.0, "done")
            assert colours()["ok"] in panel.footer.text()
        w.close()
        assert QColor(ON_TINT).lightnessF() < 0.2  # text on the light score tints, in any theme
    finally:
        qapp.setStyle(style)
        qapp.setPalette(palette)
    assert not is_dark()


def test_the_sweeps_tab_runs_a_sweep_stops_it_and_resumes_it(window, qtbot, db, tmp_path, monkeypatch):
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: pytest.fail(str(a[2])))  # not a hang
    tab = window.sweeps_tab
    window.tabs.setCurrentWidget(tab)
    tab.set_combo.setCurrentText("Arithmetic ladder")
    tab.limit_spin.setValue(2)
    for k, box in tab.strategy_boxes.items():
        box.setChecked(k in ("best_of_n", "beam_search"))
    tab.budgets_edit.setText("1,2")
    tab.prm_combo.setCurrentText("arithmetic")
    tab.tokens_spin.setValue(48)
    tab.start()
    assert not tab.run_button.isEnabled() and not window.run_button.isEnabled()  # one model, one job
    qtbot.waitUntil(lambda: tab.progress.value() > 0, timeout=300_000)
    assert "cells" in tab.progress.format() and "ETA" in tab.progress.format()
    tab.cancel()
    with qtbot.waitSignal(window.bridge.swept, timeout=120_000) as sig:
        pass
    result, summary = sig.args
    assert result.cancelled and "Stopped" in tab.progress_label.text()
    assert tab.run_button.isEnabled() and window.run_button.isEnabled()
    first = result.ran
    assert 1 <= first < 6
    tab.start()  # resume: only the missing cells run
    with qtbot.waitSignal(window.bridge.swept, timeout=300_000) as sig:
        pass
    result, summary = sig.args
    assert not result.cancelled and result.skipped == first and result.ran == 6 - first
    assert summary["problems"]["complete"] == 2
    assert tab.accuracy_chart.summary == summary and tab.difficulty_chart.summary == summary
    assert "Accuracy against budget" in tab.table.toPlainText()
    assert tab.sweep_list.count() == 1
    # the sweep's sessions stay out of the Sessions list unless asked for
    window.refresh_sessions()
    settle(qtbot, window)
    assert window.session_list.count() == 0
    window.session_sweeps.setChecked(True)
    settle(qtbot, window)
    assert window.session_list.count() == 6
    files = tab.export_to(str(tmp_path / "out"))
    assert sorted(f.name for f in files) == [
        "accuracy_vs_budget.png",
        "accuracy_vs_budget.svg",
        "by_difficulty.png",
        "by_difficulty.svg",
        "summary.json",
        "summary.md",
    ]
    charts = (tab.accuracy_chart, tab.difficulty_chart)
    qtbot.waitUntil(lambda: all(c.pending == 0 and not c.pixmap.isNull() for c in charts), timeout=60_000)
    # drawn off the GUI thread for the widget's own shape (a wide, low pane gets a wide, low chart
    # with its labels at their size, not the file's picture shrunk), again when it is resized
    chart = tab.difficulty_chart
    chart.resize(1000, 320)
    qtbot.waitUntil(lambda: chart.pending == 0 and chart.pixmap.width() == 1000, timeout=60_000)
    assert (chart.pixmap.width(), chart.pixmap.height()) == (1000, 320)
    tab.accuracy_chart.resize(900, 560)
    tab.grab().save(str(tmp_path / "sweeps_tab.png"))
    # a stored sweep reopens with its settings in the form
    tab.limit_spin.setValue(9)
    tab.summary = None
    tab.sweep_list.setCurrentRow(0)
    tab.open_selected()
    assert tab.limit_spin.value() == 2 and tab.budgets_edit.text() == "1,2"
    qtbot.waitUntil(lambda: tab.summary is not None, timeout=60_000)  # analysed off the GUI thread
    assert tab.summary["accuracy"] == summary["accuracy"]


def test_models_an_older_app_kept_in_its_settings_move_to_the_shared_list(qtbot, db, model_path, tmp_path):
    import shutil

    from engine.models import saved_model_files
    from gui.app import _settings as app_settings

    copy = tmp_path / "old-added.gguf"
    shutil.copy(model_path, copy)
    gone = str(tmp_path / "moved-away.gguf")
    settings = app_settings()
    settings.setValue("added_models", [str(copy), gone])
    settings.sync()
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    settle(qtbot, w)
    assert saved_model_files() == [copy, tmp_path / "moved-away.gguf"]
    assert w.settings.value("added_models") is None
    paths = [w.model_combo.itemData(i) for i in range(w.model_combo.count())]
    assert str(copy) in paths and gone in paths  # the moved file is listed (disabled, with its error)
    w.close()


def test_a_budget_a_strategy_cannot_spend_is_refused_on_run_naming_budgets_it_can(
    window, qtbot, db, monkeypatch
):
    shown = []
    monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: shown.append(a[2]))
    assert window.budget_spin.maximum() == 256  # any budget runs: generations queue for sequences
    for k, box in window.strategy_boxes.items():
        box.setChecked(k == "dvts")
    window.budget_spin.setValue(6)
    window.start()
    assert shown and "DVTS cannot spend a budget of 6" in shown[0] and "4 and 8" in shown[0]
    assert window.run_button.isEnabled()
    assert not Path(db).exists()  # nothing was saved for a run that never started


def test_a_compare_its_estimate_calls_long_asks_first_and_runs_only_on_yes(window, qtbot, db, monkeypatch):
    """The app's side of the cost estimate (engine.run.cost): a compare over the limit is refused
    before anything is saved, the user is asked, and Yes runs it as asked."""
    import engine.run.cost as cost

    monkeypatch.setattr(cost, "REASONABLE_S", 0.5)  # this small compare then counts as "too long"
    asked: list[str] = []
    answers = [QMessageBox.StandardButton.No, QMessageBox.StandardButton.Yes]
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: (asked.append(a[2]), answers.pop(0))[1])
    warned: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: warned.append(a[2]))
    small_run(window)
    window.start()
    qtbot.waitUntil(lambda: len(asked) == 1, timeout=120_000)
    assert "This compare would take about" in asked[0] and "tokens/s" in asked[0]
    assert "--yes" not in asked[0]  # the CLI's words are not the app's
    assert window.run_button.isEnabled() and not warned
    with Store.open(db, readonly=True) as store:
        assert store.list_sessions() == []  # No: nothing saved
    window.start()
    qtbot.waitUntil(lambda: len(asked) == 2, timeout=60_000)
    with qtbot.waitSignal(window.bridge.compared, timeout=180_000) as sig:
        pass
    sid, summaries = sig.args
    assert [s["status"] for s in summaries] == ["done"] * len(summaries) and not warned
    with Store.open(db, readonly=True) as store:
        assert [s.id for s in store.list_sessions()] == [sid]
