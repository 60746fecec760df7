"""What the commands share, written once (pip's ``cli/cmdoptions.py``): the model, server,
strategy and seed options, their parsing and checks, and running work in the thread that owns the
model (or the servers' connections) while the main thread stays responsive to Ctrl+C."""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.models import default_model_path
from engine.prm import registry as prm_kinds
from engine.run.cost import ModelFacts, estimate, facts_of_executor, facts_of_file, gate
from engine.run.opening import ServerTarget, backend_worker, on_servers, open_worker
from engine.run.request import SEED_MODES
from engine.search import registry
from engine.worker import BackendWorker

if TYPE_CHECKING:  # imported where used: a command refused early never loads llama.cpp or httpx
    from engine.backends.llama_cpp import BackendConfig
    from engine.backends.server.executor import ServerExecutor
    from engine.executor import Executor
    from engine.run.request import CompareRequest
    from engine.store import Store

STREAM_CTX = 2048  # tokens each sequence's KV stream holds with --kv-layout streams, unless --ctx says
IN_PROCESS_PARALLEL = 64  # sequences one llama.cpp context decodes at once, unless --parallel says
DB_HELP = "session database (default: sessions.db in the user data folder)"


def prm_help() -> str:
    """``--prm``'s help, from the PRM kinds (``engine/prm/kinds/``)."""
    kinds = prm_kinds.kinds()
    served = " | ".join(
        f"{k.name} ({k.summary})" for k in kinds if k.on_server and k.check and k.takes is None
    )
    listed = " | ".join(k.name for k in prm_kinds.listed())
    return f"{listed} | PATH to a PRM GGUF; with --prm-server: {served}"


# --- values ----------------------------------------------------------------------------------------


def ints(text: str, minimum: int) -> list[int]:
    """Numbers separated by commas, each at least ``minimum`` (an argparse type error otherwise)."""
    try:
        vals = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None
    if not vals or any(v < minimum for v in vals):
        raise argparse.ArgumentTypeError(f"every value must be >= {minimum}")
    return vals


def int_list(text: str) -> list[int]:
    return ints(text, 1)


def int_list_zero(text: str) -> list[int]:
    return ints(text, 0)


def count(text: str) -> int:
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


def names(text: str) -> tuple[str, ...]:
    """A comma-separated list of names, blanks dropped."""
    return tuple(x.strip() for x in text.split(",") if x.strip())


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=None, ensure_ascii=False))


# --- the model and the servers ---------------------------------------------------------------------


def add_model_args(p: argparse.ArgumentParser, servers: bool = False, bench: bool = False) -> None:
    p.add_argument(
        "--model",
        help="GGUF file (default: $PONDER_MODEL or the embedded SmolLM2-135M)"
        + ("; with --server, the name of one of the server's models" if servers else ""),
    )
    p.add_argument("--n-gpu-layers", type=int, default=0, help="layers to offload to the GPU (-1: all)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores, up to 8)")
    p.add_argument("--ctx", type=int, default=None, help="context size in tokens")
    p.add_argument("--flash-attn", choices=["auto", "on", "off"], default="auto")
    p.add_argument(
        "--kv-layout",
        choices=["auto", "unified", "streams"],
        default="auto",
        help="in process: one KV cache all sequences share (forks share the prompt's cells), or a stream "
        "per sequence (each attends over its own cells only; forks copy; each of the --parallel "
        f"sequences gets --ctx tokens, default {STREAM_CTX}, so memory grows with both); auto "
        "(default): streams for one prompt sampled 4+ ways at 512+ tokens (generate), else unified",
    )
    if servers:
        add_server_args(p, bench=bench)


def add_server_args(p: argparse.ArgumentParser, prm: bool = True, bench: bool = False) -> None:
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
    g.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="the served model's own tokenizer, for a server that cannot tokenize or takes only text "
        "prompts (a gateway, an OpenAI-only proxy): a GGUF of the model or its Hugging Face folder with "
        "tokenizer.json (default: found by the model's name among your models and the Hugging Face cache)",
    )
    if prm:
        g.add_argument(
            "--model-params",
            type=count,
            metavar="N",
            help="the served model's parameters, for FLOPs, where the server does not say (e.g. 1.5B, 135M)",
        )
        g.add_argument(
            "--prm-server",
            action="append",
            metavar="URL",
            help="run the PRM (judge, math-shepherd, rlhflow) on this server (default: the policy's)",
        )


def model_path(args: argparse.Namespace) -> str:
    return str(args.model) if getattr(args, "model", None) else str(default_model_path())


def backend_config(
    args: argparse.Namespace, auto: str = "unified", stream_ctx: int = STREAM_CTX, **overrides: Any
) -> BackendConfig:
    """The llama.cpp settings the model options give, ``overrides`` on top; ``auto``: the KV layout
    ``--kv-layout auto`` means for the command's workload (see ``auto_kv_layout``), ``stream_ctx``
    each stream's cells with a stream per sequence unless --ctx says."""
    from engine.backends.llama_cpp import BackendConfig

    kw: dict[str, Any] = dict(
        n_gpu_layers=args.n_gpu_layers, n_threads=args.threads, flash_attn=args.flash_attn
    )
    if args.ctx:
        kw["n_ctx"] = args.ctx
    kw.update(overrides)
    layout = getattr(args, "kv_layout", "auto")
    if (auto if layout == "auto" else layout) == "streams":
        kw["kv_unified"] = False
        kw["n_ctx"] = (args.ctx or stream_ctx) * kw.get("n_seq_max", 64)  # --ctx is each stream's
    return BackendConfig(**kw)


def in_process_parallel(args: argparse.Namespace) -> int:
    from engine.backends.llama_cpp.config import max_parallel_sequences

    n = getattr(args, "parallel", None) or IN_PROCESS_PARALLEL
    if not 1 <= n <= max_parallel_sequences():
        raise InvalidRequestError(
            f"--parallel must be between 1 and {max_parallel_sequences()} in process (this llama.cpp build)"
        )
    return n


def servers(args: argparse.Namespace) -> list[str]:
    """--server URLs, else $PONDER_SERVER (comma- or space-separated)."""
    urls = [u for u in (getattr(args, "server", None) or []) if u.strip()]
    if not urls and os.environ.get("PONDER_SERVER", "").strip():
        urls = [u for u in re.split(r"[,\s]+", os.environ["PONDER_SERVER"]) if u]
    return urls


def api_key(args: argparse.Namespace) -> str | None:
    return getattr(args, "api_key", None) or os.environ.get("PONDER_API_KEY") or None


def server_target(args: argparse.Namespace, model: str | None = None) -> ServerTarget | None:
    """The servers the options name (``model``: instead of --model), None to run in process."""
    urls = servers(args)
    if not urls:
        return None
    return ServerTarget(
        urls=tuple(urls),
        api_key=api_key(args),
        model=model if model is not None else getattr(args, "model", None),
        parallel=getattr(args, "parallel", None),
        timeout=getattr(args, "timeout", 600.0) or 600.0,
        prm_urls=tuple(getattr(args, "prm_server", None) or ()),
        n_params=getattr(args, "model_params", None),
        tokenizer=getattr(args, "tokenizer", None),
    ).checked()


def server_executor(args: argparse.Namespace, model: str | None = None) -> ServerExecutor:
    """Connect to the servers (and PRM servers) and check them before anything runs: one clear
    error for an unreachable server, a refused key or a model it does not serve."""
    target = server_target(args, model)
    if target is None:
        raise InvalidRequestError("No server: give --server URL (or set $PONDER_SERVER).")
    return on_servers(target)


def check_prm(prm: str, args: argparse.Namespace) -> None:
    """--prm before the model loads or a server is asked anything."""
    where = prm_kinds.Where(
        servers=bool(servers(args)), prm_server=bool(getattr(args, "prm_server", None)), must_exist=True
    )
    prm_kinds.check(prm, where)


# --- strategies ------------------------------------------------------------------------------------


def add_seeds_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--seeds",
        choices=list(SEED_MODES),
        default="independent",
        help="independent: each strategy draws its own random numbers (default); common: every "
        "strategy's k-th sample draws the same ones, for paired comparisons",
    )


def add_strategies_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--strategies",
        default=",".join(registry.default_names()),
        help=f"comma-separated: {', '.join(registry.names())} (default: %(default)s)",
    )


def add_strategy_param_args(p: argparse.ArgumentParser) -> None:
    """``--STRATEGY-PARAM`` for every parameter a registered strategy declares."""
    g = p.add_argument_group(
        "strategy parameters", "each strategy's own settings (the budget sets N, chains x length ...)"
    )
    for strat in registry.strategies():
        for param in strat.params:
            flag = f"--{strat.name}-{param.name}".replace("_", "-")
            rng = f"; {param.lo:g} to {param.hi:g}" if param.lo is not None and param.hi is not None else ""
            choices = f"; {', '.join(param.options())}" if param.options() else ""
            special = f"; {param.lo:g} = {param.special}" if param.special and param.lo is not None else ""
            g.add_argument(
                flag,
                dest=f"sp__{strat.name}__{param.name}",
                metavar=param.kind.upper() if param.kind != "choice" else "NAME",
                help=f"{strat.label}: {param.help} (default {param.default}{rng}{choices}{special})",
            )


def overrides(args: argparse.Namespace, strategies: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """The strategy parameters given on the command line, checked and typed by the registry."""
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


# --- what a run will cost --------------------------------------------------------------------------


def add_yes_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--yes",
        action="store_true",
        help="run even when the estimate says it would take over an hour or fill the disk (a budget over "
        "the ceiling of 4,096 generations per strategy is refused all the same)",
    )


def facts_in_process(args: argparse.Namespace) -> ModelFacts:
    """What the cost estimate knows of the GGUF the options name, from its header (no load)."""
    return facts_of_file(model_path(args), args.n_gpu_layers, args.threads)


def facts_of(executor: Executor) -> ModelFacts:
    return facts_of_executor(executor)


def check_cost(
    args: argparse.Namespace,
    requests: Iterable[CompareRequest],
    store: Store | None,
    facts: ModelFacts,
    what: str = "this compare",
) -> None:
    """Refuse (exit 2, nothing saved) work the estimate says is too much, unless ``--yes``."""
    gate(estimate(list(requests), facts, store, what), bool(getattr(args, "yes", False)))


# --- running ---------------------------------------------------------------------------------------


def run_in_worker(
    args: argparse.Namespace,
    config: BackendConfig,
    work: Callable[..., Any],
    cancel: Any,
    note: str,
    *work_args: Any,
) -> Any:
    """Load the model in its own thread (or connect to the servers the options name), run
    ``work(executor, *work_args)`` there; Ctrl+C cancels between tokens (or closes the requests in
    flight) and still returns what was done, after printing ``note``."""
    target = server_target(args)
    if target is not None:
        worker = open_worker(servers=target)
    else:
        worker = open_worker(model_path(args), config)
    return _run(worker, work, work_args, cancel, note)


def run_in_backend(
    args: argparse.Namespace, config: BackendConfig, work: Callable[..., Any], cancel: Any, note: str
) -> Any:
    """As :func:`run_in_worker`, in process only, ``work(backend)`` given the bare llama.cpp backend."""
    return _run(backend_worker(model_path(args), config), work, (), cancel, note)


def _run(worker: BackendWorker, work: Callable[..., Any], work_args: tuple, cancel: Any, note: str) -> Any:
    try:
        worker.wait_loaded()
        return until_done(worker.submit(work, *work_args), cancel, note)
    finally:
        worker.close()


def until_done(fut: Future[Any], cancel: Any, note: str) -> Any:
    """The work's result; Ctrl+C cancels it and still returns what it had done."""
    try:
        return _wait(fut)
    except KeyboardInterrupt:
        cancel.cancel()
        print(f"\n{note}", file=sys.stderr)
        return fut.result()


def _wait(fut: Future[Any]) -> Any:
    # Waiting in short slices keeps the main thread responsive to Ctrl+C.
    while True:
        try:
            return fut.result(timeout=0.2)
        except TimeoutError:
            continue


def terminate_as_interrupt() -> None:
    """``kill PID`` stops a (background) command as Ctrl+C does: cleanly."""

    def stop(*_: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)
