"""``ponder bench --server [URL]``: what Ponder adds on top of an inference server.

* ``client_ratio``: N samples of the bench prompt (``bench.backend``; N=8, 128 tokens each, EOS
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
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from bench.backend import BENCH_INSTRUCTION, BENCH_TEXT
from bench.compare import timed_compare
from engine.backends.llama_cpp import BackendConfig
from engine.backends.server.client import CompletionRequest
from engine.backends.server.executor import ServerExecutor
from engine.backends.server.launch import LlamaServer
from engine.backends.server.pool import ServerPool
from engine.errors import PonderError
from engine.executor import Executor
from engine.models import default_model_path
from engine.protocol import GenItem
from engine.run.opening import in_process
from engine.sampling import SamplingParams


def _bench_messages() -> tuple[tuple[str, str], ...]:
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


@dataclass(frozen=True)
class ServerBenchOptions:
    """What ``ponder bench --server`` measures, and where."""

    url: str | None = None  # None: start a llama-server on ``model_path``
    model_path: str | None = None  # None: the default model
    n: int = 8  # samples of the bench prompt in one batch
    max_tokens: int = 128  # tokens per sample
    repeat: int = 3  # batches per client; the median is reported
    api_key: str | None = None
    parallel: int | None = None  # requests in flight (the started server's slots)
    compare: bool = True  # also time the default strategies over the server and in process
    budget: int = 8
    max_tokens_compare: int = 256
    problems: tuple[int, ...] = (0,)
    prm: str = "judge"
    threads: int | None = None  # the started server's and the in-process model's CPU threads


def run_server_bench(
    options: ServerBenchOptions, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    say = progress or (lambda s: None)
    o = dataclasses.replace(options, model_path=options.model_path or str(default_model_path()))
    server = None
    url = o.url
    if url is None:
        server = LlamaServer(o.model_path, parallel=o.parallel or max(o.n, 8), threads=o.threads)
        say(f"starting llama-server on {o.model_path} ({server.parallel} slots)")
        server.start()
        url = server.url
    try:
        pool = ServerPool.connect([url], o.api_key, parallel=o.parallel)
        executor = ServerExecutor(pool)
        try:
            out = {"server": url, "started_here": server is not None, **_client_rates(executor, o, url, say)}
            if o.compare:
                out.update(_compare_times(executor, o, server is not None, say))
        finally:
            executor.close()
    finally:
        if server is not None:
            server.stop()
    return out


def _client_rates(
    executor: ServerExecutor, o: ServerBenchOptions, url: str, say: Callable[[str], None]
) -> dict[str, Any]:
    """Ponder's executor against the minimal client, ``o.repeat`` batches each, interleaved."""
    pool = executor.pool
    prompt = pool.loop.run(pool.chat_tokens(_bench_messages()))
    info = pool.info
    say(f"{url}: {info.dialect}, {info.slots} slots; prompt {len(prompt)} tokens; warming up")
    client = pool.clients[0]

    async def make_http() -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=client.url, headers=dict(client.http.headers), timeout=600)

    http = pool.loop.run(make_http())
    n, max_tokens = o.n, o.max_tokens
    ponder_batch(executor, n, 16)  # the first full batch of a fresh server is slow: not timed
    minimal_batch(pool, http, prompt, n, 16)
    ours, theirs = [], []
    for k in range(o.repeat):
        # Alternate who goes first, so neither always finds the server's caches warmer.
        for who in ("minimal", "ponder") if k % 2 == 0 else ("ponder", "minimal"):
            if who == "minimal":
                t, s = minimal_batch(pool, http, prompt, n, max_tokens)
                theirs.append(t / s)
            else:
                t, s = ponder_batch(executor, n, max_tokens)
                ours.append(t / s)
    pool.loop.run(http.aclose())
    p_rate = statistics.median(ours)
    m_rate = statistics.median(theirs)
    say(f"N={n}: Ponder {p_rate:.1f} tok/s, minimal client {m_rate:.1f} tok/s (median of {o.repeat})")
    return {
        "dialect": pool.info.dialect,
        "model": pool.info.model,
        "build": pool.info.build,
        "slots": pool.info.slots,
        "n": n,
        "max_tokens": max_tokens,
        "prompt_tokens": len(prompt),
        "repeat": o.repeat,
        "ponder_tok_s": round(p_rate, 2),
        "minimal_tok_s": round(m_rate, 2),
        "ponder_runs_tok_s": [round(r, 2) for r in ours],
        "minimal_runs_tok_s": [round(r, 2) for r in theirs],
        "client_ratio": round(p_rate / m_rate, 3) if m_rate else None,
    }


def _timed(executor: Executor, o: ServerBenchOptions, concurrent: bool, idx: int) -> float:
    dt, runs = timed_compare(executor, idx, o.budget, o.prm, o.max_tokens_compare, concurrent)
    bad = [f"{r.spec.name}: {r.message}" for r in runs if r.status != "done"]
    if bad:
        raise PonderError("; ".join(bad))
    return dt


def _compare_times(
    executor: ServerExecutor, o: ServerBenchOptions, in_process_too: bool, say: Callable[[str], None]
) -> dict[str, Any]:
    """The default strategies over the server, side by side and one after another, and (when the
    bench started the server on a model file) the same compare in process."""
    out: dict[str, Any] = {
        "budget": o.budget,
        "compare_max_tokens": o.max_tokens_compare,
        "prm": o.prm,
        "problems": list(o.problems),
    }
    totals: dict[str, float | None] = {"side_by_side_s": 0.0, "sequential_s": 0.0, "in_process_s": 0.0}
    for idx in o.problems:
        for mode, concurrent in (("side_by_side", True), ("sequential", False)):
            dt = _timed(executor, o, concurrent, idx)
            totals[f"{mode}_s"] += dt  # type: ignore[operator]
            say(f"gsm8k #{idx} over the server, {mode.replace('_', ' ')}: {dt:.1f} s")
    if in_process_too:
        local = in_process(o.model_path, BackendConfig(n_ctx=16384, n_seq_max=64, n_threads=o.threads))
        try:
            for idx in o.problems:
                dt = _timed(local, o, True, idx)
                totals["in_process_s"] += dt  # type: ignore[operator]
                say(f"gsm8k #{idx} in process, side by side: {dt:.1f} s")
        finally:
            local.close()
    else:
        totals["in_process_s"] = None
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
