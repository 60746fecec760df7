"""A sweep's summary as a typed value: what :func:`engine.sweeps.analyse` returns, ``report`` and
``plots`` read, summary.json holds, and ``exchange`` weighs on two models.

Each part is a ``TypedDict``: the summary stays the plain dict it always was (it goes to JSON as
it is, and :func:`engine.sweeps.load_summary` reads summary.json back into one), and a reader that
names a key the summary does not have is a type error. Budgets are ``int`` keys in memory and
strings in JSON (``load_summary`` turns them back). The keys marked ``NotRequired`` are missing from
summary.json files written before they were added; readers ``.get`` them.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict

Acc = dict[str, dict[str, dict[int, float]]]  # strategy -> selection -> budget -> accuracy
Intervals = dict[str, dict[str, dict[int, list[float]]]]  # strategy -> selection -> budget -> [low, high]
PerBudget = dict[str, dict[int, float]]  # strategy -> budget -> a mean (generations, tokens, FLOPs)


class SummarySpec(TypedDict):
    """The spec the summary was computed for (:class:`engine.sweeps.SweepSpec`, budgets sorted)."""

    problem_set: str
    offset: int
    limit: int | None
    strategies: list[str]
    budgets: list[int]
    prm: str
    seed: int
    seeds: str
    max_tokens: int
    budget_kind: NotRequired[str]  # generations | tokens
    params: NotRequired[dict[str, dict[str, Any]]]  # each strategy's own parameters, where given


class SummaryProblems(TypedDict):
    requested: int
    complete: int
    incomplete: list[int]  # problem indices
    failed: list[int]


class SummaryMethod(TypedDict):
    subsampled: list[str]  # the strategies whose smaller budgets are read from subsets of a larger run
    budget: str  # what a budget counts, in words
    samples_per_budget: int
    difficulty: str  # pass1 | prm
    bins: int
    note: str


class ProblemRow(TypedDict):
    """One complete problem (summary["per_problem"])."""

    index: int
    accuracy: Acc
    tokens: dict[str, int]  # "strategy@budget run" -> generated plus PRM tokens
    flops: dict[str, float]  # "strategy@budget run" -> its FLOPs
    spent: dict[str, dict[int, int]]  # strategy -> budget -> generations spent
    pass1: float
    prm_mean: float
    level: object  # the problem set's own level (an int where it has one)


class BinBest(TypedDict):
    """A bin's best (strategy, selection) at one budget, against best-of-N (weighted)."""

    strategy: str
    selection: str
    accuracy: float
    best_of_n: float | None  # None: best-of-N is not in the sweep
    gain: float | None


class BinOverall(TypedDict):
    strategy: str
    selection: str
    budget: int
    accuracy: float


class BinBody(TypedDict):
    problems: list[int]  # easiest first
    difficulty_range: list[float]  # [low, high] of the bin's pass@1 or mean PRM score
    accuracy: Acc
    spent: PerBudget
    best_per_budget: dict[int, BinBest]
    best: BinOverall
    intervals: Intervals  # weighted selection only


class SummaryBin(BinBody):
    """One difficulty bin (summary["bins"], easiest first)."""

    bin: int  # 1 = easiest


class LevelRow(TypedDict):
    problems: int
    pass1: float
    accuracy: dict[str, dict[int, float]]  # strategy -> budget -> accuracy (weighted)


class Summary(TypedDict):
    """A sweep's summary (see :mod:`engine.sweeps.analysis`)."""

    sweep: dict[str, Any]  # the sweep's id and name and its stored settings (open-ended)
    spec: SummarySpec
    problems: SummaryProblems
    method: SummaryMethod
    accuracy: Acc
    spent: NotRequired[PerBudget]  # mean generations spent per problem
    intervals: NotRequired[Intervals]  # 95% percentile-bootstrap intervals over problems
    flops_per_problem: PerBudget
    compute_optimal: dict[int, float]  # per budget, the best per bin, in-sample
    compute_optimal_held_out: NotRequired[dict[int, float]]  # the same choice, 2-fold held out
    tokens_per_run: PerBudget  # at each budget run
    bins: list[SummaryBin]
    levels: dict[int, LevelRow]
    per_problem: list[ProblemRow]
