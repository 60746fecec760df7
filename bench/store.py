"""``ponder bench --store``: listing sessions and opening one in a large store.

The store is filled in bulk with synthetic sessions (``sessions`` x ``runs`` beam-search-shaped runs
of ``nodes`` nodes, 30 tokens each with logprobs and scores), then read as the app reads it: the
newest 50, all, a search with a filter, and one session's runs folded into traces. Medians of
``repeat``.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from sqlalchemy import insert

from engine.events import (
    NodeAdded,
    NodeFinished,
    NodePruned,
    NodeScored,
    RunFinished,
    RunStarted,
    Selected,
    fold,
)
from engine.store import EventRow, NodeRow, RunRow, SessionRow, Store

FILL_CHUNK = 25  # sessions per transaction


def _synthetic_run(run_id: str, n_nodes: int, rng: Any) -> list[Any]:
    """A beam-search-shaped stream of ``n_nodes`` nodes (30 tokens each, with logprobs and scores)."""
    evs: list[Any] = [
        RunStarted(
            run_id,
            "beam_search",
            {"n": 8, "beam_width": 4},
            {"name": "bench.gguf"},
            {"name": "judge"},
            0,
            "A synthetic problem",
            "42",
        )
    ]
    for i in range(n_nodes):
        parent = None if i < 8 else int(rng.integers(0, i))
        lps = [round(float(x), 4) for x in -rng.exponential(0.7, 30)]
        evs.append(
            NodeAdded(
                run_id,
                i,
                parent,
                "step",
                f"## Step {i}: compute {i} * 3 = {3 * i}.\n\n" * 3,
                30,
                round(sum(lps), 4),
                lps,
            )
        )
        s = round(float(rng.random()), 4)
        evs.append(NodeScored(run_id, i, [s], s, "judge"))
        if i % 3 == 0:
            evs.append(NodePruned(run_id, i, i // 8))
        elif i % 7 == 0:
            evs.append(NodeFinished(run_id, i, str(i), "eos"))
    evs.append(Selected(run_id, "42", n_nodes - 1, "weighted", {"42": 1.0}))
    evs.append(RunFinished(run_id, "done", "", 30 * n_nodes, 200, 500, 12.5))
    return evs


def _session_row(k: int) -> dict[str, Any]:
    return dict(
        id=f"s{k:06d}",
        created=f"2026-01-01T00:{k // 60 % 60:02d}:{k % 60:02d}+00:00",
        title=f"problem {k}",
        problem=f"Problem number {k}: what is {k} * 3?",
        reference=str(3 * k),
        tags=[],
        settings={},
        build={},
    )


def _run_row(sid: str, k: int, j: int, n_events: int, nodes: int) -> dict[str, Any]:
    return dict(
        id=f"{sid}r{j}",
        session_id=sid,
        position=j,
        strategy="beam_search",
        params={},
        model_name="bench.gguf",
        status="done",
        answer="42",
        correct=k % 2 == 0,
        n_events=n_events,
        n_nodes=nodes,
    )


def _event_rows(rid: str, template: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The template run's events and nodes as rows of run ``rid``."""
    erows, nrows = [], []
    for seq, ev in enumerate(template):
        d = ev.to_dict()
        d["run_id"] = rid
        erows.append(dict(run_id=rid, seq=seq, kind=ev.kind, payload=d))
        if isinstance(ev, NodeAdded):
            nrows.append(
                dict(
                    run_id=rid,
                    node_id=ev.node_id,
                    parent_id=ev.parent_id,
                    role=ev.role,
                    text=ev.text,
                    n_tokens=ev.n_tokens,
                    logprob_sum=ev.logprob_sum,
                )
            )
    return erows, nrows


def fill_store(path: str, sessions: int, runs: int, nodes: int, seed: int = 0) -> None:
    """Bulk-fill a store with synthetic sessions (one transaction per 25 sessions)."""
    rng = np.random.default_rng(seed)
    template = _synthetic_run("T", nodes, rng)
    with Store.open(path) as store:
        for start in range(0, sessions, FILL_CHUNK):
            srows, rrows, erows, nrows = [], [], [], []
            for k in range(start, min(sessions, start + FILL_CHUNK)):
                srow = _session_row(k)
                srows.append(srow)
                for j in range(runs):
                    rrow = _run_row(srow["id"], k, j, len(template), nodes)
                    rrows.append(rrow)
                    ev_rows, node_rows = _event_rows(rrow["id"], template)
                    erows += ev_rows
                    nrows += node_rows
            with store.engine.begin() as conn:
                conn.execute(insert(SessionRow), srows)
                conn.execute(insert(RunRow), rrows)
                conn.execute(insert(EventRow), erows)
                conn.execute(insert(NodeRow), nrows)


def _time_reads(store: Store, sessions: int, runs: int, nodes: int, repeat: int) -> dict[str, list[float]]:
    """Each read the app makes, ``repeat`` times: seconds of every repeat."""
    timings: dict[str, list[float]] = {"list_50_s": [], "list_all_s": [], "open_one_s": [], "search_s": []}
    target = f"s{sessions // 2:06d}"
    for _ in range(repeat):
        t = time.perf_counter()
        first = store.list_sessions(limit=50)
        timings["list_50_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        every = store.list_sessions()
        timings["list_all_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        store.list_sessions(search=f"number {sessions // 3}:", correct=True)
        timings["search_s"].append(time.perf_counter() - t)
        t = time.perf_counter()
        s = store.session(target)
        traces = [fold(store.events(r.id)) for r in s.runs]
        timings["open_one_s"].append(time.perf_counter() - t)
    assert len(first) == min(50, sessions) and len(every) == sessions
    assert sum(len(tr.nodes) for tr in traces) == runs * nodes
    return timings


def _db_size(path: str) -> int:
    return os.path.getsize(path) + (os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0)


def run_store_bench(
    path: str | None = None,
    sessions: int = 1000,
    runs: int = 3,
    nodes: int = 200,
    repeat: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Listing sessions and opening one (its runs' events, folded into traces) on a store of
    ``sessions`` x ``runs`` x ``nodes``; medians of ``repeat``."""
    say = progress or (lambda s: None)
    tmp = None
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="ponder-store-bench-")
        path = os.path.join(tmp.name, "bench.db")
    try:
        t0 = time.perf_counter()
        fill_store(path, sessions, runs, nodes)
        fill_s = time.perf_counter() - t0
        size = _db_size(path)
        say(f"filled {sessions} x {runs} runs x {nodes} nodes in {fill_s:.1f} s ({size / 1e6:.0f} MB)")
        with Store.open(path) as store:
            timings = _time_reads(store, sessions, runs, nodes, repeat)
        out: dict[str, Any] = {
            "sessions": sessions,
            "runs_per_session": runs,
            "nodes_per_run": nodes,
            "events_per_run": len(_synthetic_run("T", nodes, np.random.default_rng(0))),
            "db_mb": round(size / 1e6, 1),
            "fill_s": round(fill_s, 1),
            "repeat": repeat,
        }
        out.update({k: round(statistics.median(v), 4) for k, v in timings.items()})
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_store_bench(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{r['sessions']} sessions x {r['runs_per_session']} runs x {r['nodes_per_run']} nodes "
            f"({r['events_per_run']} events a run), {r['db_mb']} MB, median of {r['repeat']}",
            f"list newest 50       : {1000 * r['list_50_s']:8.1f} ms",
            f"list all             : {1000 * r['list_all_s']:8.1f} ms",
            f"search + filter      : {1000 * r['search_s']:8.1f} ms",
            f"open one (3 traces)  : {1000 * r['open_one_s']:8.1f} ms",
        ]
    )
