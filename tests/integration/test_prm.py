"""PRMs: the pure ones exactly, the llama.cpp ones against an unbatched computation."""

from __future__ import annotations

import re

import numpy as np
import pytest

from engine.errors import InvalidRequestError, PonderError
from engine.prm import (
    ArithmeticPRM,
    JudgePRM,
    ReferencePRM,
    TokenPRM,
    aggregate,
    arithmetic_claims,
    split_steps,
)
from engine.prm.registry import verdict_format
from engine.problems import load_problem_set
from engine.sampling import SamplingParams

QUESTION = "Tom has 3 boxes of 4 apples. He eats 2. How many apples are left?"
GOOD = ["Tom has 3 * 4 = 12 apples.\n\n", "He eats 2, so 12 - 2 = 10.\n\n", "The answer is \\boxed{10}."]
BAD = ["Tom has 3 * 4 = 14 apples.\n\n", "14 - 2 = 12.\n\n", "The answer is \\boxed{12}."]


def test_split_steps_keeps_the_delimiter_and_round_trips():
    text = "a\n\nb\n\n\n\nc"
    steps = split_steps(text)
    assert "".join(steps) == text
    assert steps == ["a\n\n", "b\n\n\n\n", "c"]
    assert split_steps("") == []


@pytest.mark.parametrize(
    "how, expected", [("last", 0.5), ("min", 0.2), ("prod", 0.9 * 0.2 * 0.5), ("mean", (0.9 + 0.2 + 0.5) / 3)]
)
def test_aggregation(how, expected):
    assert aggregate([0.9, 0.2, 0.5], how) == pytest.approx(expected)


def test_unknown_aggregation():
    with pytest.raises(InvalidRequestError, match="last, min, prod, mean"):
        aggregate([1.0], "median")


@pytest.mark.parametrize(
    "step, expected",
    [
        ("She has 5 + 3 = 8 apples", [True]),
        ("So 48/2 = 24 clips.", [True]),
        ("3 x 4 = 12 and 7 × 6 = 41", [True, False]),
        ("Total $1,250 + $750 = $2,000", [True]),
        ("(2 + 3) * 4 = 20", [True]),
        ("10 / 3 = 3.33", [True]),
        ("10 / 3 = 3.4", [False]),
        ("It costs <<12*3=36>>36 dollars", [True]),
        ("It costs <<12*3=35>>35 dollars", [False]),
        ("Let x = 5, then 2x + 3 = 13", []),
        ("6 = 6", []),
        ("5 / 0 = 1", []),
        ("No numbers here.", []),
    ],
)
def test_arithmetic_claims(step, expected):
    assert [ok for _, _, ok in arithmetic_claims(step)] == expected


def test_arithmetic_prm_scores_and_neutral_steps():
    prm = ArithmeticPRM()
    good, bad = prm.score(QUESTION, [GOOD, BAD])
    assert good == [1.0, 1.0, 0.5]
    assert bad == [0.0, 1.0, 0.5]  # 3 * 4 = 14 is wrong; 14 - 2 = 12 is right arithmetic


def test_gsm8k_calculator_annotations_check_out():
    """GSM8K's own <<a*b=c>> annotations are right; changing a result is caught."""
    prm = ArithmeticPRM()
    claims = wrong = 0
    for p in load_problem_set("gsm8k")[:300]:
        for _, _, ok in arithmetic_claims(p.solution):
            claims += 1
            wrong += not ok
    assert claims > 500 and wrong / claims < 0.01
    sol = load_problem_set("gsm8k")[0].solution
    broken = re.sub(r"=(\d+)>>", lambda m: f"={int(m.group(1)) + 1}>>", sol)
    assert prm.score_step(sol) == 1.0
    # Every <<...>> annotation of the broken solution is caught (the prose claims stay right).
    assert [ok for lhs, _, ok in arithmetic_claims(broken) if lhs in ("16-3-4", "9*2")] == [False, False]
    assert prm.score_step(broken) == 0.5


def test_reference_prm_is_the_oracle():
    prm = ReferencePRM("10")
    assert prm.score(QUESTION, [GOOD, BAD, GOOD[:1]], finished=[True, True, False]) == [
        [0.5, 0.5, 1.0],
        [0.5, 0.5, 0.0],
        [0.5],
    ]
    with pytest.raises(InvalidRequestError, match="needs a reference"):
        ReferencePRM(None)


def test_candidates_must_be_step_lists():
    with pytest.raises(InvalidRequestError, match="list of steps"):
        ArithmeticPRM().score(QUESTION, ["one string"])


def test_judge_scores_every_step_in_shared_batches(fresh):
    judge = JudgePRM(fresh)
    cands = [GOOD, BAD, GOOD[:2], BAD[:1]]
    calls = fresh.stats.decode_calls
    scores = judge.score(QUESTION, cands)
    used_calls = fresh.stats.decode_calls - calls
    assert [len(s) for s in scores] == [3, 3, 2, 1]
    assert all(0.0 < x < 1.0 for s in scores for x in s)
    # One decode for the shared head, then two per step round (the steps, then the verdicts),
    # however many candidates there are.
    assert used_calls <= 1 + 2 * 3
    assert judge.tokens_used > 0
    assert judge.score(QUESTION, cands) == scores  # cached verdicts: the same scores
    assert len(fresh.branches) <= judge.keep_chains  # the KV state it keeps for the next round
    judge.close()
    assert fresh.branches == []


def test_judge_batched_equals_one_candidate_at_a_time(fresh):
    """Forked, batched judging gives the verdict an unbatched pass over the same tokens gives.

    Not to the last digit: llama.cpp 0.3.36's CPU attention over a unified KV cache changes logits
    by up to ~0.4 depending on where a sequence's cells start in the cache (see the README,
    "Reproducibility"), so the check allows 0.1 in probability."""
    judge = JudgePRM(fresh)
    batched = judge.score(QUESTION, [GOOD, BAD])
    head, tail = judge._head_tail(QUESTION)
    ids = judge.yes_ids + judge.no_ids
    for c, cand in enumerate([GOOD, BAD]):
        toks = list(head)
        for k, step in enumerate(cand):
            toks += fresh.tokenize(step, add_special=False, parse_special=False)
            b = fresh.root(toks + tail, SamplingParams(temperature=0.0))
            lp = np.exp(fresh.next_token_logprobs(b, ids))
            fresh.free(b)
            y, n = lp[: len(judge.yes_ids)].sum(), lp[len(judge.yes_ids) :].sum()
            assert batched[c][k] == pytest.approx(y / (y + n), abs=0.1)


def test_token_prm_refuses_a_vocabulary_without_the_step_tag(fresh):
    with pytest.raises(PonderError, match="no single token for the step tag 'ки'"):
        TokenPRM(fresh, verdict_format("math-shepherd").with_settings({"step_tag": "ки"}))
    with pytest.raises(InvalidRequestError, match="Unknown PRM format"):
        TokenPRM(fresh, verdict_format("shepherd-ish"))


@pytest.mark.parametrize("fmt", ["math-shepherd", "rlhflow"])
def test_token_prm_reads_each_step_verdict(fresh, fmt):
    """The mechanics on a real model (SmolLM2 is no PRM: the numbers mean nothing, the positions
    and the batching must be right): batched scores equal a one-candidate-at-a-time pass."""
    prm = TokenPRM(fresh, verdict_format(fmt).with_settings({"step_tag": "\n"}))
    scores = prm.score(QUESTION, [GOOD, BAD, GOOD[:1]])
    assert [len(s) for s in scores] == [3, 3, 1]
    assert all(0.0 < x < 1.0 for s in scores for x in s)
    for cand, got in zip([GOOD, BAD], scores[:2], strict=True):
        toks, reads = prm._sequences(QUESTION, cand)
        b = fresh.root(toks)
        (lp,) = fresh.read_positions([b], [reads], [prm.good_id, prm.bad_id])
        fresh.free(b)
        p = np.exp(lp)
        np.testing.assert_allclose(got, p[:, 0] / p.sum(axis=1), atol=0.05)
    assert fresh.branches == []


def test_judge_reuses_verdicts_and_kv_of_steps_it_already_judged(fresh):
    """Beam search asks again for every prefix each round; only the new step costs anything."""
    judge = JudgePRM(fresh)
    first = judge.score(QUESTION, [GOOD[:2]])
    used = judge.tokens_used
    again = judge.score(QUESTION, [GOOD[:2]])
    assert again == first and judge.tokens_used == used  # nothing decoded
    longer = judge.score(QUESTION, [GOOD])
    assert longer[0][:2] == first[0]
    assert 0.0 < longer[0][2] < 1.0
    step3 = len(fresh.tokenize(GOOD[2], add_special=False, parse_special=False))
    tail = len(judge._head_tail(QUESTION)[1])
    # Only the new step and its verdict were decoded (plus at most one re-decoded token).
    assert judge.tokens_used - used <= step3 + tail + 1
    # The same scores as a judge that starts cold, up to the cell-layout noise of llama.cpp's
    # unified cache (README, "Reproducibility").
    cold = JudgePRM(fresh)
    assert cold.score(QUESTION, [GOOD])[0] == pytest.approx(longer[0], abs=0.1)
    judge.close()
    cold.close()
    assert fresh.branches == []


def test_judge_reads_the_policys_own_solution_from_its_cells(fresh):
    """The judge's prompt starts as the strategies' prompt does, so a solution the policy still
    holds is not decoded again: a verdict costs the judge's question, not the solution."""
    from engine.protocol import SYSTEM_PROMPT

    policy = fresh.root(
        fresh.chat_tokens(
            [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": QUESTION}]
        ),
        SamplingParams(seed=2, max_tokens=60),
    )
    fresh.generate([policy])
    steps = split_steps(policy.text)
    judge = JudgePRM(fresh)
    adopted = fresh.stats.tokens_adopted
    shared = judge.score(QUESTION, [steps])[0]
    assert fresh.stats.tokens_adopted - adopted >= policy.n_generated - len(steps) - 1
    judge.close()
    fresh.free_all()
    alone = JudgePRM(fresh).score(QUESTION, [steps])[0]  # nothing to share now: all decoded
    assert len(shared) == len(alone) == len(steps)
    assert max(abs(a - b) for a, b in zip(shared, alone, strict=True)) < 0.1
