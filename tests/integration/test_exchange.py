"""Test-time compute against parameters on two real models: the embedded SmolLM2-135M and a smaller
copy of it (its first 12 of 30 layers, written with the gguf package). Parameter counts come from
the files; the test reads them there too and recomputes the report's numbers from the store."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from small_models import drop_layers

from engine.gguf_info import read_gguf
from engine.store import Store
from engine.sweeps import load_summary


@pytest.fixture(scope="module")
def exchange_run(tmp_path_factory, model_path):
    tmp = tmp_path_factory.mktemp("exchange")
    small = drop_layers(model_path, tmp / "smollm2-12-layers.gguf", 12)
    db, out = tmp / "x.db", tmp / "out"
    r = subprocess.run(
        [
            sys.executable, "-m", "gui.launch", "sweep", "--set", "arith", "--limit", "4",
            "--strategies", "best_of_n,beam_search", "--budgets", "1,2", "--prm", "arithmetic",
            "--max-tokens", "32", "--models", f"{small},{model_path}", "--pretrain-tokens", "2T,2T",
            "--db", str(db), "--out", str(out), "--json",
        ],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    return {"small": str(small), "large": model_path, "db": db, "out": out, "stdout": r.stdout}


def _sweep_of(store: Store, model: str, temperature: float) -> dict:
    (w,) = [
        w
        for w in store.list_sweeps()
        if w.settings["model_path"] == model and w.settings.get("temperature", 0.8) == temperature
    ]
    return store.sweep_cells(w.id)


def test_the_exchange_report_matches_the_store_and_counts_parameters_from_the_files(exchange_run):
    report = load_summary((exchange_run["out"] / "exchange.json").read_text())
    assert load_summary(exchange_run["stdout"]) == report
    n_small, n_large = read_gguf(exchange_run["small"]).n_params, read_gguf(exchange_run["large"]).n_params
    assert n_small < n_large
    assert (report["small"]["n_params"], report["large"]["n_params"]) == (n_small, n_large)
    with Store.open(exchange_run["db"], readonly=True) as st:
        small = _sweep_of(st, exchange_run["small"], 0.8)
        large = _sweep_of(st, exchange_run["large"], 0.8)
        greedy = _sweep_of(st, exchange_run["large"], 0.0)
        assert sorted(greedy) == [(i, "best_of_n", 1) for i in range(4)]
        # every run's FLOPs: 2 x the file's parameters x its prompt and generated tokens (no PRM model)
        for cells, n in ((small, n_small), (large, n_large), (greedy, n_large)):
            for r in cells.values():
                assert r.policy_flops == 2 * n * (r.prompt_tokens + r.generated_tokens) and r.prm_flops == 0
        assert report["problems"] == 4
        assert sorted(i for b in report["bins"] for i in b["problems"]) == [0, 1, 2, 3]

        def mean(xs: list[float]) -> float:
            return sum(xs) / len(xs)

        for b in report["bins"]:
            idx = b["problems"]
            # beam search runs at each budget: its point is its runs' own choice and FLOPs
            for p in b["small"]["beam_search"]:
                runs = [small[(i, "beam_search", p["budget"])] for i in idx]
                assert p["accuracy"] == pytest.approx(mean([bool(r.correct) for r in runs]))
                assert p["flops"] == pytest.approx(mean([r.flops for r in runs]))
                assert p["low"] <= p["accuracy"] <= p["high"]
            # best-of-N runs once at budget 2; budget 1 is read from it at half its FLOPs
            bon = {p["budget"]: p for p in b["large"]["best_of_n"]}
            top = [large[(i, "best_of_n", 2)] for i in idx]
            assert bon[2]["flops"] == pytest.approx(mean([r.flops for r in top]))
            assert bon[1]["flops"] == pytest.approx(bon[2]["flops"] / 2)
            assert bon[2]["accuracy"] == pytest.approx(mean([bool(r.correct) for r in top]))
            g = b["large"]["greedy"]
            runs = [greedy[(i, "best_of_n", 1)] for i in idx]
            assert g["accuracy"] == pytest.approx(mean([bool(r.correct) for r in runs]))
            assert g["flops"] == pytest.approx(mean([r.flops for r in runs]))
            best = b["best_small_within_greedy_flops"]
            if best is not None:
                assert best["flops"] <= g["flops"]
                assert b["test_time_compute_wins"] == (best["accuracy"] > g["accuracy"])
                assert b["verdict"].startswith("smollm2-12-layers")
    pre = report["pretraining"]
    greedy_tokens = sum(r.prompt_tokens + r.generated_tokens for r in greedy.values())
    assert pre["R"] == pytest.approx(greedy_tokens / 2e12)
    assert [m["R"] for m in pre["matched"]][1:] == [0.16, 0.79, 22.0]
    for m in pre["matched"]:  # cost matched: 6 N D + 2 N I on both sides
        i = m["R"] * 2e12
        small_cost = 6 * n_small * 2e12 + 2 * n_small * i * m["multiple"]
        assert small_cost == pytest.approx(6 * n_large * 2e12 + 2 * n_large * i)
    md = (exchange_run["out"] / "exchange.md").read_text()
    assert "| bin |" in md and "R (inference / pretraining tokens" in md


def test_the_exchange_report_renders_as_files_and_in_the_app(exchange_run, qtbot, tmp_path, monkeypatch):
    out = exchange_run["out"]
    assert (out / "exchange.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "exchange.svg").read_text().lstrip().startswith("<?xml")
    for sub in ("small", "large", "greedy"):  # each model's own sweep outputs beside it
        assert json.loads((out / sub / "summary.json").read_text())["problems"]["complete"] == 4
    from gui.app import MainWindow

    w = MainWindow(db=str(tmp_path / "gui.db"))
    qtbot.addWidget(w)
    view = w.sweeps_tab.open_exchange(str(out / "exchange.json"))
    assert view is not None
    qtbot.waitUntil(lambda: view.chart.pending == 0 and not view.chart.pixmap.isNull(), timeout=60_000)
    assert "smollm2-12-layers" in view.text.toPlainText() and "bin 1" in view.text.toPlainText()
    view.grab().save(str(tmp_path / "exchange_view.png"))
    bad = tmp_path / "not.json"
    bad.write_text('{"accuracy": {}}')
    from PySide6.QtWidgets import QMessageBox

    said: list[str] = []
    monkeypatch.setattr(QMessageBox, "warning", lambda *a, **k: said.append(a[2]))
    assert w.sweeps_tab.open_exchange(str(bad)) is None
    assert said and "is not an exchange report" in said[0]


def test_the_cli_writes_png_and_svg_charts_without_qt(exchange_run, tmp_path):
    """The engine's own entry point (no gui.launch) analyses a stored sweep and draws its charts
    with matplotlib's Agg backend: PySide6 is never imported."""
    out = tmp_path / "charts"
    code = (
        "import sys; from engine.cli import main; "
        f"rc = main(['sweep', '--set', 'arith', '--limit', '4', '--strategies', 'best_of_n,beam_search', "
        f"'--budgets', '1,2', '--prm', 'arithmetic', '--max-tokens', '32', "
        f"'--model', {exchange_run['small']!r}, '--db', {str(exchange_run['db'])!r}, '--out', {str(out)!r}, "
        "'--report-only']); "
        "assert 'PySide6' not in sys.modules, 'Qt was imported'; sys.exit(rc)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    for name in ("accuracy_vs_budget", "by_difficulty"):
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "<svg" in (out / f"{name}.svg").read_text()
    summary = load_summary((out / "summary.json").read_text())
    for s, by_method in summary["intervals"].items():  # every plotted accuracy sits in its interval
        for m, by_budget in by_method.items():
            for b, (lo, hi) in by_budget.items():
                assert lo - 1e-9 <= summary["accuracy"][s][m][b] <= hi + 1e-9
