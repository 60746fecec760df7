"""The app's Get models… dialog against the tests' Hub fixture (HF_ENDPOINT): the catalog listed with
size, fit and role; a repository looked up by id; a download with bytes and rate that can be
cancelled and resumed; the finished file in the model bar at once, a PRM in the PRM list."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")

from hub_fixture import FixtureRepo, HubFixture, smol_repo, tiny_gguf  # noqa: E402

from engine.gguf_info import human_size  # noqa: E402
from gui.app import MainWindow  # noqa: E402

POLICY = "bartowski/SmolLM2-360M-Instruct-GGUF"  # a catalog repository the fixture serves
POLICY_FILE = "SmolLM2-360M-Instruct-Q4_K_M.gguf"
PRM = "QuantFactory/math-shepherd-mistral-7b-prm-GGUF"
PRM_FILE = "math-shepherd-mistral-7b-prm.Q4_K_M.gguf"


@pytest.fixture
def hubfix(model_path, tmp_path, isolated_dirs, monkeypatch):
    tiny = tiny_gguf(tmp_path / "tiny.gguf")
    from pathlib import Path

    repos = {
        "fixture/smol": smol_repo(model_path),
        # the embedded model's bytes under a catalog policy's name, a tiny GGUF under a PRM's
        POLICY: FixtureRepo(files={POLICY_FILE: Path(model_path)}),
        PRM: FixtureRepo(files={PRM_FILE: tiny.read_bytes()}),
    }
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(isolated_dirs / "hfhome"))
    with HubFixture(repos) as f:
        monkeypatch.setenv("HF_ENDPOINT", f.url)
        yield f


def settle(qtbot, w):
    if w.sessions._debounce.isActive():
        w.sessions.refresh()
    qtbot.waitUntil(lambda: w.offload.pending == 0, timeout=30_000)


def _cells(dialog, row) -> list[str]:
    i = dialog.rows.index(row)
    out = []
    for c in range(dialog.table.columnCount()):
        item = dialog.table.item(i, c)
        widget = dialog.table.cellWidget(i, c)
        out.append(widget.currentText() if widget is not None else (item.text() if item else ""))
    return out


def _listed(dialog) -> bool:
    return all(r.listing is not None or r.error for r in dialog.rows)


def test_the_catalog_downloads_with_progress_and_the_models_join_the_lists(
    qtbot, tmp_path, hubfix, model_path
):
    w = MainWindow(db=str(tmp_path / "s.db"))
    qtbot.addWidget(w)
    w.show()
    settle(qtbot, w)
    dialog = w.model_bar.get_models()
    qtbot.waitUntil(lambda: _listed(dialog), timeout=30_000)
    size = human_size((__import__("pathlib").Path(model_path)).stat().st_size)
    policy = next(r for r in dialog.rows if r.repo == POLICY)
    name, role, quant, shown_size, fit, status = _cells(dialog, policy)
    assert role == "policy" and quant == "Q4_K_M" and shown_size == size and fit == "fits" and status == ""
    prm = next(r for r in dialog.rows if r.repo == PRM)
    assert _cells(dialog, prm)[1] == "PRM"
    roles = {r.role for r in dialog.rows}
    assert roles == {"policy", "PRM", "thinking"}
    others = [r for r in dialog.rows if r.repo not in (POLICY, PRM)]
    assert others and all(_cells(dialog, r)[5] == "cannot list" for r in others)  # not on the fixture
    assert "No repository" in others[0].error

    # choosing a row reads its header from the Hub (a few MB): parameters and layers before download
    dialog.select(lambda r: r is policy)
    qtbot.waitUntil(lambda: policy.header is not None, timeout=30_000)
    assert "30 layers" in dialog.detail.text() and "parameters" in dialog.detail.text()
    assert "with its KV cache" in dialog.table.item(dialog.rows.index(policy), 4).toolTip()

    # a download that is cancelled keeps its bytes; the next resumes and finishes
    hubfix.rate = 15 << 20
    seen = []
    dialog._relay.progress.connect(lambda p: seen.append((p.done, p.rate, dialog.bar_progress.format())))
    dialog.download()
    qtbot.waitUntil(lambda: any(d > 20 << 20 for d, _, _ in seen), timeout=30_000)
    assert not dialog.download_button.isEnabled() and dialog.cancel_button.isEnabled()
    dialog.cancel()
    qtbot.waitUntil(lambda: dialog.download_button.isEnabled(), timeout=30_000)
    assert "resumes from there next time" in dialog.status.text()
    assert _cells(dialog, policy)[5].endswith("kept: resumes")
    fmt = seen[-1][2]
    assert POLICY_FILE in fmt and f"of {size}" in fmt and "/s" in fmt and "s left" in fmt, fmt
    hubfix.rate = None
    dialog.download()
    qtbot.waitUntil(lambda: dialog.last_path is not None, timeout=60_000)
    assert "Downloaded and checked" in dialog.status.text() and "the model list" in dialog.status.text()
    assert _cells(dialog, policy)[5] == "downloaded"
    assert hubfix.ranges(POLICY_FILE)[-1] is not None, "the second download resumed with a Range"
    settle(qtbot, w)
    assert w.model_combo.findData(dialog.last_path) >= 0  # in the model bar at once
    policy_path = dialog.last_path

    # a PRM, downloaded, becomes choosable as a PRM (and is not offered as a policy)
    dialog.select(lambda r: r is prm)
    dialog.download()
    qtbot.waitUntil(lambda: dialog.last_path != policy_path, timeout=60_000)
    assert "the PRM list" in dialog.status.text()
    settle(qtbot, w)
    assert w.prm_combo.findData(dialog.last_path) >= 0 and w.model_combo.findData(dialog.last_path) < 0
    dialog.close()
    w.close()


def test_a_repository_looked_up_by_id_lists_its_ggufs_and_errors_are_one_line(qtbot, tmp_path, hubfix):
    w = MainWindow(db=str(tmp_path / "s.db"))
    qtbot.addWidget(w)
    settle(qtbot, w)
    dialog = w.model_bar.get_models()
    assert w.model_bar.get_models() is dialog  # a second click raises the one open
    dialog.repo_edit.setText("fixture/smol")
    dialog.look_up()
    qtbot.waitUntil(lambda: "fixture/smol: 1 GGUF model" in dialog.status.text(), timeout=30_000)
    assert [r.model.name for r in dialog.rows] == ["SmolLM2-135M-Instruct.Q4_1.gguf"]  # README.md is not one
    assert _cells(dialog, dialog.rows[0])[1:3] == ["policy", "Q4_1"]
    dialog.repo_edit.setText("fixture/nothere")
    dialog.look_up()
    qtbot.waitUntil(lambda: "No repository fixture/nothere" in dialog.status.text(), timeout=30_000)
    dialog.repo_edit.setText("not an id")
    dialog.look_up()
    assert "not a Hub repository id" in dialog.status.text()
    dialog.catalog_button.click()
    qtbot.waitUntil(lambda: _listed(dialog) and len(dialog.rows) > 10, timeout=30_000)
    dialog.close()
    w.close()


def test_without_the_network_the_dialog_says_so_once_and_still_lists_the_catalog(
    qtbot, tmp_path, hubfix, monkeypatch
):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    w = MainWindow(db=str(tmp_path / "s.db"))
    qtbot.addWidget(w)
    settle(qtbot, w)
    dialog = w.model_bar.get_models()
    qtbot.waitUntil(lambda: _listed(dialog), timeout=60_000)
    assert len(dialog.rows) >= 15 and all(_cells(dialog, r)[5] == "cannot list" for r in dialog.rows)
    assert dialog.status.text().startswith("Cannot reach the Hugging Face Hub at http://127.0.0.1:9")
    dialog.select(lambda r: True)
    dialog.download()  # nothing to download: the reason, no crash
    assert "Cannot reach" in dialog.status.text() and dialog.download_button.isEnabled()
    dialog.close()
    w.close()
