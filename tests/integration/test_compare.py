"""Strategies side by side on the embedded model: complete event streams, the CLI, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from comparing import compare

from engine.events import NodeAdded, RunFinished, RunStarted, Selected, TextDelta
from engine.problems import get_problem
from engine.run.compare import summarise
from engine.search import default_strategies


@pytest.fixture(scope="module")
def big_backend(model_path):
    from engine.backends.llama_cpp import Backend, BackendConfig

    b = Backend(model_path, BackendConfig(n_ctx=16384, n_seq_max=64))
    yield b
    b.close()


def test_three_strategies_side_by_side_give_complete_event_streams(big_backend):
    p = get_problem("gsm8k", 0)
    streamed = []
    runs = compare(
        big_backend,
        p.question,
        default_strategies(),
        budget=8,
        reference=p.reference,
        max_tokens=48,
        on_event=lambda run, ev: streamed.append((run.spec.name, ev)),
        stream_text=True,
    )
    assert [r.spec.name for r in runs] == list(default_strategies())
    for r in runs:
        events = [e for e in r.events if not isinstance(e, TextDelta)]
        assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
        assert events[-1].status == "done", events[-1].message
        trace = r.trace()
        assert trace.nodes, r.spec.name
        unscored = [n.id for n in trace.nodes.values() if not n.scores and n.role != "lookahead"]
        assert unscored == []  # every node scored
        assert sum(isinstance(e, Selected) for e in events) == 1  # one selection
        fin = events[-1]
        assert fin.generated_tokens == sum(e.n_tokens for e in events if isinstance(e, NodeAdded))
        assert fin.generated_tokens > 0 and fin.prm_tokens > 0 and fin.wall_s > 0
        s = summarise(r)
        assert s.correct in (True, False)  # a reference was given
        assert r.run_id in {ev.run_id for name, ev in streamed if name == r.spec.name}
    # The budget as Snell counts it: best-of-N samples 8, revisions 2 chains x 4.
    bon, beam, rev = runs
    assert sum(isinstance(e, NodeAdded) for e in bon.events) == 8
    assert sum(isinstance(e, NodeAdded) for e in rev.events) == 8
    first_round = [e for e in beam.events if isinstance(e, NodeAdded) and e.parent_id is None]
    assert len(first_round) == 8
    assert any(isinstance(ev, TextDelta) for _, ev in streamed)  # panels can fill live
    assert big_backend.branches == []  # nothing leaked


def test_sequential_mode_runs_the_same_strategies(big_backend):
    runs = compare(
        big_backend,
        "What is 3 + 4?",
        ["best_of_n", "revisions"],
        budget=2,
        prm="arithmetic",
        max_tokens=24,
        concurrent=False,
    )
    assert all(r.status == "done" for r in runs)
    assert runs[0].wall_s <= runs[1].wall_s + 60
    assert all(isinstance(r.events[-1], RunFinished) for r in runs)


def test_cancel_marks_runs_cancelled_and_keeps_their_events(big_backend):
    seen = []

    def cancel():
        return len(seen) > 40

    runs = compare(
        big_backend,
        "Explain why the sky is blue, in detail.",
        default_strategies(),
        budget=4,
        prm="arithmetic",
        max_tokens=400,
        cancel=cancel,
        stream_text=True,
        on_event=lambda r, ev: seen.append(ev),
    )
    assert all(r.status == "cancelled" for r in runs)
    assert all(isinstance(r.events[0], RunStarted) and r.events[-1].status == "cancelled" for r in runs)
    assert big_backend.branches == []


def test_scores_of_a_prm_ride_in_generation_batches(big_backend):
    """The judge's decodes are merged with generation: fewer decode calls than running them apart."""
    calls0 = big_backend.stats.decode_calls
    runs = compare(big_backend, "What is 12 * 12?", ["best_of_n", "revisions"], budget=4, max_tokens=32)
    merged_calls = big_backend.stats.decode_calls - calls0
    assert all(r.status == "done" for r in runs)
    calls1 = big_backend.stats.decode_calls
    compare(
        big_backend, "What is 12 * 12?", ["best_of_n", "revisions"], budget=4, max_tokens=32, concurrent=False
    )
    apart_calls = big_backend.stats.decode_calls - calls1
    assert merged_calls < apart_calls


def ponder(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_cli_compare_json_on_a_shipped_problem():
    r = ponder(
        "compare",
        "--problem-set",
        "gsm8k",
        "--index",
        "0",
        "--budget",
        "4",
        "--max-tokens",
        "32",
        "--prm",
        "arithmetic",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["session_id"] and out["reference"] == "18"
    assert [x["strategy"] for x in out["runs"]] == ["best_of_n", "beam_search", "revisions"]
    for x in out["runs"]:
        assert x["correct"] in (True, False)
        assert x["generated_tokens"] > 0 and x["seconds"] > 0
        assert "answer" in x


@pytest.mark.parametrize(
    "args, message",
    [
        (("compare", "  "), "The problem is empty"),
        (("compare", "1+1?", "--budget", "0"), "budget must be a whole number of generations >= 1"),
        (("compare", "1+1?", "--strategies", "best_of_n,nope"), "Unknown strategy 'nope'"),
        (("compare", "1+1?", "--prm", "oracle"), "--prm must be judge, arithmetic, reference"),
        (("compare", "1+1?", "--prm", "reference"), "needs a reference answer"),
        (("compare", "--problem-set", "gsm8k", "--index", "5000"), "there is no #5000"),
    ],
)
def test_cli_compare_user_errors(args, message):
    r = ponder(*args, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr and "Traceback" not in r.stderr


def test_token_prm_gguf_without_the_step_tag_is_a_clear_error(tmp_path, model_path):
    fake = tmp_path / "math-shepherd-mistral-7b-prm.Q4_K_M.gguf"  # the catalog says: math-shepherd, ки
    os.symlink(model_path, fake)
    r = ponder(
        "compare",
        "1+1?",
        "--budget",
        "1",
        "--strategies",
        "best_of_n",
        "--prm",
        str(fake),
        "--max-tokens",
        "8",
        timeout=120,
    )
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "cannot be used as a token PRM" in r.stderr and "'ки'" in r.stderr
    assert "Traceback" not in r.stderr


def test_mcts_and_adaptive_best_of_n_beside_the_others_on_the_real_model(tmp_path):
    """``ponder compare --strategies mcts,adaptive_best_of_n,beam_search,best_of_n --budget 8``:
    four complete event streams, MCTS's values backed up iteration by iteration, adaptive
    best-of-N's spent generations said, and the session replaying to the same trees."""
    from engine.events import NodeValued, fold
    from engine.store import Store

    db = tmp_path / "s.db"
    r = ponder(
        "compare", "--problem-set", "gsm8k", "--index", "0", "--budget", "8", "--max-tokens", "256",
        "--strategies", "mcts,adaptive_best_of_n,beam_search,best_of_n", "--prm", "arithmetic",
        "--json", "--db", str(db),
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    runs = {x["strategy"]: x for x in out["runs"]}
    assert set(runs) == {"mcts", "adaptive_best_of_n", "beam_search", "best_of_n"}
    assert all(x["status"] == "done" and x["answer"] is not None for x in runs.values())
    assert runs["best_of_n"]["generations"] == runs["best_of_n"]["budget"] == 8
    assert 4 <= runs["adaptive_best_of_n"]["generations"] <= 8 and runs["adaptive_best_of_n"]["budget"] == 8
    with Store.open(db, readonly=True) as store:
        s = store.session(out["session_id"])
        by = {run.strategy: run for run in s.runs}
        events = store.events(by["mcts"].id)
        trace = fold(events)
        valued = [e for e in events if isinstance(e, NodeValued)]
        assert valued and trace.iterations == valued[-1].iteration + 1
        assert [e.iteration for e in valued] == sorted(e.iteration for e in valued)  # in order
        for node in trace.nodes.values():  # one visit of its own, one per visit of a child
            if node.visits is not None and node.children and node.role == "step":
                kids = [trace.nodes[c].visits or 0 for c in node.children if trace.nodes[c].role == "step"]
                assert node.visits == sum(kids) + 1
        finished = [n for n in trace.nodes.values() if n.finish_reason is not None]
        assert 8 <= len(finished) <= 8 + 3  # its budget of whole solutions (an expansion may end 3)
        assert trace.selected is not None and trace.selected.node_id in trace.nodes
        adaptive = fold(store.events(by["adaptive_best_of_n"].id))
        assert len(adaptive.roots) == runs["adaptive_best_of_n"]["generations"]


def test_a_compare_in_either_kv_layout_completes_and_the_session_says_which(tmp_path):
    """``--kv-layout streams``: best-of-N, beam search (forks) and budget forcing (a rewind) complete;
    the session records the layout and a rerun of it runs in the same layout and reproduces it.
    (Texts across the two layouts are not compared here: in the unified cache a sequence's logits move
    with the cells its company holds, see docs/batching.md; test_backend compares them alone.)"""
    from engine.store import Store

    db = tmp_path / "s.db"
    base = (
        "compare", "Tom has 3 apples and buys 5 more. How many apples does he have?", "--strategies",
        "best_of_n,beam_search,budget_forcing", "--budget", "4", "--max-tokens", "40", "--prm",
        "arithmetic", "--parallel", "9", "--ctx", "768", "--db", str(db), "--json",
    )  # fmt: skip
    out = {}
    for layout in ("unified", "streams"):
        r = ponder(*base, "--kv-layout", layout)
        assert r.returncode == 0, r.stderr
        out[layout] = json.loads(r.stdout)
        assert {run["status"] for run in out[layout]["runs"]} == {"done"}
    with Store.open(db, readonly=True) as s:
        uni, streams = (s.session(out[k]["session_id"]) for k in ("unified", "streams"))
        assert uni.settings["config"]["kv_layout"] == "unified"
        assert streams.settings["config"]["kv_layout"] == "streams"
        assert streams.settings["config"]["n_ctx"] == 9 * 768  # --ctx is each stream's

        def samples(session):
            run = next(r for r in session.runs if r.strategy == "best_of_n")
            return [n["text"] for n in s.nodes(run.id)]

        for session in (uni, streams):
            texts = samples(session)
            assert len(texts) == 4 and all(t.strip() for t in texts)
    r = ponder("sessions", "rerun", out["streams"]["session_id"], "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert "kv_layout" not in r.stdout  # the same layout again
    assert "Reproduced." in r.stdout, r.stdout
