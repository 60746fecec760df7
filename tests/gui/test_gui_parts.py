"""The main window's parts: the detail splitter, two models side by side, the sessions search off
the GUI thread, the Qt-free compare form, and the message when Qt's platform plugin cannot load."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("pytestqt")

from small_models import drop_layers  # noqa: E402

from gui.app import MainWindow  # noqa: E402


def settle(qtbot, w):
    if w.sessions._debounce.isActive():
        w.sessions.refresh()
    qtbot.waitUntil(lambda: w.offload.pending == 0, timeout=30_000)


def test_the_detail_pane_opens_readable_and_keeps_its_width_across_restarts(qtbot, tmp_path):
    db = str(tmp_path / "s.db")
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    w.resize(1600, 1000)
    w.show()
    qtbot.waitExposed(w)
    detail = w.area.detail
    chars = detail.width() / detail.fontMetrics().averageCharWidth()
    assert 55 <= chars <= 70, chars  # about 60 characters a line on first start
    total = sum(w.area.split.sizes())
    w.area.split.setSizes([total - 300, 300])
    w.area.split.splitterMoved.emit(total - 300, 1)
    w.close()
    again = MainWindow(db=db)  # same settings file
    qtbot.addWidget(again)
    again.resize(1600, 1000)
    again.show()
    qtbot.waitExposed(again)
    assert abs(again.area.split.sizes()[1] - 300) <= 2
    again.close()


def test_two_models_run_side_by_side_grouped_with_their_flops(qtbot, tmp_path, model_path):
    """The embedded model and its first 12 layers: the same strategies on both, the panels grouped
    by model, each footer with its own FLOPs (the smaller model's fewer), two sessions saved."""
    from engine.gguf_info import read_gguf
    from engine.store import Store

    small = drop_layers(model_path, tmp_path / "smollm2-12-layers.gguf", 12)
    db = str(tmp_path / "s.db")
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    w.show()
    w.add_model_path(str(small))  # listed (and chosen); the embedded model is the second
    settle(qtbot, w)
    i = w.second_combo.findData(model_path)
    assert i > 0 and w.model_combo.currentData() == str(small)
    w.second_combo.setCurrentIndex(i)
    for name, box in w.strategy_boxes.items():
        box.setChecked(name in ("best_of_n", "beam_search"))
    w.budget_spin.setValue(2)
    w.tokens_spin.setValue(24)
    w.prm_combo.setCurrentText("arithmetic")
    w.start()
    assert not w.model_bar.isEnabled()  # no model switch mid-run
    qtbot.waitUntil(lambda: w.controls.run_button.isEnabled(), timeout=300_000)
    small_label, large_label = w._groups  # one model in two files: told apart by file name
    assert "smollm2-12-layers.gguf" in small_label and "SmolLM2-135M-Instruct.Q4_1.gguf" in large_label
    assert list(w.panels) == [
        f"{small_label}: best_of_n",
        f"{small_label}: beam_search",
        f"{large_label}: best_of_n",
        f"{large_label}: beam_search",
    ]
    groups = w.area.panel_host.findChildren(type(w.area.panel_host), "modelGroup")
    assert len(groups) == 2  # one titled group per model
    for p in w.panels.values():
        assert p.trace.finished is not None and p.trace.nodes, (
            w.status.currentMessage(),
            [(k, len(q.trace.nodes)) for k, q in w.panels.items()],
        )
        assert "FLOP" in p.footer.text()
    with Store.open(db, readonly=True) as store:
        sessions = store.list_sessions()
        assert len(sessions) == 2
        runs = {
            r.model_path: r for s in sessions for r in store.session(s.id).runs if r.strategy == "best_of_n"
        }
    n_small, n_large = read_gguf(str(small)).n_params, read_gguf(model_path).n_params
    assert n_small < n_large
    flops = {p.model: p.trace.finished.policy_flops for k, p in w.panels.items() if k.endswith("best_of_n")}
    fin = {p.model: p.trace.finished for k, p in w.panels.items() if k.endswith("best_of_n")}
    for label, n in ((small_label, n_small), (large_label, n_large)):
        f = fin[label]
        assert flops[label] == pytest.approx(2 * n * (f.prompt_tokens + f.generated_tokens), rel=1e-6)
    assert set(runs) == {str(small), model_path}  # each model's runs saved with its own file
    for label, path in ((small_label, str(small)), (large_label, model_path)):
        assert fin[label].policy_flops == pytest.approx(runs[path].policy_flops)
    w.grab().save(str(tmp_path / "two_models.png"))
    w.close()


def test_typing_in_the_session_search_runs_one_query_off_the_gui_thread(qtbot, tmp_path, monkeypatch):
    import threading

    import gui.sessions_dock as dock

    seen = []
    real = dock.list_sessions

    def spy(db, filters):
        seen.append((threading.current_thread() is threading.main_thread(), filters["search"]))
        return real(db, filters)

    monkeypatch.setattr(dock, "list_sessions", spy)
    w = MainWindow(db=str(tmp_path / "s.db"))
    qtbot.addWidget(w)
    settle(qtbot, w)
    seen.clear()
    for ch in "ducks":
        w.session_search.setText(w.session_search.text() + ch)
    qtbot.waitUntil(lambda: bool(seen) and w.offload.pending == 0, timeout=10_000)
    assert seen == [(False, "ducks")]  # one query, for the whole word, not on the GUI thread
    w.close()


def test_the_compare_form_is_checked_without_qt():
    code = (
        "import sys\n"
        "from gui.form import CompareForm\n"
        "f = CompareForm(problem='  ', strategies=['best_of_n'], budget=4)\n"
        "assert f.check() == 'Type a problem first.'\n"
        "f = CompareForm(problem='1+1?', strategies=['best_of_n'], budget=4, prm='reference')\n"
        "assert 'reference answer' in f.check()\n"
        "f = CompareForm(problem='1+1?', strategies=['dvts'], budget=6)\n"
        "assert 'DVTS cannot spend a budget of 6' in f.check(), f.check()\n"
        "assert CompareForm(problem='1+1?', strategies=['best_of_n'], budget=4).check() is None\n"
        "assert 'PySide6' not in sys.modules\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


def test_a_platform_plugin_that_cannot_load_is_a_message_naming_what_to_install(tmp_path):
    env = {**os.environ, "QT_QPA_PLATFORM": "nosuchplatform", "PONDER_CONFIG_DIR": str(tmp_path)}
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch"], capture_output=True, text=True, timeout=120, env=env
    )
    assert r.returncode == 2
    assert 'platform plugin "nosuchplatform"' in r.stderr
    assert "sudo apt install libxcb-cursor0 libxcb-icccm4" in r.stderr
    assert "sudo dnf install xcb-util-cursor xcb-util-wm" in r.stderr
    assert "Traceback" not in r.stderr and "Aborted" not in r.stderr


def test_the_missing_libraries_are_read_from_ldd_and_named_with_their_packages():
    from gui.platform_check import install_commands, not_found

    out = (
        "\tlibxcb.so.1 => /lib/x86_64-linux-gnu/libxcb.so.1 (0x7f)\n"
        "\tlibxcb-icccm.so.4 => not found\n"
        "\tlibxcb-keysyms.so.1 => not found\n"
        "\tlibxcb-icccm.so.4 => not found\n"
    )
    missing = not_found(out)
    assert missing == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"]
    apt, dnf = install_commands(missing)
    assert apt.endswith("sudo apt install libxcb-icccm4 libxcb-keysyms1")
    assert dnf.endswith("sudo dnf install xcb-util-wm xcb-util-keysyms")


def test_a_reopened_sweep_keeps_its_strategy_parameters_so_run_resumes_it(qtbot, tmp_path):
    """A sweep run with ``--adaptive-best-of-n-threshold 0.8`` shown in the Sweeps tab: the form says
    so, and Run / resume asks for that sweep (not one with the defaults) while adaptive best-of-N is
    ticked; untick it and the parameters go with it."""
    from types import SimpleNamespace

    from engine.sweeps import SweepSpec
    from gui.sweeps import SweepsTab

    tab = SweepsTab(SimpleNamespace(db=str(tmp_path / "s.db"), bridge=None))
    qtbot.addWidget(tab)
    shown = SweepSpec(
        "arith",
        limit=3,
        strategies=("best_of_n", "adaptive_best_of_n"),
        budgets=(4, 16),
        prm="arithmetic",
        params={"adaptive_best_of_n": {"threshold": 0.8}},
    )
    tab.show_spec(shown)
    assert tab.params_label.text() == "Strategy settings: adaptive best-of-N threshold 0.8"
    assert tab.spec().params == {"adaptive_best_of_n": {"threshold": 0.8}}
    tab.strategy_boxes["adaptive_best_of_n"].setChecked(False)
    assert tab.spec().params == {}
    tab.show_spec(SweepSpec("arith", strategies=("best_of_n",), budgets=(4,)))
    assert tab.params_label.text() == "" and tab.spec().params == {}
