"""The strategy registry in the app: a plugin strategy's controls made from its entry and run on the
embedded model, and particle filtering's weights, copies and deaths drawn from a scripted run."""

from __future__ import annotations

import plugin_strategy
import pytest
from scripted import ctx, pf_script

from engine.search import registry
from engine.search.particle_filtering import particle_filtering


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    yield from plugin_strategy.installed(tmp_path, monkeypatch)


def test_a_plugin_strategy_runs_from_the_app(toy_module, qtbot, tmp_path):
    from engine.store import Store
    from gui.app import MainWindow

    registry.load([toy_module])
    db = str(tmp_path / "app.db")
    w = MainWindow(db=db)
    qtbot.addWidget(w)
    w.show()
    assert "toy" in w.strategy_boxes and "shout" in w.strategy_params["toy"]  # made from its entry
    for name, box in w.strategy_boxes.items():
        box.setChecked(name == "toy")
    w.strategy_params["toy"]["shout"].setChecked(True)
    w.budget_kind.setCurrentIndex(w.budget_kind.findData("tokens"))  # matched by tokens: 32 of them
    w.budget_spin.setValue(32)
    w.tokens_spin.setValue(16)
    w.seeds_combo.setCurrentIndex(w.seeds_combo.findData("common"))
    w.prm_combo.setCurrentText("arithmetic")
    w.start()
    with qtbot.waitSignal(w.bridge.compared, timeout=180_000) as sig:
        pass
    with Store.open(db, readonly=True) as store:
        session = store.session(sig.args[0])
        (run,) = session.runs
    assert run.strategy == "toy" and run.params["shout"] is True and run.n_nodes == 2  # 32 // 16
    assert session.settings["seeds"] == "common" and session.settings["budget_tokens"] == 32
    assert run.generated_tokens <= 32
    header = w.panels["toy"].header.text()
    assert list(w.panels) == ["toy"] and "Toy" in header
    assert "at most 32 tokens" in header and "common seeds" in header  # the app says which
    w.close()


def test_the_app_draws_resampling_weights_copies_and_deaths(qtbot, tmp_path):
    from gui.app import MainWindow
    from gui.trace_view import tree_notes

    s = pf_script(scores={"P0": 0.99})
    s.run(particle_filtering(ctx(), n=4))
    w = MainWindow(db=str(tmp_path / "pf.db"))
    qtbot.addWidget(w)
    w._make_panels(["particle_filtering"])
    panel = w.panels["particle_filtering"]
    for ev in s.events:
        panel.apply(ev)
    panel.redraw()
    notes = tree_notes(panel.trace)
    assert notes[0].startswith("w 1.00 ×4") and notes[1].startswith("w 0.00 ×0")
    folded = {i for st in panel.view.layout.stubs.values() for i in st.nodes}
    assert 1 in folded  # a particle no one continues is folded into its round's stub...
    assert len(panel.view.items_by_node) + len(folded) == len(panel.trace.nodes) == 8
    panel.view.toggle_round(0)
    assert len(panel.view.items_by_node) == 8
    assert panel.view.items_by_node[1].opacity() < 1  # ...and faded when it is shown
    w.show_node(panel, 0)
    assert "copied to 4 particles" in w.detail.toPlainText()
    w.show_node(panel, 2)
    assert "died" in w.detail.toPlainText()
    w.close()
