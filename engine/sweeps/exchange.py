"""Test-time compute against parameters (Snell et al. §7): the same sweep on a small and a large
model, read side by side in FLOPs.

``exchange_report`` takes the analysed sweeps (``engine.sweeps.analyse``) of the small model (its
strategies at its budgets), the large model (best-of-N at its budgets, sampled) and the large model
greedy at budget 1, keeps the problems all three finished, bins them by the small model's difficulty
(its own pass@1, easiest first) and gives per bin:

* the small model's accuracy (with a 95% bootstrap interval) against inference FLOPs per problem, for
  every (strategy, budget);
* the large model's at budget 1 greedy and at its best-of-N budgets;
* a verdict: the best small-model point that spends no more FLOPs than the large model's greedy
  answer, against that answer — where test-time compute beats parameters and where it does not.

With both models' pretraining tokens it also gives R = inference tokens / pretraining tokens for the
large model answering these problems at budget 1, and the paper's FLOPs-matched comparison (its
Fig. 9): counting pretraining (6 N D) and inference (2 N per token) together, how many times its
budget-1 inference the small model may spend to cost what the large model costs, at this R and at
the paper's R = 0.16, 0.79 and 22; and the small model's best accuracy within that multiple.

Every number is recomputed from the stored runs' own FLOPs (``RunFinished.policy_flops`` +
``prm_flops``): nothing is estimated from parameter counts here except the pretraining side.
"""

from __future__ import annotations

import dataclasses
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError
from engine.gguf_info import read_gguf
from engine.models import load_catalog
from engine.search import registry
from engine.store import write_export
from engine.sweeps.analysis import N_BINS
from engine.sweeps.plan import SweepSpec, source_budget
from engine.sweeps.plots import write_exchange_charts
from engine.sweeps.report import json_ready, write_outputs
from engine.sweeps.runner import SweepResult
from engine.sweeps.summary import ProblemRow, Summary, SummarySpec

PAPER_R = (0.16, 0.79, 22.0)  # the ratios of inference to pretraining tokens Snell et al. plot


def _flops_at(
    row: ProblemRow,
    strategy: str,
    b: int,
    budgets: Sequence[int],
    tokens: bool,
    given: dict[str, Any] | None = None,
) -> float:
    """A problem's FLOPs for ``strategy`` at budget ``b``: its run's own, or the share b / B of the
    larger run it was read from."""
    src = source_budget(strategy, b, budgets, tokens, given)
    return float(row["flops"][f"{strategy}@{src}"]) * b / src


def _mean_ci(values: list[float], seed: int) -> tuple[float, float, float]:
    if not values:
        return 0.0, 0.0, 0.0
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, mean, mean
    rng = random.Random(seed)
    means = sorted(sum(values[rng.randrange(len(values))] for _ in values) / len(values) for _ in range(1000))
    return mean, means[24], means[974]


def _points(
    rows: dict[int, ProblemRow], members: list[int], strategy: str, spec: SummarySpec, seed: int
) -> list[dict[str, Any]]:
    budgets = spec["budgets"]
    tokens = spec.get("budget_kind") == "tokens"
    out = []
    for b in budgets:
        accs = [rows[i]["accuracy"][strategy]["weighted"][b] for i in members]
        given = (spec.get("params") or {}).get(strategy)
        fl = [_flops_at(rows[i], strategy, b, budgets, tokens, given) for i in members]
        mean, lo, hi = _mean_ci(accs, seed + b)
        out.append({"budget": b, "accuracy": mean, "low": lo, "high": hi, "flops": sum(fl) / len(fl)})
    return out


def _overall(bins: list[dict[str, Any]], n: int, strategy: str, budget: int, key: str) -> float:
    """A small-model point's ``key`` (accuracy, flops) over all problems, from its bins."""
    return (
        sum(p[key] * len(b["problems"]) for b in bins for p in b["small"][strategy] if p["budget"] == budget)
        / n
    )


def matched_multiple(r: float, n_small: int, n_large: int, d_small: float, d_large: float) -> float:
    """How many times the large model's budget-1 inference tokens the small model may spend so that
    pretraining (6 N D) plus inference (2 N per token) cost the same, when the large model's
    inference is R times its pretraining tokens: (6 N_L D_L + 2 N_L I - 6 N_S D_S) / (2 N_S I), I = R D_L."""
    inference = r * d_large
    return (6 * n_large * d_large + 2 * n_large * inference - 6 * n_small * d_small) / (
        2 * n_small * inference
    )


def _exchange_bin(
    k: int,
    members: list[int],
    rows: tuple[dict[int, ProblemRow], dict[int, ProblemRow], dict[int, ProblemRow]],
    sums: tuple[Summary, Summary, Summary],
    labels: tuple[str, str],
    seed: int,
) -> dict[str, Any]:
    """One difficulty bin: the small model's points, the large model's, and the verdict."""
    (s_rows, l_rows, g_rows), (small, large, greedy) = rows, sums
    small_pts = {s: _points(s_rows, members, s, small["spec"], seed) for s in small["spec"]["strategies"]}
    base = registry.baseline()
    large_bon = (
        _points(l_rows, members, base, large["spec"], seed) if base in large["spec"]["strategies"] else []
    )
    g = _points(g_rows, members, base, greedy["spec"], seed)[0]
    within = [
        (p["accuracy"], -p["flops"], s, p)
        for s, pts in small_pts.items()
        for p in pts
        if p["flops"] <= g["flops"]
    ]
    best = max(within, key=lambda t: t[:2]) if within else None
    if best is None:
        verdict = f"every {labels[0]} point costs more FLOPs than {labels[1]}'s greedy answer"
        wins = None
    else:
        acc, _, s, p = best
        wins = acc > g["accuracy"]
        verdict = (
            f"{labels[0]} {registry.title(s)} at budget {p['budget']} "
            f"({p['flops']:.3g} FLOPs) {'beats' if wins else 'does not beat'} "
            f"{labels[1]} greedy ({g['flops']:.3g} FLOPs): {acc:.2f} vs {g['accuracy']:.2f}"
            + (" (within the intervals)" if p["low"] <= g["accuracy"] <= p["high"] else "")
        )
    return {
        "bin": k + 1,
        "problems": members,
        "pass1_range": [min(s_rows[i]["pass1"] for i in members), max(s_rows[i]["pass1"] for i in members)],
        "small": small_pts,
        "large": {"best_of_n": large_bon, "greedy": g},
        "best_small_within_greedy_flops": None if best is None else {"strategy": best[2], **best[3]},
        "test_time_compute_wins": wins,
        "verdict": verdict,
    }


def _pretraining(
    small: Summary,
    bins: list[dict[str, Any]],
    g_rows: dict[int, ProblemRow],
    shared: list[int],
    n_params: tuple[int, int],
    pretrain_tokens: tuple[float, float],
) -> dict[str, Any]:
    """R for the large model answering these problems at budget 1, and the FLOPs-matched comparison
    at that R and the paper's."""
    (n_s, n_l), (d_small, d_large) = n_params, pretrain_tokens
    # inference tokens of the large model answering every shared problem greedily (2 N per token)
    tokens = sum(_flops_at(g_rows[i], registry.baseline(), 1, [1], False) for i in shared) / (2 * n_l)
    r_own = tokens / d_large
    large_acc = sum(b["large"]["greedy"]["accuracy"] * len(b["problems"]) for b in bins) / len(shared)
    matched = []
    for r in (r_own, *PAPER_R):
        m = matched_multiple(r, n_s, n_l, d_small, d_large)
        # the small model's best accuracy over all problems within m times that inference
        cap = m * tokens * 2 * n_s / max(1, len(shared))  # FLOPs per problem the small model may use
        pts = []
        for st in small["spec"]["strategies"]:
            for bud in small["spec"]["budgets"]:
                fl = _overall(bins, len(shared), st, bud, "flops")
                if fl <= cap:
                    pts.append((_overall(bins, len(shared), st, bud, "accuracy"), st, bud, fl))
        best = max(pts, key=lambda t: (t[0], -t[3])) if pts else None
        matched.append(
            {
                "R": r,
                "multiple": m,
                "small_best": None
                if best is None
                else {"accuracy": best[0], "strategy": best[1], "budget": best[2], "flops": best[3]},
                "large_greedy_accuracy": large_acc,
            }
        )
    return {"small_tokens": d_small, "large_tokens": d_large, "R": r_own, "matched": matched}


def exchange_report(
    small: Summary,
    large: Summary,
    greedy: Summary,
    small_model: dict[str, Any],
    large_model: dict[str, Any],
    pretrain_tokens: tuple[float | None, float | None] = (None, None),
) -> dict[str, Any]:
    """The report (see the module docstring). ``*_model``: {"label", "n_params"}."""
    s_rows = {r["index"]: r for r in small["per_problem"]}
    l_rows = {r["index"]: r for r in large["per_problem"]}
    g_rows = {r["index"]: r for r in greedy["per_problem"]}
    shared = sorted(set(s_rows) & set(l_rows) & set(g_rows))
    order = sorted(shared, key=lambda i: (-s_rows[i]["pass1"], i))
    n_bins = min(N_BINS, len(order))
    seed = int(small["spec"].get("seed", 0))
    labels = (small_model["label"], large_model["label"])
    bins = [
        _exchange_bin(
            k,
            order[len(order) * k // n_bins : len(order) * (k + 1) // n_bins],
            (s_rows, l_rows, g_rows),
            (small, large, greedy),
            labels,
            seed,
        )  # fmt: skip
        for k in range(n_bins)
    ]
    report: dict[str, Any] = {
        "small": small_model,
        "large": large_model,
        "problems": len(shared),
        "bins": bins,
        "summary": [f"bin {b['bin']}: {b['verdict']}" for b in bins],
    }
    d_small, d_large = pretrain_tokens
    if d_small and d_large and shared and small_model.get("n_params") and large_model.get("n_params"):
        n_params = (int(small_model["n_params"]), int(large_model["n_params"]))
        report["pretraining"] = _pretraining(small, bins, g_rows, shared, n_params, (d_small, d_large))
    return report


def exchange_markdown(report: dict[str, Any]) -> str:
    s, lg = report["small"], report["large"]
    lines = [
        f"# Test-time compute against parameters: {s['label']} vs {lg['label']}",
        "",
        f"{report['problems']} problems finished on both models; bins by {s['label']}'s pass@1 "
        "(easiest first).",
        "FLOPs are per problem, policy and PRM, from the stored runs (2 x parameters x tokens).",
        "",
        "| bin | problems | best small point within the large greedy FLOPs | accuracy | large greedy "
        "| wins |",
        "|---|---|---|---|---|---|",
    ]
    for b in report["bins"]:
        best = b["best_small_within_greedy_flops"]
        g = b["large"]["greedy"]
        where = (
            "-"
            if best is None
            else f"{registry.title(best['strategy'])} @ {best['budget']} ({best['flops']:.3g})"
        )
        acc = "-" if best is None else f"{best['accuracy']:.2f} [{best['low']:.2f}, {best['high']:.2f}]"
        win = {True: "yes", False: "no", None: "-"}[b["test_time_compute_wins"]]
        lines.append(
            f"| {b['bin']} | {len(b['problems'])} | {where} | {acc} | {g['accuracy']:.2f} "
            f"({g['flops']:.3g}) | {win} |"
        )
    lines += ["", *[f"- {x}" for x in report["summary"]]]
    pre = report.get("pretraining")
    if pre:
        lines += [
            "",
            f"R (inference / pretraining tokens of {lg['label']} answering these problems greedily): "
            f"{pre['R']:.3g}",
            "",
            "| R | small may spend (x large greedy inference) | small best within it | large greedy |",
            "|---|---|---|---|",
        ]
        for m in pre["matched"]:
            best = m["small_best"]
            txt = (
                "-"
                if best is None
                else f"{best['accuracy']:.2f} ({registry.title(best['strategy'])} @ {best['budget']})"
            )
            lines.append(f"| {m['R']:.3g} | {m['multiple']:.3g} | {txt} | {m['large_greedy_accuracy']:.2f} |")
    return "\n".join(lines) + "\n"


# --- the workflow: three sweeps and the report, shared by ``ponder sweep --models`` and the app -------


def catalog_pretrain_tokens(models: Sequence[str]) -> tuple[float | None, float | None]:
    """Each model's pretraining tokens from models/catalog.toml (None where it has no entry)."""
    out: list[float | None] = []
    for m in models:
        entry = next((c for c in load_catalog() if c.matches(Path(m))), None)
        tok = entry.settings.get("pretrain_tokens") if entry is not None else None
        out.append(float(tok) if tok else None)
    return out[0], out[1]


# One sweep on one model: (its SweepResult, its analysed summary, the model's record).
SweepOnce = Callable[[str, SweepSpec], tuple[SweepResult, Summary, dict[str, Any]]]


@dataclass
class ExchangeOutcome:
    report: dict[str, Any] | None  # None when a sweep was stopped before the report
    markdown: str
    files: list[Path]
    failed: bool  # a cell failed (the report is still made from what finished)
    cancelled: bool


def run_exchange(
    models: Sequence[str],
    spec: SweepSpec,
    sweep_once: SweepOnce,
    out: str | Path,
    pretrain_tokens: tuple[float | None, float | None] | None = None,
    on_servers: bool = False,
) -> ExchangeOutcome:
    """The sweep on the small and the large model, the large one also greedy at budget 1, each
    model's own outputs in ``out``/small, large, greedy, then the exchange report beside them.
    ``sweep_once`` runs one sweep on one model (the CLI's and the app's own way to run)."""
    if len(models) != 2:
        raise InvalidRequestError(
            "--models takes two models: SMALL,LARGE (GGUF files, or server model names)."
        )
    if not on_servers:
        for m in models:
            read_gguf(m)  # a missing or broken file is one clear line, before anything runs
    pretrain = pretrain_tokens if pretrain_tokens is not None else catalog_pretrain_tokens(models)
    greedy = dataclasses.replace(spec, strategies=(registry.baseline(),), budgets=(1,), temperature=0.0)
    folder = Path(out).expanduser()
    done: list[tuple[Summary, dict[str, Any]]] = []
    failed = False
    for model, sp, sub in (
        (models[0], spec, "small"),
        (models[1], spec, "large"),
        (models[1], greedy, "greedy"),
    ):
        result, summary, record = sweep_once(model, sp)
        write_outputs(summary, folder / sub)
        if result.cancelled:
            return ExchangeOutcome(None, "", [], failed, True)
        failed = failed or bool(result.failed)
        done.append((summary, record))

    def label(model: str, record: dict[str, Any]) -> str:
        return Path(model).stem if not on_servers else str(record.get("name") or model)

    (s_sum, s_rec), (l_sum, l_rec), (g_sum, _) = done
    report = exchange_report(
        s_sum,
        l_sum,
        g_sum,
        {"label": label(models[0], s_rec), "n_params": s_rec.get("n_params")},
        {"label": label(models[1], l_rec), "n_params": l_rec.get("n_params")},
        pretrain,
    )
    md = exchange_markdown(report)
    files = [
        write_export(folder / "exchange.json", json.dumps(json_ready(report), indent=1)),
        write_export(folder / "exchange.md", md),
        *write_exchange_charts(report, folder),
    ]
    return ExchangeOutcome(report, md, files, failed, False)
