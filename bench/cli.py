"""``ponder bench``: the command module (:func:`add_arguments`, :func:`run`), named in the CLI's table of
commands by module path.

A thin shell: each mode is one function that checks its flags, calls its benchmark and prints the
figures (one JSON object with ``--json``). The flags marked "instead:" choose the mode through
:data:`MODES`; without one, the batched backend against the naive loop (:mod:`bench.backend`). A
mode's module is imported when the mode runs, so building the parser loads no model, no Qt.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any

from engine.cli.options import (
    add_model_args,
    api_key,
    backend_config,
    in_process_parallel,
    int_list,
    int_list_zero,
    model_path,
    names,
    print_json,
)
from engine.errors import InvalidRequestError

DEFAULT_NS = [1, 4, 8, 16]  # --n as given by default
EXIT_BENCH_FAILED = 3  # ponder bench --gui: the window's compare failed (the CLI's "a run failed")


# --- the flags ------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_args(parser, servers=True, bench=True)  # --server here: "instead: bench this server"
    _add_modes(parser)
    _add_figures(parser)


def _add_modes(p: argparse.ArgumentParser) -> None:
    """The "instead:" flags, one per entry of :data:`MODES` (``--server`` comes with the model's)."""
    p.add_argument(
        "--pan", action="store_true", help="instead: frames per second panning a large tree in the app's view"
    )
    p.add_argument(
        "--gui",
        action="store_true",
        help="instead: the window's stalls during a real compare, offscreen, against the same compare "
        "from the CLI (--budget, --max-tokens, --index)",
    )
    p.add_argument(
        "--compare",
        action="store_true",
        help="instead: the default strategies at budget 8, side by side vs one after another",
    )
    p.add_argument(
        "--store",
        action="store_true",
        help="instead: list and open sessions in a store of --sessions x 3 runs x 200 nodes",
    )
    p.add_argument(
        "--processes",
        type=int,
        help="instead: this many Ponder processes decoding at once vs one alone (fair_ratio)",
    )
    p.add_argument(
        "--revisions",
        action="store_true",
        help="instead: revisions' generated tokens/s against best-of-N's at --budget on --problems, each "
        "strategy alone, with and without continuing each attempt's cells (ratio)",
    )
    p.add_argument(
        "--limit",
        action="store_true",
        help="instead: the batched backend against llama.cpp's own llama-batched-bench (built by make "
        "server) on the same model, threads, prompt and batch sizes (--n, --tokens), with a unified KV "
        "cache and with a stream per sequence (ratio)",
    )
    p.add_argument(
        "--gateway",
        metavar="URL",
        help="instead: the same sweep through Ponder's own pool over the --server URLs (two or more) and "
        "through this gateway in front of them (tokens/s and the share of prompt tokens cached, each; "
        "--tokenizer as for any gateway)",
    )
    p.add_argument(
        "--sweep",
        action="store_true",
        help="instead: a sweep's tokens/s (--sweep-problems arithmetic-ladder problems x best-of-N, beam "
        "search, revisions x budgets 1,2,4,8, arithmetic PRM, 128 tokens) against the backend's own at "
        "16 sequences (ratio)",
    )


def _add_figures(p: argparse.ArgumentParser) -> None:
    """What the modes measure (each says which modes read it)."""
    p.add_argument("--n", type=int_list, default=DEFAULT_NS, help="sample counts (default 1,4,8,16)")
    p.add_argument("--tokens", type=int, default=128, help="new tokens per sample (default 128)")
    p.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs per measurement; the median is shown (with --limit: interleaved rounds, each side's best)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="with --compare, --revisions: tokens per solution (default 256); with --sweep, --gui: 128",
    )
    p.add_argument("--prm", default="judge", choices=["judge", "arithmetic"], help="with --compare: the PRM")
    p.add_argument(
        "--strategies",
        help="with --compare: comma-separated strategies (default: the default ones; e.g. "
        "mcts,adaptive_best_of_n,beam_search,best_of_n)",
    )
    p.add_argument(
        "--problems", type=int_list_zero, default=[0], help="with --compare: GSM8K indices (0,1,...)"
    )
    p.add_argument("--sessions", type=int, default=1000, help="with --store: sessions (default 1000)")
    p.add_argument(
        "--nodes",
        type=int,
        default=None,
        help="with --store: nodes per run (default 200); with --pan: the tree's nodes (default 2000)",
    )
    p.add_argument("--frames", type=int, default=300, help="with --pan: frames drawn (default 300)")
    p.add_argument("--db", help="with --store: build the store here (default: a temporary file)")
    p.add_argument("--no-compare", action="store_true", help="with --server: only client_ratio")
    p.add_argument("--seconds", type=float, default=15.0, help="with --processes: each window (default 15)")
    p.add_argument(
        "--unshared", action="store_true", help="with --processes: also the copies with CPU sharing off"
    )
    p.add_argument(
        "--budget", type=int, default=None, help="with --revisions: generations (default 8); with --gui: 16"
    )
    p.add_argument("--index", type=int, default=0, help="with --gui: the GSM8K problem (default 0)")
    p.add_argument(
        "--sweep-problems",
        dest="problems_n",
        type=int,
        default=20,
        help="with --sweep and --gateway: problems (default 20)",
    )
    p.add_argument("--batch", type=int, default=None, help="with --sweep: the sweep's --batch")


# --- shared by the modes --------------------------------------------------------------------------------


def _progress(args: argparse.Namespace) -> Callable[[str], None] | None:
    """Progress on stderr (engine.cli.progress.Phases); stdout holds only the result."""
    phases = getattr(args, "phases", None)
    if phases is not None:
        return phases
    return None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))


def _show(args: argparse.Namespace, result: dict[str, Any], text: Callable[[dict[str, Any]], str]) -> int:
    print_json(result) if args.json else print(text(result))
    return 0


def _samples(args: argparse.Namespace, default: int = 8) -> int:
    """One sample count: the largest --n given, else ``default``."""
    return max(args.n) if args.n != DEFAULT_NS else default


def _in_process(args: argparse.Namespace) -> Any:
    """The model's configuration for the run-layer benches (a 16k context, --parallel sequences)."""
    return backend_config(args, n_ctx=args.ctx or 16384, n_seq_max=in_process_parallel(args))


# --- the modes ------------------------------------------------------------------------------------------


def bench_backend(args: argparse.Namespace) -> int:
    """Without a mode: the batched backend against the naive ``create_completion`` loop."""
    from bench.backend import format_bench, run_bench

    if args.tokens < 1:
        raise InvalidRequestError("--tokens must be >= 1")
    if args.repeat < 1:
        raise InvalidRequestError("--repeat must be >= 1")
    need = 512 + max(args.n) * args.tokens + 64
    config = backend_config(args, n_ctx=max(args.ctx or 0, need, 1024), n_seq_max=max(8, max(args.n) + 1))
    result = run_bench(
        model_path(args), ns=args.n, max_tokens=args.tokens, config=config, progress=_progress(args),
        repeat=args.repeat,
    )  # fmt: skip
    return _show(args, result, format_bench)


def bench_pan(args: argparse.Namespace) -> int:
    from bench.gui_pan import format_pan_bench, run_pan_bench

    nodes = 2000 if args.nodes is None else args.nodes
    if nodes < 1 or args.frames < 1:
        raise InvalidRequestError("--nodes and --frames must be >= 1")
    return _show(args, run_pan_bench(nodes, args.frames), format_pan_bench)


def bench_gui(args: argparse.Namespace) -> int:
    from bench.gui_stall import format_gui_bench, run_gui_bench

    budget = 16 if args.budget is None else args.budget
    max_tokens = 128 if args.max_tokens is None else args.max_tokens
    if budget < 1 or max_tokens < 8:
        raise InvalidRequestError("--budget must be >= 1 and --max-tokens >= 8")
    try:
        result = run_gui_bench(budget, max_tokens, args.index)
    except RuntimeError as e:  # the compare failed, in the window or from the CLI
        print(f"ponder: error: {e}", file=sys.stderr)
        return EXIT_BENCH_FAILED
    return _show(args, result, format_gui_bench)


def bench_server(args: argparse.Namespace) -> int:
    from bench.server import ServerBenchOptions, format_server_bench, run_server_bench

    urls = [u for u in args.server if u]
    if len(urls) > 1:
        raise InvalidRequestError("The server bench measures one server: give one --server URL.")
    if args.tokens < 1 or args.repeat < 1:
        raise InvalidRequestError("--tokens and --repeat must be >= 1")
    if not urls and args.model:
        from engine.gguf_info import read_gguf

        read_gguf(args.model)
    options = ServerBenchOptions(
        url=urls[0] if urls else None,
        model_path=model_path(args),
        n=_samples(args),
        max_tokens=args.tokens,
        repeat=args.repeat,
        api_key=api_key(args),
        parallel=args.parallel,
        compare=not args.no_compare,
        max_tokens_compare=args.max_tokens or 256,
        problems=tuple(args.problems),
        prm=args.prm,
        threads=args.threads,
    )
    return _show(args, run_server_bench(options, _progress(args)), format_server_bench)


def bench_processes(args: argparse.Namespace) -> int:
    from bench.processes import format_processes_bench, run_processes_bench
    from engine.gguf_info import read_gguf

    if args.processes < 2 or args.seconds <= 0 or args.tokens < 1:
        raise InvalidRequestError("--processes must be >= 2, --seconds > 0 and --tokens >= 1")
    model = model_path(args)
    read_gguf(model)  # a broken file is one message here, not one per copy
    result = run_processes_bench(
        model,
        processes=args.processes,
        n=_samples(args),
        max_tokens=args.tokens if args.tokens != 128 else 64,
        seconds=args.seconds,
        threads=args.threads,
        unshared=args.unshared,
        progress=_progress(args),
    )
    return _show(args, result, format_processes_bench)


def bench_store(args: argparse.Namespace) -> int:
    from bench.store import format_store_bench, run_store_bench

    nodes = 200 if args.nodes is None else args.nodes
    if args.sessions < 1 or nodes < 1:
        raise InvalidRequestError("--sessions and --nodes must be >= 1")
    if args.db and os.path.exists(args.db):
        raise InvalidRequestError(f"{args.db} exists: the store bench builds a new database.")
    result = run_store_bench(args.db, sessions=args.sessions, nodes=nodes, progress=_progress(args))
    return _show(args, result, format_store_bench)


def bench_limit(args: argparse.Namespace) -> int:
    from bench.limit import format_limit, run_limit

    if args.tokens < 1 or args.repeat < 1 or min(args.n) < 1:
        raise InvalidRequestError("--n, --tokens and --repeat must be >= 1")
    config = backend_config(args, n_ctx=1024, n_seq_max=1)  # the threads, offload and flash attention
    result = run_limit(
        model_path(args), ns=args.n, tokens=args.tokens, config=config, progress=_progress(args),
        repeat=args.repeat,
    )  # fmt: skip
    return _show(args, result, format_limit)


def bench_sweep(args: argparse.Namespace) -> int:
    from bench.compare import format_sweep_bench, run_sweep_bench

    max_tokens = args.max_tokens or 128
    if max_tokens < 16 or args.problems_n < 1:
        raise InvalidRequestError("--max-tokens must be >= 16 and --sweep-problems >= 1")
    result = run_sweep_bench(
        model_path(args), problems=args.problems_n, max_tokens=max_tokens, batch=args.batch,
        config=_in_process(args), progress=_progress(args),
    )  # fmt: skip
    return _show(args, result, format_sweep_bench)


def bench_revisions(args: argparse.Namespace) -> int:
    from bench.compare import format_revisions_bench, run_revisions_bench

    max_tokens = args.max_tokens or 256
    budget = 8 if args.budget is None else args.budget
    if max_tokens < 1 or budget < 1:
        raise InvalidRequestError("--max-tokens and --budget must be >= 1")
    result = run_revisions_bench(
        model_path(args), budget=budget, max_tokens=max_tokens, problems=args.problems,
        config=_in_process(args), progress=_progress(args),
    )  # fmt: skip
    return _show(args, result, format_revisions_bench)


def bench_compare(args: argparse.Namespace) -> int:
    from bench.compare import format_compare_bench, run_compare_bench

    max_tokens = args.max_tokens or 256
    if max_tokens < 1:
        raise InvalidRequestError("--max-tokens must be >= 1")
    result = run_compare_bench(
        model_path(args), max_tokens=max_tokens, config=_in_process(args), progress=_progress(args),
        prm=args.prm, problems=args.problems, strategies=names(args.strategies) if args.strategies else None,
    )  # fmt: skip
    return _show(args, result, format_compare_bench)


def bench_gateway(args: argparse.Namespace) -> int:
    from bench.gateway import format_gateway_bench, run_gateway_bench

    urls = [u for u in (args.server or []) if u]
    if len(urls) < 2:
        raise InvalidRequestError(
            "--gateway compares it with Ponder's own pool: give the servers behind it, "
            "two or more --server URLs."
        )
    max_tokens = args.max_tokens or 128
    if max_tokens < 16 or args.problems_n < 1 or args.repeat < 1:
        raise InvalidRequestError("--max-tokens must be >= 16, --sweep-problems and --repeat >= 1")
    result = run_gateway_bench(
        urls, args.gateway, tokenizer=args.tokenizer, problems=args.problems_n, max_tokens=max_tokens,
        repeat=args.repeat, api_key=api_key(args), progress=_progress(args),
    )  # fmt: skip
    return _show(args, result, format_gateway_bench)


# The "instead:" flags, in the order they are tried: the first one given chooses the mode.
MODES: dict[str, Callable[[argparse.Namespace], int]] = {
    "gateway": bench_gateway,  # before "server": it takes --server URLs too
    "pan": bench_pan,
    "gui": bench_gui,
    "server": bench_server,
    "processes": bench_processes,
    "store": bench_store,
    "limit": bench_limit,
    "sweep": bench_sweep,
    "revisions": bench_revisions,
    "compare": bench_compare,
}


def chosen_mode(args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    """The first mode whose flag was given (a switch set, or a value given at all), else the backend bench."""
    for flag, mode in MODES.items():
        value = getattr(args, flag, None)
        if value is not None and value is not False:
            return mode
    return bench_backend


def run(args: argparse.Namespace) -> int:
    from engine.cli.progress import Phases

    # a live line per phase on a terminal (also with --json: it goes to stderr); plain lines in
    # a log, none there with --json
    with Phases(show_plain=not args.json) as phases:
        args.phases = phases
        return chosen_mode(args)(args)
