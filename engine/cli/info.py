"""``ponder info``: what this llama.cpp build supports and a model as loaded, or the servers."""

from __future__ import annotations

import argparse
from typing import Any

from engine.backends.llama_cpp import Backend
from engine.cli.options import (
    add_model_args,
    backend_config,
    model_path,
    print_json,
    server_executor,
    servers,
)
from engine.gguf_info import human_size
from engine.llama_lib import build_info


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_args(p, servers=True)
    p.add_argument("--no-model", action="store_true", help="report the build only")
    p.add_argument("--json", action="store_true")


def run(args: argparse.Namespace) -> int:
    if servers(args):
        return _servers(args)
    bi = build_info()
    out: dict[str, Any] = {"build": bi.as_dict()}
    if not args.no_model:
        with Backend(model_path(args), backend_config(args)) as b:
            out["model"] = b.info.as_dict()
            out["context"] = {
                "n_ctx": b.n_ctx,
                "n_seq_max": b.config.n_seq_max,
                "n_batch": b.config.n_batch,
                "threads": b.config.threads,
            }
    if args.json:
        print_json(out)
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


def _servers(args: argparse.Namespace) -> int:
    executor = server_executor(args)
    try:
        infos = [dict(c.info.__dict__, chat_template=None, alive=c.alive) for c in executor.pool.clients]
    finally:
        executor.close()
    if args.json:
        print_json({"servers": infos})
        return 0
    for i in infos:
        params = f", {i['n_params'] / 1e9:.2f} B parameters" if i.get("n_params") else ""
        print(
            f"{i['url']}  [{i['dialect']}] model {i['model']}{params}; {i['slots']} slots, "
            f"context {i['n_ctx'] or '?'}; build {i['build'] or '?'}"
        )
    return 0
