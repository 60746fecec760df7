"""Sweep charts with matplotlib's Agg backend: no QApplication, no display, the same images in the
CLI's output folder (PNG and SVG) and in the app's Sweeps tab (PNG bytes).

* ``accuracy_vs_budget`` — accuracy against budget (log scale), each strategy with its 95% interval
  (bootstrap over problems, ``engine.sweeps.analyse``), best-of-N's majority vote and the
  compute-optimal curve;
* ``by_difficulty`` — the same per difficulty bin, with intervals;
* ``exchange`` — a two-model sweep (``engine.sweeps.exchange``): accuracy against inference FLOPs (log) per
  difficulty bin, the small model's strategies against the large model's best-of-N.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import PonderError
from engine.search import registry
from engine.sweeps.summary import Summary

if TYPE_CHECKING:  # matplotlib loads where a chart is drawn
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

INK = "#222222"
MUTED = "#666666"
COMPUTE_OPTIMAL = "#222222"


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _colour(name: str) -> str:
    s = registry.find(name)
    return s.colour if s is not None else INK


def _budget_axis(ax: Axes, budgets: list[int], tokens: bool) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.minorticks_off()
    ax.set_xlabel("budget (generated tokens per strategy)" if tokens else "budget (generations per strategy)")


def _accuracy_axis(ax: Axes) -> None:
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("accuracy")
    ax.grid(True, color="#dddddd", linewidth=0.7)
    ax.set_axisbelow(True)


def _band(ax: Axes, xs: list[Any], iv: dict[Any, list[float]] | None, colour: str) -> None:
    if iv:
        lo = [iv[x][0] for x in xs]
        hi = [iv[x][1] for x in xs]
        ax.fill_between(xs, lo, hi, color=colour, alpha=0.15, linewidth=0)


def _subtitle(summary: Summary) -> str:
    sp, pr = summary["spec"], summary["problems"]
    return (
        f"{summary['sweep'].get('problem_set_name', sp['problem_set'])} · {pr['complete']} problems · "
        f"PRM {sp['prm']} · {sp['max_tokens']} tokens · shaded: 95% interval over problems"
    )


def _at(
    iv: dict[Any, list[float]] | None, budgets: list[int], xs: list[float]
) -> dict[Any, list[float]] | None:
    """Intervals keyed by budget, re-keyed by where they are drawn."""
    if not iv:
        return None
    return {x: iv[b] for b, x in zip(budgets, xs, strict=True) if b in iv}


def accuracy_vs_budget(summary: Summary) -> Figure:
    fig = _figure(8.0, 5.0)
    ax = fig.add_subplot()
    budgets = summary["spec"]["budgets"]
    tokens = summary["spec"].get("budget_kind") == "tokens"
    acc, iv = summary["accuracy"], summary.get("intervals", {})
    spent = summary.get("spent") or {}
    for s in summary["spec"]["strategies"]:
        c = _colour(s)
        strat = registry.find(s)
        if strat is not None and strat.budget_is_maximum and s in spent:
            # its budget is a maximum: drawn at the generations it spent, not those it was allowed
            xs = [spent[s][b] for b in budgets]
            _band(ax, xs, _at(iv.get(s, {}).get("weighted"), budgets, xs), c)
            ax.plot(xs, [acc[s]["weighted"][b] for b in budgets], color=c, lw=2.2, marker="D", ms=4,
                    label=f"{registry.title(s)} (weighted; at generations spent)")  # fmt: skip
            continue
        _band(ax, budgets, iv.get(s, {}).get("weighted"), c)
        ax.plot(budgets, [acc[s]["weighted"][b] for b in budgets], color=c, lw=2.2, marker="o", ms=4,
                label=f"{registry.title(s)} (weighted)")  # fmt: skip
    base = registry.baseline()
    if base in acc:
        ax.plot(budgets, [acc[base]["majority"][b] for b in budgets], color=_colour(base),
                lw=1.6, ls=":", label=f"{registry.title(base)} (majority, no verifier)")  # fmt: skip
    co = summary.get("compute_optimal") or {}
    if co:
        ax.plot(budgets, [co[b] for b in budgets], color=COMPUTE_OPTIMAL, lw=1.6, ls="--",
                label="compute-optimal (per difficulty bin)")  # fmt: skip
    _budget_axis(ax, budgets, tokens)
    _accuracy_axis(ax)
    ax.set_title("Accuracy against test-time compute", loc="left", fontsize=12, color=INK)
    fig.suptitle(_subtitle(summary), x=0.01, ha="left", fontsize=8.5, color=MUTED)
    ax.legend(fontsize=8, loc="best", frameon=False)
    return fig


def by_difficulty(summary: Summary) -> Figure:
    bins = summary.get("bins") or []
    fig = _figure(max(8.0, 2.6 * max(1, len(bins))), 4.2)
    budgets = summary["spec"]["budgets"]
    tokens = summary["spec"].get("budget_kind") == "tokens"
    if not bins:
        fig.text(0.5, 0.5, "No finished problems in this sweep yet.", ha="center", color=MUTED)
        return fig
    axes = fig.subplots(1, len(bins), sharey=True, squeeze=False)[0]
    for ax, bn in zip(axes, bins, strict=True):
        for s in summary["spec"]["strategies"]:
            c = _colour(s)
            _band(ax, budgets, bn.get("intervals", {}).get(s, {}).get("weighted"), c)
            ax.plot(budgets, [bn["accuracy"][s]["weighted"][b] for b in budgets], color=c, lw=2, marker="o",
                    ms=3, label=registry.title(s))  # fmt: skip
        lo, hi = bn["difficulty_range"]
        ax.set_title(
            f"bin {bn['bin']} · {len(bn['problems'])} problems\npass@1 {lo:.2f}–{hi:.2f}", fontsize=9
        )
        _budget_axis(ax, budgets, tokens)
        ax.set_xlabel("budget", fontsize=8)
        _accuracy_axis(ax)
    for ax in axes[1:]:
        ax.set_ylabel("")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle("Accuracy by difficulty (easiest first) · " + _subtitle(summary), x=0.01, ha="left",
                 fontsize=8.5, color=MUTED)  # fmt: skip
    return fig


def exchange(report: dict[str, Any]) -> Figure:
    """Accuracy against inference FLOPs per difficulty bin: every (strategy, budget) of the small
    model, and the large model's best-of-N (budget 1 greedy and sampled, and its own budgets)."""
    bins = report["bins"]
    fig = _figure(max(8.0, 2.8 * max(1, len(bins))), 4.4)
    if not bins:
        fig.text(0.5, 0.5, "No problem finished on both models yet.", ha="center", color=MUTED)
        return fig
    axes = fig.subplots(1, len(bins), sharey=True, squeeze=False)[0]
    small, large = report["small"]["label"], report["large"]["label"]
    for ax, bn in zip(axes, bins, strict=True):
        for s, pts in bn["small"].items():
            xs = [p["flops"] for p in pts]
            ax.plot(xs, [p["accuracy"] for p in pts], color=_colour(s), lw=1.8, marker="o", ms=3,
                    label=f"{small}: {registry.title(s)}")  # fmt: skip
            lows, highs = [p["low"] for p in pts], [p["high"] for p in pts]
            ax.fill_between(xs, lows, highs, color=_colour(s), alpha=0.12,
                            linewidth=0)  # fmt: skip
        pts = bn["large"]["best_of_n"]
        if pts:
            fl, ac = [p["flops"] for p in pts], [p["accuracy"] for p in pts]
            ax.plot(fl, ac, color=INK, lw=2, ls="--", marker="s",
                    ms=4, label=f"{large}: best-of-N")  # fmt: skip
        g = bn["large"].get("greedy")
        if g is not None:
            ax.scatter([g["flops"]], [g["accuracy"]], color=INK, marker="*", s=70, zorder=5,
                       label=f"{large}: greedy")  # fmt: skip
        ax.set_xscale("log")
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        # 1, 2 and 5 of each decade, as 2e10: the points of one bin often sit within one decade
        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:.0e}".replace("e+", "e")))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("inference FLOPs per problem", fontsize=8)
        ax.set_title(f"bin {bn['bin']} · {len(bn['problems'])} problems", fontsize=9)
        _accuracy_axis(ax)
    for ax in axes[1:]:
        ax.set_ylabel("")
    axes[0].legend(fontsize=7, frameon=False)
    fig.suptitle(
        f"Test-time compute against parameters: {small} with search vs {large} · shaded: 95% interval",
        x=0.01, ha="left", fontsize=9, color=MUTED,
    )  # fmt: skip
    return fig


CHARTS: dict[str, Callable[[Summary], Figure]] = {
    "accuracy_vs_budget": accuracy_vs_budget,
    "by_difficulty": by_difficulty,
}


def png_bytes(fig: Figure, dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    return buf.getvalue()


def _save(fig: Figure, path: Path, fmt: str) -> Path:
    tmp = path.with_name(path.name + ".part")
    try:
        fig.savefig(tmp, format=fmt, dpi=160, facecolor="white")
        tmp.replace(path)
    except OSError as e:
        raise PonderError(f"Cannot write {path}: {e.strerror or e}.") from None
    return path


def write_charts(summary: Summary, folder: Path) -> list[Path]:
    """The sweep's charts into ``folder`` as PNG and SVG; returns the files."""
    out = []
    for name, make in CHARTS.items():
        fig = make(summary)
        out += [
            _save(fig, Path(folder) / f"{name}.png", "png"),
            _save(fig, Path(folder) / f"{name}.svg", "svg"),
        ]
    return out


def write_exchange_charts(report: dict[str, Any], folder: Path) -> list[Path]:
    fig = exchange(report)
    return [
        _save(fig, Path(folder) / "exchange.png", "png"),
        _save(fig, Path(folder) / "exchange.svg", "svg"),
    ]
