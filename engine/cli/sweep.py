"""``ponder sweep``: accuracy against budget over a problem set, run resumably and analysed; with
``--models SMALL,LARGE`` the exchange of test-time compute against parameters
(:func:`engine.sweeps.exchange.run_exchange`)."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

from engine.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED
from engine.cli.options import (
    DB_HELP,
    add_model_args,
    add_seeds_arg,
    add_strategies_arg,
    add_strategy_param_args,
    add_yes_arg,
    backend_config,
    check_prm,
    count,
    facts_in_process,
    facts_of,
    in_process_parallel,
    int_list,
    model_path,
    names,
    overrides,
    print_json,
    prm_help,
    run_in_worker,
    server_executor,
    servers,
    terminate_as_interrupt,
)
from engine.cli.progress import SweepBar
from engine.errors import InvalidRequestError
from engine.executor import Executor
from engine.prm import registry as prm_kinds
from engine.run.cost import ModelFacts, gate, sweep_estimate
from engine.store import Store
from engine.sweeps import (
    Summary,
    SweepResult,
    SweepSpec,
    analyse,
    find_sweep,
    json_ready,
    markdown_table,
    model_identity,
    pending_requests,
    run_sweep,
    write_outputs,
)
from engine.sweeps.exchange import run_exchange
from engine.worker import CancelToken


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Runs every (problem, strategy, budget) the session database lacks, several cells at once in shared "
        "batches (--batch), then writes summary.json, summary.md and the charts to --out. Run the same "
        "command again after a stop and it does only what is missing."
    )
    p.add_argument("--set", dest="problem_set", help="gsm8k | math500 | arith | arith:SEED | FILE.jsonl")
    p.add_argument("--limit", type=int, default=50, help="problems (default 50)")
    p.add_argument("--offset", type=int, default=0, help="the first problem's index (default 0)")
    add_strategies_arg(p)
    p.add_argument(
        "--budgets",
        type=int_list,
        default=[1, 2, 4, 8],
        help="comma-separated generation budgets (default 1,2,4,8)",
    )
    p.add_argument(
        "--budget-tokens",
        type=int_list,
        metavar="T,T,…",
        help="match the strategies by generated tokens instead: comma-separated token budgets, "
        "each cell run at its own (e.g. 256,512,1024)",
    )
    p.add_argument("--prm", default=prm_kinds.default_name(), help=prm_help())
    p.add_argument("--seed", type=int, default=0)
    add_seeds_arg(p)
    p.add_argument("--max-tokens", type=int, default=512, help="tokens per solution (default 512)")
    p.add_argument("--difficulty", choices=["pass1", "prm"], default="pass1", help="how problems are binned")
    p.add_argument(
        "--models",
        metavar="SMALL,LARGE",
        help="test-time compute against parameters: the grid on both models (GGUF files, or server model "
        "names with --server), the large one also greedy at budget 1; writes exchange.md/.json/.png/.svg",
    )
    p.add_argument(
        "--pretrain-tokens",
        metavar="S,L",
        help="with --models: each model's pretraining tokens (e.g. 2T,4T; default: models/catalog.toml) for "
        "the ratio R and the FLOPs-matched comparison",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        metavar="N",
        help="keep about N sequences decoding at once by running cells together (default 32 in process, "
        "the servers' slots over servers); 1 runs one cell at a time, so a resumed sweep reproduces an "
        "uninterrupted one token for token",
    )
    p.add_argument("--out", help="folder for summary.json, summary.md and the PNG charts (default: sweep-ID)")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--report-only", action="store_true", help="analyse what the database holds; run nothing")
    p.add_argument("--list", action="store_true", help="list the sweeps in the database")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_yes_arg(p)
    add_model_args(p, servers=True)
    add_strategy_param_args(p)


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list(args)
    spec = _spec(args)
    if args.report_only:
        return _outputs(args, _report_only(args, spec))
    if args.models:
        return _models(args, spec)
    result, summary, _ = _sweep_once(args, spec)
    code = _outputs(args, summary)
    if code != EXIT_OK:
        return code
    if result.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_RUNS_FAILED if result.failed else EXIT_OK


def _list(args: argparse.Namespace) -> int:
    with Store.open(args.db, readonly=True) as store:
        sweeps = store.list_sweeps()
    if args.json:
        print_json([w.as_dict() for w in sweeps])
        return EXIT_OK
    for w in sweeps:
        print(f"{w.id}  {w.created[:16].replace('T', ' ')}  {w.n_cells:>5} cells  {w.name}")
    if not sweeps:
        print("No sweeps yet: ponder sweep --set arith --limit 10 --prm arithmetic")
    return EXIT_OK


def _spec(args: argparse.Namespace) -> SweepSpec:
    """The sweep the options ask for, checked: a bad set, file, offset, budget or PRM is reported
    before the model loads."""
    if not args.problem_set:
        raise InvalidRequestError("Name the problem set: --set gsm8k | math500 | arith | FILE.jsonl")
    if args.batch is not None and args.batch < 1:
        raise InvalidRequestError("--batch is at least 1 (1: one cell at a time).")
    strategies = names(args.strategies)
    spec = SweepSpec(
        args.problem_set,
        limit=args.limit,
        offset=args.offset,
        strategies=strategies,
        budgets=tuple(args.budget_tokens or args.budgets),
        prm=args.prm,
        seed=args.seed,
        max_tokens=args.max_tokens,
        seeds=args.seeds,
        budget_kind="tokens" if args.budget_tokens else "generations",
        params=overrides(args, strategies),
    )
    spec.check()
    check_prm(args.prm, args)
    return spec


def _report_only(args: argparse.Namespace, spec: SweepSpec) -> Summary:
    model: str | dict[str, Any] = model_path(args)
    if servers(args):
        executor = server_executor(args)
        try:
            model = executor.model_record()
        finally:
            executor.close()
    with Store.open(args.db, readonly=True) as store:
        return analyse(store, find_sweep(store, spec, model), spec, difficulty=args.difficulty)


def _swept(
    executor: Executor,
    store: Store,
    spec: SweepSpec,
    progress: SweepBar,
    cancel: CancelToken,
    batch: int | None,
    server_args: argparse.Namespace | None,
) -> tuple[SweepResult, dict[str, Any]]:
    """On the worker thread: over servers, the cost check once they have said what they serve (in
    process it ran before the model loaded); the sweep run on ``executor``, and the model's record."""
    record = executor.record()
    if server_args is not None:
        _check_cost(server_args, store, spec, executor.model_record(), facts_of(executor))
    return run_sweep(executor, store, spec, on_progress=progress, cancel=cancel, batch=batch), record


def _check_cost(
    args: argparse.Namespace, store: Store, spec: SweepSpec, model: dict[str, Any], facts: ModelFacts
) -> None:
    """Refuse (exit 2, nothing saved) cells still to run that the estimate says are too much."""
    pending = pending_requests(store, spec, model)
    if pending:
        gate(sweep_estimate(pending, facts, store), bool(args.yes))


def _sweep_once(args: argparse.Namespace, spec: SweepSpec) -> tuple[SweepResult, Summary, dict[str, Any]]:
    """Run (or resume) one sweep on ``args``' model and analyse it: (result, summary, model record)."""
    store = Store.open(args.db)
    cancel = CancelToken()
    on_server = bool(servers(args))
    try:
        if not on_server:  # before the model loads: the cells still to run, from the file's identity
            _check_cost(args, store, spec, model_identity(model_path(args)), facts_in_process(args))
        terminate_as_interrupt()  # `kill PID` stops a (background) sweep as Ctrl+C does: cleanly
        config = backend_config(args, n_ctx=args.ctx or 16384, n_seq_max=in_process_parallel(args))
        note = "Stopping after the current cell ..."
        with SweepBar(json=args.json) as progress:
            work_args = (store, spec, progress, cancel, args.batch, args if on_server else None)
            result, record = run_in_worker(args, config, _swept, cancel, note, *work_args)
        summary = analyse(store, result.sweep_id, spec, difficulty=args.difficulty)
    finally:
        store.close()
    verb = "Stopped" if result.cancelled else "Finished"
    print(
        f"{verb}: {result.ran} cells run now, {result.skipped} were already in {store.path}"
        + (f", {result.failed} failed" if result.failed else "")
        + ".",
        file=sys.stderr,
    )
    if result.cancelled:
        print("Run the same command again to do what is missing.", file=sys.stderr)
    return result, summary, record


def _models(args: argparse.Namespace, spec: SweepSpec) -> int:
    """``--models SMALL,LARGE``: the exchange workflow, each sweep run as ``ponder sweep`` runs one."""
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    pretrain = None
    if args.pretrain_tokens:
        vals = [count(x) for x in args.pretrain_tokens.split(",")]
        if len(vals) != 2:
            raise InvalidRequestError("--pretrain-tokens takes SMALL,LARGE, e.g. 2T,4T.")
        pretrain = (float(vals[0]), float(vals[1]))

    def sweep_once(model: str, sp: SweepSpec) -> tuple[SweepResult, Summary, dict[str, Any]]:
        a = copy.copy(args)
        a.model = model
        print(f"== {Path(model).name} ==", file=sys.stderr)
        return _sweep_once(a, sp)

    out = run_exchange(
        models, spec, sweep_once, args.out or "exchange", pretrain, on_servers=bool(servers(args))
    )
    if out.cancelled:
        return EXIT_INTERRUPTED
    if args.json:
        assert out.report is not None  # only a cancelled exchange has none
        print_json(json_ready(out.report))
    else:
        print(out.markdown)
        print("Wrote " + ", ".join(str(f) for f in out.files), file=sys.stderr)
    return EXIT_RUNS_FAILED if out.failed else EXIT_OK


def _outputs(args: argparse.Namespace, summary: Summary) -> int:
    files = write_outputs(summary, args.out or f"sweep-{summary['sweep']['id']}")
    if args.json:
        print_json(json_ready(summary))
    else:
        print(markdown_table(summary))
        print("Wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return EXIT_OK
