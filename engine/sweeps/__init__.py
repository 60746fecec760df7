"""Sweeps: every (problem, strategy, budget) of a problem set, saved in the store, then analysed.

:func:`run_sweep` (``runner``) runs what the store does not hold yet, each cell (one strategy at one
budget on one problem) a session of its own, and reports progress with an ETA; run it again after a
kill or a cancel and it does only the missing cells. A sweep is found again by its *key*
(``plan``): problem set contents, model file, PRM, seed and max tokens; problems, strategies and
budgets may grow between calls (the cells already run are reused). :func:`analyse` (``analysis``)
loads the rows first and computes the summary from them alone (a typed value: ``summary``);
``report`` writes it out, ``plots`` draws its charts, ``exchange`` weighs test-time compute against
parameters on two models.
"""

from __future__ import annotations

from engine.sweeps.analysis import N_BINS, SAMPLES, SweepRows, analyse, load_rows, summarise
from engine.sweeps.plan import (
    DEFAULT_BUDGETS,
    Cell,
    SweepSpec,
    describe_params,
    find_sweep,
    model_identity,
    plan_cells,
    problem_indices,
    run_budgets,
    source_budget,
    spec_of,
    subsampled,
    sweep_key,
    sweep_name,
)
from engine.sweeps.report import json_ready, load_report, load_summary, markdown_table, write_outputs
from engine.sweeps.runner import (
    IN_PROCESS_BATCH,
    SweepProgress,
    SweepResult,
    cell_label,
    cell_request,
    format_progress,
    hms,
    pending_requests,
    run_sweep,
)
from engine.sweeps.summary import ProblemRow, Summary, SummaryBin, SummarySpec

__all__ = [
    "Cell",
    "DEFAULT_BUDGETS",
    "IN_PROCESS_BATCH",
    "N_BINS",
    "ProblemRow",
    "SAMPLES",
    "Summary",
    "SummaryBin",
    "SummarySpec",
    "SweepProgress",
    "SweepResult",
    "SweepRows",
    "SweepSpec",
    "analyse",
    "cell_label",
    "cell_request",
    "describe_params",
    "find_sweep",
    "format_progress",
    "hms",
    "json_ready",
    "load_report",
    "load_rows",
    "load_summary",
    "markdown_table",
    "model_identity",
    "plan_cells",
    "problem_indices",
    "run_budgets",
    "pending_requests",
    "run_sweep",
    "source_budget",
    "spec_of",
    "subsampled",
    "summarise",
    "sweep_key",
    "sweep_name",
    "write_outputs",
]
