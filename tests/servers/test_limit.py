"""`ponder bench --limit`: the batched backend against llama.cpp's own llama-batched-bench (built by
`make test` beside llama-server), both KV layouts, one run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def ponder(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=900
    )


def test_the_limit_bench_sets_ponder_beside_the_engine_for_both_kv_layouts():
    r = ponder("bench", "--limit", "--n", "1,2", "--tokens", "8", "--repeat", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["engine"].endswith("llama-batched-bench") and out["tokens"] == 8
    rows = out["rows"]
    assert sorted((row["n"], row["layout"]) for row in rows) == [
        (1, "streams"), (1, "unified"), (2, "streams"), (2, "unified"),
    ]  # fmt: skip
    for row in rows:
        assert row["ponder_tok_s"] > 0 and row["engine_tok_s"] > 0
        assert row["ratio"] == pytest.approx(row["ponder_tok_s"] / row["engine_tok_s"], rel=0.01)
        # without sampling Ponder is at least as fast as with it, and sampling is a part of its time
        assert row["ponder_decode_tok_s"] >= row["ponder_tok_s"] * 0.99
        assert 0 <= row["sample_share"] < 1
        # two interleaved rounds, each side's figure its best one
        assert len(row["ponder_runs"]) == len(row["engine_runs"]) == 2
        assert row["engine_tok_s"] == pytest.approx(max(row["engine_runs"]), abs=0.06)
        assert row["ponder_tok_s"] == pytest.approx(max(row["ponder_runs"]), abs=0.06)
    for n in ("1", "2"):
        best = out["best"][n]
        mine = [row for row in rows if str(row["n"]) == n]
        top_engine = max(row["engine_tok_s"] for row in mine)
        top_ponder = max(row["ponder_tok_s"] for row in mine)
        assert best["ratio"] == pytest.approx(top_ponder / top_engine, rel=0.01)
    text = ponder("bench", "--limit", "--n", "2", "--tokens", "4", "--repeat", "1")
    assert text.returncode == 0, text.stderr
    assert "engine tok/s" in text.stdout and "streams" in text.stdout and "at its best" in text.stdout
