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
* :class:`TokenPRM` (``token_prm.py``) — a PRM GGUF read at its verdict tokens, in its kind's format
  (``formats.py``: the prompt after which the next token is the verdict, written once for every
  backend).
* :class:`ArithmeticPRM` (``arithmetic.py``) — re-computes every ``a op b = c`` claim of a step (and
  GSM8K's ``<<a*b=c>>``) exactly, with fractions and a small parser (never ``eval``); a step without
  a claim is neutral (0.5).
* :class:`ReferencePRM` (``reference.py``) — the final answer against the known answer: the pass@N
  oracle.

Which PRM a ``--prm`` names is the registry's (``registry.py``): each kind is one module in
``kinds/`` (judge, arithmetic, reference, the token formats, the classification head, a PRM GGUF
file) saying how its spec is checked and how each executor builds it. ``steps.py`` cuts solutions
into steps and aggregates.
"""

from engine.prm.arithmetic import ArithmeticPRM, arithmetic_claims
from engine.prm.formats import HeadFormat, VerdictFormat
from engine.prm.judge import JUDGE_QUESTION, JudgePRM, drive
from engine.prm.reference import ReferencePRM
from engine.prm.registry import InProcessHost, PRMKind, ServerHost, Where
from engine.prm.steps import AGGREGATIONS, NEUTRAL, aggregate, check_candidates, split_steps, verdict_share
from engine.prm.token_prm import TokenPRM

__all__ = [
    "AGGREGATIONS",
    "JUDGE_QUESTION",
    "NEUTRAL",
    "HeadFormat",
    "InProcessHost",
    "PRMKind",
    "ServerHost",
    "VerdictFormat",
    "Where",
    "ArithmeticPRM",
    "JudgePRM",
    "ReferencePRM",
    "TokenPRM",
    "aggregate",
    "arithmetic_claims",
    "check_candidates",
    "drive",
    "split_steps",
    "verdict_share",
]
