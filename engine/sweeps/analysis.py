"""A sweep's analysis: pure statistics over rows loaded from the store first.

:func:`load_rows` reads what a summary needs (the sweep, its cells, the nodes of every complete
problem's runs); :func:`summarise` computes from those rows alone: accuracy against budget per
strategy and selection, 5 difficulty bins (quantiles of the model's own pass@1 over the best-of-N
samples, or of their mean PRM score), the best strategy per bin and budget with its gain over
best-of-N (weighted) at the same budget, and the compute-optimal curve that picks per bin. The pick
and its accuracy come from the same problems (in-sample), as in Snell et al.'s oracle-difficulty
figures; a 2-fold held-out estimate sits beside it.

Best-of-N at budget b is every (or, past ``samples``, a seeded random draw of) b-subset of the N
solutions, and revisions at b take ``budget_params`` chains cut to its chain length; the naive /
weighted / majority selections are computed on each subset and their accuracy averaged.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from engine import selectors
from engine.answers import is_correct
from engine.errors import InvalidRequestError, PonderError
from engine.problems import ProblemSet, resolve_problem_set
from engine.search import budget_params, registry
from engine.search.selection import chain_groups, select, select_chains
from engine.store import RunInfo, Store, SweepInfo
from engine.sweeps.plan import (
    Cell,
    SweepSpec,
    plan_cells,
    problem_indices,
    run_budgets,
    source_budget,
    subsampled,
)
from engine.sweeps.summary import (
    Acc,
    BinBest,
    BinBody,
    Intervals,
    LevelRow,
    PerBudget,
    ProblemRow,
    Summary,
    SummaryBin,
)

N_BINS = 5
SAMPLES = 32  # subsets drawn per (problem, budget) when there are more than this


# --- the rows ------------------------------------------------------------------------------------------


@dataclass
class SweepRows:
    """What a sweep's summary is computed from, read from the store in one go."""

    info: SweepInfo
    pset: ProblemSet
    indices: list[int]  # the spec's problems
    cells: list[Cell]
    have: dict[tuple[int, str, int], RunInfo | None]  # the store's cells
    complete: list[int] = field(default_factory=list)  # problems whose every cell is done
    incomplete: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    nodes: dict[str, list[dict[str, Any]]] = field(
        default_factory=dict
    )  # run id -> its nodes (complete only)


def load_rows(store: Store, sweep_id: str, spec: SweepSpec) -> SweepRows:
    """The rows :func:`summarise` needs for ``spec``'s problems, strategies and budgets."""
    info = store.sweep(sweep_id)
    pset = resolve_problem_set(spec.problem_set)
    if pset.digest != info.settings.get("digest"):
        raise PonderError(
            f"The problem set {spec.problem_set} has changed since sweep {info.id} ran it; "
            "run it as a new sweep."
        )
    indices = problem_indices(spec, pset)
    cells = plan_cells(spec, indices)
    rows = SweepRows(info, pset, indices, cells, store.sweep_cells(info.id))
    for i in indices:
        runs = [rows.have.get(c.key) for c in cells if c.index == i]
        if all(r is not None and r.status == "done" for r in runs):
            rows.complete.append(i)
            rows.nodes.update({r.id: store.nodes(r.id) for r in runs if r is not None})
        elif any(r is not None and r.status == "failed" for r in runs):
            rows.failed.append(i)
        else:
            rows.incomplete.append(i)
    return rows


def analyse(
    store: Store,
    sweep_id: str,
    spec: SweepSpec,
    difficulty: str = "pass1",
    samples: int = SAMPLES,
) -> Summary:
    """The summary of a sweep's cells for ``spec`` (see :func:`summarise`): its rows loaded, then
    the statistics. Only problems whose every cell is done count, so all strategies are compared on
    the same problems."""
    _check_difficulty(difficulty)
    return summarise(load_rows(store, sweep_id, spec), spec, difficulty, samples)


def _check_difficulty(difficulty: str) -> None:
    if difficulty not in ("pass1", "prm"):
        raise InvalidRequestError("difficulty is pass1 (the model's own) or prm (the PRM's mean score).")


# --- reading one run -------------------------------------------------------------------------------------
@dataclass
class _Candidates:
    """What one run leaves for selection: per chain (revisions) or one flat list."""

    answers: list[list[str | None]]
    scores: list[list[float]]
    correct: list[list[bool]]
    groups: list[list[int | None]] | None = None  # equivalence labels across all, decided once

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = chain_groups(self.answers)


def _candidates(
    nodes: list[dict[str, Any]], strategy: str, reference: str, memo: dict[str | None, bool]
) -> _Candidates:
    def right(a: str | None) -> bool:
        if a not in memo:
            memo[a] = bool(is_correct(a, reference)) if a is not None else False
        return memo[a]

    if registry.get(strategy).sweep_reads == "chains":
        by_id = {n["node_id"]: n for n in nodes}
        child = {n["parent_id"]: n["node_id"] for n in nodes if n["parent_id"] is not None}
        chains = []
        for root in sorted(n["node_id"] for n in nodes if n["parent_id"] is None):
            chain, nid = [], root
            while nid is not None:
                chain.append(by_id[nid])
                nid = child.get(nid)
            chains.append(chain)
    else:  # best-of-N's solutions, beam search's / DVTS's completed beams
        chains = [[n for n in nodes if n["finish_reason"] is not None]]
    answers = [[n["answer"] for n in ch] for ch in chains]
    return _Candidates(
        answers,
        [[float(n["score"] or 0.0) for n in ch] for ch in chains],
        [[right(a) for a in ch] for ch in answers],
    )


def _subsets(n: int, k: int, samples: int, rng: random.Random) -> list[tuple[int, ...]]:
    if k >= n:
        return [tuple(range(n))]
    if math.comb(n, k) <= samples:
        return list(itertools.combinations(range(n), k))
    return [tuple(sorted(rng.sample(range(n), k))) for _ in range(samples)]


def _accuracy(
    strategy: str,
    budget: int,
    cand: _Candidates,
    samples: int,
    rng: random.Random,
    tokens: bool = False,
    given: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Expected accuracy of each selection method at ``budget`` from one run's candidates (a run
    at a token budget is read whole)."""
    acc = {m: 0.0 for m in selectors.names()}
    reads = registry.get(strategy).sweep_reads
    if tokens and reads == "subsets":
        reads = "exact"
    if reads == "chains":
        p = (
            {"chains": len(cand.answers), "length": max((len(c) for c in cand.answers), default=0)}
            if tokens
            else budget_params(strategy, budget, **(given or {}))
        )
        subs = _subsets(len(cand.answers), p["chains"], samples, rng)
        for sub in subs:
            ans = [cand.answers[c][: p["length"]] for c in sub]
            sc = [cand.scores[c][: p["length"]] for c in sub]
            gr = [cand.groups[c][: p["length"]] for c in sub]  # type: ignore[index]  # set by __post_init__
            for m in selectors.names():
                pick = select_chains(ans, sc, m, gr)
                if pick.chain is not None:
                    acc[m] += cand.correct[sub[pick.chain]][pick.attempt]  # type: ignore[index]  # a chain's pick has its attempt
        return {m: v / len(subs) for m, v in acc.items()}
    answers, scores, correct, groups = cand.answers[0], cand.scores[0], cand.correct[0], cand.groups[0]  # type: ignore[index]  # groups: set by __post_init__
    subs = (
        _subsets(len(answers), budget, samples, rng) if reads == "subsets" else [tuple(range(len(answers)))]
    )
    for sub in subs:
        for m in selectors.names():
            sel = select([answers[i] for i in sub], [scores[i] for i in sub], m, [groups[i] for i in sub])
            if sel.index is not None:
                acc[m] += correct[sub[sel.index]]
    return {m: v / len(subs) for m, v in acc.items()}


def _tie_order(acc: float, strategy: str, method: str, budget: int, strategies: Sequence[str]) -> tuple:
    """Sort key for "best": higher accuracy, then the smaller budget, then the baseline (best-of-N,
    weighted; so a tie claims no gain), then the strategy listed first, then weighted, majority,
    naive (one candidate gives all three the same answer: call it weighted, the default)."""
    return (
        round(acc, 12),
        -budget,
        (strategy, method) == (registry.baseline(), selectors.names()[0]),
        -list(strategies).index(strategy),
        -list(selectors.names()).index(method),
    )


# --- the summary -------------------------------------------------------------------------------------------


def _problem_row(rows: SweepRows, spec: SweepSpec, i: int, budgets: list[int], samples: int) -> ProblemRow:
    """One complete problem: each strategy's accuracy per selection and budget, its runs' tokens and
    FLOPs, and its difficulty (pass@1 and mean PRM score over best-of-N's samples, else every
    candidate read)."""
    p = rows.pset.problems[i]
    memo: dict[str | None, bool] = {}
    cands: dict[tuple[str, int], _Candidates] = {}
    accuracy: Acc = {}
    tokens: dict[str, int] = {}
    flops: dict[str, float] = {}
    spent_of: dict[str, dict[int, int]] = {}
    for s in spec.strategies:
        for rb in run_budgets(s, budgets, spec.tokens, spec.given(s)):
            run = rows.have[(i, s, rb)]
            assert run is not None
            cands[(s, rb)] = _candidates(rows.nodes[run.id], s, p.reference, memo)
            tokens[f"{s}@{rb}"] = run.generated_tokens + run.prm_tokens
            flops[f"{s}@{rb}"] = run.flops
        for b in budgets:
            rng = random.Random(f"{spec.seed}-{i}-{s}-{b}")
            cand = cands[(s, source_budget(s, b, budgets, spec.tokens, spec.given(s)))]
            acc = _accuracy(s, b, cand, samples, rng, spec.tokens, spec.given(s))
            for m, v in acc.items():
                accuracy.setdefault(s, {}).setdefault(m, {})[b] = v
            # generations spent: the budget, or (a budget that is a maximum) the candidates it made
            spent = sum(len(ch) for ch in cand.answers) if registry.get(s).budget_is_maximum else b
            spent_of.setdefault(s, {})[b] = spent
    base = registry.baseline()
    pool = [cands[(base, max(budgets))]] if base in spec.strategies else list(cands.values())
    flat_c = [c for cd in pool for ch in cd.correct for c in ch]
    flat_s = [x for cd in pool for ch in cd.scores for x in ch]
    return {
        "index": i,
        "accuracy": accuracy,
        "tokens": tokens,
        "flops": flops,
        "spent": spent_of,
        "pass1": sum(flat_c) / len(flat_c) if flat_c else 0.0,
        "prm_mean": sum(flat_s) / len(flat_s) if flat_s else 0.0,
        "level": p.meta.get("level"),
    }


def _mean_acc(
    per_problem: dict[int, ProblemRow], strategies: Sequence[str], budgets: list[int], idx: Sequence[int]
) -> Acc:
    out: Acc = {}
    for s in strategies:
        for m in selectors.names():
            out.setdefault(s, {})[m] = {
                b: (sum(per_problem[i]["accuracy"][s][m][b] for i in idx) / len(idx)) if idx else 0.0
                for b in budgets
            }
    return out


def _mean_spent(
    per_problem: dict[int, ProblemRow], strategies: Sequence[str], budgets: list[int], idx: Sequence[int]
) -> PerBudget:
    """Mean generations spent per problem: the budget, except where it is a maximum (adaptive
    best-of-N stops when its vote is settled)."""
    return {
        s: {b: (sum(per_problem[i]["spent"][s][b] for i in idx) / len(idx)) if idx else 0.0 for b in budgets}
        for s in strategies
    }


def _pick(acc: Acc, b: int, strategies: Sequence[str]) -> tuple[float, str, str]:
    options = [(acc[s][m][b], s, m) for s in strategies for m in selectors.names()]
    return max(options, key=lambda o: _tie_order(o[0], o[1], o[2], b, strategies))


def _bin(
    per_problem: dict[int, ProblemRow],
    members: list[int],
    spec: SweepSpec,
    budgets: list[int],
    key: Literal["pass1", "prm_mean"],
) -> tuple[BinBody, dict[int, float]]:
    """One difficulty bin: its accuracy, the best per budget against best-of-N (weighted), the best
    overall; and the 2-fold held-out accuracy (summed over its problems) per budget: alternate
    problems of the bin (by difficulty) into two halves, each scored with the choice the other half
    makes (the baseline when the other is empty)."""
    strategies = spec.strategies
    acc = _mean_acc(per_problem, strategies, budgets, members)
    halves = [members[0::2], members[1::2]]
    half_acc = [_mean_acc(per_problem, strategies, budgets, h) if h else None for h in halves]
    base_name, first = registry.baseline(), selectors.names()[0]
    default = (base_name if base_name in strategies else strategies[0], first)
    per_budget: dict[int, BinBest] = {}
    held_out: dict[int, float] = {}
    for b in budgets:
        held_out[b] = 0.0
        for h in (0, 1):
            other = half_acc[1 - h]
            s_, m_ = _pick(other, b, strategies)[1:] if other is not None else default
            half = half_acc[h]
            if half is not None:
                held_out[b] += half[s_][m_][b] * len(halves[h])
        best = _pick(acc, b, strategies)
        base = acc[base_name][first][b] if base_name in acc else None
        per_budget[b] = {
            "strategy": best[1],
            "selection": best[2],
            "accuracy": best[0],
            "best_of_n": base,  # the baseline's accuracy (the key its summaries have always had)
            "gain": None if base is None else best[0] - base,
        }
    overall = max(
        ((acc[s][m][b], -b, s, m) for s in strategies for m in selectors.names() for b in budgets),
        key=lambda o: _tie_order(o[0], o[2], o[3], -o[1], strategies),
    )
    vals = [per_problem[i][key] for i in members]
    out: BinBody = {
        "problems": members,
        "difficulty_range": [min(vals), max(vals)],
        "accuracy": acc,
        "spent": _mean_spent(per_problem, strategies, budgets, members),
        "best_per_budget": per_budget,
        "best": {
            "strategy": overall[2],
            "selection": overall[3],
            "budget": -overall[1],
            "accuracy": overall[0],
        },
        "intervals": _intervals(
            {i: per_problem[i] for i in members}, strategies, budgets, spec.seed, ("weighted",)
        ),
    }
    return out, held_out


def _bins(
    per_problem: dict[int, ProblemRow], spec: SweepSpec, budgets: list[int], difficulty: str
) -> tuple[list[SummaryBin], dict[int, float], dict[int, float]]:
    """The difficulty bins, easiest first, and the compute-optimal accuracy summed over problems:
    in-sample (the best per bin) and held out."""
    complete = list(per_problem)
    if difficulty == "pass1":
        order = sorted(complete, key=lambda i: (-per_problem[i]["pass1"], -per_problem[i]["prm_mean"], i))
    else:
        order = sorted(complete, key=lambda i: (-per_problem[i]["prm_mean"], i))
    n_bins = min(N_BINS, len(order))
    key: Literal["pass1", "prm_mean"] = "pass1" if difficulty == "pass1" else "prm_mean"
    bins: list[SummaryBin] = []
    optimal, held_out = {b: 0.0 for b in budgets}, {b: 0.0 for b in budgets}
    for k in range(n_bins):
        members = order[len(order) * k // n_bins : len(order) * (k + 1) // n_bins]
        bn, held = _bin(per_problem, members, spec, budgets, key)
        for b in budgets:
            optimal[b] += bn["best_per_budget"][b]["accuracy"] * len(members)
            held_out[b] += held[b]
        bins.append({"bin": k + 1, **bn})
    return bins, optimal, held_out


def _per_run_costs(
    per_problem: dict[int, ProblemRow], spec: SweepSpec, budgets: list[int]
) -> tuple[PerBudget, PerBudget]:
    """Mean tokens per run at each budget run, and FLOPs per problem at each budget: a run's own, or
    (read from a larger run) its share b / B of it."""
    rows = list(per_problem.values())
    tokens: PerBudget = {}
    flops: PerBudget = {}
    for s in spec.strategies:
        for rb in run_budgets(s, budgets, spec.tokens, spec.given(s)):
            used = [r["tokens"][f"{s}@{rb}"] for r in rows]
            tokens.setdefault(s, {})[rb] = sum(used) / len(used) if used else 0.0
        for b in budgets:
            src = source_budget(s, b, budgets, spec.tokens, spec.given(s))
            vals = [r["flops"][f"{s}@{src}"] * (b / src) for r in rows]
            flops.setdefault(s, {})[b] = sum(vals) / len(vals) if vals else 0.0
    return tokens, flops


def _levels(per_problem: dict[int, ProblemRow], spec: SweepSpec, budgets: list[int]) -> dict[int, LevelRow]:
    """Accuracy by the set's own level (the ladder's, MATH's), when it has one."""
    levels: dict[int, LevelRow] = {}
    for lv in sorted({r["level"] for r in per_problem.values() if isinstance(r["level"], int)}):
        idx = [i for i, r in per_problem.items() if r["level"] == lv]
        acc = _mean_acc(per_problem, spec.strategies, budgets, idx)
        levels[lv] = {
            "problems": len(idx),
            "pass1": sum(per_problem[i]["pass1"] for i in idx) / len(idx),
            "accuracy": {s: acc[s]["weighted"] for s in spec.strategies},
        }
    return levels


def summarise(rows: SweepRows, spec: SweepSpec, difficulty: str = "pass1", samples: int = SAMPLES) -> Summary:
    """The summary (see the module docstring), from ``rows`` alone."""
    _check_difficulty(difficulty)
    budgets = sorted(set(spec.budgets))
    per_problem = {i: _problem_row(rows, spec, i, budgets, samples) for i in rows.complete}
    bins, optimal, held_out = _bins(per_problem, spec, budgets, difficulty)
    tokens, flops = _per_run_costs(per_problem, spec, budgets)
    n = len(rows.complete)
    info = rows.info
    return {
        "sweep": {"id": info.id, "name": info.name, **info.settings},
        "spec": {
            "problem_set": spec.problem_set,
            "offset": spec.offset,
            "limit": spec.limit,
            "strategies": list(spec.strategies),
            "budgets": budgets,
            "prm": spec.prm,
            "seed": spec.seed,
            "seeds": spec.seeds,
            "max_tokens": spec.max_tokens,
            "budget_kind": spec.budget_kind,
            "params": {k: dict(v) for k, v in spec.params.items() if v},
        },
        "problems": {
            "requested": len(rows.indices),
            "complete": n,
            "incomplete": rows.incomplete,
            "failed": rows.failed,
        },
        "method": {
            "subsampled": [] if spec.tokens else [s for s in spec.strategies if subsampled(s)],
            "budget": "generated tokens per strategy (matched by tokens)"
            if spec.tokens
            else "generations per strategy (matched by generations, as Snell et al. count them)",
            "samples_per_budget": samples,
            "difficulty": difficulty,
            "bins": len(bins),
            "note": "Best strategy per bin is picked and scored on the same problems (in-sample); "
            "compute_optimal_held_out picks on one half of each bin and scores on the other (2-fold).",
        },
        "accuracy": _mean_acc(per_problem, spec.strategies, budgets, rows.complete),
        "spent": _mean_spent(per_problem, spec.strategies, budgets, rows.complete),
        # 95% percentile-bootstrap intervals over problems (what a sweep of this many problems can tell)
        "intervals": _intervals(per_problem, spec.strategies, budgets, spec.seed),
        "flops_per_problem": flops,
        "compute_optimal": {b: (optimal[b] / n if n else 0.0) for b in budgets},
        # the same choice made on one half of each bin and scored on the other: an estimate of what
        # the per-bin choice is worth on problems it was not picked on
        "compute_optimal_held_out": {b: (held_out[b] / n if n else 0.0) for b in budgets},
        "tokens_per_run": tokens,
        "bins": bins,
        "levels": _levels(per_problem, spec, budgets),
        "per_problem": [per_problem[i] for i in rows.complete],
    }


BOOTSTRAP = 2000  # resamples of the problems for each interval


def _intervals(
    rows: dict[int, ProblemRow],
    strategies: Sequence[str],
    budgets: Sequence[int],
    seed: int,
    methods: Sequence[str] | None = None,
) -> Intervals:
    """[low, high] of a 95% percentile bootstrap over problems of each mean accuracy (seeded: the
    same store gives the same intervals). One problem (or none) gives [mean, mean]."""
    idx = sorted(rows)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(idx), size=(BOOTSTRAP, len(idx))) if len(idx) > 1 else None
    out: Intervals = {}
    for s in strategies:
        for m in methods if methods is not None else selectors.names():
            for b in budgets:
                v = np.array([rows[i]["accuracy"][s][m][b] for i in idx], dtype=float)
                if picks is None:
                    lo = hi = float(v.mean()) if len(v) else 0.0
                else:
                    means = v[picks].mean(axis=1)
                    lo, hi = (float(x) for x in np.percentile(means, [2.5, 97.5]))
                out.setdefault(s, {}).setdefault(m, {})[b] = [lo, hi]
    return out
