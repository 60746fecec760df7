"""A sweep's summary written out: the Markdown table, JSON, and the charts beside them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

from engine.errors import PonderError
from engine.search import registry
from engine.store import write_export
from engine.sweeps.plots import write_charts
from engine.sweeps.summary import Summary


def markdown_table(summary: Summary, title: bool = True) -> str:
    budgets = summary["spec"]["budgets"]
    tokens = summary["spec"].get("budget_kind") == "tokens"
    unit, mark = ("generated tokens, matched by tokens", "T=") if tokens else ("generations", "N=")
    pr = summary["problems"]
    head = [f"# Sweep {summary['sweep']['id']}", "", summary["sweep"]["name"], ""] if title else []
    lines = [
        *head,
        f"{pr['complete']} of {pr['requested']} problems complete"
        + (f"; {len(pr['failed'])} with a failed run" if pr["failed"] else "")
        + (f"; {len(pr['incomplete'])} not yet run" if pr["incomplete"] else "")
        + ".",
        "",
        f"## Accuracy against budget ({unit})",
        "",
        "| strategy | selection | " + " | ".join(f"{mark}{b}" for b in budgets) + " |",
        "|---|---|" + "---:|" * len(budgets),
    ]
    for s, by_m in summary["accuracy"].items():
        for m, by_b in by_m.items():
            cells = " | ".join(f"{100 * by_b[b]:.1f}%" for b in budgets)
            lines.append(f"| {registry.title(s)} | {m} | {cells} |")
    co = summary["compute_optimal"]
    lines.append(
        "| **compute-optimal** | per bin | " + " | ".join(f"**{100 * co[b]:.1f}%**" for b in budgets) + " |"
    )
    if "compute_optimal_held_out" in summary:
        ho = summary["compute_optimal_held_out"]
        lines.append(
            "| compute-optimal, held out | 2-fold | "
            + " | ".join(f"{100 * ho[b]:.1f}%" for b in budgets)
            + " |"
        )
    lines += _spent_lines(summary, budgets, mark)
    diff = "pass@1" if summary["method"]["difficulty"] == "pass1" else "mean PRM score"
    lines += [
        "",
        f"## By difficulty ({summary['method']['bins']} quantile bins of the model's {diff}, 1 = easiest)",
        "",
        "| bin | problems | "
        + diff
        + " | "
        + " | ".join(f"best at {mark}{b} (gain over best-of-N)" for b in budgets)
        + " |",
        "|---:|---:|---|" + "---|" * len(budgets),
    ]
    for b in summary["bins"]:
        lo, hi = b["difficulty_range"]
        row = []
        for n in budgets:
            c = b["best_per_budget"][n]
            gain = "" if c["gain"] is None else f" ({100 * c['gain']:+.1f})"
            name = registry.title(c["strategy"])
            row.append(f"{name} {c['selection']} {100 * c['accuracy']:.0f}%{gain}")
        lines.append(f"| {b['bin']} | {len(b['problems'])} | {lo:.2f}-{hi:.2f} | " + " | ".join(row) + " |")
    if summary.get("levels"):
        top = budgets[-1]
        names = [registry.title(s) for s in summary["accuracy"]]
        lines += [
            "",
            "## By the set's own level (weighted selection)",
            "",
            "| level | problems | pass@1 | "
            + " | ".join(f"{n} {mark}{budgets[0]} / {mark}{top}" for n in names)
            + " |",
            "|---:|---:|---:|" + "---:|" * len(names),
        ]
        for lv, level in summary["levels"].items():
            accs = " | ".join(
                f"{100 * a[budgets[0]]:.0f}% / {100 * a[top]:.0f}%" for a in level["accuracy"].values()
            )
            lines.append(f"| {lv} | {level['problems']} | {100 * level['pass1']:.0f}% | {accs} |")
    lines += ["", summary["method"]["note"], ""]
    return "\n".join(lines)


def _spent_lines(summary: Summary, budgets: list[int], mark: str) -> list[str]:
    """Generations spent per problem by the strategies whose budget is a maximum, overall and per
    difficulty bin (1 = easiest): what stopping early saved."""
    spent = summary.get("spent") or {}
    names = [s for s in spent if (st := registry.find(s)) is not None and st.budget_is_maximum]
    if not names:
        return []
    out = [
        "",
        "## Generations spent (the budget a maximum: mean per problem)",
        "",
        "| strategy | bin | " + " | ".join(f"{mark}{b}" for b in budgets) + " |",
        "|---|---|" + "---:|" * len(budgets),
    ]
    for s in names:
        out.append(
            f"| {registry.title(s)} | all | " + " | ".join(f"{spent[s][b]:.1f}" for b in budgets) + " |"
        )
        for bn in summary.get("bins", []):
            row = bn.get("spent", {}).get(s)
            if row:
                out.append(f"| | {bn['bin']} | " + " | ".join(f"{row[b]:.1f}" for b in budgets) + " |")
    return out


def json_ready(summary: Mapping[str, Any]) -> dict[str, Any]:
    """Budgets are int keys in memory; JSON keeps them as strings. Round-trips with :func:`load_summary`
    (a summary) and :func:`load_report` (an exchange report)."""
    result: dict[str, Any] = json.loads(json.dumps(summary))
    return result


def load_summary(text: str) -> Summary:
    """summary.json back, with budget keys as ints again (what it holds is not checked: a summary
    file that is not one fails where it is read)."""
    return cast(Summary, load_report(text))


def load_report(text: str) -> Any:
    """A summary's or an exchange report's JSON back, with budget keys as ints again."""

    def fix(o: Any) -> Any:
        if isinstance(o, dict):
            return {(int(k) if isinstance(k, str) and k.isdigit() else k): fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(x) for x in o]
        return o

    return fix(json.loads(text))


def write_outputs(summary: Summary, out: str | Path) -> list[Path]:
    """summary.json, summary.md and the charts (PNG and SVG, :mod:`engine.sweeps.plots`) in folder ``out``
    (created). Returns the files written."""
    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PonderError(f"Cannot create the output folder {folder}: {e.strerror or e}.") from None
    files = [
        write_export(folder / "summary.json", json.dumps(json_ready(summary), indent=1)),
        write_export(folder / "summary.md", markdown_table(summary)),
    ]
    return files + write_charts(summary, folder)
