"""Many runs in one batch: a scripted executor shows what the scheduler hands it (which runs share a
batch, which problem each PRM call judged, what each run is charged); the real model shows a sweep
running cells together and a budget far beyond the sequences decoded at once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from engine.events import NodeScored, RunFinished
from engine.executor import Executor, GenDone, Outcome, ScoreAsk, ScoreDone
from engine.protocol import Generated, GenItem
from engine.run.scheduler import Run, Scheduler, StrategySpec, make_runs

POLICY_PARAMS = 1_000
PRM_PARAMS = 100
TOKENS_PER_STEP = 3
PRM_TOKENS_PER_STEP = 5


class ScriptedPRM:
    name = "scripted"
    n_params = PRM_PARAMS

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (question judged, run asking)


class ScriptedExecutor(Executor):
    """Answers every Generate with "<problem> step k" steps of 3 tokens (a solution ends at its
    third step), and every Score at once, one score per step. A poll answers everything in flight:
    one "batch"; ``batches`` records which runs each held."""

    kind = "scripted"

    def __init__(self) -> None:
        self.batches: list[set[str]] = []
        self._flight: dict[str, tuple[GenItem, ...]] = {}
        self._problem: dict[str, str] = {}  # run -> its problem, from its chat prompt
        self._depth: dict[tuple[str, int], int] = {}
        self._counted: set[tuple[str, Any]] = set()
        self._ready: list[Outcome] = []

    def model_record(self) -> dict[str, Any]:
        return {"name": "scripted", "n_params": POLICY_PARAMS}

    def session_settings(self) -> dict[str, Any]:
        return {}

    def make_prm(self, spec: str, reference: str | None) -> Any:
        return ScriptedPRM()

    def generate(self, run_id: str, items: Sequence[GenItem], keep_prompt: tuple | None = None) -> None:
        self._flight[run_id] = tuple(items)

    def score(self, prm: Any, question: str, asks: Sequence[ScoreAsk]) -> ScoreDone | None:
        out = ScoreDone({})
        for a in asks:
            prm.calls.append((question, a.run_id))
            out.scores[a.run_id] = [[0.5 + 0.1 * (k % 3) for k in range(len(c))] for c in a.candidates]
            out.prm_tokens[a.run_id] = PRM_TOKENS_PER_STEP * sum(len(c) for c in a.candidates)
        return out

    def release(self, run_id: str, node_ids: Sequence[int]) -> None:
        pass

    def end_run(self, run_id: str) -> None:
        self._flight.pop(run_id, None)

    def busy(self) -> bool:
        return bool(self._flight)

    def poll(self) -> list[Outcome]:
        self.batches.append(set(self._flight))
        out: list[Outcome] = []
        for rid, items in self._flight.items():
            results, prompt = [], 0
            for it in items:
                if it.messages is not None:
                    self._problem[rid] = dict(it.messages)["user"]
                    if (rid, it.prompt_key) not in self._counted:  # a prompt counts once per run
                        self._counted.add((rid, it.prompt_key))
                        prompt += sum(len(t.split()) for _, t in it.messages)
                depth = 1 if it.parent is None else self._depth[(rid, it.parent)] + 1
                self._depth[(rid, it.node_id)] = depth
                text = f"{self._problem[rid]} step {depth}" + ("" if depth >= 3 else "\n\n")
                results.append(
                    Generated(it.node_id, text, TOKENS_PER_STEP, (-0.1,) * 3, "eos" if depth >= 3 else "stop")
                )
            out.append(GenDone(rid, results, prompt_tokens=prompt))
        self._flight.clear()
        return out


def _runs(problems: dict[str, tuple[str, dict]]) -> list[Run]:
    runs = []
    for problem, (name, params) in problems.items():
        runs += make_runs(
            problem,
            [StrategySpec(name, params)],
            model={"name": "scripted", "n_params": POLICY_PARAMS},
            prm={"name": "scripted", "n_params": PRM_PARAMS},
        )
    return runs


def test_two_problems_share_a_batch_and_each_prm_call_judges_its_own_problem():
    ex, prm = ScriptedExecutor(), ScriptedPRM()
    runs = _runs(
        {
            "What is 2 + 2?": ("beam_search", {"n": 4, "beam_width": 2}),
            "What is 7 * 6?": ("best_of_n", {"n": 3}),
        }
    )
    Scheduler(ex, prm).run(runs)
    assert all(r.status == "done" for r in runs), [r.message for r in runs]
    ids = {r.run_id for r in runs}
    assert ids in ex.batches  # both problems' generations went out in one batch
    problem_of = {r.run_id: r.ctx.problem for r in runs}
    asked = {rid for _, rid in prm.calls}
    assert asked == ids and len(prm.calls) > 2  # beam search scored every round
    assert all(q == problem_of[rid] for q, rid in prm.calls)
    # ...and every score a run recorded came from candidates of its own problem
    for r in runs:
        texts = [n.text for n in r.trace().nodes.values()]
        assert texts and all(t.startswith(r.ctx.problem) for t in texts)
        assert any(isinstance(e, NodeScored) for e in r.events)


def test_each_run_is_charged_its_own_tokens_and_flops_counted_by_hand():
    ex, prm = ScriptedExecutor(), ScriptedPRM()
    runs = _runs(
        {
            "What is 2 + 2?": ("best_of_n", {"n": 3}),
            "Add 5 and 9 please": ("beam_search", {"n": 4, "beam_width": 2}),
        }
    )
    Scheduler(ex, prm).run(runs)
    bon, beam = runs
    sys_words = len(bon.ctx.system_prompt.split())
    # best-of-3: one prompt (system and question words), 3 one-step answers of 3 tokens, each scored
    fin = {r.run_id: next(e for e in r.events if isinstance(e, RunFinished)) for r in runs}
    f = fin[bon.run_id]
    assert f.generated_tokens == 3 * TOKENS_PER_STEP
    assert f.prompt_tokens == sys_words + 5  # "What is 2 + 2?": 5 words
    assert f.prm_tokens == PRM_TOKENS_PER_STEP * 3  # three candidates of one step each
    assert f.policy_flops == 2 * POLICY_PARAMS * (f.prompt_tokens + f.generated_tokens)
    assert f.prm_flops == 2 * PRM_PARAMS * f.prm_tokens
    # beam search: count its generations and scored steps from its own trace
    g = fin[beam.run_id]
    nodes = beam.trace().nodes
    assert g.generated_tokens == TOKENS_PER_STEP * len(nodes)
    assert g.prompt_tokens == sys_words + 5  # its prompt once, however many beams start from it
    scored_steps = sum(
        len(e.step_scores) for e in beam.events if isinstance(e, NodeScored)
    )  # every Score call scores each candidate's steps so far
    assert g.prm_tokens >= PRM_TOKENS_PER_STEP * len(nodes)
    assert g.prm_tokens == PRM_TOKENS_PER_STEP * scored_steps
    assert g.policy_flops == 2 * POLICY_PARAMS * (g.prompt_tokens + g.generated_tokens)
    assert g.prm_flops == 2 * PRM_PARAMS * g.prm_tokens


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
