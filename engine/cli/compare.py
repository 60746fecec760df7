"""``ponder compare``: search strategies side by side on one problem at a matched budget, saved as a
session. The options become one :class:`~engine.run.request.CompareRequest`, checked before the
model loads; :func:`~engine.run.compare.run_compare` runs it in the worker that owns the executor."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.cli import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNS_FAILED
from engine.cli.options import (
    DB_HELP,
    add_model_args,
    add_seeds_arg,
    add_strategies_arg,
    add_strategy_param_args,
    add_yes_arg,
    backend_config,
    check_cost,
    check_prm,
    facts_in_process,
    facts_of,
    in_process_parallel,
    names,
    overrides,
    print_json,
    prm_help,
    run_in_worker,
    server_target,
)
from engine.errors import InvalidRequestError
from engine.present import human_flops
from engine.prm import registry as prm_kinds
from engine.problems import get_problem
from engine.run.cost import CostRefused, estimate
from engine.run.request import CompareRequest

if TYPE_CHECKING:  # imported where used: a budget over the ceiling is refused before they load
    from engine.executor import Executor
    from engine.run.compare import CompareResult, RunSummary
    from engine.run.scheduler import EventSink
    from engine.store import Store
from engine.worker import CancelToken


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("problem", nargs="?", help="the problem text (or use --problem-set and --index)")
    p.add_argument("--reference", help="the known answer, to mark each run correct or not")
    p.add_argument(
        "--problem-set", choices=["gsm8k", "math500"], help="take a shipped problem (its reference too)"
    )
    p.add_argument("--index", type=int, default=0, help="which problem of --problem-set (default 0)")
    add_strategies_arg(p)
    p.add_argument("--budget", type=int, default=8, help="generations per strategy, as Snell counts them")
    p.add_argument(
        "--budget-tokens",
        type=int,
        metavar="T",
        help="match the strategies by generated tokens instead: each spends at most T (best-of-N and "
        "revisions as many generations of --max-tokens as fit; beam search, DVTS and particle "
        "filtering N from --solution-tokens, stopping when spent; budget forcing thinks for T)",
    )
    p.add_argument(
        "--solution-tokens",
        type=int,
        metavar="E",
        help="with --budget-tokens: the expected tokens of one solution (default: --max-tokens, at most 256)",
    )
    p.add_argument("--prm", default=prm_kinds.default_name(), help=prm_help())
    p.add_argument("--seed", type=int, default=0)
    add_seeds_arg(p)
    p.add_argument("--max-tokens", type=int, default=2048, help="tokens per solution (default 2048)")
    p.add_argument(
        "--lookahead",
        type=int,
        dest="sp__beam_search__lookahead",
        metavar="K",
        help="the same as --beam-search-lookahead",
    )
    p.add_argument("--sequential", action="store_true", help="one strategy after another, not side by side")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("--title", default="", help="a title for the saved session")
    p.add_argument("--tag", action="append", default=[], help="tag the saved session (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    add_yes_arg(p)
    add_model_args(p, servers=True)
    add_strategy_param_args(p)


def request_of(args: argparse.Namespace, store: Store | None = None) -> CompareRequest:
    """The compare the options ask for, checked: unknown strategies, budgets they cannot spend and a
    PRM that cannot run fail here, before the model loads; with ``store``, in process, so does a
    budget the cost estimate refuses (:mod:`engine.run.cost`)."""
    return checked_request(args, draft_of(args), store)


def draft_of(args: argparse.Namespace) -> CompareRequest:
    """The compare the options ask for, not yet checked."""
    reference = args.reference
    if args.problem_set:
        prob = get_problem(args.problem_set, args.index)
        problem = prob.question
        reference = reference or prob.reference
    else:
        problem = args.problem or ""
    if not problem.strip():
        raise InvalidRequestError("The problem is empty: give the question, or --problem-set and --index.")
    strategies = names(args.strategies)
    return CompareRequest(
        problem=problem,
        strategies=strategies,
        budget=args.budget,
        budget_tokens=args.budget_tokens,
        solution_tokens=args.solution_tokens,
        overrides=overrides(args, strategies),
        prm=args.prm,
        reference=reference,
        seed=args.seed,
        seeds=args.seeds,
        max_tokens=args.max_tokens,
        concurrent=not args.sequential,
        stream_text=True,
        title=args.title,
        tags=tuple(args.tag),
    )


def refuse_over_ceiling(args: argparse.Namespace, draft: CompareRequest) -> None:
    """A budget over the ceiling, refused with its estimate before the store or llama.cpp is even
    imported (so in well under a second); the estimate's rate is then the assumed one."""
    if server_target(args) is None:
        est = estimate([draft], facts_in_process(args), None)
        if est.over_ceiling:
            raise CostRefused(est.refusal() or "", est)


def checked_request(args: argparse.Namespace, draft: CompareRequest, store: Store | None) -> CompareRequest:
    if store is not None and server_target(args) is None:
        check_cost(args, [draft], store, facts_in_process(args))
    request = draft.checked()
    check_prm(args.prm, args)
    if prm_kinds.needs_reference(args.prm) and not request.reference:
        raise InvalidRequestError(
            f"--prm {args.prm} needs a reference answer (--reference or --problem-set)."
        )
    return request


def run(args: argparse.Namespace) -> int:
    draft = draft_of(args)
    refuse_over_ceiling(args, draft)
    from engine.cli.progress import Progress
    from engine.store import Store

    store = Store.open(args.db)  # a bad database is reported before the model loads
    cancel = CancelToken()
    try:
        request = checked_request(args, draft, store)
        config = backend_config(args, n_ctx=args.ctx or 16384, n_seq_max=in_process_parallel(args))
        sink = Progress.for_compare(request, json=args.json)
        on_server = server_target(args) is not None
        with sink:
            result: CompareResult = run_in_worker(
                args,
                config,
                _compare,
                cancel,
                "Cancelled; the runs so far follow.",
                args if on_server else None,
                request,
                sink,
                cancel,
                store,
            )
    finally:
        store.close()
    if result.error:
        print(f"ponder: warning: {result.error}; the session is saved up to there.", file=sys.stderr)
    summaries = result.summaries
    code = runs_exit_code(summaries, cancel.cancelled, bool(result.error))
    if args.json:
        print_json(
            {
                "session_id": result.session_id,
                "db": str(store.path),
                "problem": request.problem,
                "reference": request.reference,
                "budget": request.budget_line(),
                "budget_kind": request.budget_kind(),
                "runs": [s.as_dict() for s in summaries],
            }
        )
        return code
    _print_table(request, summaries)
    print(f"\nSaved as session {result.session_id} in {store.path}")
    if code == EXIT_RUNS_FAILED:
        failed = [s.strategy for s in summaries if s.status == "failed"]
        print(
            f"ponder: {len(failed)} of {len(summaries)} runs failed ({', '.join(failed)}).", file=sys.stderr
        )
    return code


def _compare(
    executor: Executor,
    server_args: argparse.Namespace | None,
    request: CompareRequest,
    sink: EventSink,
    cancel: CancelToken,
    store: Store,
) -> CompareResult:
    """On the worker thread: over servers, the cost check once the server has said what it serves
    (in process it ran before the model loaded); then the compare."""
    if server_args is not None:
        check_cost(server_args, [request], store, facts_of(executor))
    from engine.run.compare import run_compare

    return run_compare(executor, request, sink, cancel, store)


def _print_table(request: CompareRequest, summaries: Sequence[RunSummary]) -> None:
    print(f"\nProblem: {request.problem}")
    print(f"Budget: {request.budget_line()}")
    if request.reference:
        print(f"Reference: {request.reference}")
    width = max(12, *(len(s.strategy) for s in summaries))
    head = (
        f"{'strategy':<{width}} {'answer':<14} {'correct':<8} {'gens':>7} {'gen tok':>8} {'prompt':>8} "
        f"{'PRM tok':>8} {'FLOPs':>12} {'seconds':>8}"
    )
    print(f"\n{head}  tally")
    for s in summaries:
        mark = {True: "yes", False: "no", None: "-"}[s.correct]
        tally = ", ".join(f"{a}: {v:.2f}" for a, v in sorted(s.tally.items(), key=lambda kv: -kv[1])[:3])
        ans = (s.answer or "-")[:14]
        cols = (
            f"{s.strategy:<{width}} {ans:<14} {mark:<8} {_gens(s):>7} {s.generated_tokens:>8} "
            f"{s.prompt_tokens:>8} {s.prm_tokens:>8} {human_flops(s.policy_flops + s.prm_flops):>12}"
        )
        print(f"{cols} {s.seconds:>8.1f}  {tally}")
        if s.status != "done":
            print(f"    {s.status}: {s.message}")


def _gens(s: RunSummary) -> str:
    """Generations spent: "8/16" where the strategy stopped before its budget (a maximum)."""
    return f"{s.generations}/{s.budget}" if s.generations != s.budget else str(s.generations)


def runs_exit_code(summaries: Sequence[Any], cancelled: bool, unsaved: bool) -> int:
    if cancelled:
        return EXIT_INTERRUPTED
    if unsaved or any(s.status == "failed" for s in summaries):
        return EXIT_RUNS_FAILED
    return EXIT_OK
