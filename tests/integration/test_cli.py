"""The CLI as a user runs it: real subprocesses, real model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def ponder(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=timeout
    )


def test_bench_json_shape_and_both_modes():
    r = ponder("bench", "--n", "1,2", "--tokens", "8", "--repeat", "3", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"].endswith(".gguf")
    rows = out["rows"]
    assert {(row["mode"], row["n"]) for row in rows} == {
        ("batched", 1),
        ("naive", 1),
        ("batched", 2),
        ("naive", 2),
    }
    for row in rows:
        assert row["decode_tok_s"] > 0 and 0 < row["tokens"] <= 8 * row["n"]
        if row["mode"] == "batched":
            assert row["tokens"] == 8 * row["n"]
        assert len(row["runs_tok_s"]) == 3 and sorted(row["runs_tok_s"])[1] == row["decode_tok_s"]
    assert set(out["ratio_batched_over_naive"]) == {"1", "2"}


def test_bench_text_output_has_a_ratio_table():
    r = ponder("bench", "--n", "2", "--tokens", "4", "--repeat", "1")
    assert r.returncode == 0, r.stderr
    assert "naive tok/s" in r.stdout and "batched tok/s" in r.stdout and "x" in r.stdout.splitlines()[-1]


def test_generate_json_is_reproducible():
    args = ("generate", "Name a colour.", "-n", "3", "--max-tokens", "12", "--seed", "5", "--json")
    a = json.loads(ponder(*args).stdout)["samples"]
    b = json.loads(ponder(*args).stdout)["samples"]
    assert [s["text"] for s in a] == [s["text"] for s in b]
    assert [s["seed"] for s in a] == [5, 6, 7]
    assert all(s["finish_reason"] in ("eos", "length") for s in a)


def test_generate_picks_a_stream_per_sample_for_many_long_samples_and_says_so():
    """``--kv-layout auto``: four samples of up to 512 tokens of one short prompt run a stream per
    sequence; fewer samples, shorter ones, a prompt longer than the samples, ``--kv-layout unified``
    or a ``--ctx`` (the size of one shared cache) run one cache."""

    def layout(*extra: str) -> tuple[str, list[dict]]:
        r = ponder("generate", *extra, "--seed", "3", "--json")
        assert r.returncode == 0, r.stderr
        out = json.loads(r.stdout)
        return out["kv_layout"], out["samples"]

    got, samples = layout("Say hello.", "-n", "4", "--max-tokens", "512")
    assert got == "streams" and len(samples) == 4
    assert all(s["tokens"] > 0 and s["finish_reason"] in ("eos", "length") for s in samples)
    assert layout("Say hello.", "-n", "2", "--max-tokens", "512")[0] == "unified"
    assert layout("Say hello.", "-n", "4", "--max-tokens", "64")[0] == "unified"
    assert layout("Say hello. " * 60, "-n", "4", "--max-tokens", "512")[0] == "unified"
    assert layout("Say hello.", "-n", "4", "--max-tokens", "512", "--kv-layout", "unified")[0] == "unified"
    assert layout("Say hello.", "-n", "4", "--max-tokens", "512", "--ctx", "8192")[0] == "unified"


def test_info_reports_build_and_offload():
    r = ponder("info", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["build"]["llama_cpp_python"] == "0.3.36"
    assert any(d["type"] == "CPU" for d in out["build"]["devices"])
    m = out["model"]
    assert m["n_layer"] == 30 and m["n_gpu_layers_requested"] == 0
    if not out["build"]["gpu_offload"]:
        assert m["n_layers_offloaded"] == 0


@pytest.mark.parametrize(
    "args, message",
    [
        (("generate", "   "), "The prompt is empty"),
        (("generate", "word " * 3000, "--ctx", "2048"), "but the context holds 2048"),
        (("generate", "hi", "--temperature", "-1"), "temperature must be >= 0"),
        (("generate", "hi", "--model", "/nonexistent/x.gguf"), "no such file"),
        (("bench", "--tokens", "0"), "--tokens must be >= 1"),
    ],
)
def test_user_errors_are_one_clear_line(args, message):
    r = ponder(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_command_and_bad_list_are_usage_errors():
    r = ponder("frobnicate")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = ponder("bench", "--n", "0,x")
    assert r.returncode == 2 and "--n" in r.stderr


def test_store_bench_reports_list_and_open_times(tmp_path):
    r = ponder("bench", "--store", "--sessions", "30", "--nodes", "20", "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["sessions"], out["runs_per_session"], out["nodes_per_run"]) == (30, 3, 20)
    for k in ("list_50_s", "list_all_s", "search_s", "open_one_s", "fill_s", "db_mb"):
        assert out[k] > 0
