"""``ponder serve``: a local llama-server (built from the pinned llama.cpp source), its URL printed."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from engine.backends.server.launch import LlamaServer
from engine.cli.options import api_key, terminate_as_interrupt
from engine.errors import InvalidRequestError
from engine.gguf_info import read_gguf
from engine.models import default_model_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.description = (
        "Starts llama-server on a GGUF (default: the embedded model), waits until it is healthy "
        "and prints its URL for --server. Ctrl+C stops it."
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


def run(args: argparse.Namespace) -> int:
    model = args.model_file or str(default_model_path())
    if args.parallel < 1:
        raise InvalidRequestError("--parallel must be >= 1")
    if not 0 <= args.port < 65536:
        raise InvalidRequestError("--port must be between 0 and 65535")
    read_gguf(model)  # a missing or broken file is one clear line, before the server starts
    srv = LlamaServer(
        model,
        port=args.port,
        host=args.host,
        parallel=args.parallel,
        ctx=args.ctx,
        n_gpu_layers=args.n_gpu_layers,
        threads=args.threads,
        api_key=api_key(args),
    )
    terminate_as_interrupt()
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
            time.sleep(0.5)
        print(
            f"ponder: error: llama-server stopped (status {srv.proc.returncode if srv.proc else None}):\n"
            f"{srv.log_tail()}",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        print("Stopping llama-server ...", file=sys.stderr)
        return 0
    finally:
        srv.stop()
