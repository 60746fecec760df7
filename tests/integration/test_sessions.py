"""Sessions on the embedded model: recording while runs go on, replay, rerun, a kill mid-run, the CLI."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from comparing import recorded_compare

from engine import children
from engine.events import NodeAdded, RunFinished, TextDelta, fold
from engine.store import Store


def ponder(*args: str, timeout: float = 300, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        input=stdin,
    )


@pytest.fixture(scope="module")
def big_backend(model_path):
    from engine.backends.llama_cpp import Backend, BackendConfig

    b = Backend(model_path, BackendConfig(n_ctx=8192, n_seq_max=48))
    yield b
    b.close()


def test_saved_session_replays_the_live_stream(big_backend, tmp_path):
    live: dict[str, list] = {}
    order: list[tuple[str, str]] = []

    def on_event(run, ev):
        if not isinstance(ev, TextDelta):
            live.setdefault(run.run_id, []).append(ev)
            order.append((run.run_id, ev.kind))

    with Store.open(tmp_path / "s.db") as store:
        sid, runs, err = recorded_compare(
            big_backend,
            store,
            "Tom has 3 apples and buys 4 more. How many apples does he have?",
            ["best_of_n", "beam_search", "revisions"],
            budget=2,
            prm="judge",
            reference="7",
            seed=3,
            max_tokens=48,
            on_event=on_event,
            stream_text=True,
        )
        assert err is None
        s = store.session(sid)
        assert [r.strategy for r in s.runs] == ["best_of_n", "beam_search", "revisions"]
        for run in runs:
            stored = store.events(run.run_id)
            assert stored == live[run.run_id]  # the very events, in the very order
            assert fold(stored) == fold(live[run.run_id])
            info = next(r for r in s.runs if r.id == run.run_id)
            assert info.status == "done" and info.n_nodes == len(fold(stored).nodes)
            assert info.generated_tokens == run.generated_tokens > 0
            assert info.correct in (True, False)
        # Across runs, replay interleaves as the runs did live.
        assert [(rid, ev.kind) for rid, ev in store.replay(sid)] == order


def test_cancel_keeps_the_partial_runs_as_cancelled(big_backend, tmp_path):
    seen = {"nodes": 0}

    def on_event(run, ev):
        if isinstance(ev, NodeAdded):
            seen["nodes"] += 1

    with Store.open(tmp_path / "s.db") as store:
        sid, _runs, err = recorded_compare(
            big_backend,
            store,
            "What is 12 times 12?",
            ["best_of_n", "beam_search"],
            budget=2,
            prm="arithmetic",
            max_tokens=400,
            on_event=on_event,
            cancel=lambda: seen["nodes"] >= 2,
        )
        assert err is None
        s = store.session(sid)
        assert {r.status for r in s.runs} == {"cancelled"}
        assert sum(r.n_nodes for r in s.runs) >= 2
        for r in s.runs:
            evs = store.events(r.id)
            assert isinstance(evs[-1], RunFinished) and evs[-1].status == "cancelled"


def _committed_events(db: str) -> int:
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(con.execute("SELECT COUNT(*) FROM events WHERE kind = 'node_added'").fetchone()[0])
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def test_a_kill_mid_run_keeps_every_committed_event(tmp_path):
    db = str(tmp_path / "killed.db")
    proc = children.start(
        [
            sys.executable,
            "-m",
            "gui.launch",
            "compare",
            "--problem-set",
            "gsm8k",
            "--index",
            "0",
            "--budget",
            "4",
            "--max-tokens",
            "512",
            "--db",
            db,
            "--json",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 240
        seen = 0
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _committed_events(db)
            if seen >= 6:
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert seen >= 6
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    with Store.open(db) as store:
        (s,) = store.list_sessions()
        assert s.runs and all(r.status == "interrupted" for r in s.runs if r.status != "done")
        assert any(r.status == "interrupted" for r in s.runs)
        total = 0
        for r in s.runs:
            evs = store.events(r.id)
            fold(evs)  # a valid prefix of the live stream
            total += sum(isinstance(e, NodeAdded) for e in evs)
        assert total >= seen  # nothing committed before the kill is lost
        assert store.repair_interrupted() >= 1  # the status is written for good on the next open
        assert all(r.status in ("done", "interrupted") for r in store.session(s.id).runs)


def test_cli_sessions_list_show_replay_export_import_delete(tmp_path):
    db = str(tmp_path / "cli.db")
    r = ponder(
        "compare",
        "What is 5 + 6?",
        "--reference",
        "11",
        "--budget",
        "2",
        "--max-tokens",
        "32",
        "--strategies",
        "best_of_n,beam_search",
        "--prm",
        "arithmetic",
        "--db",
        db,
        "--tag",
        "demo",
        "--json",
    )
    assert r.returncode == 0, r.stderr
    sid = json.loads(r.stdout)["session_id"]

    r = ponder("sessions", "list", "--db", db)
    assert r.returncode == 0 and sid in r.stdout and "best_of_n=" in r.stdout
    r = ponder("sessions", "list", "--db", db, "--json", "--search", "5 + 6")
    assert [s["id"] for s in json.loads(r.stdout)] == [sid]
    r = ponder("sessions", "show", sid[:7], "--db", db)
    assert r.returncode == 0 and "What is 5 + 6?" in r.stdout and "Tags: demo" in r.stdout
    r = ponder("sessions", "replay", sid, "--db", db, "--json")
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["kind"] == "run_started" and lines[-1]["kind"] == "run_finished"

    html = tmp_path / "s.html"
    r = ponder("sessions", "export", sid, "--format", "html", "--out", str(html), "--db", db)
    assert r.returncode == 0, r.stderr
    page = html.read_text()
    assert "What is 5 + 6?" in page and "beam_search" in page and "https://" not in page
    out = tmp_path / "s.jsonl"
    assert (
        ponder("sessions", "export", sid, "--format", "jsonl", "--out", str(out), "--db", db).returncode == 0
    )

    r = ponder("sessions", "export", sid, "--out", str(tmp_path / "nowhere" / "s.json"), "--db", db)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "nowhere").exists()

    r = ponder("sessions", "delete", sid, "--db", db)  # no terminal to ask: refuses
    assert r.returncode == 2 and "--yes" in r.stderr
    assert ponder("sessions", "delete", sid, "--yes", "--db", db).returncode == 0
    assert "No sessions yet." in ponder("sessions", "list", "--db", db).stdout
    r = ponder("sessions", "import", str(out), "--db", db)
    assert r.returncode == 0 and sid in r.stdout
    r = ponder("sessions", "show", sid, "--db", db, "--json")
    assert [x["strategy"] for x in json.loads(r.stdout)["runs"]] == ["best_of_n", "beam_search"]


def test_rerun_with_the_same_seed_reproduces_the_texts(tmp_path):
    db = str(tmp_path / "rerun.db")
    r = ponder(
        "compare",
        "--problem-set",
        "gsm8k",
        "--index",
        "1",
        "--budget",
        "2",
        "--max-tokens",
        "48",
        "--db",
        db,
        "--json",
    )
    assert r.returncode == 0, r.stderr
    sid = json.loads(r.stdout)["session_id"]
    r = ponder("sessions", "rerun", sid, "--db", db, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["reproduced"], rep
    assert rep["conditions"] == []
    assert [x["texts_match"] for x in rep["runs"]] == [True, True, True]
    with Store.open(db) as store:
        assert store.session(rep["new_session_id"]).rerun_of == sid


@pytest.mark.parametrize(
    "args, message",
    [
        (("sessions", "show", "nosuch"), "No session nosuch"),
        (("sessions", "rerun", "nosuch"), "No session nosuch"),
        (("sessions", "import", "/nonexistent/x.json"), "No file"),
    ],
)
def test_cli_sessions_errors_are_one_clear_line(args, message, tmp_path):
    db = tmp_path / "e.db"
    Store.open(db).close()
    r = ponder(*args, "--db", str(db), timeout=60)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


def test_cli_refuses_a_damaged_database_before_loading_the_model(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"garbage" * 50)
    r = ponder("compare", "1+1?", "--db", str(bad), timeout=60)
    assert r.returncode == 2 and "not a Ponder session database" in r.stderr
    assert bad.read_bytes() == b"garbage" * 50
    r = ponder("sessions", "list", "--db", str(bad), timeout=60)
    assert r.returncode == 2 and "not a Ponder session database" in r.stderr


def test_a_session_saved_before_seed_streams_reruns_with_common_numbers(tmp_path):
    """Sessions saved before seeds were drawn per strategy record no mode; rerun takes them as the
    common random numbers they ran with. Shown both ways: a common-numbers session with its mode
    removed reproduces; an independent-streams one with its mode removed does not."""
    results = {}
    for mode in ("common", "independent"):
        db = str(tmp_path / f"{mode}.db")
        r = ponder(
            "compare", "--problem-set", "gsm8k", "--index", "1", "--budget", "2", "--max-tokens", "32",
            "--strategies", "best_of_n,beam_search", "--prm", "arithmetic", "--seeds", mode,
            "--db", db, "--json",
        )  # fmt: skip
        assert r.returncode == 0, r.stderr
        sid = json.loads(r.stdout)["session_id"]
        with sqlite3.connect(db) as con:
            (settings,) = con.execute("SELECT settings FROM sessions WHERE id = ?", (sid,)).fetchone()
            settings = json.loads(settings)
            assert settings.pop("seeds") == mode
            con.execute("UPDATE sessions SET settings = ? WHERE id = ?", (json.dumps(settings), sid))
        r = ponder("sessions", "rerun", sid, "--db", db, "--json")
        results[mode] = json.loads(r.stdout)
    assert results["common"]["reproduced"], results["common"]
    assert not results["independent"]["reproduced"]
