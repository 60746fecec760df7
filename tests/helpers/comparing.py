"""Tests' shorthand for one compare: keywords become one CompareRequest that run_compare runs.

``target`` is an executor, or a llama.cpp Backend the test owns (wrapped in an in-process executor
that leaves it open)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from engine import children
from engine.backends.llama_cpp.executor import LlamaCppExecutor
from engine.events import NodeAdded, RunFinished, RunStarted, Selected, TextDelta
from engine.executor import Executor
from engine.run.compare import run_compare
from engine.run.request import CompareRequest
from engine.store import Store


def executor_of(target: Any) -> Executor:
    return target if isinstance(target, Executor) else LlamaCppExecutor(target)


def request(problem: str, strategies: Any = None, **kw: Any) -> CompareRequest:
    return CompareRequest(problem=problem, strategies=tuple(strategies or ()), **kw)


def compare(target: Any, problem: str, strategies: Any = None, on_event=None, cancel=None, **kw: Any) -> list:
    """The runs of one compare, not recorded."""
    return run_compare(executor_of(target), request(problem, strategies, **kw), on_event, cancel).runs


def recorded_compare(
    target: Any,
    store: Any,
    problem: str,
    strategies: Any = None,
    on_event=None,
    cancel=None,
    on_session=None,
    **kw,
) -> tuple[str | None, list, str | None]:
    """(session id, runs, recording error) of one compare recorded into ``store``."""
    out = run_compare(
        executor_of(target), request(problem, strategies, **kw), on_event, cancel, store, on_session
    )
    return out.session_id, out.runs, out.error


def check_complete(runs) -> None:
    """Every run done, every node scored, one selection, a text and logprob per token, no stop
    token in any node's text."""
    for r in runs:
        events = [e for e in r.events if not isinstance(e, TextDelta)]
        assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
        assert events[-1].status == "done", events[-1].message
        trace = r.trace()
        unscored = [n.id for n in trace.nodes.values() if not n.scores and n.role != "lookahead"]
        assert trace.nodes and unscored == []  # every node scored
        assert sum(isinstance(e, Selected) for e in events) == 1  # one selection
        for e in events:
            if isinstance(e, NodeAdded):  # token shading works: a text and logprob per token
                # (budget forcing shows its forced "Wait" as one more piece, p = 1, not generated)
                assert len(e.token_logprobs) == len(e.token_texts) >= e.n_tokens
                assert "".join(e.token_texts) == e.text
                assert "<|im_end|>" not in e.text and "<|im_start|>" not in e.text
        assert events[-1].generated_tokens == sum(e.n_tokens for e in events if isinstance(e, NodeAdded))


def sweep_killed_and_resumed(url: str, tmp_path: Path, *extra: str) -> None:
    """A sweep over the server at ``url`` killed outright after two finished cells, then run again:
    it does only what is missing (finished cells keep their sessions)."""
    db = tmp_path / "s.db"
    args = [
        "sweep",
        "--set",
        "arith",
        "--limit",
        "3",
        "--strategies",
        "best_of_n,beam_search",
        "--budgets",
        "1,2",
        "--prm",
        "arithmetic",
        "--max-tokens",
        "32",
        "--db",
        str(db),
        "--out",
        str(tmp_path / "out"),
        "--server",
        url,
        *extra,
    ]
    p = children.start(
        [sys.executable, "-m", "engine.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    # Wait for two finished cells, then kill the sweep outright.
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if db.exists():
            with Store.open(db, readonly=True) as st:
                sweeps = st.list_sweeps()
                cells = st.sweep_cells(sweeps[0].id) if sweeps else {}
            if sum(1 for r in cells.values() if r is not None and r.status == "done") >= 2:
                break
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    with Store.open(db, readonly=True) as st:
        sw = st.list_sweeps()[0]
        before = {
            k: r.session_id for k, r in st.sweep_cells(sw.id).items() if r is not None and r.status == "done"
        }
    assert len(before) >= 2
    r = subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    with Store.open(db, readonly=True) as st:
        after = st.sweep_cells(sw.id)
    total = 3 * (1 + 2)  # best-of-N runs once at the top budget, beam search at both
    assert sum(1 for x in after.values() if x is not None and x.status == "done") == total
    for k, sid in before.items():
        assert after[k].session_id == sid  # finished cells were not run again
