"""`ponder sweep` as a user runs it: real subprocesses on the embedded model, real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from engine import children
from engine.answers import is_correct
from engine.problems import resolve_problem_set
from engine.store import Store
from engine.sweeps import load_summary


def small(problem_set: str, limit: int, tokens: int, db: Path, out: Path) -> list[str]:
    """A small sweep's command line: budgets 1 and 2, best-of-N and beam search, arithmetic PRM."""
    return [
        "sweep",
        *("--set", problem_set, "--limit", str(limit), "--max-tokens", str(tokens)),
        *("--budgets", "1,2", "--strategies", "best_of_n,beam_search", "--prm", "arithmetic"),
        *("--db", str(db), "--out", str(out)),
    ]


def ponder(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=timeout
    )


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and Python keeps it so; a user's Ctrl+C
    # reaches a foreground ponder, so give the child the default disposition as a terminal would.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(*args: str) -> subprocess.Popen[str]:
    return children.start(
        [sys.executable, "-m", "gui.launch", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_default_sigint if os.name == "posix" else None,
    )


def done_cells(db: Path) -> dict[tuple[int, str, int], str]:
    """(problem, strategy, budget) -> run id of every finished cell of the database's one sweep."""
    if not db.exists():
        return {}
    try:
        with Store.open(db, readonly=True) as s:
            sweeps = s.list_sweeps()
            if not sweeps:
                return {}
            return {k: r.id for k, r in s.sweep_cells(sweeps[0].id).items() if r and r.status == "done"}
    except Exception:  # the writer may be creating the file this very moment
        return {}


def wait_for(db: Path, n: int, proc: subprocess.Popen[str], timeout: float = 300) -> None:
    t0 = time.monotonic()
    while len(done_cells(db)) < n:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() - t0 < timeout, "the sweep made no progress"
        time.sleep(0.3)


def test_a_small_gsm8k_sweep_finishes_and_its_summary_agrees_with_the_store(tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "out"
    r = ponder(*small("gsm8k", 3, 64, db, out))
    assert r.returncode == 0, r.stderr
    assert "9 cells run now, 0 were already" in r.stderr
    assert "| best-of-N | weighted |" in r.stdout  # the Markdown table
    for name in ("summary.json", "summary.md", "accuracy_vs_budget.png", "by_difficulty.png"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "accuracy_vs_budget.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = load_summary((out / "summary.json").read_text())
    assert summary["problems"]["complete"] == 3 and summary["spec"]["budgets"] == [1, 2]

    refs = {p.index: p.reference for p in resolve_problem_set("gsm8k").problems[:3]}
    with Store.open(db, readonly=True) as s:
        (sweep,) = s.list_sweeps()
        cells = s.sweep_cells(sweep.id)
        # best-of-N ran once at the top budget; beam search at each
        assert sorted(cells) == sorted(
            [(i, "best_of_n", 2) for i in range(3)]
            + [(i, "beam_search", b) for i in range(3) for b in (1, 2)]
        )
        assert all(r is not None and r.status == "done" for r in cells.values())
        assert len(s.list_sessions()) == 9

        def store_mean(strategy: str, b: int) -> float:
            return sum(bool(cells[(i, strategy, b)].correct) for i in range(3)) / 3

        # a run's own (weighted) choice is what the summary counts at its budget
        for b in (1, 2):
            assert summary["accuracy"]["beam_search"]["weighted"][b] == pytest.approx(
                store_mean("beam_search", b)
            )
        assert summary["accuracy"]["best_of_n"]["weighted"][2] == pytest.approx(store_mean("best_of_n", 2))
        # best-of-N at budget 1 is every single sample: the mean correctness of the saved solutions
        pass1 = []
        for i in range(3):
            nodes = s.nodes(cells[(i, "best_of_n", 2)].id)
            assert len(nodes) == 2
            pass1.append(sum(bool(is_correct(n["answer"], refs[i])) for n in nodes) / 2)
        for m in ("naive", "weighted", "majority"):
            assert summary["accuracy"]["best_of_n"][m][1] == pytest.approx(sum(pass1) / 3)
        assert sorted(p["pass1"] for p in summary["per_problem"]) == sorted(pass1)
    # bins cover the problems once, easiest first; the per-bin pick is never below best-of-N
    members = [i for b in summary["bins"] for i in b["problems"]]
    assert sorted(members) == [0, 1, 2]
    ranks = [
        summary["per_problem"][[p["index"] for p in summary["per_problem"]].index(i)]["pass1"]
        for i in members
    ]
    assert ranks == sorted(ranks, reverse=True)
    for b in (1, 2):
        assert summary["compute_optimal"][b] >= summary["accuracy"]["best_of_n"]["weighted"][b] - 1e-9
        # bins of one problem: the other half is empty, so the held-out choice is the baseline
        assert summary["compute_optimal_held_out"][b] == pytest.approx(
            summary["accuracy"]["best_of_n"]["weighted"][b]
        )

    # the report alone, from the store, without running anything, says the same
    r2 = ponder(*small("gsm8k", 3, 64, db, tmp_path / "again"), "--report-only", "--json")
    assert r2.returncode == 0, r2.stderr
    assert load_summary(r2.stdout)["accuracy"] == summary["accuracy"]
    listed = json.loads(ponder("sweep", "--list", "--json", "--db", str(db)).stdout)
    assert [(w["id"], w["n_cells"], w["settings"]["problem_set"]) for w in listed] == [(sweep.id, 9, "gsm8k")]


def test_a_sweep_takes_strategy_parameters_and_keeps_them_apart_from_the_defaults(tmp_path):
    """``ponder sweep --adaptive-best-of-n-threshold 0.6 --adaptive-best-of-n-round-size 2``: every
    adaptive cell runs with them (recorded in its run), the summary and title name them, the report
    alone finds the same sweep, and the same command without them is another sweep, not a resume."""
    db, out = tmp_path / "s.db", tmp_path / "out"
    base = [
        "sweep", *("--set", "arith", "--limit", "2", "--max-tokens", "48", "--budgets", "4"),
        *("--strategies", "best_of_n,adaptive_best_of_n", "--prm", "arithmetic", "--db", str(db)),
    ]  # fmt: skip
    tuned = ["--adaptive-best-of-n-threshold", "0.6", "--adaptive-best-of-n-round-size", "2"]
    r = ponder(*base, *tuned, "--out", str(out))
    assert r.returncode == 0, r.stderr
    summary = load_summary((out / "summary.json").read_text())
    assert summary["spec"]["params"] == {"adaptive_best_of_n": {"threshold": 0.6, "round_size": 2}}
    assert "adaptive best-of-N round_size 2, threshold 0.6" in (out / "summary.md").read_text()
    with Store.open(db, readonly=True) as s:
        (sweep,) = s.list_sweeps()
        cells = s.sweep_cells(sweep.id)
        assert sorted(cells) == [(i, st, 4) for i in range(2) for st in ("adaptive_best_of_n", "best_of_n")]
        for (_, st, _), run in cells.items():
            assert run is not None and run.status == "done"
            if st == "adaptive_best_of_n":
                assert run.params["threshold"] == 0.6 and run.params["round_size"] == 2
                assert len(s.nodes(run.id)) in (2, 4)  # it checks the vote after each round of 2
            else:
                assert "threshold" not in run.params
    r = ponder(*base, *tuned, "--report-only", "--json", "--out", str(tmp_path / "again"))
    assert r.returncode == 0, r.stderr
    assert load_summary(r.stdout)["sweep"]["id"] == sweep.id
    # without the parameters: nothing of the tuned sweep is reused
    r = ponder(*base, "--report-only")
    assert r.returncode != 0 and "No sweep of arith" in r.stderr
    r = ponder(*base, "--mcts-children", "3")
    assert r.returncode == 2 and "which --strategies does not include" in r.stderr
    assert "Traceback" not in r.stderr


def test_a_killed_sweep_run_again_redoes_nothing_that_was_done(tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "out"
    args = small("arith", 3, 48, db, out)
    proc = start(*args)
    try:
        wait_for(db, 4, proc)
    finally:
        proc.kill()  # SIGKILL: no chance to tidy up
        proc.communicate()
    before = done_cells(db)
    assert 4 <= len(before) < 9
    r = ponder(*args)
    assert r.returncode == 0, r.stderr
    assert f"{9 - len(before)} cells run now, {len(before)} were already" in r.stderr
    after = done_cells(db)
    assert len(after) == 9
    assert {k: after[k] for k in before} == before  # the finished cells are the very same runs
    with Store.open(db, readonly=True) as s:
        assert len(s.list_sessions()) == 9  # the killed cell's partial session was replaced
        assert all(r.status == "done" for x in s.list_sessions() for r in x.runs)
    assert load_summary((out / "summary.json").read_text())["problems"]["complete"] == 3


@pytest.mark.skipif(os.name != "posix", reason="SIGINT as Ctrl+C")
def test_ctrl_c_stops_a_sweep_between_tokens_and_says_how_to_resume(tmp_path):
    db, out = tmp_path / "s.db", tmp_path / "out"
    args = small("arith", 2, 48, db, out)
    proc = start(*args)
    wait_for(db, 1, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err  # interrupted (what was done is saved and reported)
    assert "Stopped:" in err and "Run the same command again" in err
    assert "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())  # what was complete is reported
    assert summary["problems"]["requested"] == 2
    r = ponder(*args)
    assert r.returncode == 0 and "Finished:" in r.stderr
    assert len(done_cells(db)) == 6


def test_sweep_mistakes_get_clear_messages_before_any_model_loads(tmp_path):
    r = ponder("sweep", "--limit", "3")
    assert r.returncode != 0 and "Name the problem set" in r.stderr
    r = ponder("sweep", "--set", str(tmp_path / "nope.jsonl"))
    assert r.returncode != 0 and "There is no problem file" in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{"question": oops}\n')
    r = ponder("sweep", "--set", str(bad))
    assert r.returncode != 0 and "line 2: not JSON" in r.stderr
    r = ponder("sweep", "--set", "arith", "--budgets", "1,0")
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = ponder("sweep", "--set", "gsm8k", "--offset", "5000")
    assert r.returncode != 0 and "past the end" in r.stderr
    db = tmp_path / "empty.db"
    Store.open(db).close()
    r = ponder("sweep", "--set", "arith", "--db", str(db), "--report-only")
    assert r.returncode != 0 and "No sweep of arith" in r.stderr
    r = ponder("sweep", "--list", "--db", str(db))
    assert r.returncode == 0 and "No sweeps yet" in r.stdout


def integrity(db: Path) -> str:
    import sqlite3

    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        con.close()


def cell_answers(db: Path) -> dict[tuple[int, str, int], tuple[str | None, int]]:
    with Store.open(db, readonly=True) as s:
        (w,) = s.list_sweeps()
        return {k: (r.answer, r.generated_tokens) for k, r in s.sweep_cells(w.id).items() if r}


def test_a_sweep_killed_at_ten_random_moments_resumes_to_the_same_summary(tmp_path):
    """SIGKILL at 10 seeded random moments, resuming after each: the database passes integrity_check
    every time, a finished cell is never run again (its run stays the same run), and the final
    summary equals an uninterrupted sweep's of the same cells (one cell at a time, --batch 1; the
    default runs cells together and is killed in the test above)."""
    import random
    import threading

    rng = random.Random(20261201)
    db, out = tmp_path / "killed.db", tmp_path / "killed"
    # One cell at a time: then a cell's texts do not depend on which cells shared its batches, and
    # the resumed sweep must equal an uninterrupted one token for token.
    # Six problems (18 cells, about 1 s each on 2 cores) outlast eight kills 0.5-2 s into a run, so
    # the kills fall while the sweep runs on an idle machine too (with 3 problems the cells ran out
    # before the seventh kill there, on the code before the redesign as after it).
    problems, cells = 6, 18
    args = [*small("arith", problems, 64, db, out), "--batch", "1"]
    finished: dict[tuple[int, str, int], str] = {}
    kills = 0
    for _ in range(10):
        proc = start(*args)
        running = threading.Event()

        def watch(p: subprocess.Popen[str] = proc, ev: threading.Event = running) -> None:
            for line in p.stderr or ():
                if "cells" in line:  # the progress line: the model is loaded, the sweep is running
                    ev.set()
            ev.set()

        reader = threading.Thread(target=watch, daemon=True)
        reader.start()
        assert running.wait(120), "the sweep never started"
        time.sleep(rng.uniform(0.5, 2.0))  # a random moment of the running sweep: mid-cell, mid-commit
        if proc.poll() is None:
            proc.kill()
            kills += 1
        proc.wait()
        reader.join(10)
        if db.exists():
            assert integrity(db) == "ok"
        now = done_cells(db)
        assert {k: now[k] for k in finished} == finished, "a finished cell was run again"
        finished = now
    assert kills >= 8, kills  # the moments fell while the sweep ran, not after it ended
    assert finished, "no cell finished between the kills"
    print(f"{kills} kills, {len(finished)} of {cells} cells finished before the last resume")
    r = ponder(*args)
    assert r.returncode == 0, r.stderr
    assert f"were already in {db}" in r.stderr
    assert integrity(db) == "ok"
    final = done_cells(db)
    assert {k: final[k] for k in finished} == finished
    with Store.open(db, readonly=True) as s:  # no session left over from a killed attempt
        assert len(s.list_sessions()) == len(final) == cells

    clean_db, clean_out = tmp_path / "clean.db", tmp_path / "clean"
    r = ponder(*small("arith", problems, 64, clean_db, clean_out), "--batch", "1")
    assert r.returncode == 0, r.stderr
    killed = load_summary((out / "summary.json").read_text())
    clean = load_summary((clean_out / "summary.json").read_text())
    for key in ("problems", "accuracy", "compute_optimal", "tokens_per_run", "bins", "per_problem"):
        assert killed[key] == clean[key], key
    assert cell_answers(db) == cell_answers(clean_db)


def test_the_sweep_bench_sets_the_sweep_against_the_best_of_the_backends_runs_around_it():
    """``ponder bench --sweep``: every cell runs, and the ratio is taken against the best of the
    backend's rates before and after the sweep (a slow baseline alone would flatter it)."""
    r = ponder("bench", "--sweep", "--sweep-problems", "1", "--max-tokens", "16", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["problems"] == 1 and out["failed"] == 0
    assert out["cells"] >= len(out["strategies"])  # smaller budgets may be read from a larger run
    assert len(out["batched_runs"]) == 3 and out["batched_tok_s"] == max(out["batched_runs"])
    assert out["generated_tokens"] > 0 and out["sweep_tok_s"] > 0
    assert out["ratio"] == round(out["sweep_tok_s"] / out["batched_tok_s"], 3)
