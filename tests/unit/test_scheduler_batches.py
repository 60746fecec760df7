"""Many runs in one batch: a scripted executor (tests/helpers/scripted.py) shows what the scheduler
hands it (which runs share a batch, which problem each PRM call judged, what each run is charged).
The real model's batches are in tests/integration/test_batching.py."""

from __future__ import annotations

from scripted import (
    POLICY_PARAMS,
    PRM_PARAMS,
    PRM_TOKENS_PER_STEP,
    TOKENS_PER_STEP,
    ScriptedExecutor,
    ScriptedPRM,
)

from engine.events import NodeScored, RunFinished
from engine.run.scheduler import Run, Scheduler, StrategySpec, make_runs


def _runs(problems: dict[str, tuple[str, dict]]) -> list[Run]:
    runs = []
    for problem, (name, params) in problems.items():
        runs += make_runs(
            problem,
            [StrategySpec(name, params)],
            model={"name": "scripted", "n_params": POLICY_PARAMS},
            prm_record={"name": "scripted", "n_params": PRM_PARAMS},
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
