"""Many runs in one batch on the real model: a sweep running cells together and a budget far beyond
the sequences decoded at once. What the scheduler hands an executor (which runs share a batch, which
problem each PRM call judged, what each run is charged) is shown on a scripted executor in
tests/unit/test_scheduler_batches.py."""

from __future__ import annotations

import pytest


def test_a_sweep_runs_cells_together_and_records_each_as_its_own_session(model_path, tmp_path):
    from comparing import executor_of

    from engine.backends.llama_cpp import Backend, BackendConfig
    from engine.store import Store
    from engine.sweeps import SweepSpec, run_sweep

    spec = SweepSpec(
        "arith", limit=3, strategies=("best_of_n", "beam_search"), budgets=(1, 2), prm="arithmetic",
        max_tokens=32,
    )  # fmt: skip
    seen: list[str] = []
    with (
        Backend(model_path, BackendConfig(n_ctx=8192, n_seq_max=32)) as b,
        Store.open(tmp_path / "s.db") as st,
    ):
        res = run_sweep(executor_of(b), st, spec, on_progress=lambda p: seen.append(p.current), batch=16)
        assert res.ran == 9 and res.failed == 0
        running = [int(c.split(" cells running")[0]) for c in seen if " cells running" in c]
        assert max(running) >= 3  # several cells were in flight at once
        cells = st.sweep_cells(res.sweep_id)
        assert len({r.session_id for r in cells.values()}) == 9  # a session per cell
        for (_, strategy, budget), r in cells.items():
            assert r.status == "done" and r.strategy == strategy
            s = st.session(r.session_id)
            assert s.settings["batch"] == "shared with other cells" and s.settings["budget"] == budget
            assert r.prompt_tokens > 0 and r.policy_flops == 2 * b.info.n_params * (
                r.prompt_tokens + r.generated_tokens
            )
        assert b.branches == []


@pytest.mark.parametrize("name,budget", [("best_of_n", 96), ("beam_search", 64)])
def test_budgets_far_beyond_the_sequences_decoded_at_once_complete(model_path, name, budget):
    """The acceptance's shape on a context of 16 sequences: best-of-96 and beam search at 64 (the
    full best-of-256 / 64 sequences is the README's, too slow for every test run)."""
    from comparing import compare

    from engine.backends.llama_cpp import Backend, BackendConfig

    with Backend(model_path, BackendConfig(n_ctx=4096, n_seq_max=16)) as b:
        (run,) = compare(b, "What is 12 + 30?", [name], budget=budget, prm="arithmetic", max_tokens=16)
        assert run.status == "done", run.message
        tr = run.trace()
        finished = [n for n in tr.nodes.values() if n.finish_reason is not None]
        assert len(finished) >= (budget if name == "best_of_n" else 1)
        assert b.free_slots == 16 and b.stats.parked > 0


def test_a_rerun_of_a_cell_that_shared_its_batches_says_so(model_path, tmp_path):
    """A sweep cell run beside other cells is rerun alone: its texts may differ, and the report
    names that condition."""
    from comparing import executor_of

    from engine.backends.llama_cpp import Backend, BackendConfig
    from engine.run.rerun import rerun
    from engine.store import Store
    from engine.sweeps import SweepSpec, run_sweep

    spec = SweepSpec(
        "arith", limit=2, strategies=("best_of_n",), budgets=(2,), prm="arithmetic", max_tokens=16
    )

    with Store.open(tmp_path / "s.db") as st:
        with Backend(model_path, BackendConfig(n_ctx=4096, n_seq_max=16)) as b:
            res = run_sweep(executor_of(b), st, spec, batch=16)
        sid = st.sweep_cells(res.sweep_id)[(0, "best_of_n", 2)].session_id
        report = rerun(st, sid)
    assert any(c.startswith("batches: shared with other cells vs its own") for c in report.conditions)
