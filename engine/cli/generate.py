"""``ponder generate``: N continuations of a prompt, sampled in one batch (no strategy, no PRM)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from engine.cli.options import add_model_args, backend_config, print_json, run_in_backend
from engine.errors import InvalidRequestError
from engine.sampling import SamplingParams
from engine.worker import CancelToken


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    add_model_args(p)


def run(args: argparse.Namespace) -> int:
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

    def on_step(events: list[Any]) -> None:
        counts["tokens"] += len(events)
        if show:
            sys.stderr.write(f"\r{counts['tokens']} tokens generated")
            sys.stderr.flush()

    def work(backend: Any) -> list[dict[str, Any]]:
        prompt = (
            backend.tokenize(args.prompt)
            if args.raw
            else backend.chat_tokens([{"role": "user", "content": args.prompt}])
        )
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

    from engine.backends.llama_cpp.config import auto_kv_layout

    # A token is at least a byte: the prompt's UTF-8 length bounds its tokens. --ctx sizes one
    # shared cache, so auto keeps one then.
    prompt_max = len(args.prompt.encode("utf-8"))
    auto = "unified" if args.ctx else auto_kv_layout(args.n, args.max_tokens, prompt_max)
    if args.kv_layout == "auto" and auto == "streams":
        # each sample in a stream of its own with the prompt (64 for the chat template)
        need = prompt_max + 64 + args.max_tokens
        config = backend_config(args, auto=auto, stream_ctx=-(-need // 256) * 256, n_seq_max=args.n + 1)
    else:
        config = backend_config(args, n_ctx=args.ctx or 4096, n_seq_max=max(8, args.n + 1))
    samples = run_in_backend(args, config, work, cancel, "Cancelled; partial samples follow.")
    if show:
        sys.stderr.write("\n")
    if args.json:
        print_json({"samples": samples, "kv_layout": "unified" if config.kv_unified else "streams"})
        return 0
    for i, s in enumerate(samples):
        print(f"--- sample {i} (seed {s['seed']}, {s['tokens']} tokens, {s['finish_reason']}) ---")
        print(s["text"])
    return 0
