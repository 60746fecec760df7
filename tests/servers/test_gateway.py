"""Sweeps that outgrow one machine, the way users run them: the SGLang Model Gateway (``smg``, the
pinned ``sglang-router`` that `make test` installs) with cache-aware routing in front of two real
llama-servers, and Ponder pointed at the gateway alone. The gateway takes text prompts only and cannot
tokenize: Ponder tokenizes with the model's own tokenizer (given, or found by the served name)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from comparing import check_complete, recorded_compare

from engine.backends.server.executor import ServerExecutor
from engine.backends.server.launch import Gateway, LlamaServer
from engine.backends.server.pool import ServerPool
from engine.errors import PonderError
from engine.events import fold
from engine.search import default_strategies
from engine.store import Store

# One thread each: two servers and the gateway share this machine's two cores (see test_servers).
WORKER = dict(parallel=2, ctx=8192, threads=1, extra=("--metrics",))


@pytest.fixture(scope="module")
def gateway(model_path):
    a = LlamaServer(model_path, **WORKER).start()
    b = LlamaServer(model_path, **WORKER).start()
    # A worker has 2 slots: cache-aware routing gives way to load beyond that (smg's default, 64
    # requests, would keep every prompt with the shared system prompt on one worker).
    g = Gateway([a.url, b.url], balance_abs=WORKER["parallel"]).start()
    yield g, a, b
    g.stop()
    a.stop()
    b.stop()


def served_tokens(server: LlamaServer) -> dict[str, float]:
    """What a worker's /metrics counts: tokens generated, prompt tokens evaluated and taken from cache."""
    text = urllib.request.urlopen(server.url + "/metrics", timeout=10).read().decode()  # noqa: S310 - loopback
    out = {}
    for key in ("tokens_predicted_total", "prompt_tokens_total", "prompt_tokens_cached_total"):
        m = re.search(rf"^llamacpp:{key} (\S+)$", text, re.M)
        out[key] = float(m.group(1)) if m else 0.0
    return out


def ponder(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_gguf_problem_compared_through_the_gateway_scores_every_node(gateway, model_path, tmp_path):
    """The issue's acceptance command: the three default strategies with the judge, through the
    gateway alone, the embedded GGUF as tokenizer."""
    g, _a, _b = gateway
    db = tmp_path / "gw.db"
    r = ponder(
        *("compare", "--server", g.url, "--tokenizer", model_path, "--problem-set", "gsm8k", "--index", "0"),
        *("--budget", "2", "--max-tokens", "48", "--prm", "judge", "--db", str(db), "--json"),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert [x["status"] for x in out["runs"]] == ["done"] * 3
    assert all(x["policy_flops"] > 0 for x in out["runs"])  # the parameters came from the tokenizer's GGUF
    with Store.open(db, readonly=True) as store:
        s = store.session(out["session_id"])
        backend = s.settings["backend"]
        assert backend["servers"] == [g.url] and backend["prompts"] == "text"
        assert backend["tokenizer"] == model_path and backend["served_as"] == Path(model_path).name
        assert s.runs[0].model_name == Path(model_path).name  # not the gateway's "unknown"
        for run in s.runs:
            trace = fold(store.events(run.id))
            assert trace.nodes and all(n.scores for n in trace.nodes.values() if n.role != "lookahead")
            assert not any("<|im_end|>" in n.text for n in trace.nodes.values())


def test_strategies_through_the_gateway_read_the_tokens_in_process_renders(gateway, model_path, tmp_path):
    """In the engine: every default strategy completes over the gateway with the judge, prompts are
    token for token the in-process path's, token shading has a text and logprob per token."""
    g, _a, _b = gateway
    ex = ServerExecutor(ServerPool.connect([g.url], tokenizer=model_path))
    store = Store.open(tmp_path / "s.db")
    try:
        info = ex.pool.info
        assert info.dialect == "openai" and info.text_prompts and not info.tokenizes
        sid, runs, err = recorded_compare(
            ex,
            store,
            "Tom has 3 apples and buys 5 more. How many apples does he have?",
            default_strategies(),
            budget=3,
            prm="judge",
            reference="8",
            max_tokens=40,
        )
        assert err is None, err
        check_complete(runs)
    finally:
        store.close()
        ex.close()


def test_a_sweep_through_the_gateway_completes_and_both_workers_serve(gateway, model_path, tmp_path):
    g, a, b = gateway
    before = [served_tokens(s) for s in (a, b)]
    db, out = tmp_path / "sweep.db", tmp_path / "out"
    r = ponder(
        *("sweep", "--server", g.url, "--set", "gsm8k", "--limit", "4", "--max-tokens", "40"),
        *("--budgets", "1,2", "--strategies", "best_of_n,beam_search", "--prm", "arithmetic"),
        *("--db", str(db), "--out", str(out), "--json"),
    )  # no --tokenizer: found by the name the gateway's answers give (the embedded model's file)
    assert r.returncode == 0, r.stderr[-2000:]
    with Store.open(db, readonly=True) as store:
        sweep = store.list_sweeps()[0]
        cells = store.sweep_cells(sweep.id)
        # Every problem has its cells (beam search needs a budget of 2: one per problem), all done.
        assert {p for p, _, _ in cells} == {0, 1, 2, 3} and len(cells) == 12
        assert all(c is not None and c.status == "done" for c in cells.values())
    after = [served_tokens(s) for s in (a, b)]
    generated = [
        y["tokens_predicted_total"] - x["tokens_predicted_total"] for x, y in zip(before, after, strict=True)
    ]
    assert all(n > 0 for n in generated), generated  # both workers served the sweep
    cached = sum(
        y["prompt_tokens_cached_total"] - x["prompt_tokens_cached_total"]
        for x, y in zip(before, after, strict=True)
    )
    assert cached > 0  # prompts routed where their prefix was cached


def test_an_endpoint_without_a_tokenizer_is_one_clear_line_before_anything_runs(model_path, tmp_path):
    """A served model Ponder cannot find a tokenizer for: one line naming --tokenizer, exit 2, nothing
    saved; with --tokenizer the same command runs."""
    alias = tmp_path / "mystery-model.gguf"
    alias.symlink_to(model_path)
    db = tmp_path / "none.db"
    with LlamaServer(alias, parallel=1, ctx=4096, threads=1) as w, Gateway([w.url]) as g:
        r = ponder(
            "compare", "--server", g.url, "--budget", "1", "--db", str(db), "What is 2 + 3?", timeout=120
        )
        assert r.returncode == 2, r.stderr
        lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
        assert len(lines) == 1 and "Traceback" not in r.stderr
        assert "--tokenizer" in lines[0] and "mystery-model" in lines[0] and "text only" in lines[0]
        assert not db.exists() or not Store.open(db, readonly=True).list_sessions()
        with pytest.raises(PonderError, match="has 49152 tokens|no such file"):
            ServerPool.connect([w.url], tokenizer=str(tmp_path / "nope.gguf"))
        ok = ponder(
            *("compare", "--server", g.url, "--tokenizer", model_path, "--budget", "1", "--max-tokens", "16"),
            *("--strategies", "best_of_n", "--prm", "arithmetic", "--db", str(db), "What is 2 + 3?"),
            timeout=300,
        )
        assert ok.returncode == 0, ok.stderr[-2000:]


def test_bench_runs_the_same_sweep_through_ponders_pool_and_the_gateway(gateway, model_path):
    g, a, b = gateway
    r = ponder(
        *("bench", "--server", a.url, "--server", b.url, "--gateway", g.url, "--tokenizer", model_path),
        *("--sweep-problems", "1", "--max-tokens", "24", "--repeat", "1", "--json"),
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout)
    assert out["slots"] == 2 * WORKER["parallel"] and out["rounds"] == {
        "pool": [out["pool"]["sweep_tok_s"]],
        "gateway": [out["gateway_route"]["sweep_tok_s"]],
    }
    for route in (out["pool"], out["gateway_route"]):
        assert route["cells"] == out["pool"]["cells"] >= 3 and route["failed"] == 0
        assert route["sweep_tok_s"] > 0
        assert 0 < route["cache_share"] < 1  # the shared system prompt came from cache, the rest did not
    assert out["gateway_vs_pool"] == round(
        out["gateway_route"]["sweep_tok_s"] / out["pool"]["sweep_tok_s"], 3
    )
