"""Inference servers in the app, offscreen, against a real llama-server on the embedded model."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("pytestqt")

from PySide6.QtCore import Qt  # noqa: E402
from PySide6.QtWidgets import QMessageBox  # noqa: E402

from engine.backends.server.launch import Gateway, LlamaServer, free_port  # noqa: E402
from engine.store import Store  # noqa: E402
from gui.app import MainWindow  # noqa: E402
from gui.servers import ServerDialog  # noqa: E402


@pytest.fixture
def db(tmp_path):
    return str(tmp_path / "gui.db")


def window_on_server(qtbot, db, srv, model_path):
    """A window that connected to ``srv`` through the Server dialog, its model chosen."""
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    w.show()
    dlg = ServerDialog(w)
    dlg.url.setText(srv.url)
    dlg.try_connect()
    entry = {"url": srv.url, "model": Path(model_path).name}
    qtbot.waitUntil(lambda: w.model_combo.currentData() == entry, timeout=30_000)
    return w, entry


def test_a_server_joins_the_model_list_runs_a_compare_and_is_remembered(qtbot, db, model_path, tmp_path):
    with LlamaServer(model_path, parallel=2, ctx=4096) as srv:
        w, entry = window_on_server(qtbot, db, srv, model_path)
        assert "2 slots" in w.model_combo.currentText()
        assert not w.ngl_slider.isEnabled() and not w.ctx_spin.isEnabled()
        assert "llama-server" in w.model_label.text() and "2 slots" in w.model_label.text()
        w.budget_spin.setValue(2)
        w.tokens_spin.setValue(40)
        w.prm_combo.setCurrentText("judge")
        qtbot.mouseClick(w.run_button, Qt.MouseButton.LeftButton)
        with qtbot.waitSignal(w.bridge.compared, timeout=240_000) as sig:
            pass
        sid, summaries = sig.args
        assert all(s["status"] == "done" for s in summaries)
        with Store.open(db, readonly=True) as store:
            s = store.session(sid)
            assert s.settings["backend"]["kind"] == "server" and s.settings["backend"]["servers"] == [srv.url]
            for r in s.runs:
                assert len(w.panels[r.strategy].trace.nodes) == r.n_nodes > 0
        # Token shading works for a server run: every token has its text and probability.
        panel = w.panels["best_of_n"]
        node = next(iter(panel.trace.nodes.values()))
        assert len(node.token_texts) == len(node.token_logprobs) == node.n_tokens
        w.grab().save(str(tmp_path / "server-window.png"))
        w.close()
        # The next window lists the server again (no key on disk) and starts on it.
        w2 = MainWindow(db=db)
        qtbot.addWidget(w2)
        assert w2.model_combo.currentData() == entry
        qtbot.waitUntil(lambda: "2 slots" in w2.model_combo.currentText(), timeout=30_000)
        ini = (Path(tmp_path) / "config" / "ponder.ini").read_text()
        assert srv.url in ini
        w2.close()


def test_an_unreachable_server_is_said_in_the_dialog_and_adds_nothing(qtbot, db):
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    n = w.model_combo.count()
    dlg = ServerDialog(w)
    dlg.url.setText(f"http://127.0.0.1:{free_port()}")
    dlg.try_connect()
    qtbot.waitUntil(lambda: "cannot connect" in dlg.status.text(), timeout=30_000)
    assert w.model_combo.count() == n and dlg.connect_button.isEnabled()
    w.close()


def test_a_gguf_and_a_server_model_run_side_by_side(qtbot, db, model_path, tmp_path):
    """The second model may be a server's: the same strategies run in process and on the server,
    the panels grouped by model, each run saved with its own backend."""
    from small_models import drop_layers

    small = drop_layers(model_path, tmp_path / "smollm2-8-layers.gguf", 8)
    with LlamaServer(model_path, parallel=2, ctx=4096) as srv:
        w, entry = window_on_server(qtbot, db, srv, model_path)
        w.add_model_path(str(small))  # the in-process model; the server's is the second
        qtbot.waitUntil(lambda: w.offload.pending == 0, timeout=30_000)
        w.second_combo.setCurrentIndex(w.second_combo.findData(entry))
        for name, box in w.strategy_boxes.items():
            box.setChecked(name == "best_of_n")
        w.budget_spin.setValue(2)
        w.tokens_spin.setValue(24)
        w.prm_combo.setCurrentText("arithmetic")
        w.start()
        qtbot.waitUntil(lambda: w.controls.run_button.isEnabled(), timeout=180_000)
        assert len(w.panels) == 2 and all(p.trace.finished is not None for p in w.panels.values())
        assert any(srv.url in key for key in w.panels)  # the server model's group is named by its URL
        with Store.open(db, readonly=True) as store:
            kinds = sorted(store.session(s.id).settings["backend"]["kind"] for s in store.list_sessions())
        assert kinds == ["llama.cpp", "server"], kinds
        w.close()


def test_a_gateway_is_added_with_its_tokenizer_runs_and_is_remembered(qtbot, db, model_path, tmp_path):
    """A gateway cannot tokenize and takes text prompts: the dialog's Tokenizer field gives the
    model's own; the list shows the model the gateway's answers name, not its "unknown"."""
    with LlamaServer(model_path, parallel=2, ctx=4096, threads=1) as worker, Gateway([worker.url]) as g:
        w = MainWindow(db=db)
        qtbot.addWidget(w)
        w.show()
        dlg = ServerDialog(w)
        dlg.url.setText(g.url)
        dlg.tokenizer.setText(model_path)
        dlg.try_connect()
        entry = {"url": g.url, "model": "unknown"}
        qtbot.waitUntil(lambda: w.model_combo.currentData() == entry, timeout=30_000)
        assert w.model_combo.currentText().startswith(Path(model_path).name)
        assert Path(model_path).name in w.model_label.text() and "parameters" in w.model_label.text()
        for name, box in w.strategy_boxes.items():
            box.setChecked(name == "best_of_n")
        w.budget_spin.setValue(2)
        w.tokens_spin.setValue(24)
        w.prm_combo.setCurrentText("arithmetic")
        with qtbot.waitSignal(w.bridge.compared, timeout=240_000) as sig:
            w.start()
        sid, summaries = sig.args
        assert [s["status"] for s in summaries] == ["done"]
        with Store.open(db, readonly=True) as store:
            backend = store.session(sid).settings["backend"]
        assert backend["tokenizer"] == model_path and backend["prompts"] == "text"
        w.close()
        w2 = MainWindow(db=db)  # the next window starts on it, with its tokenizer
        qtbot.addWidget(w2)
        assert w2.model_combo.currentData() == entry
        assert w2.bridge.server is not None and w2.bridge.server["tokenizer"] == model_path
        w2.close()


def test_a_gateway_whose_tokenizer_cannot_be_found_is_said_in_the_dialog(qtbot, db, model_path, tmp_path):
    alias = tmp_path / "mystery-model.gguf"
    alias.symlink_to(model_path)
    with LlamaServer(alias, parallel=1, ctx=2048, threads=1) as worker, Gateway([worker.url]) as g:
        w = MainWindow(db=db)
        qtbot.addWidget(w)
        n = w.model_combo.count()
        dlg = ServerDialog(w)
        dlg.url.setText(g.url)
        dlg.try_connect()
        qtbot.waitUntil(lambda: "Tokenizer in the app" in dlg.status.text(), timeout=30_000)
        assert "mystery-model" in dlg.status.text() and w.model_combo.count() == n
        w.close()


def test_a_reward_model_server_joins_the_prm_list_and_scores_a_server_run(
    qtbot, db, model_path, tmp_path, monkeypatch
):
    """A server that only pools (a head PRM on vLLM) added through Server… lands in the PRM list, not
    the model list; chosen there, it scores a run on a server model, and the run's record names it;
    with the model in process instead, the window says why it cannot."""
    import json

    from dummy_prm import write_dummy_prm

    from engine.backends.server.build import converted_model
    from engine.backends.server.launch import VllmServer
    from engine.events import RunStarted

    folder = tmp_path / "tiny-qwen-prm"
    tag = write_dummy_prm(converted_model(model_path), folder)
    extra = ("--load-format", "dummy", "--pooler-config", json.dumps({"step_tag_id": tag}))
    with (
        VllmServer(folder, name="tiny-qwen-prm", kv_cache_gb=1, extra=extra) as prm,
        LlamaServer(model_path, parallel=2, ctx=4096, threads=1) as srv,
    ):
        w, entry = window_on_server(qtbot, db, srv, model_path)
        n = w.model_combo.count()
        dlg = ServerDialog(w)
        dlg.url.setText(prm.url)
        dlg.try_connect()
        wanted = f"qwen-prm@{prm.url}"
        qtbot.waitUntil(lambda: w.prm_combo.findData(wanted) >= 0, timeout=30_000)
        assert w.model_combo.count() == n  # a reward model is no policy
        w.prm_combo.setCurrentIndex(w.prm_combo.findData(wanted))
        for name, box in w.strategy_boxes.items():
            box.setChecked(name == "best_of_n")
        w.budget_spin.setValue(2)
        w.tokens_spin.setValue(24)
        w.start()  # (the PRM server joins the bridge: a new one)
        qtbot.waitUntil(lambda: w.controls.run_button.isEnabled(), timeout=240_000)
        with Store.open(db, readonly=True) as store:
            (s,) = store.list_sessions()
            run = store.session(s.id).runs[0]
            started = next(e for e in store.events(run.id) if isinstance(e, RunStarted))
        assert run.status == "done" and started.prm["name"] == "qwen-prm: tiny-qwen-prm"
        assert started.prm["model"]["servers"] == [prm.url] and started.prm["model"]["pooling"]
        # The model in process: a PRM server cannot score it, and the window says so.
        said: list[str] = []
        monkeypatch.setattr(QMessageBox, "information", lambda *a, **k: said.append(a[2]))
        w.model_combo.setCurrentIndex(w.model_combo.findData(model_path))
        qtbot.waitUntil(lambda: w.bridge is not None and w.bridge.server is None, timeout=30_000)
        w.start()
        assert said and "choose a server model" in said[0]
        w.close()
