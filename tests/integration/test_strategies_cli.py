"""The strategy registry on real llama.cpp through the CLI: a plugin strategy run by the registry
alone, particle filtering and budget forcing beside the others on the embedded model, a sweep
matched by tokens, the revisions bench. Their exact rules on a scripted executor are in
tests/unit/test_registry_strategies.py; the app's side in tests/gui/test_gui_strategies.py."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import plugin_strategy
import pytest

from engine.events import fold


def ponder(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def toy_module(tmp_path, monkeypatch):
    yield from plugin_strategy.installed(tmp_path, monkeypatch)


def test_a_plugin_strategy_runs_from_the_cli_through_the_registry_alone(toy_module, tmp_path):
    db = str(tmp_path / "toy.db")
    h = ponder("compare", "--help")
    assert "--particle-filtering-temperature" in h.stdout and "--budget-forcing-think-tokens" in h.stdout
    assert "--toy-shout" in h.stdout and "toy" in h.stdout
    r = ponder(
        "compare", "What is 2 + 3?", "--strategies", "toy,best_of_n", "--budget", "2",
        "--max-tokens", "16", "--prm", "arithmetic", "--toy-shout", "yes", "--db", db, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    with sqlite3.connect(db) as c:
        rows = c.execute("SELECT strategy, params FROM runs ORDER BY strategy").fetchall()
    assert [x[0] for x in rows] == ["best_of_n", "toy"]
    assert json.loads(rows[1][1])["shout"] is True and json.loads(rows[1][1])["n"] == 2
    assert out["session_id"]
    # A bad value is refused before the model loads, in the user's terms.
    r = ponder("compare", "q", "--strategies", "particle_filtering", "--particle-filtering-resampling", "x")
    assert r.returncode == 2 and "resampling must be one of systematic, multinomial" in r.stderr
    r = ponder("compare", "q", "--strategies", "best_of_n", "--dvts-beam-width", "2")
    assert r.returncode == 2 and "which --strategies does not include" in r.stderr


def test_the_new_strategies_complete_side_by_side_on_the_embedded_model(tmp_path):
    db = str(tmp_path / "new.db")
    r = ponder(
        "compare", "--problem-set", "gsm8k", "--index", "0", "--strategies",
        "particle_filtering,budget_forcing,best_of_n,beam_search", "--budget", "4",
        "--max-tokens", "64", "--prm", "arithmetic", "--db", db, "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    from engine.store import Store

    with Store.open(db, readonly=True) as store:
        session = store.session(json.loads(r.stdout)["session_id"])
        assert session.settings["seeds"] == "independent"
        for run in session.runs:
            t = fold(store.events(run.id))
            assert run.status == "done", (run.strategy, run.message)
            assert t.selected is not None, run.strategy
            assert all(n.scores for n in t.nodes.values()), run.strategy  # every node scored
            if run.strategy == "particle_filtering":
                assert t.resamplings or all(n.finish_reason for n in t.nodes.values() if not n.children)
            if run.strategy == "budget_forcing":
                assert run.generated_tokens > 0 and len(t.roots) == 1
        # Independent streams: the first samples of two strategies are not the same text.
        firsts = {r.strategy: fold(store.events(r.id)).nodes[0].text for r in session.runs}
        assert firsts["best_of_n"] != firsts["particle_filtering"]


def test_a_sweep_matched_by_tokens_holds_every_cell_to_its_budget(tmp_path):
    from engine.store import Store

    db, out = str(tmp_path / "sw.db"), tmp_path / "out"
    r = ponder(
        "sweep", "--set", "arith", "--limit", "2", "--strategies", "best_of_n,beam_search,budget_forcing",
        "--budget-tokens", "48,96", "--max-tokens", "24", "--prm", "arithmetic", "--db", db,
        "--out", str(out), "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["spec"]["budget_kind"] == "tokens" and summary["spec"]["budgets"] == [48, 96]
    md = (out / "summary.md").read_text()
    assert "matched by tokens" in md and "T=48" in md
    with Store.open(db, readonly=True) as store:
        cells = store.sweep_cells(summary["sweep"]["id"])
    assert len(cells) == 2 * 3 * 2  # every strategy at every token budget: nothing subsampled
    for (_, strategy, budget), run in cells.items():
        assert run is not None and run.status == "done"
        assert run.generated_tokens <= budget, (strategy, budget, run.generated_tokens)


def test_the_revisions_bench_shows_what_continuing_cells_saves():
    r = ponder("bench", "--revisions", "--problems", "0", "--budget", "4", "--max-tokens", "24", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["params"]["revisions"] == {**out["params"]["revisions"], "chains": 1, "length": 4}
    reuse, fresh = out["revisions"], out["revisions_no_reuse"]
    assert reuse["cached_tokens"] > 0 and fresh["cached_tokens"] == 0
    # the same chats are the runs' prompts either way; with reuse most of them come from the cells
    assert reuse["prompt_tokens"] == fresh["prompt_tokens"]
    assert reuse["prompt_tokens"] - reuse["cached_tokens"] < fresh["prompt_tokens"]  # decoded: the rest
    assert out["ratio"] > 0 and out["reuse_speedup"] > 0 and out["best_of_n"]["tokens"] > 0
