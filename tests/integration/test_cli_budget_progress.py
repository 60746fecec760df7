"""Day-one faults of the CLI (issue 27), as a user meets them: a budget that would run for days is
refused at once with its estimate, and a compare on a terminal shows live progress."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

from processes import run_on_pty

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def ponder(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=timeout
    )


def test_a_budget_over_the_ceiling_is_refused_at_once_with_its_estimate(tmp_path):
    db = tmp_path / "s.db"
    t0 = time.monotonic()
    r = ponder("compare", "1+1?", "--budget", "100000", "--db", str(db))
    took = time.monotonic() - t0
    assert r.returncode == 2, r.stderr
    assert "ceiling of 4,096" in r.stderr and "would take about" in r.stderr and "days" in r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert not db.exists(), "nothing is saved, not even an empty store"
    assert took < 5, f"refused after {took:.1f} s (a second here, plus the interpreter)"
    # --yes does not lift the ceiling
    r = ponder("compare", "1+1?", "--budget", "5000", "--yes", "--db", str(db))
    assert r.returncode == 2 and "ceiling" in r.stderr


def test_a_budget_that_would_take_hours_says_so_and_runs_only_with_yes(tmp_path):
    db = tmp_path / "s.db"
    r = ponder("compare", "1+1?", "--budget", "2048", "--db", str(db))
    assert r.returncode == 2, r.stderr
    m = re.search(r"would take about ([\d.]+) hours", r.stderr)
    assert m and float(m.group(1)) > 1, r.stderr
    fits = re.search(r"A budget of (\d+) fits an hour", r.stderr)
    assert fits and 1 <= int(fits.group(1)) < 2048
    assert "--yes" in r.stderr
    from engine.store import Store

    with Store.open(db, readonly=True) as store:
        assert store.list_sessions() == []  # refused before anything was saved
    # the budget it names fits: the estimate at that budget asks nothing
    from engine.run.cost import ModelFacts, estimate
    from engine.run.request import CompareRequest

    info = __import__("engine.gguf_info", fromlist=["read_gguf"]).read_gguf(_model())
    est = estimate([CompareRequest("1+1?", budget=int(fits.group(1)))], ModelFacts(info.name, info.n_params))
    assert not est.too_long and est.refusal() is None


def _model() -> str:
    from engine.models import embedded_model_path

    return str(embedded_model_path())


def test_a_sweep_over_an_hour_is_refused_with_its_cells_and_nothing_saved(tmp_path):
    db = tmp_path / "s.db"
    r = ponder(
        "sweep", "--set", "gsm8k", "--limit", "100", "--budgets", "16,64", "--prm", "arithmetic",
        "--db", str(db), "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "This sweep (400 cells to run) would take about" in r.stderr
    fit = re.search(r"--limit (\d+) fits an hour at these budgets", r.stderr)
    assert fit and 1 <= int(fit.group(1)) < 100, r.stderr
    from engine.store import Store

    with Store.open(db, readonly=True) as store:
        assert store.list_sweeps() == [] and store.list_sessions() == []


def test_a_compare_on_a_terminal_shows_live_progress_and_json_stays_clean(tmp_path):
    """stderr a pseudo-terminal, stdout a pipe (``ponder compare --json | jq``): the terminal shows
    a line per strategy that moves while it runs; stdout holds one JSON value and nothing else."""
    cmd = [sys.executable, "-m", "engine.cli", "compare", "What is 2 + 3?", "--budget", "2"]
    cmd += ["--strategies", "best_of_n,beam_search", "--max-tokens", "48", "--prm", "arithmetic"]
    cmd += ["--json", "--db", str(tmp_path / "s.db")]
    returncode, out, chunks = run_on_pty(cmd, timeout=280)
    assert returncode == 0
    doc = json.loads(out)  # one JSON value: no progress on stdout
    assert [r["strategy"] for r in doc["runs"]] == ["best_of_n", "beam_search"]
    text = [(t, ANSI.sub("", c)) for t, c in chunks]
    shown = [(t, c) for t, c in text if "gen" in c and "tok/s" in c]
    assert shown, "no progress line on the terminal"
    # the line moves: token counts rise while the runs go on, and it is redrawn at least every 2 s
    counts = [int(x.replace(",", "")) for _, c in shown for x in re.findall(r"([\d,]+) tok ", c)]
    assert len(set(counts)) >= 3, counts
    first_tokens = next(t for t, c in shown if re.search(r"[1-9][\d,]* tok ", c))
    first_line = shown[0][0]
    assert first_line <= first_tokens + 2.0
    times = [t for t, _ in shown]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps, default=0) < 2.0, f"the line stood still for {max(gaps):.1f} s"
    final = shown[-1][1]
    assert "2/2 gen" in final and "done" in final


def test_a_compare_off_a_terminal_writes_plain_lines_and_its_rate_is_recorded(tmp_path):
    db = str(tmp_path / "s.db")
    r = ponder(
        "compare", "What is 2 + 3?", "--budget", "2", "--strategies", "best_of_n", "--max-tokens", "96",
        "--prm", "arithmetic", "--db", db,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "\x1b[" not in r.stderr  # no escape codes in a log
    m = re.search(r"best_of_n done in ([\d.]+) s: 2 generations, ([\d,]+) tokens", r.stderr)
    assert m, r.stderr
    # the next estimate on this store uses what this machine did, not the assumed rate
    r = ponder(
        "compare", "1+1?", "--budget", "4096", "--strategies", "best_of_n", "--prm", "arithmetic", "--db", db
    )
    assert r.returncode == 2
    assert "recorded on this machine: 1 session of" in r.stderr, r.stderr
