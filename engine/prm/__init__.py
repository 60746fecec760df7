"""Process reward models: one interface that scores every step of every candidate, batched.

``prm.score(question, candidates, finished)`` takes each candidate as its list of steps (a step
ends at the delimiter, ``"\\n\\n"`` by default, which stays in its text) and returns one score in
[0, 1] per step. Step scores become one number per candidate by :func:`aggregate`
(last / min / prod / mean; the paper found "last" best). Every PRM satisfies
:class:`engine.executor.PRM`; its ``mode`` tells an executor how to drive it.

Implementations:

* :class:`JudgePRM` (``judge.py``, mode ``"stepped"``) — any instruct GGUF (by default the policy
  model itself) asked, after each step, whether the last step is correct; the score is
  P(yes) / (P(yes) + P(no)) at the verdict token. The question is decoded once and shared by every
  candidate; all candidates' step k are judged in one batch.
* :class:`TokenPRM` (``token_prm.py``) — PRM GGUFs in Math-Shepherd format (a step tag after each
  step, P(good) vs P(bad) at the tag) or RLHFlow's chat format (P(+) vs P(-) as the assistant's
  answer to each step).
* :class:`ArithmeticPRM` (``arithmetic.py``) — re-computes every ``a op b = c`` claim of a step (and
  GSM8K's ``<<a*b=c>>``) exactly, with fractions and a small parser (never ``eval``); a step without
  a claim is neutral (0.5).
* :class:`ReferencePRM` (``reference.py``) — the final answer against the known answer: the pass@N
  oracle.

``steps.py`` cuts solutions into steps and aggregates; ``specs.py`` checks a ``--prm`` spec.
"""

from engine.prm.arithmetic import ArithmeticPRM, arithmetic_claims
from engine.prm.judge import JUDGE_QUESTION, JudgePRM, drive
from engine.prm.reference import ReferencePRM
from engine.prm.specs import (
    BUILTIN_PRMS,
    HEAD_PRM_FORMATS,
    PRM_FORMATS,
    check_prm_spec,
    model_free_prm,
    token_prm_settings,
)
from engine.prm.steps import AGGREGATIONS, NEUTRAL, aggregate, check_candidates, split_steps, verdict_share
from engine.prm.token_prm import TokenPRM

__all__ = [
    "AGGREGATIONS",
    "BUILTIN_PRMS",
    "JUDGE_QUESTION",
    "NEUTRAL",
    "HEAD_PRM_FORMATS",
    "PRM_FORMATS",
    "ArithmeticPRM",
    "JudgePRM",
    "ReferencePRM",
    "TokenPRM",
    "aggregate",
    "arithmetic_claims",
    "check_candidates",
    "check_prm_spec",
    "drive",
    "model_free_prm",
    "split_steps",
    "token_prm_settings",
    "verdict_share",
]
