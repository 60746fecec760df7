"""Ponder's command line. ``ponder`` with no arguments opens the app (see ``gui/launch.py``); with a
subcommand it is this CLI, which never imports Qt.

Every user-caused failure prints one clear line on stderr and exits with status 2; Ctrl+C exits
with 130. A traceback is shown only for a bug, and only with ``PONDER_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError, PonderError

# Exit status, documented in the README and `ponder --help`.
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug (the message says how to see the traceback)
EXIT_USER_ERROR = 2  # a usage error or a request refused before anything ran
EXIT_RUNS_FAILED = 3  # it ran, and at least one run or sweep cell failed (the rest is saved)
EXIT_INTERRUPTED = 130  # Ctrl+C or `kill`: what was done is saved
IN_PROCESS_PARALLEL = 64  # sequences one llama.cpp context decodes at once, unless --parallel says


def _ints(text: str, minimum: int) -> list[int]:
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not vals or any(v < minimum for v in vals):
        raise argparse.ArgumentTypeError(f"every value must be >= {minimum}")
    return vals


def _int_list(text: str) -> list[int]:
    return _ints(text, 1)


def _int_list_zero(text: str) -> list[int]:
    return _ints(text, 0)


def _add_model_args(p: argparse.ArgumentParser, servers: bool = False, bench: bool = False) -> None:
    p.add_argument(
        "--model",
        help="GGUF file (default: $PONDER_MODEL or the embedded SmolLM2-135M)"
        + ("; with --server, the name of one of the server's models" if servers else ""),
    )
    p.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload to the GPU (-1: all)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, up to 8)")
    p.add_argument("--ctx", type=int, default=None, help="context size in tokens")
    p.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    if servers:
        _add_server_args(p, bench=bench)


def _add_server_args(p: argparse.ArgumentParser, prm: bool = True, bench: bool = False) -> None:
    g = p.add_argument_group("inference servers (llama-server, vLLM, SGLang: OpenAI-compatible)")
    if bench:
        g.add_argument(
            "--server",
            action="append",
            nargs="?",
            const="",
            metavar="URL",
            help="instead: bench this server (client_ratio, compare times); without a URL, a llama-server "
            "the bench starts on --model",
        )
    else:
        g.add_argument(
            "--server",
            action="append",
            metavar="URL",
            help="run on this server instead of in process (repeatable: several servers share the work; "
            "default: $PONDER_SERVER, comma-separated)",
        )
    g.add_argument("--api-key", help="sent as a bearer token, never stored (default: $PONDER_API_KEY)")
    g.add_argument(
        "--parallel",
        type=int,
        help=f"sequences decoded at once: in process (default {IN_PROCESS_PARALLEL}), or requests in "
        "flight per server (default: llama-server's slots, else 16)",
    )
    g.add_argument("--timeout", type=float, default=600.0, help="seconds a request may take (default 600)")
    if prm:
        g.add_argument(
            "--model-params",
            type=_count,
            metavar="N",
            help="the served model's parameters, for FLOPs, where the server does not say (e.g. 1.5B, 135M)",
        )
        g.add_argument(
            "--prm-server",
            action="append",
            metavar="URL",
            help="run the PRM (judge, math-shepherd, rlhflow) on this server (default: the policy's)",
        )


def _count(text: str) -> int:
    """A count as people write parameters: 135M, 1.5B, 7e9, 135000000."""
    t = text.strip().upper().replace("_", "").replace(",", "")
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}.get(t[-1:], 1.0)
    try:
        n = float(t[:-1] if scale != 1.0 else t) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 135M, 1.5B)") from None
    if not 1 <= n < 1e15:
        raise argparse.ArgumentTypeError(f"not a parameter count: {text!r}")
    return int(n)


EXIT_HELP = f"""exit status:
  {EXIT_OK}    done (compare, sweep: every run finished)
  {EXIT_INTERNAL}    internal error (PONDER_DEBUG=1 shows the traceback)
  {EXIT_USER_ERROR}    usage error, or a request refused before anything ran (a budget or problem
       that cannot fit, a missing or broken model, a database that cannot be used)
  {EXIT_RUNS_FAILED}    compare, sweep or rerun ran, and a run or cell failed (the rest is saved)
  {EXIT_INTERRUPTED}  interrupted (Ctrl+C, kill): what was done is saved"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="ponder",
        description="Ponder: test-time compute on local GGUF models. Without a command, opens the app.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "screenshot",
        help="render the app's window offscreen to a PNG (a saved session, a sweep, or mid-run); "
        "see ponder screenshot --help",
        add_help=False,
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)

    p = sub.add_parser("models", help="list the GGUF models Ponder can see")
    p.add_argument("--dir", action="append", default=[], help="also scan this folder (repeatable)")
    p.add_argument(
        "--add", metavar="PATH", help="remember a folder to scan, or one GGUF file (the app sees it too)"
    )
    p.add_argument("--remove", metavar="PATH", help="forget an added folder or file (nothing is deleted)")
    p.add_argument("--only", action="store_true", help="scan only --dir folders (and the embedded model)")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser("info", help="what this llama.cpp build supports, and a model as loaded")
    _add_model_args(p, servers=True)
    p.add_argument("--no-model", action="store_true", help="report the build only")
    p.add_argument("--json", action="store_true")

    p = sub.add_parser("generate", help="sample N continuations of a prompt in one batch")
    p.add_argument("prompt", help="the user message (rendered with the model's chat template)")
    p.add_argument("-n", type=int, default=4, help="number of samples (default 4)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.8)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable), kept in the text")
    p.add_argument("--raw", action="store_true", help="use the prompt as is, without the chat template")
    p.add_argument("--json", action="store_true")
    _add_model_args(p)

    p = sub.add_parser("compare", help="run search strategies side by side on one problem")
    p.add_argument("problem", nargs="?", help="the problem text (or use --problem-set and --index)")
    p.add_argument("--reference", help="the known answer, to mark each run correct or not")
    p.add_argument(
        "--problem-set", choices=["gsm8k", "math500"], help="take a shipped problem (its reference too)"
    )
    p.add_argument("--index", type=int, default=0, help="which problem of --problem-set (default 0)")
    _strategies_arg(p)
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
    p.add_argument("--prm", default="judge", help="judge | arithmetic | reference | PATH to a PRM GGUF")
    p.add_argument("--seed", type=int, default=0)
    _seeds_arg(p)
    p.add_argument("--max-tokens", type=int, default=2048, help="tokens per solution (default 2048)")
    p.add_argument(
        "--lookahead",
        type=int,
        dest="sp__beam_search__lookahead",
        metavar="K",
        help="the same as --beam-search-lookahead",
    )
    p.add_argument("--sequential", action="store_true", help="one strategy after another, not side by side")
    p.add_argument("--db", help="session database (default: sessions.db in the user data folder)")
    p.add_argument("--title", default="", help="a title for the saved session")
    p.add_argument("--tag", action="append", default=[], help="tag the saved session (repeatable)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_model_args(p, servers=True)
    _strategy_param_args(p)

    p = sub.add_parser(
        "sweep",
        help="accuracy against budget over a problem set: run (resumably) and analyse",
        description="Runs every (problem, strategy, budget) the session database lacks, several cells at "
        "once in shared batches (--batch), then writes summary.json, summary.md and the charts to --out. "
        "Run the same command again after a stop and it does only what is missing.",
    )
    p.add_argument("--set", dest="problem_set", help="gsm8k | math500 | arith | arith:SEED | FILE.jsonl")
    p.add_argument("--limit", type=int, default=50, help="problems (default 50)")
    p.add_argument("--offset", type=int, default=0, help="the first problem's index (default 0)")
    _strategies_arg(p)
    p.add_argument(
        "--budgets",
        type=_int_list,
        default=[1, 2, 4, 8],
        help="comma-separated generation budgets (default 1,2,4,8)",
    )
    p.add_argument(
        "--budget-tokens",
        type=_int_list,
        metavar="T,T,…",
        help="match the strategies by generated tokens instead: comma-separated token budgets, "
        "each cell run at its own (e.g. 256,512,1024)",
    )
    p.add_argument("--prm", default="judge", help="judge | arithmetic | reference | PATH to a PRM GGUF")
    p.add_argument("--seed", type=int, default=0)
    _seeds_arg(p)
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
    p.add_argument("--db", help="session database (default: sessions.db in the user data folder)")
    p.add_argument("--report-only", action="store_true", help="analyse what the database holds; run nothing")
    p.add_argument("--list", action="store_true", help="list the sweeps in the database")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_model_args(p, servers=True)

    p = sub.add_parser(
        "serve",
        help="start a local llama-server (built from the pinned llama.cpp source) and print its URL",
        description="Starts llama-server on a GGUF (default: the embedded model), waits until it is healthy "
        "and prints its URL for --server. Ctrl+C stops it.",
    )
    p.add_argument("model_file", nargs="?", metavar="MODEL", help="GGUF file (default: the embedded model)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)"
    )
    p.add_argument("--parallel", type=int, default=8, help="slots: requests served at once (default 8)")
    p.add_argument(
        "--ctx", type=int, default=None, help="context tokens shared by the slots (default 2,560 a slot)"
    )
    p.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload to the GPU (-1: all)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: llama-server's choice)")
    p.add_argument("--api-key", help="require this key from clients (default: $PONDER_API_KEY, else none)")

    p = sub.add_parser("sessions", help="saved sessions: list, show, replay, export, import, delete, rerun")
    ss = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    q = ss.add_parser("list", help="saved sessions, newest first")
    q.add_argument("--search", help="only sessions whose problem or title contains this")
    q.add_argument("--model", help="only sessions run with a model whose name contains this")
    q.add_argument("--correct", choices=["yes", "no"], help="only sessions with a correct (or wrong) run")
    q.add_argument("--since", help="only sessions from this date on (YYYY-MM-DD)")
    q.add_argument("--limit", type=int, default=50, help="at most this many (default 50; 0: all)")
    for name, hlp in (
        ("show", "one session: its problem, runs, answers"),
        ("replay", "print a session's events in the order they happened"),
        ("delete", "delete a session and everything in it"),
        ("rerun", "run a session again (same model, parameters, seed) and check it reproduces"),
    ):
        q = ss.add_parser(name, help=hlp)
        q.add_argument("id", help="session id (a unique prefix is enough)")
        if name == "replay":
            q.add_argument("--delay", type=float, default=0.0, help="seconds between events")
        if name == "delete":
            q.add_argument("--yes", action="store_true", help="do not ask for confirmation")
        if name == "rerun":
            q.add_argument("--threads", type=int, help="override the recorded thread count")
            _add_server_args(q)
            q.add_argument(
                "--model", help="with --server: the server model to use instead of the recorded one"
            )
    q = ss.add_parser("export", help="write a session as JSON, JSONL or a self-contained HTML page")
    q.add_argument("id", help="session id (a unique prefix is enough)")
    q.add_argument("--format", choices=["json", "jsonl", "html"], default="json")
    q.add_argument("--out", help="file to write (default: standard output)")
    q = ss.add_parser("import", help="add a session exported as JSON or JSONL")
    q.add_argument("file")
    for q in ss.choices.values():
        q.add_argument("--db", help="session database (default: sessions.db in the user data folder)")
        q.add_argument("--json", action="store_true", help="print JSON")

    p = sub.add_parser("bench", help="batched backend vs a naive Llama.create_completion loop")
    _add_model_args(p, servers=True, bench=True)
    # These two run in the app's half (they need Qt); listed here so that --help shows them.
    p.add_argument(
        "--pan", action="store_true", help="instead: frames per second panning a large tree in the app's view"
    )
    p.add_argument(
        "--gui",
        action="store_true",
        help="instead: the window's stalls during a real compare, offscreen, against the same compare "
        "from the CLI (see ponder bench --gui --help)",
    )
    p.add_argument("--n", type=_int_list, default=[1, 4, 8, 16], help="sample counts (default 1,4,8,16)")
    p.add_argument("--tokens", type=int, default=128, help="new tokens per sample (default 128)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is shown")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--compare",
        action="store_true",
        help="instead: the default strategies at budget 8, side by side vs one after another",
    )
    p.add_argument(
        "--max-tokens",
        type=int,
        default=None,
        help="with --compare, --revisions: tokens per solution (default 256); with --sweep: 128",
    )
    p.add_argument("--prm", default="judge", choices=["judge", "arithmetic"], help="with --compare: the PRM")
    p.add_argument(
        "--problems", type=_int_list_zero, default=[0], help="with --compare: GSM8K indices (0,1,...)"
    )
    p.add_argument(
        "--store",
        action="store_true",
        help="instead: list and open sessions in a store of --sessions x 3 runs x 200 nodes",
    )
    p.add_argument("--sessions", type=int, default=1000, help="with --store: sessions (default 1000)")
    p.add_argument("--nodes", type=int, default=200, help="with --store: nodes per run (default 200)")
    p.add_argument("--db", help="with --store: build the store here (default: a temporary file)")
    p.add_argument("--no-compare", action="store_true", help="with --server: only client_ratio")
    p.add_argument(
        "--processes",
        type=int,
        help="instead: this many Ponder processes decoding at once vs one alone (fair_ratio)",
    )
    p.add_argument("--seconds", type=float, default=15.0, help="with --processes: each window (default 15)")
    p.add_argument(
        "--unshared", action="store_true", help="with --processes: also the copies with CPU sharing off"
    )
    p.add_argument(
        "--revisions",
        action="store_true",
        help="instead: revisions' generated tokens/s against best-of-N's at --budget on --problems, each "
        "strategy alone, with and without continuing each attempt's cells (ratio)",
    )
    p.add_argument("--budget", type=int, default=8, help="with --revisions: generations (default 8)")
    p.add_argument(
        "--sweep",
        action="store_true",
        help="instead: a sweep's tokens/s (--sweep-problems arithmetic-ladder problems x best-of-N, beam "
        "search, revisions x budgets 1,2,4,8, arithmetic PRM, 128 tokens) against the backend's own at "
        "16 sequences (ratio)",
    )
    p.add_argument(
        "--sweep-problems",
        dest="problems_n",
        type=int,
        default=20,
        help="with --sweep: problems (default 20)",
    )
    p.add_argument("--batch", type=int, default=None, help="with --sweep: the sweep's --batch")
    return ap


def _model_path(args: argparse.Namespace) -> str:
    from engine.models import default_model_path

    return str(args.model) if args.model else str(default_model_path())


def _shown_params(name: str, params: dict[str, Any]) -> str:
    from engine.search import registry

    keys = registry.get(name).shown
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params)


def _seeds_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seeds",
        choices=["independent", "common"],
        default="independent",
        help="independent: each strategy draws its own random numbers (default); common: every "
        "strategy's k-th sample draws the same ones, for paired comparisons",
    )


def _strategies_arg(p: argparse.ArgumentParser) -> None:
    from engine.search import registry

    p.add_argument(
        "--strategies",
        default=",".join(registry.default_names()),
        help=f"comma-separated: {', '.join(registry.names())} (default: %(default)s)",
    )


def _strategy_param_args(p: argparse.ArgumentParser) -> None:
    """``--STRATEGY-PARAM`` for every parameter a registered strategy declares."""
    from engine.search import registry

    g = p.add_argument_group(
        "strategy parameters", "each strategy's own settings (the budget sets N, chains x length ...)"
    )
    for strat in registry.strategies():
        for param in strat.params:
            flag = f"--{strat.name}-{param.name}".replace("_", "-")
            rng = f"; {param.lo:g} to {param.hi:g}" if param.lo is not None and param.hi is not None else ""
            choices = f"; {', '.join(param.choices)}" if param.choices else ""
            special = f"; {param.lo:g} = {param.special}" if param.special and param.lo is not None else ""
            g.add_argument(
                flag,
                dest=f"sp__{strat.name}__{param.name}",
                metavar=param.kind.upper() if param.kind != "choice" else "NAME",
                help=f"{strat.label}: {param.help} (default {param.default}{rng}{choices}{special})",
            )


def _overrides(args: argparse.Namespace, strategies: list[str]) -> dict[str, dict[str, Any]]:
    """The strategy parameters given on the command line, checked and typed by the registry."""
    from engine.search import registry

    out: dict[str, dict[str, Any]] = {}
    for key, value in vars(args).items():
        if not key.startswith("sp__") or value is None:
            continue
        _, name, param = key.split("__", 2)
        if name not in strategies:
            raise InvalidRequestError(
                f"--{name}-{param}".replace("_", "-") + f" sets a parameter of {registry.label(name)}, "
                "which --strategies does not include."
            )
        out.setdefault(name, {})[param] = value
    return {name: registry.get(name).user_params(given) for name, given in out.items()}


def _config(args: argparse.Namespace, **overrides: Any) -> Any:
    from engine.backends.llama_cpp import BackendConfig

    kw: dict[str, Any] = dict(
        n_gpu_layers=args.n_gpu_layers, n_threads=args.threads, flash_attn=args.flash_attn
    )
    if args.ctx:
        kw["n_ctx"] = args.ctx
    kw.update(overrides)
    return BackendConfig(**kw)


def _in_process_parallel(args: argparse.Namespace) -> int:
    from engine.backends.llama_cpp.config import max_parallel_sequences

    n = getattr(args, "parallel", None) or IN_PROCESS_PARALLEL
    if not 1 <= n <= max_parallel_sequences():
        raise InvalidRequestError(
            f"--parallel must be between 1 and {max_parallel_sequences()} in process (this llama.cpp build)"
        )
    return n


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None, ensure_ascii=False))


# --- commands --------------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    from engine.gguf_info import human_params, human_size
    from engine.models import add_model, discover, remove_model_dir, remove_model_file

    if args.add:
        kind, p = add_model(args.add)
        if not args.json:
            print(f"Added {p}; it will be scanned from now on." if kind == "folder" else f"Added {p}.")
    if args.remove:
        remove_model_dir(args.remove)
        remove_model_file(args.remove)
        if not args.json:
            print(f"Removed {args.remove} from the list (the files stay where they are).")
    entries = discover(extra_dirs=args.dir, include_default_locations=not args.only)
    if args.json:
        _print_json({"models": [e.as_dict() for e in entries]})
        return 0
    if not entries:
        print("No GGUF models found. Put .gguf files in models/ or add a folder with --add DIR.")
        return 0
    for e in entries:
        print(f"{e.path}  [{e.source}]")
        if e.info is not None:
            i = e.info
            ctx = f"{i.context_length:,}" if i.context_length else "?"
            print(
                f"    {i.architecture}, {human_params(i.n_params)} parameters, {i.quantization}, "
                f"{human_size(i.file_size)}, context {ctx}, "
                f"chat template: {'yes' if i.has_chat_template else 'no'}"
                + (f", roles: {', '.join(e.roles)}" if e.roles else "")
            )
        else:
            print(f"    ERROR: {e.error}")
    broken = sum(not e.ok for e in entries)
    print(f"\n{len(entries)} model file(s), {broken} unreadable.")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from engine.gguf_info import human_size
    from engine.llama_lib import build_info

    if _servers(args):
        executor = _server_executor(args)
        try:
            infos = [dict(c.info.__dict__, chat_template=None, alive=c.alive) for c in executor.pool.clients]
        finally:
            executor.close()
        if args.json:
            _print_json({"servers": infos})
            return 0
        for i in infos:
            params = f", {i['n_params'] / 1e9:.2f} B parameters" if i.get("n_params") else ""
            print(
                f"{i['url']}  [{i['dialect']}] model {i['model']}{params}; {i['slots']} slots, "
                f"context {i['n_ctx'] or '?'}; build {i['build'] or '?'}"
            )
        return 0
    bi = build_info()
    out: dict[str, Any] = {"build": bi.as_dict()}
    if not args.no_model:
        from engine.backends.llama_cpp import Backend

        with Backend(_model_path(args), _config(args)) as b:
            out["model"] = b.info.as_dict()
            out["context"] = {
                "n_ctx": b.n_ctx,
                "n_seq_max": b.config.n_seq_max,
                "n_batch": b.config.n_batch,
                "threads": b.config.threads,
            }
    if args.json:
        _print_json(out)
        return 0
    print(f"llama-cpp-python {bi.llama_cpp_python}; GPU offload supported: {bi.gpu_offload}")
    print(f"backend: {bi.accelerator}; up to {bi.max_parallel_sequences} parallel sequences")
    for d in bi.devices:
        mem = f", {human_size(d.memory_free)} free of {human_size(d.memory_total)}" if d.memory_total else ""
        print(f"  device {d.name} ({d.type}): {d.description}{mem}")
    print(f"  {bi.system_info}")
    if "model" in out:
        m = out["model"]
        print(
            f"model: {m['name']} ({m['architecture']}, {m['quantization']}, {human_size(m['file_size'])})\n"
            f"  {m['path']}\n  layers offloaded to GPU: {m['n_layers_offloaded']} of {m['n_layer'] + 1} "
            f"(n_gpu_layers={m['n_gpu_layers_requested']}); chat template: "
            f"{'yes' if m['has_chat_template'] else 'no (plain prompt)'}"
        )
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from engine.sampling import SamplingParams
    from engine.worker import CancelToken

    if not args.prompt.strip():
        raise InvalidRequestError("The prompt is empty.")
    if args.n < 1:
        raise InvalidRequestError("-n must be >= 1")
    params = SamplingParams(
        temperature=args.temperature,
        top_p=args.top_p,
        top_k=args.top_k,
        min_p=args.min_p,
        seed=args.seed,
        max_tokens=args.max_tokens,
        stop=tuple(args.stop),
    )
    cancel = CancelToken()
    counts = {"tokens": 0}
    show = sys.stderr.isatty() and not args.json

    def work(backend: Any) -> list[dict[str, Any]]:
        prompt = (
            backend.tokenize(args.prompt)
            if args.raw
            else backend.chat_tokens([{"role": "user", "content": args.prompt}])
        )

        def on_step(events: list[Any]) -> None:
            counts["tokens"] += len(events)
            if show:
                sys.stderr.write(f"\r{counts['tokens']} tokens generated")
                sys.stderr.flush()

        out = backend.sample_n(prompt, args.n, params, cancel=cancel, on_step=on_step)
        return [
            {
                "seed": b.params.seed,
                "text": b.text,
                "tokens": b.n_generated,
                "finish_reason": b.finish_reason,
                "logprob": round(sum(b.logprobs), 4),
            }
            for b in out
        ]

    config = _config(args, n_ctx=args.ctx or 4096, n_seq_max=max(8, args.n + 1))
    samples = _run_in_worker(args, config, work, cancel, "Cancelled; partial samples follow.")
    if show:
        sys.stderr.write("\n")
    if args.json:
        _print_json({"samples": samples})
        return 0
    for i, s in enumerate(samples):
        print(f"--- sample {i} (seed {s['seed']}, {s['tokens']} tokens, {s['finish_reason']}) ---")
        print(s["text"])
    return 0


def _servers(args: argparse.Namespace) -> list[str]:
    """--server URLs, else $PONDER_SERVER (comma- or space-separated)."""
    import re

    urls = [u for u in (getattr(args, "server", None) or []) if u.strip()]
    if not urls and os.environ.get("PONDER_SERVER", "").strip():
        urls = [u for u in re.split(r"[,\s]+", os.environ["PONDER_SERVER"]) if u]
    return urls


def _api_key(args: argparse.Namespace) -> str | None:
    return getattr(args, "api_key", None) or os.environ.get("PONDER_API_KEY") or None


def _server_executor(args: argparse.Namespace, model: str | None = None) -> Any:
    """Connect to the servers (and PRM servers) and check them before anything runs: one clear
    error for an unreachable server, a refused key or a model it does not serve."""
    from engine.backends.server.executor import ServerExecutor
    from engine.backends.server.pool import ServerPool

    parallel = getattr(args, "parallel", None)
    if parallel is not None and parallel < 1:
        raise InvalidRequestError("--parallel must be >= 1")
    timeout = getattr(args, "timeout", 600.0) or 600.0
    if timeout <= 0:
        raise InvalidRequestError("--timeout must be > 0 seconds")
    key = _api_key(args)
    pool = ServerPool.connect(
        _servers(args),
        key,
        model=model if model is not None else args.model,
        parallel=parallel,
        timeout=timeout,
    )
    prm_pool = None
    if getattr(args, "prm_server", None):
        try:
            prm_pool = ServerPool.connect(
                args.prm_server, key, parallel=parallel, timeout=timeout, loop=pool.loop
            )
        except BaseException:
            pool.close()
            raise
    executor = ServerExecutor(pool, prm_pool)
    executor.params_override = getattr(args, "model_params", None)
    return executor


def _run_in_worker(args: argparse.Namespace, config: Any, work: Any, cancel: Any, cancelled_note: str) -> Any:
    """Load the model in its own thread (or connect to the servers), run ``work(backend)`` there;
    Ctrl+C cancels between tokens (or closes the requests in flight) and still returns what was
    done."""
    from engine.worker import BackendWorker

    if _servers(args):
        from concurrent.futures import ThreadPoolExecutor

        executor = _server_executor(args)
        runner = ThreadPoolExecutor(1, thread_name_prefix="ponder-run")
        try:
            return _until_done(runner.submit(work, executor), cancel, cancelled_note)
        finally:
            runner.shutdown(wait=True)
            executor.close()
    worker = BackendWorker(_model_path(args), config)
    try:
        worker.wait_loaded()
        return _until_done(worker.submit(work), cancel, cancelled_note)
    finally:
        worker.close()


def _until_done(fut: Any, cancel: Any, cancelled_note: str) -> Any:
    """The work's result; Ctrl+C cancels it and still returns what it had done."""
    try:
        return _wait(fut)
    except KeyboardInterrupt:
        cancel.cancel()
        print(f"\n{cancelled_note}", file=sys.stderr)
        return fut.result()


def _wait(fut: Any) -> Any:
    # Waiting in short slices keeps the main thread responsive to Ctrl+C.
    while True:
        try:
            return fut.result(timeout=0.2)
        except TimeoutError:
            continue


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.bench import format_bench, format_compare_bench, run_bench, run_compare_bench

    if args.pan or args.gui:
        return _needs_app("bench --pan" if args.pan else "bench --gui")

    if args.server is not None:
        from engine.backends.server.bench import format_server_bench, run_server_bench

        urls = [u for u in args.server if u]
        if len(urls) > 1:
            raise InvalidRequestError("The server bench measures one server: give one --server URL.")
        if args.tokens < 1 or args.repeat < 1:
            raise InvalidRequestError("--tokens and --repeat must be >= 1")
        if not urls and args.model:
            from engine.gguf_info import read_gguf

            read_gguf(args.model)
        say = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
        result = run_server_bench(
            urls[0] if urls else None,
            model_path=_model_path(args),
            n=max(args.n) if args.n != [1, 4, 8, 16] else 8,
            max_tokens=args.tokens,
            repeat=args.repeat,
            api_key=_api_key(args),
            parallel=args.parallel,
            compare=not args.no_compare,
            max_tokens_compare=args.max_tokens or 256,
            problems=args.problems,
            prm=args.prm,
            progress=say,
            threads=args.threads,
        )
        _print_json(result) if args.json else print(format_server_bench(result))
        return 0

    if args.processes is not None:
        from engine.bench_processes import format_processes_bench, run_processes_bench

        if args.processes < 2 or args.seconds <= 0 or args.tokens < 1:
            raise InvalidRequestError("--processes must be >= 2, --seconds > 0 and --tokens >= 1")
        from engine.gguf_info import read_gguf

        model = _model_path(args)
        read_gguf(model)  # a broken file is one message here, not one per copy
        say = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
        result = run_processes_bench(
            model,
            processes=args.processes,
            n=max(args.n) if args.n != [1, 4, 8, 16] else 8,
            max_tokens=args.tokens if args.tokens != 128 else 64,
            seconds=args.seconds,
            threads=args.threads,
            unshared=args.unshared,
            progress=say,
        )
        _print_json(result) if args.json else print(format_processes_bench(result))
        return 0
    if args.store:
        from engine.bench import format_store_bench, run_store_bench

        if args.sessions < 1 or args.nodes < 1:
            raise InvalidRequestError("--sessions and --nodes must be >= 1")
        if args.db and os.path.exists(args.db):
            raise InvalidRequestError(f"{args.db} exists: the store bench builds a new database.")
        say = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
        result = run_store_bench(args.db, sessions=args.sessions, nodes=args.nodes, progress=say)
        _print_json(result) if args.json else print(format_store_bench(result))
        return 0
    if args.sweep:
        from engine.bench import format_sweep_bench, run_sweep_bench

        if (args.max_tokens or 128) < 16 or args.problems_n < 1:
            raise InvalidRequestError("--max-tokens must be >= 16 and --sweep-problems >= 1")
        say = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
        config = _config(args, n_ctx=args.ctx or 16384, n_seq_max=_in_process_parallel(args))
        result = run_sweep_bench(
            _model_path(args),
            problems=args.problems_n,
            max_tokens=args.max_tokens or 128,
            batch=args.batch,
            config=config,
            progress=say,
        )
        _print_json(result) if args.json else print(format_sweep_bench(result))
        return 0
    args.max_tokens = args.max_tokens or 256
    if args.revisions:
        from engine.bench import format_revisions_bench, run_revisions_bench

        if args.max_tokens < 1 or args.budget < 1:
            raise InvalidRequestError("--max-tokens and --budget must be >= 1")
        say = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
        config = _config(args, n_ctx=args.ctx or 16384, n_seq_max=_in_process_parallel(args))
        result = run_revisions_bench(
            _model_path(args),
            budget=args.budget,
            max_tokens=args.max_tokens,
            problems=args.problems,
            config=config,
            progress=say,
        )
        _print_json(result) if args.json else print(format_revisions_bench(result))
        return 0
    if args.compare:
        if args.max_tokens < 1:
            raise InvalidRequestError("--max-tokens must be >= 1")
        say = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
        config = _config(args, n_ctx=args.ctx or 16384, n_seq_max=_in_process_parallel(args))
        result = run_compare_bench(
            _model_path(args),
            max_tokens=args.max_tokens,
            config=config,
            progress=say,
            prm=args.prm,
            problems=args.problems,
        )
        _print_json(result) if args.json else print(format_compare_bench(result))
        return 0

    if args.tokens < 1:
        raise InvalidRequestError("--tokens must be >= 1")
    if args.repeat < 1:
        raise InvalidRequestError("--repeat must be >= 1")
    need = 512 + max(args.n) * args.tokens + 64
    config = _config(args, n_ctx=max(args.ctx or 0, need, 1024), n_seq_max=max(8, max(args.n) + 1))
    say = None if args.json else (lambda s: print(s, file=sys.stderr, flush=True))
    result = run_bench(
        _model_path(args), ns=args.n, max_tokens=args.tokens, config=config, progress=say, repeat=args.repeat
    )
    if args.json:
        _print_json(result)
    else:
        print(format_bench(result))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from engine.compare import human_flops, summarize
    from engine.events import RunFinished, TextDelta
    from engine.worker import CancelToken

    reference = args.reference
    if args.problem_set:
        from engine.problems import get_problem

        prob = get_problem(args.problem_set, args.index)
        problem = prob.question
        reference = reference or prob.reference
    else:
        problem = args.problem or ""
    if not problem.strip():
        raise InvalidRequestError("The problem is empty: give the question, or --problem-set and --index.")
    strategies = [x.strip() for x in args.strategies.split(",") if x.strip()]
    from engine.compare import strategy_params

    overrides = _overrides(args, strategies)
    if args.budget_tokens is not None and args.budget_tokens < 1:
        raise InvalidRequestError("--budget-tokens must be at least 1 token.")
    if args.solution_tokens is not None and (args.solution_tokens < 1 or not args.budget_tokens):
        raise InvalidRequestError("--solution-tokens goes with --budget-tokens and is at least 1.")
    params = strategy_params(  # unknown names and budgets they cannot spend fail here, before the model
        strategies, args.budget, overrides, args.budget_tokens, args.max_tokens, args.solution_tokens
    )
    _check_prm(args.prm, args)
    if args.prm == "reference" and not reference:
        raise InvalidRequestError("--prm reference needs a reference answer (--reference or --problem-set).")
    cancel = CancelToken()
    show = sys.stderr.isatty() and not args.json
    counts: dict[str, int] = {}

    def on_event(run: Any, ev: Any) -> None:
        if isinstance(ev, TextDelta):
            counts[run.spec.name] = counts.get(run.spec.name, 0) + 1
            if show:
                line = " | ".join(f"{k}: {v}" for k, v in counts.items())
                sys.stderr.write(f"\r{line} tokens")
                sys.stderr.flush()
        elif isinstance(ev, RunFinished) and not args.json:
            sys.stderr.write(
                f"\n{run.spec.name} {ev.status} in {ev.wall_s:.1f} s\n"
                if show
                else f"{run.spec.name} {ev.status} in {ev.wall_s:.1f} s\n"
            )

    from engine.sessions import recorded_compare
    from engine.store import Store

    store = Store.open(args.db)  # a bad database is reported before the model loads
    saved: dict[str, Any] = {}

    def work(backend: Any) -> list[Any]:
        sid, runs, err = recorded_compare(
            backend,
            store,
            problem,
            strategies,
            budget=args.budget,
            prm=args.prm,
            reference=reference,
            seed=args.seed,
            seeds=args.seeds,
            max_tokens=args.max_tokens,
            concurrent=not args.sequential,
            on_event=on_event,
            cancel=cancel,
            overrides=overrides,
            stream_text=True,
            title=args.title,
            tags=args.tag,
            budget_tokens=args.budget_tokens,
            solution_tokens=args.solution_tokens,
        )
        saved.update(session_id=sid, error=err)
        return [summarize(r) for r in runs]

    config = _config(args, n_ctx=args.ctx or 16384, n_seq_max=_in_process_parallel(args))
    try:
        summaries = _run_in_worker(args, config, work, cancel, "Cancelled; the runs so far follow.")
    finally:
        store.close()
    session_id = saved.get("session_id")
    if saved.get("error"):
        print(f"ponder: warning: {saved['error']}; the session is saved up to there.", file=sys.stderr)
    code = _runs_exit_code(summaries, cancel.cancelled, bool(saved.get("error")))
    budget_line = (
        f"at most {args.budget_tokens} generated tokens per strategy (matched by tokens: "
        + "; ".join(f"{n} {_shown_params(n, p)}" for n, p in params.items())
        + ")"
        if args.budget_tokens
        else f"{args.budget} generations per strategy (matched by generations)"
    )
    if args.json:
        _print_json(
            {
                "session_id": session_id,
                "db": str(store.path),
                "problem": problem,
                "reference": reference,
                "budget": budget_line,
                "budget_kind": "tokens" if args.budget_tokens else "generations",
                "runs": [s.as_dict() for s in summaries],
            }
        )
        return code
    print(f"\nProblem: {problem}")
    print(f"Budget: {budget_line}")
    if reference:
        print(f"Reference: {reference}")
    width = max(12, *(len(s.strategy) for s in summaries))
    head = (
        f"{'strategy':<{width}} {'answer':<14} {'correct':<8} {'gen tok':>8} {'prompt':>8} {'PRM tok':>8} "
        f"{'FLOPs':>12} {'seconds':>8}"
    )
    print(f"\n{head}  tally")
    for s in summaries:
        mark = {True: "yes", False: "no", None: "-"}[s.correct]
        tally = ", ".join(f"{a}: {v:.2f}" for a, v in sorted(s.tally.items(), key=lambda kv: -kv[1])[:3])
        ans = (s.answer or "-")[:14]
        cols = (
            f"{s.strategy:<{width}} {ans:<14} {mark:<8} {s.generated_tokens:>8} {s.prompt_tokens:>8} "
            f"{s.prm_tokens:>8} {human_flops(s.policy_flops + s.prm_flops):>12}"
        )
        print(f"{cols} {s.seconds:>8.1f}  {tally}")
        if s.status != "done":
            print(f"    {s.status}: {s.message}")
    print(f"\nSaved as session {session_id} in {store.path}")
    if code == EXIT_RUNS_FAILED:
        failed = [s.strategy for s in summaries if s.status == "failed"]
        print(
            f"ponder: {len(failed)} of {len(summaries)} runs failed ({', '.join(failed)}).", file=sys.stderr
        )
    return code


def _runs_exit_code(summaries: Sequence[Any], cancelled: bool, unsaved: bool) -> int:
    if cancelled:
        return EXIT_INTERRUPTED
    if unsaved or any(s.status == "failed" for s in summaries):
        return EXIT_RUNS_FAILED
    return EXIT_OK


def cmd_sweep(args: argparse.Namespace) -> int:
    from engine.store import Store
    from engine.sweep import SweepSpec, analyse, find_sweep

    if args.list:
        with Store.open(args.db, readonly=True) as store:
            sweeps = store.list_sweeps()
        if args.json:
            _print_json([w.as_dict() for w in sweeps])
            return 0
        for w in sweeps:
            print(f"{w.id}  {w.created[:16].replace('T', ' ')}  {w.n_cells:>5} cells  {w.name}")
        if not sweeps:
            print("No sweeps yet: ponder sweep --set arith --limit 10 --prm arithmetic")
        return 0
    if not args.problem_set:
        raise InvalidRequestError("Name the problem set: --set gsm8k | math500 | arith | FILE.jsonl")
    if args.batch is not None and args.batch < 1:
        raise InvalidRequestError("--batch is at least 1 (1: one cell at a time).")
    spec = SweepSpec(
        args.problem_set,
        limit=args.limit,
        offset=args.offset,
        strategies=tuple(x.strip() for x in args.strategies.split(",") if x.strip()),
        budgets=tuple(args.budget_tokens or args.budgets),
        prm=args.prm,
        seed=args.seed,
        max_tokens=args.max_tokens,
        seeds=args.seeds,
        budget_kind="tokens" if args.budget_tokens else "generations",
    )
    spec.check()  # a bad set, file, offset or budget is reported before the model loads
    _check_prm(args.prm, args)
    if args.report_only:
        model: Any = _model_path(args)
        if _servers(args):
            executor = _server_executor(args)
            try:
                model = executor.model_record()
            finally:
                executor.close()
        with Store.open(args.db, readonly=True) as store:
            sweep_id = find_sweep(store, spec, model)
            summary = analyse(store, sweep_id, spec, difficulty=args.difficulty)
        return _sweep_outputs(args, summary)
    if args.models:
        return _sweep_models(args, spec)
    result, summary, _ = _sweep_once(args, spec)
    code = _sweep_outputs(args, summary)
    if code != EXIT_OK:
        return code
    if result.cancelled:
        return EXIT_INTERRUPTED
    return EXIT_RUNS_FAILED if result.failed else EXIT_OK


def _sweep_once(args: argparse.Namespace, spec: Any) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Run (or resume) one sweep on ``args``' model and analyse it: (result, summary, model record)."""
    from engine.backends.base import as_executor
    from engine.store import Store
    from engine.sweep import analyse, format_progress, run_sweep
    from engine.worker import CancelToken

    store = Store.open(args.db)
    cancel = CancelToken()
    tty = sys.stderr.isatty()
    state: dict[str, Any] = {"done": -1}
    record: dict[str, Any] = {}

    def on_progress(p: Any) -> None:
        if tty:
            sys.stderr.write("\r\x1b[K" + format_progress(p)[: shutil.get_terminal_size().columns - 1])
            sys.stderr.flush()
        elif p.done != state["done"] or p.last_error:  # logs: one line per finished cell
            sys.stderr.write(format_progress(p) + "\n")
        if p.last_error:
            sys.stderr.write(("\n" if tty else "") + f"ponder: {p.last_error}\n")
        state["done"] = p.done

    def work(backend: Any) -> Any:
        record.update(as_executor(backend).record())
        return run_sweep(backend, store, spec, on_progress=on_progress, cancel=cancel, batch=args.batch)

    _terminate_as_interrupt()  # `kill PID` stops a (background) sweep as Ctrl+C does: cleanly

    config = _config(args, n_ctx=args.ctx or 16384, n_seq_max=_in_process_parallel(args))
    try:
        result = _run_in_worker(args, config, work, cancel, "Stopping after the current cell ...")
        if tty:
            sys.stderr.write("\n")
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


def _pretrain_tokens(args: argparse.Namespace, models: Sequence[str]) -> tuple[float | None, float | None]:
    """Each model's pretraining tokens: --pretrain-tokens, else models/catalog.toml's entry."""
    if args.pretrain_tokens:
        vals = [_count(x) for x in args.pretrain_tokens.split(",")]
        if len(vals) != 2:
            raise InvalidRequestError("--pretrain-tokens takes SMALL,LARGE, e.g. 2T,4T.")
        return float(vals[0]), float(vals[1])
    from engine.models import load_catalog

    out: list[float | None] = []
    for m in models:
        entry = next((c for c in load_catalog() if c.matches(Path(m))), None)
        tok = entry.settings.get("pretrain_tokens") if entry is not None else None
        out.append(float(tok) if tok else None)
    return out[0], out[1]


def _sweep_models(args: argparse.Namespace, spec: Any) -> int:
    """The sweep on the small and the large model, the large one also greedy at budget 1, then the
    exchange report (engine.exchange) next to each model's own outputs."""
    import copy
    import dataclasses
    import json

    from engine.exchange import exchange_markdown, exchange_report
    from engine.plots import write_exchange_charts
    from engine.store import write_export
    from engine.sweep import json_ready, write_outputs

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if len(models) != 2:
        raise InvalidRequestError(
            "--models takes two models: SMALL,LARGE (GGUF files, or server model names)."
        )
    if not _servers(args):
        from engine.gguf_info import read_gguf

        for m in models:
            read_gguf(m)  # a missing or broken file is one clear line, before anything runs
    pretrain = _pretrain_tokens(args, models)
    greedy = dataclasses.replace(spec, strategies=("best_of_n",), budgets=(1,), temperature=0.0)
    out = Path(args.out or "exchange").expanduser()
    done: list[tuple[dict[str, Any], dict[str, Any]]] = []
    failed = False
    for model, sp, sub in (
        (models[0], spec, "small"),
        (models[1], spec, "large"),
        (models[1], greedy, "greedy"),
    ):
        a = copy.copy(args)
        a.model = model
        print(f"== {sub}: {Path(model).name} ==", file=sys.stderr)
        result, summary, record = _sweep_once(a, sp)
        write_outputs(summary, out / sub)
        if result.cancelled:
            return EXIT_INTERRUPTED
        failed = failed or bool(result.failed)
        done.append((summary, record))

    def label(model: str, record: dict[str, Any]) -> str:
        return Path(model).stem if not _servers(args) else str(record.get("name") or model)

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
        write_export(out / "exchange.json", json.dumps(json_ready(report), indent=1)),
        write_export(out / "exchange.md", md),
        *write_exchange_charts(report, out),
    ]
    if args.json:
        _print_json(json_ready(report))
    else:
        print(md)
        print("Wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return EXIT_RUNS_FAILED if failed else EXIT_OK


def _check_prm(prm: str, args: argparse.Namespace) -> None:
    """--prm before the model loads or a server is asked anything."""
    from engine.prm import check_prm_spec

    check_prm_spec(
        prm, servers=bool(_servers(args)), prm_server=bool(getattr(args, "prm_server", None)), must_exist=True
    )


def cmd_serve(args: argparse.Namespace) -> int:
    import time as _time

    from engine.backends.server.launch import LlamaServer
    from engine.models import default_model_path

    model = args.model_file or str(default_model_path())
    if args.parallel < 1:
        raise InvalidRequestError("--parallel must be >= 1")
    if not 0 <= args.port < 65536:
        raise InvalidRequestError("--port must be between 0 and 65535")
    from engine.gguf_info import read_gguf

    read_gguf(model)  # a missing or broken file is one clear line, before the server starts
    srv = LlamaServer(
        model,
        port=args.port,
        host=args.host,
        parallel=args.parallel,
        ctx=args.ctx,
        n_gpu_layers=args.n_gpu_layers,
        threads=args.threads,
        api_key=_api_key(args),
    )
    _terminate_as_interrupt()
    print(f"Starting llama-server on {Path(model).name} ...", file=sys.stderr, flush=True)
    srv.start()
    try:
        print(srv.url, flush=True)
        print(
            f"Serving {args.parallel} slots; use it with --server {srv.url}. Ctrl+C stops it. "
            f"(log: {srv.log_path})",
            file=sys.stderr,
            flush=True,
        )
        while srv.proc is not None and srv.proc.poll() is None:
            _time.sleep(0.5)
        print(
            f"ponder: error: llama-server stopped (status {srv.proc.returncode}):\n{srv.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("Stopping llama-server ...", file=sys.stderr)
        return 0
    finally:
        srv.stop()


def _terminate_as_interrupt() -> None:
    import signal
    import threading

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _sweep_outputs(args: argparse.Namespace, summary: dict[str, Any]) -> int:
    from engine.sweep import json_ready, markdown_table, write_outputs

    out = args.out or f"sweep-{summary['sweep']['id']}"
    files = write_outputs(summary, out)
    if args.json:
        _print_json(json_ready(summary))
    else:
        print(markdown_table(summary))
        print("Wrote " + ", ".join(str(f) for f in files), file=sys.stderr)
    return 0


# --- sessions ----------------------------------------------------------------------------------------


def _ans(a: str | None) -> str:
    return "-" if a is None else str(a)


def _fmt_run(r: Any) -> str:
    mark = {True: "correct", False: "wrong", None: ""}[r.correct]
    return (
        f"  {r.strategy:<12} {r.status:<11} answer {_ans(r.answer):<12} {mark:<8}"
        f" {r.generated_tokens:>6} tok {r.wall_s:>7.1f} s  {r.n_nodes} nodes  run {r.id}"
    )


def cmd_sessions(args: argparse.Namespace) -> int:
    from engine.store import Store, StoreError

    act = args.action
    writes = act in ("delete", "import", "rerun")
    try:
        store = Store.open(args.db, readonly=not writes)
    except StoreError as e:
        if act == "list" and "no session database" in str(e).lower():
            print("[]" if args.json else "No sessions yet.")
            return 0
        raise
    try:
        return _SESSION_ACTIONS[act](store, args)
    finally:
        store.close()


def _sessions_list(store: Any, args: argparse.Namespace) -> int:
    correct = {"yes": True, "no": False, None: None}[args.correct]
    rows = store.list_sessions(
        search=args.search, model=args.model, correct=correct, since=args.since, limit=args.limit or None
    )
    if args.json:
        _print_json([s.as_dict(with_build=False) for s in rows])
        return 0
    if not rows:
        print(
            "No sessions match."
            if (args.search or args.model or args.correct or args.since)
            else "No sessions yet."
        )
        return 0
    for s in rows:
        answers = ", ".join(
            f"{r.strategy}={r.answer if r.answer is not None else '-'}"
            + {True: " ok", False: " x", None: ""}[r.correct]
            + ("" if r.status == "done" else f" ({r.status})")
            for r in s.runs
        )
        title = s.title.replace("\n", " ")
        print(f"{s.id}  {s.created[:16].replace('T', ' ')}  {title[:50]:<50}  {answers}")
    return 0


def _sessions_show(store: Any, args: argparse.Namespace) -> int:
    s = store.session(args.id)
    if args.json:
        _print_json(s.as_dict())
        return 0
    print(f"Session {s.id}  ({s.created})" + (f"  rerun of {s.rerun_of}" if s.rerun_of else ""))
    print(f"Problem: {s.problem}")
    if s.reference:
        print(f"Reference: {s.reference}")
    if s.tags:
        print(f"Tags: {', '.join(s.tags)}")
    st = s.settings
    if st:
        print(
            f"Settings: budget {st.get('budget')}, PRM {st.get('prm')}, seed {st.get('seed')}, "
            f"max tokens {st.get('max_tokens')}, "
            + ("side by side" if st.get("concurrent") else "one after another")
        )
    if s.runs:
        print(f"Model: {s.runs[0].model_name} ({s.runs[0].model_path})")
    print("Runs:")
    for r in s.runs:
        print(_fmt_run(r))
        if r.message:
            print(f"      {r.message}")
    return 0


def _sessions_replay(store: Any, args: argparse.Namespace) -> int:
    import time as _time

    from engine.events import (
        NodeAdded,
        NodeFinished,
        NodePruned,
        NodeScored,
        RunFinished,
        RunStarted,
        Selected,
    )

    s = store.session(args.id)
    names = {r.id: r.strategy for r in s.runs}
    for rid, ev in store.replay(s.id):
        if args.json:
            _print_json(ev.to_dict())
        else:
            who = f"{names.get(rid, rid):<12}"
            if isinstance(ev, RunStarted):
                line = f"started {ev.strategy} seed {ev.seed}"
            elif isinstance(ev, NodeAdded):
                text = ev.text.strip().replace("\n", " ")
                line = f"+ node {ev.node_id} ({ev.role}, parent {ev.parent_id}) {text[:70]}"
            elif isinstance(ev, NodeScored):
                line = f"  node {ev.node_id} scored {ev.score:.2f}"
            elif isinstance(ev, NodePruned):
                line = f"  node {ev.node_id} pruned (round {ev.iteration})"
            elif isinstance(ev, NodeFinished):
                line = f"  node {ev.node_id} finished ({ev.finish_reason}) answer {ev.answer}"
            elif isinstance(ev, Selected):
                line = f"selected {ev.answer} ({ev.method})"
            elif isinstance(ev, RunFinished):
                line = f"finished: {ev.status} {ev.generated_tokens} tokens {ev.wall_s:.1f} s"
            else:
                line = ev.kind
            print(f"{who} {line}")
        sys.stdout.flush()
        if args.delay > 0:
            _time.sleep(args.delay)
    return 0


def _sessions_export(store: Any, args: argparse.Namespace) -> int:
    from engine.store import export_text, write_export

    text = export_text(store, args.id, args.format)  # a missing session is reported before any file
    if not args.out:
        print(text)
        return 0
    out = write_export(args.out, text)
    print(f"Wrote {out}", file=sys.stderr)
    return 0


def _sessions_import(store: Any, args: argparse.Namespace) -> int:
    from engine.store import import_session

    sid = import_session(store, Path(args.file).expanduser())
    _print_json({"session_id": sid}) if args.json else print(f"Imported session {sid}")
    return 0


def _sessions_delete(store: Any, args: argparse.Namespace) -> int:
    s = store.session(args.id)
    if not args.yes:
        if not sys.stdin.isatty():
            raise InvalidRequestError("Deleting needs confirmation: add --yes.")
        reply = input(f"Delete session {s.id} ({s.title[:40]!r}, {len(s.runs)} runs)? [y/N] ")
        if reply.strip().lower() not in ("y", "yes"):
            print("Nothing deleted.")
            return 0
    store.delete_session(s.id)
    print(f"Deleted session {s.id}")
    return 0


def _sessions_rerun(store: Any, args: argparse.Namespace) -> int:
    from engine.sessions import backend_kind, rerun, rerun_plan
    from engine.worker import CancelToken

    cancel = CancelToken()
    session, settings = rerun_plan(store, args.id)
    executor = None
    if backend_kind(settings) == "server":
        recorded = settings.get("backend") or {}
        if not _servers(args):
            args.server = list(recorded.get("servers") or [])
        if getattr(args, "prm_server", None) is None and (recorded.get("prm") or {}).get("servers"):
            args.prm_server = list(recorded["prm"]["servers"])
        try:
            executor = _server_executor(args, model=args.model or recorded.get("model"))
        except PonderError as e:
            raise PonderError(
                f"{e} (give --server URL to rerun session {session.id} on another server)"
            ) from e
    elif _servers(args):
        raise InvalidRequestError(
            f"Session {session.id} ran in process; rerun it without --server "
            "(a rerun keeps the backend kind)."
        )
    try:
        report = rerun(store, args.id, threads=args.threads, cancel=cancel, executor=executor)
    except KeyboardInterrupt:
        cancel.cancel()
        raise
    finally:
        if executor is not None:
            executor.close()
    code = EXIT_RUNS_FAILED if any(r.status == "failed" for r in report.runs) else EXIT_OK
    if args.json:
        _print_json(report.as_dict())
        return code
    print(f"Rerun of {report.session_id} saved as {report.new_session_id}")
    for r in report.runs:
        verdict = "same texts" if r.texts_match else "texts differ"
        ans = "same answer" if r.answers_match else f"answer {r.old_answer} -> {r.new_answer}"
        print(f"  {r.strategy:<12} {verdict}, {ans} ({r.n_nodes[0]} / {r.n_nodes[1]} nodes)")
        if r.status != "done":
            print(f"      the rerun {r.status}")
        if r.first_difference:
            print(f"      first difference: {r.first_difference}")
    if report.conditions:
        print("Conditions that differ: " + "; ".join(report.conditions))
    elif not report.reproduced:
        print("Same model file, build, threads and batch layout, yet different: please report this.")
    print("Reproduced." if report.reproduced else "Not reproduced.")
    return code


_SESSION_ACTIONS = {
    "list": _sessions_list,
    "show": _sessions_show,
    "replay": _sessions_replay,
    "export": _sessions_export,
    "import": _sessions_import,
    "delete": _sessions_delete,
    "rerun": _sessions_rerun,
}


COMMANDS = {
    "models": cmd_models,
    "info": cmd_info,
    "generate": cmd_generate,
    "bench": cmd_bench,
    "compare": cmd_compare,
    "sessions": cmd_sessions,
    "sweep": cmd_sweep,
    "serve": cmd_serve,
    "screenshot": lambda _args: _needs_app("screenshot"),
}


def _needs_app(what: str) -> int:
    """``ponder screenshot`` and ``bench --pan/--gui`` are run by the app's launcher (they need Qt);
    reaching the engine's CLI with them means it was called directly."""
    print(f"ponder: error: {what} is run by the `ponder` command (gui.launch), which has Qt", file=sys.stderr)
    return EXIT_USER_ERROR


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command is None:
        build_parser().print_help()
        return 0
    try:
        return COMMANDS[args.command](args)
    except PonderError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\nponder: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: say so briefly, the traceback only on request
        if os.environ.get("PONDER_DEBUG") == "1":
            traceback.print_exc()
        print(
            f"ponder: internal error: {type(e).__name__}: {e} (set PONDER_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
