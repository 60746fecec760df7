"""Sweep planning, subsampling and selection arithmetic, problem sets and files (no model needed).

The sweep on the real model is tests/integration/test_sweep.py."""

from __future__ import annotations

import json
import random

import pytest

from engine.errors import InvalidRequestError
from engine.problems import arith_problem, load_problem_file, resolve_problem_set
from engine.search.selection import select_chains
from engine.sweeps import (
    SweepSpec,
    json_ready,
    load_summary,
    plan_cells,
    run_budgets,
    source_budget,
)
from engine.sweeps.analysis import _accuracy, _Candidates


def test_the_arithmetic_ladder_is_seeded_levelled_and_its_answers_are_right():
    ps = resolve_problem_set("arith")
    assert len(ps) == 1000
    for p in ps.problems[:200]:
        expr = p.meta["expression"]
        assert p.meta["level"] == p.index % 5 + 1
        assert sum(expr.count(op) for op in "+-*") == p.meta["level"]  # level = number of operations
        assert int(p.reference) == eval(expr)  # the test's own ground truth: Python's precedence
        assert expr in p.question
    assert resolve_problem_set("arith").problems[7] == arith_problem(7)  # same seed, same problem
    assert resolve_problem_set("arith").digest == ps.digest
    other = resolve_problem_set("arith:7")
    assert other.digest != ps.digest and other.name == "arith:7"
    assert sum(a.question != b.question for a, b in zip(ps.problems, other.problems, strict=True)) > 900


def test_a_users_jsonl_file_is_read_and_its_faults_are_named_by_line(tmp_path):
    good = tmp_path / "mine.jsonl"
    rows = [
        {"question": "What is 2+2?", "answer": "4", "level": 1},
        {"problem": "Half of 10?", "answer": 5},
        {"question": "Sum 1 to 3?", "answer": "1+2+3 = 6\n#### 6", "id": "x"},
    ]
    good.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ps = resolve_problem_set(str(good))
    assert ps.name == "mine"
    assert [(p.question, p.reference) for p in ps.problems] == [
        ("What is 2+2?", "4"),
        ("Half of 10?", "5"),
        ("Sum 1 to 3?", "6"),
    ]
    assert ps.problems[0].meta == {"level": 1} and ps.problems[2].meta == {"id": "x"}

    cases = {
        '{"question": "q", "answer": "1"}\n{"question": "q2"\n': "line 2: not JSON",
        '{"question": "q"}\n': 'line 1: no "answer"',
        '{"answer": "3"}\n': 'line 1: no "question"',
        '["q", "a"]\n': "line 1: expected an object",
        "\n\n": "holds no problems",
    }
    for i, (text, msg) in enumerate(cases.items()):
        f = tmp_path / f"bad{i}.jsonl"
        f.write_text(text)
        with pytest.raises(InvalidRequestError, match=msg):
            load_problem_file(f)
    with pytest.raises(InvalidRequestError, match="There is no problem file"):
        resolve_problem_set(str(tmp_path / "missing.jsonl"))
    with pytest.raises(InvalidRequestError, match="Unknown problem set"):
        resolve_problem_set("aime")


def test_best_of_n_and_revisions_run_once_at_the_top_budget_unless_a_budget_cannot_be_read_from_it():
    assert run_budgets("best_of_n", [1, 2, 4, 8]) == [8]
    assert run_budgets("revisions", [1, 2, 4, 8]) == [8]  # 2 chains x 4 holds 1x1, 1x2, 1x4
    assert run_budgets("beam_search", [4, 1, 2, 4]) == [1, 2, 4]
    # revisions at 5 is one chain of 5: a 2x4 run cannot provide it, so it runs on its own
    assert run_budgets("revisions", [2, 5, 8]) == [5, 8]
    assert source_budget("revisions", 2, [2, 5, 8]) == 8 and source_budget("revisions", 5, [2, 5, 8]) == 5
    spec = SweepSpec("arith", strategies=("best_of_n", "beam_search"), budgets=(1, 2))
    cells = plan_cells(spec, [3, 4])
    assert [c.key for c in cells] == [
        (3, "beam_search", 1),
        (3, "best_of_n", 2),
        (3, "beam_search", 2),
        (4, "beam_search", 1),
        (4, "best_of_n", 2),
        (4, "beam_search", 2),
    ]  # problem by problem, so a stopped sweep leaves whole problems behind
    with pytest.raises(InvalidRequestError):
        SweepSpec("arith", budgets=(0, 2)).check()
    with pytest.raises(InvalidRequestError):
        SweepSpec("arith", strategies=("best_of_n", "no_such_strategy")).check()


def flat(answers, scores, correct) -> _Candidates:
    return _Candidates([answers], [scores], [correct])


def test_best_of_n_at_a_smaller_budget_is_the_mean_over_subsets_of_its_samples():
    # 4 samples, one right ("7") with the lowest score
    c = flat(["7", "3", "3", "5"], [0.1, 0.9, 0.8, 0.2], [True, False, False, False])
    rng = random.Random(0)
    one = _accuracy("best_of_n", 1, c, 32, rng)
    assert one == {"naive": 0.25, "weighted": 0.25, "majority": 0.25}  # pass@1, every single sample
    two = _accuracy("best_of_n", 2, c, 32, rng)  # 6 pairs; with a verifier "7" (0.1) never wins
    assert two["naive"] == 0.0 and two["weighted"] == 0.0
    assert two["majority"] == 0.5  # a 1-1 vote goes to the first answer: the 3 pairs that hold "7"
    full = _accuracy("best_of_n", 4, c, 32, rng)
    assert full == {"naive": 0.0, "weighted": 0.0, "majority": 0.0}  # "3" has two votes and 1.7
    # a weighted win by many low scores over one high one
    c2 = flat(["1", "2", "2", "2"], [0.9, 0.4, 0.4, 0.4], [False, True, True, True])
    assert _accuracy("best_of_n", 4, c2, 32, rng) == {"naive": 0.0, "weighted": 1.0, "majority": 1.0}
    # past `samples` subsets the draw is seeded: the same rng seed gives the same estimate
    big = flat([str(i % 3) for i in range(16)], [i / 16 for i in range(16)], [i % 3 == 0 for i in range(16)])
    a = _accuracy("best_of_n", 4, big, 8, random.Random("s"))
    assert a == _accuracy("best_of_n", 4, big, 8, random.Random("s"))


def test_revisions_are_read_by_whole_chains_cut_to_the_budgets_chain_length():
    # two chains of four attempts; chain 0 turns right at attempt 3, chain 1 is right only at first
    c = _Candidates(
        [["1", "1", "9", "9"], ["9", "2", "2", "2"]],
        [[0.5, 0.5, 0.6, 0.6], [0.3, 0.35, 0.35, 0.35]],
        [[False, False, True, True], [True, False, False, False]],
    )
    rng = random.Random(0)
    # budget 1 = the first attempt of one chain: chain 0 wrong, chain 1 right
    assert _accuracy("revisions", 1, c, 32, rng) == {"naive": 0.5, "weighted": 0.5, "majority": 0.5}
    # budget 4 = one chain of 4. Chain 0: weighted "9" (1.2 > 1.0), naive "9" (0.6), majority a
    # 2-2 tie that goes to the first answer "1". Chain 1: "2" by every method.
    assert _accuracy("revisions", 4, c, 32, rng) == {"naive": 0.5, "weighted": 0.5, "majority": 0.0}
    # budget 8 = both chains: chain winners "9" (1.2) and "2" (1.05) -> "9"; majority over all 8
    # attempts: "9" and "2" have 3 votes each, "9" came first
    assert _accuracy("revisions", 8, c, 32, rng) == {"naive": 1.0, "weighted": 1.0, "majority": 1.0}
    pick = select_chains(c.answers, c.scores, "weighted")
    assert (pick.answer, pick.chain, pick.attempt) == ("9", 0, 2)


def test_a_summary_survives_json_with_its_budget_keys():
    s = {"accuracy": {"best_of_n": {"weighted": {1: 0.5, 8: 0.75}}}, "spec": {"budgets": [1, 8]}}
    assert load_summary(json.dumps(json_ready(s))) == s


def _pset_model():
    return resolve_problem_set("arith"), {"name": "m", "sha256_1mb": "ab", "file_size": 1, "path": "/m.gguf"}


def test_strategy_parameters_make_a_sweep_of_their_own_and_reach_every_cell():
    """``ponder sweep --adaptive-best-of-n-threshold 0.8``: its own key (the defaults' cells are other
    cells), the same key whatever order the parameters come in, stored and read back with the sweep,
    named in its title, and carried by the cells of that strategy only."""
    from engine.sweeps import cell_request, spec_of, sweep_key, sweep_name

    pset, model = _pset_model()
    plain = SweepSpec("arith", strategies=("best_of_n", "adaptive_best_of_n"), budgets=(4, 16))
    tuned = SweepSpec(
        "arith",
        strategies=("best_of_n", "adaptive_best_of_n"),
        budgets=(4, 16),
        params={"adaptive_best_of_n": {"threshold": 0.8, "round_size": 2}},
    )
    tuned.check()
    same = SweepSpec(
        "arith",
        strategies=("best_of_n", "adaptive_best_of_n"),
        budgets=(4, 16),
        params={"adaptive_best_of_n": {"round_size": 2, "threshold": 0.8}},
    )
    k_plain, _ = sweep_key(pset, model, plain)
    k_tuned, settings = sweep_key(pset, model, tuned)
    assert k_plain != k_tuned and sweep_key(pset, model, same)[0] == k_tuned
    # a spec whose parameters are all empty is the defaults' sweep (sweeps saved before them keep their key)
    assert (
        sweep_key(pset, model, SweepSpec("arith", params={"best_of_n": {}}))[0]
        == sweep_key(pset, model, SweepSpec("arith"))[0]
    )
    assert "adaptive best-of-N round_size 2, threshold 0.8" in sweep_name(settings)

    class Info:
        pass

    info = Info()
    info.settings = settings  # type: ignore[attr-defined]
    assert spec_of(info).params == {"adaptive_best_of_n": {"round_size": 2, "threshold": 0.8}}

    p = pset.problems[0]
    cells = {c.strategy: c for c in plan_cells(tuned, [0])}
    req = cell_request(tuned, p, cells["adaptive_best_of_n"], "w").checked()
    assert req.params["adaptive_best_of_n"]["threshold"] == 0.8
    assert req.params["adaptive_best_of_n"]["round_size"] == 2
    assert req.params["adaptive_best_of_n"]["n"] == cells["adaptive_best_of_n"].budget
    assert cell_request(tuned, p, cells["best_of_n"], "w").overrides == {}


def test_a_parameter_that_changes_a_strategys_shape_changes_what_a_sweep_reads_from_a_larger_run():
    """Revisions with one chain spend the budget as one chain of that length: budgets 2 and 4 are then
    read from the chain of 8, and the analysis cuts that chain (not the default 2 x 4's)."""
    spec = SweepSpec(
        "arith", strategies=("revisions",), budgets=(2, 4, 8), params={"revisions": {"chains": 1}}
    )
    spec.check()
    assert run_budgets("revisions", spec.budgets, False, spec.given("revisions")) == [8]
    assert [c.budget for c in plan_cells(spec, [0])] == [8]
    # 1 chain of 8 attempts, the last 4 right and scored higher: at budget 4 the chain is cut to its
    # first 4 attempts (all wrong); at 8 every selection reaches a right one
    cand = _Candidates([[str(k) for k in range(8)]], [[0.1] * 4 + [0.9] * 4], [[False] * 4 + [True] * 4])
    acc = _accuracy("revisions", 4, cand, 32, random.Random(0), False, spec.given("revisions"))
    assert all(v == 0.0 for v in acc.values())
    acc = _accuracy("revisions", 8, cand, 32, random.Random(0), False, spec.given("revisions"))
    assert acc["naive"] == 1.0 and acc["weighted"] == 1.0


def test_strategy_parameters_a_sweep_cannot_use_are_refused_with_the_reason():
    with pytest.raises(InvalidRequestError, match="do not include"):
        SweepSpec("arith", strategies=("best_of_n",), params={"mcts": {"children": 3}}).check()
    with pytest.raises(InvalidRequestError, match="no parameter 'nope'"):
        SweepSpec("arith", strategies=("best_of_n",), params={"best_of_n": {"nope": 1}}).check()
    with pytest.raises(InvalidRequestError):
        SweepSpec(
            "arith", strategies=("adaptive_best_of_n",), params={"adaptive_best_of_n": {"threshold": 2.0}}
        ).check()
