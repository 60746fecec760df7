"""What cannot run is refused before it runs, in the user's terms; exit codes tell scripts the truth.

Exit status (engine.cli): 0 done, 2 refused before anything ran, 3 ran and a run failed, 130
interrupted.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

import pytest

from engine.search import budget_params, registry, sequences_needed

INTERNAL_WORDS = ("n_seq_max", "slots", "branch slots", "Traceback")


def ponder(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=timeout
    )


def n_sessions(db) -> int:
    if not db.exists():
        return 0
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT COUNT(*) FROM sessions").fetchone()[0]
    finally:
        con.close()


def test_a_budget_beyond_the_sequences_decoded_at_once_runs_and_a_bad_one_is_refused_before_loading(tmp_path):
    """Generations beyond the sequences decoded at once wait for one to finish (continuous
    batching): 12 samples on a context that decodes 4 at once all run. A budget a strategy cannot
    spend is refused before the model loads, naming budgets it can."""
    db = tmp_path / "s.db"
    r = ponder(
        "compare", "What is 2 + 3?", "--strategies", "best_of_n", "--budget", "12", "--parallel", "4",
        "--max-tokens", "8", "--prm", "arithmetic", "--db", str(db), "--json", timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["runs"][0]["status"] == "done" and out["runs"][0]["generated_tokens"] > 12
    r = ponder("compare", "1+1?", "--strategies", "dvts", "--budget", "6", "--db", str(db), timeout=60)
    assert r.returncode == 2 and "nearest budgets it can spend are 4 and 8" in r.stderr, r.stderr
    assert not any(w in r.stderr for w in INTERNAL_WORDS) and "Loading" not in r.stderr
    r = ponder("compare", "1+1?", "--parallel", "100000", "--db", str(db), timeout=60)
    assert r.returncode == 2 and "--parallel must be between 1 and" in r.stderr


def test_a_problem_longer_than_the_context_is_refused_with_its_token_count_and_nothing_saved(tmp_path):
    db = tmp_path / "s.db"
    problem = "How many apples are left? " * 200
    r = ponder("compare", problem, "--ctx", "512", "--max-tokens", "8", "--db", str(db), timeout=120)
    assert r.returncode == 2, r.stderr
    assert "tokens but the context holds 512" in r.stderr and "Shorten the prompt" in r.stderr
    assert not any(w in r.stderr for w in INTERNAL_WORDS), r.stderr
    assert n_sessions(db) == 0


def test_compare_exits_3_when_a_run_fails_and_0_when_all_finish(tmp_path):
    db = tmp_path / "s.db"
    # The problem fits, and a solution fills the 512-token context; the judge cannot read it with its
    # question after it: the run fails while running, and is saved as failed.
    r = ponder(
        "compare", "Write a long story about a cat.", "--strategies", "best_of_n", "--budget", "1",
        "--max-tokens", "1000", "--ctx", "512", "--db", str(db), "--json", timeout=300,
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    out = json.loads(r.stdout)
    assert [x["status"] for x in out["runs"]] == ["failed"]
    assert "the context holds 512" in out["runs"][0]["message"]
    assert n_sessions(db) == 1
    r = ponder("sessions", "rerun", out["session_id"], "--db", str(db), timeout=300)
    assert r.returncode == 3 and "the rerun failed" in r.stdout, (r.stdout, r.stderr)
    r = ponder(
        "compare", "What is 2 + 3?", "--strategies", "best_of_n", "--budget", "2", "--max-tokens", "8",
        "--prm", "arithmetic", "--db", str(db), timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert "runs failed" not in r.stderr


def test_sweep_exits_3_when_a_cell_failed_and_refuses_a_budget_it_cannot_run(tmp_path):
    db = tmp_path / "s.db"
    r = ponder(
        "sweep", "--set", "arith", "--limit", "1", "--strategies", "dvts", "--budgets", "1,6",
        "--prm", "arithmetic", "--db", str(db), "--out", str(tmp_path / "o"), timeout=120,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "DVTS cannot spend a budget of 6" in r.stderr and n_sessions(db) == 0
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        json.dumps({"question": "What is 2 + 3?", "answer": "5"})
        + "\n"
        + json.dumps({"question": "Count the apples. " * 120, "answer": "1"})
        + "\n"
    )
    r = ponder(
        "sweep", "--set", str(problems), "--strategies", "best_of_n", "--budgets", "1", "--prm", "arithmetic",
        "--max-tokens", "16", "--ctx", "512", "--db", str(db), "--out", str(tmp_path / "o"), timeout=300,
    )  # fmt: skip
    assert r.returncode == 3, r.stderr
    assert "1 failed" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("name", registry.names())
def test_sequences_needed_bounds_what_each_strategy_really_holds(fresh, name, monkeypatch):
    """The pre-run check is only as good as this bound: measured on the real model, budgets 1, 2, 3, 5, 8
    where the strategy accepts them (and beam search with lookahead), the most branches a strategy
    held never exceeds it."""
    from comparing import compare

    import engine.backends.llama_cpp.branch_table as br

    peak = {"v": 0}
    orig = br.BranchTable._new_branch

    def counting(self, *a, **k):
        b = orig(self, *a, **k)
        peak["v"] = max(peak["v"], self.config.n_seq_max - len(self._free_seqs))
        return b

    monkeypatch.setattr(br.BranchTable, "_new_branch", counting)
    cases = [(b, {}) for b in (1, 2, 3, 5, 8) if registry.get(name).accepts(b)]
    if name == "beam_search":
        cases += [(4, {"lookahead": 1}), (6, {"lookahead": 2})]
    for budget, extra in cases:
        peak["v"] = 0
        runs = compare(
            fresh, "Tom has 3 apples and buys 4 more. How many now?", [name], budget=budget,
            prm="arithmetic", max_tokens=24, concurrent=False, overrides={name: extra},
        )  # fmt: skip
        assert runs[0].status == "done", runs[0].message
        bound = sequences_needed(name, budget_params(name, budget, **extra))
        assert 0 < peak["v"] <= bound, (name, budget, extra, peak["v"], bound)


def test_more_generations_than_sequences_wait_for_one_and_leave_every_sequence_free(model_path):
    """Best-of-12 and beam search at 12 beside it, with the judge, on a context that decodes 8
    sequences at once: requests beyond the free sequences wait, finished answers are set aside
    (parked) so the rest can start, every candidate is scored, and every sequence is free after."""
    from comparing import compare

    from engine.backends.llama_cpp import Backend, BackendConfig

    with Backend(model_path, BackendConfig(n_ctx=4096, n_seq_max=8)) as b:
        runs = compare(b, "What is 3 + 4?", ["best_of_n", "beam_search"], budget=12, max_tokens=12)
        assert [r.status for r in runs] == ["done", "done"], [r.message for r in runs]
        bon = runs[0].trace()
        assert len(bon.nodes) == 12 and all(n.score is not None for n in bon.nodes.values())
        assert b.stats.parked > 0 and b.free_slots == 8 and b.branches == []


def test_three_searches_scored_by_one_judge_share_the_sequences_without_running_out(model_path):
    """Beam search, DVTS and particle filtering at once with the judge, on a context of 12
    sequences: their scoring jobs take turns at the judge (each sizes its groups by the sequences
    free when it starts them, and gives back its kept chains when generations hold the rest), so
    all three finish with every step scored and every sequence free. (Three tree strategies at
    budget 16 in the app's 64 sequences ran out before.)"""
    from comparing import compare

    from engine.backends.llama_cpp import Backend, BackendConfig

    strategies = ["beam_search", "dvts", "particle_filtering"]
    with Backend(model_path, BackendConfig(n_ctx=4096, n_seq_max=12)) as b:
        runs = compare(
            b, "Janet has 3 apples and buys 4 more. How many?", strategies, budget=8, max_tokens=24
        )
        assert [r.status for r in runs] == ["done"] * 3, [r.message for r in runs]
        for r in runs:
            t = r.trace()
            assert t.nodes and all(n.score is not None for n in t.nodes.values())
        assert b.free_slots == 12 and b.branches == []  # the judge closed with the runs
