"""``ponder bench --server [URL]``: what Ponder adds on top of an inference server.

* ``client_ratio``: N samples of the bench prompt (``engine.bench``; N=8, 128 tokens each, EOS
  banned so every sample is full length) through Ponder's server executor, against a minimal client
  that sends the same requests (on llama-server, one request for several completions, as Ponder
  sends samples of one prompt) concurrently with bare httpx and only reads the answers.
  Both report aggregate decode tokens/s (generated tokens / wall time of the batch); repeats are
  interleaved so drift hits both, and the median is reported. The ratio is Ponder / minimal.
* the three default strategies at a budget on GSM8K problems over the server, side by side and one
  after another (``side_by_side_s``, ``sequential_s``), and the same compare in process
  (``in_process_s``), same seeds.

Without a URL the bench starts its own llama-server on the model (the embedded one by default).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import httpx

from engine.backends.server.client import CompletionRequest
from engine.backends.server.executor import ServerExecutor
from engine.backends.server.pool import ServerPool
from engine.errors import PonderError
from engine.sampling import SamplingParams
from engine.search.protocol import GenItem


def _bench_messages() -> tuple[tuple[str, str], ...]:
    from engine.bench import BENCH_INSTRUCTION, BENCH_TEXT

    return (("user", f"{BENCH_TEXT}\n\n{BENCH_INSTRUCTION}"),)


def ponder_batch(executor: ServerExecutor, n: int, max_tokens: int) -> tuple[int, float]:
    """N samples through the executor, as a strategy asks for them. (tokens, seconds)."""
    items = tuple(
        GenItem(
            i,
            SamplingParams(temperature=0.8, top_p=1.0, seed=i, max_tokens=max_tokens, ignore_eos=True),
            messages=_bench_messages(),
        )
        for i in range(n)
    )
    t0 = time.perf_counter()
    executor.generate("bench", items)
    done = None
    while done is None:
        for o in executor.poll():
            if getattr(o, "results", None) is not None:
                done = o
            elif hasattr(o, "message"):
                raise PonderError(o.message)
    dt = time.perf_counter() - t0
    executor.end_run("bench")
    return sum(g.n_tokens for g in done.results), dt


def minimal_batch(
    pool: ServerPool, http: httpx.AsyncClient, prompt: Sequence[int], n: int, max_tokens: int
) -> tuple[int, float]:
    """The same requests from a client that does nothing else: bodies built in advance, sent at
    once on a kept-alive client of its own, answers read. (tokens, seconds). Like Ponder, it asks
    llama-server for the samples of one prompt in requests of several completions each."""
    client = pool.clients[0]
    size = pool.group_limit
    reqs = [
        client.request(
            CompletionRequest(
                tuple(prompt),
                max_tokens,
                temperature=0.8,
                top_p=1.0,
                seed=i,
                ignore_eos=True,
                n=min(size, n - i),
            )
        )
        for i in range(0, n, size)
    ]

    async def go() -> tuple[int, float]:
        t0 = time.perf_counter()
        answers = await asyncio.gather(*(http.post(path, json=body) for path, body in reqs))
        dt = time.perf_counter() - t0
        tokens = 0
        for a in answers:
            a.raise_for_status()
            body = a.json()
            for one in body if isinstance(body, list) else [body]:
                if "tokens" in one:
                    tokens += len(one["tokens"])
                else:
                    tokens += int(one["usage"]["completion_tokens"])
        return tokens, dt

    return pool.loop.run(go())


def run_server_bench(
    url: str | None = None,
    model_path: str | None = None,
    n: int = 8,
    max_tokens: int = 128,
    repeat: int = 3,
    api_key: str | None = None,
    parallel: int | None = None,
    compare: bool = True,
    budget: int = 8,
    max_tokens_compare: int = 256,
    problems: Sequence[int] = (0,),
    prm: str = "judge",
    progress: Callable[[str], None] | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
    from engine.models import default_model_path

    say = progress or (lambda s: None)
    model_path = model_path or str(default_model_path())
    server = None
    if url is None:
        from engine.backends.server.launch import LlamaServer

        server = LlamaServer(model_path, parallel=parallel or max(n, 8), threads=threads)
        say(f"starting llama-server on {model_path} ({server.parallel} slots)")
        server.start()
        url = server.url
    try:
        pool = ServerPool.connect([url], api_key, parallel=parallel)
        executor = ServerExecutor(pool)
        try:
            prompt = pool.loop.run(pool.chat_tokens(_bench_messages()))
            info = pool.info
            say(f"{url}: {info.dialect}, {info.slots} slots; prompt {len(prompt)} tokens; warming up")
            client = pool.clients[0]

            async def make_http() -> httpx.AsyncClient:
                return httpx.AsyncClient(base_url=client.url, headers=dict(client.http.headers), timeout=600)

            http = pool.loop.run(make_http())
            ponder_batch(executor, n, 16)  # the first full batch of a fresh server is slow: not timed
            minimal_batch(pool, http, prompt, n, 16)
            ours, theirs = [], []
            for k in range(repeat):
                # Alternate who goes first, so neither always finds the server's caches warmer.
                for who in ("minimal", "ponder") if k % 2 == 0 else ("ponder", "minimal"):
                    if who == "minimal":
                        t, s = minimal_batch(pool, http, prompt, n, max_tokens)
                        theirs.append((t / s, t, s))
                    else:
                        t, s = ponder_batch(executor, n, max_tokens)
                        ours.append((t / s, t, s))
            pool.loop.run(http.aclose())
            p_rate = statistics.median(r[0] for r in ours)
            m_rate = statistics.median(r[0] for r in theirs)
            say(f"N={n}: Ponder {p_rate:.1f} tok/s, minimal client {m_rate:.1f} tok/s (median of {repeat})")
            out: dict[str, Any] = {
                "server": url,
                "started_here": server is not None,
                "dialect": pool.info.dialect,
                "model": pool.info.model,
                "build": pool.info.build,
                "slots": pool.info.slots,
                "n": n,
                "max_tokens": max_tokens,
                "prompt_tokens": len(prompt),
                "repeat": repeat,
                "ponder_tok_s": round(p_rate, 2),
                "minimal_tok_s": round(m_rate, 2),
                "ponder_runs_tok_s": [round(r[0], 2) for r in ours],
                "minimal_runs_tok_s": [round(r[0], 2) for r in theirs],
                "client_ratio": round(p_rate / m_rate, 3) if m_rate else None,
            }
            if compare:
                out.update(
                    _compare_times(
                        executor,
                        model_path if server is not None else None,
                        budget,
                        max_tokens_compare,
                        problems,
                        prm,
                        say,
                        threads,
                    )
                )
        finally:
            executor.close()
    finally:
        if server is not None:
            server.stop()
    return out


def _compare_times(
    executor: ServerExecutor,
    model_path: str | None,
    budget: int,
    max_tokens: int,
    problems: Sequence[int],
    prm: str,
    say: Callable[[str], None],
    threads: int | None,
) -> dict[str, Any]:
    from engine.bench import timed_compare

    out: dict[str, Any] = {
        "budget": budget,
        "compare_max_tokens": max_tokens,
        "prm": prm,
        "problems": list(problems),
    }
    totals = {"side_by_side_s": 0.0, "sequential_s": 0.0, "in_process_s": 0.0}

    def timed(target: Any, concurrent: bool, idx: int) -> float:
        dt, runs = timed_compare(target, idx, budget, prm, max_tokens, concurrent)
        bad = [f"{r.spec.name}: {r.message}" for r in runs if r.status != "done"]
        if bad:
            raise PonderError("; ".join(bad))
        return dt

    for idx in problems:
        for mode, concurrent in (("side_by_side", True), ("sequential", False)):
            dt = timed(executor, concurrent, idx)
            totals[f"{mode}_s"] += dt
            say(f"gsm8k #{idx} over the server, {mode.replace('_', ' ')}: {dt:.1f} s")
    if model_path is not None:
        from engine.backends.llama_cpp import Backend, BackendConfig

        with Backend(model_path, BackendConfig(n_ctx=16384, n_seq_max=64, n_threads=threads)) as backend:
            for idx in problems:
                dt = timed(backend, True, idx)
                totals["in_process_s"] += dt
                say(f"gsm8k #{idx} in process, side by side: {dt:.1f} s")
    else:
        totals["in_process_s"] = None  # type: ignore[assignment]
    out.update({k: (round(v, 3) if v is not None else None) for k, v in totals.items()})
    return out


def format_server_bench(r: dict[str, Any]) -> str:
    lines = [
        f"server {r['server']} ({r['dialect']}, {r['slots']} slots"
        + (", started by the bench)" if r["started_here"] else ")"),
        f"N={r['n']} samples of {r['max_tokens']} tokens, prompt {r['prompt_tokens']} tokens, "
        f"median of {r['repeat']}",
        f"Ponder         : {r['ponder_tok_s']:8.1f} tok/s",
        f"minimal client : {r['minimal_tok_s']:8.1f} tok/s",
        f"client_ratio   : {r['client_ratio']:.3f}",
    ]
    if "side_by_side_s" in r:
        lines += [
            f"default strategies at budget {r['budget']}, {r['compare_max_tokens']} tokens, PRM {r['prm']}, "
            f"GSM8K {r['problems']}:",
            f"  over the server, side by side : {r['side_by_side_s']:8.1f} s",
            f"  over the server, one by one   : {r['sequential_s']:8.1f} s",
        ]
        if r.get("in_process_s") is not None:
            lines.append(f"  in process, side by side      : {r['in_process_s']:8.1f} s")
    return "\n".join(lines)
