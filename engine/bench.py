"""``ponder bench``: the batched backend against the loop a user would write.

Workload: one ~250-token chat prompt; N samples of up to 128 tokens (temperature 0.8, top-p 1, no
top-k/min-p, seeds 0..N-1), for N in 1, 4, 8, 16.

* **batched**: the engine decodes the prompt once, forks N branches and advances all of them in one
  ``llama_decode`` per token.
* **naive**: llama-cpp-python's high-level ``Llama.create_completion`` called N times in a row with the
  same prompt (it keeps the prompt's KV between calls, so only generation is repeated).

Both report *aggregate decode tokens/s*: tokens generated / wall time of the generation phase,
Python overhead and sampling included, the prompt's first decode excluded (it is identical work in
both, done before the clock starts).

Every batched sample is exactly ``max_tokens`` long: EOS is banned inside the sampler (free), so the
batch stays N wide, which is the quantity measured. The naive loop cannot ban EOS without a Python
logits processor that would slow it down, so its samples may stop early; its rate is per token and
does not depend on sample length. Both token counts are in the JSON rows.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.backends.llama_cpp import Backend, BackendConfig
from engine.sampling import SamplingParams

BENCH_TEXT = (
    "The lighthouse keeper of Varrow Point kept a logbook for forty years. Every evening she wrote "
    "down the colour of the sea, the direction of the wind, the ships that passed and the birds that "
    "rested on the gallery rail. Most entries are short: 'Grey, north-east, two trawlers, gulls.' "
    "Some are longer. In the winter of the great storm she wrote four pages about a cargo ship that "
    "lost its engines off the reef, and how the lifeboat crew from the village went out three times "
    "before they reached it. She never wrote about herself, except once, on the last page, where "
    "she noted that the lamp had been automated and that she would leave the next morning. The "
    "logbook is now in the village museum, open at that last page. Visitors read it and then look "
    "out of the window at the lighthouse, which still turns its light every night, with nobody "
    "inside to write down what it sees."
)
BENCH_INSTRUCTION = (
    "Continue this story in the same style: write the next five entries of a new logbook kept by "
    "the museum's young caretaker, each with the weather, the visitors and one small event."
)


@dataclass
class BenchRow:
    mode: str
    n: int
    tokens: int
    seconds: float
    runs: tuple[float, ...] = ()  # tok/s of every repeat; this row is the median one

    @property
    def decode_tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "n": self.n,
            "tokens": self.tokens,
            "seconds": round(self.seconds, 4),
            "decode_tok_s": round(self.decode_tok_s, 2),
            "runs_tok_s": [round(r, 2) for r in self.runs],
        }


def median_row(rows: list[BenchRow]) -> BenchRow:
    ordered = sorted(rows, key=lambda r: r.decode_tok_s)
    mid = ordered[len(ordered) // 2]
    return BenchRow(mid.mode, mid.n, mid.tokens, mid.seconds, tuple(r.decode_tok_s for r in rows))


def bench_prompt_tokens(backend: Backend) -> list[int]:
    msgs = [{"role": "user", "content": f"{BENCH_TEXT}\n\n{BENCH_INSTRUCTION}"}]
    return backend.chat_tokens(msgs)


def run_batched(backend: Backend, prompt: Sequence[int], n: int, max_tokens: int) -> BenchRow:
    params = SamplingParams(temperature=0.8, top_p=1.0, seed=0, max_tokens=max_tokens, ignore_eos=True)
    root = backend.root(prompt, params)
    backend.prefill([root])
    kids = backend.fork(root, n, params)
    backend.free(root)
    t0 = time.perf_counter()
    backend.generate(kids)
    dt = time.perf_counter() - t0
    tokens = sum(k.n_generated for k in kids)
    for k in kids:
        backend.free(k)
    return BenchRow("batched", n, tokens, dt)


@contextlib.contextmanager
def _quiet_stderr():
    """llama-cpp-python's high-level class prints its perf report to fd 2: keep the bench readable."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):
        yield
        return
    saved = os.dup(fd)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), fd)
        try:
            yield
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def make_naive(model_path: str, config: BackendConfig) -> Any:
    from llama_cpp import Llama

    with _quiet_stderr():
        return Llama(
            model_path=model_path,
            n_ctx=config.n_ctx,
            n_batch=config.n_batch,
            n_ubatch=config.n_ubatch or config.n_batch,
            n_threads=config.threads,
            n_threads_batch=config.threads_batch,
            n_gpu_layers=config.n_gpu_layers,
            verbose=False,
        )


def run_naive(llm: Any, prompt: Sequence[int], n: int, max_tokens: int) -> BenchRow:
    kw = dict(temperature=0.8, top_p=1.0, top_k=0, min_p=0.0, repeat_penalty=1.0)
    # Warm the prompt into the KV cache (the batched side decodes it before its clock starts too).
    llm.create_completion(list(prompt), max_tokens=1, seed=0, **kw)
    tokens = 0
    t0 = time.perf_counter()
    for i in range(n):
        out = llm.create_completion(list(prompt), max_tokens=max_tokens, seed=i, **kw)
        tokens += int(out["usage"]["completion_tokens"])
    dt = time.perf_counter() - t0
    return BenchRow("naive", n, tokens, dt)


def run_bench(
    model_path: str,
    ns: Sequence[int] = (1, 4, 8, 16),
    max_tokens: int = 128,
    config: BackendConfig | None = None,
    progress: Callable[[str], None] | None = None,
    repeat: int = 3,
) -> dict[str, Any]:
    """Each (mode, N) runs ``repeat`` times, naive and batched interleaved so that drift in the
    machine's speed hits both; the median run is reported."""
    need_ctx = 512 + max(ns) * max_tokens + 64
    config = config or BackendConfig(n_ctx=max(1024, need_ctx), n_seq_max=max(8, max(ns) + 1))
    say = progress or (lambda s: None)
    backend = Backend(model_path, config)
    try:
        prompt = bench_prompt_tokens(backend)
        naive = make_naive(model_path, config)
        say(f"prompt: {len(prompt)} tokens; warming up")
        run_batched(backend, prompt, 2, 8)  # page in the weights for both
        with _quiet_stderr():
            run_naive(naive, prompt, 1, 8)
        rows: list[BenchRow] = []
        for n in ns:
            naive_runs, batched_runs = [], []
            for _ in range(repeat):
                with _quiet_stderr():
                    naive_runs.append(run_naive(naive, prompt, n, max_tokens))
                batched_runs.append(run_batched(backend, prompt, n, max_tokens))
            r_naive, r_batched = median_row(naive_runs), median_row(batched_runs)
            say(f"naive   N={n:<3} {r_naive.decode_tok_s:7.1f} tok/s (median of {repeat})")
            say(f"batched N={n:<3} {r_batched.decode_tok_s:7.1f} tok/s (median of {repeat})")
            rows += [r_batched, r_naive]
        del naive
        info = backend.info
    finally:
        backend.close()
    ratios = {}
    for n in ns:
        b = next(r for r in rows if r.mode == "batched" and r.n == n)
        v = next(r for r in rows if r.mode == "naive" and r.n == n)
        ratios[str(n)] = round(b.decode_tok_s / v.decode_tok_s, 3) if v.decode_tok_s else None
    return {
        "model": info.path,
        "model_name": info.name,
        "quantization": info.quantization,
        "accelerator": info.accelerator,
        "n_gpu_layers": config.n_gpu_layers,
        "n_layers_offloaded": info.n_layers_offloaded,
        "threads": config.threads,
        "prompt_tokens": len(prompt),
        "max_tokens": max_tokens,
        "repeat": repeat,
        "rows": [r.as_dict() for r in rows],
        "ratio_batched_over_naive": ratios,
    }


def format_bench(result: dict[str, Any]) -> str:
    lines = [
        f"model: {result['model_name']} ({result['quantization']}), {result['accelerator']}, "
        f"{result['threads']} threads, n_gpu_layers={result['n_gpu_layers']} "
        f"({result['n_layers_offloaded']} offloaded)",
        f"prompt {result['prompt_tokens']} tokens, up to {result['max_tokens']} new tokens per sample, "
        f"median of {result['repeat']} runs",
        "",
        f"{'N':>4}  {'naive tok/s':>12}  {'batched tok/s':>14}  {'ratio':>6}",
    ]
    ns = sorted({r["n"] for r in result["rows"]})
    for n in ns:
        b = next(r for r in result["rows"] if r["mode"] == "batched" and r["n"] == n)
        v = next(r for r in result["rows"] if r["mode"] == "naive" and r["n"] == n)
        ratio = result["ratio_batched_over_naive"][str(n)]
        lines.append(f"{n:>4}  {v['decode_tok_s']:>12.1f}  {b['decode_tok_s']:>14.1f}  {ratio:>5.2f}x")
    return "\n".join(lines)


def timed_compare(
    target: Any, idx: int, budget: int, prm: str, max_tokens: int, concurrent: bool
) -> tuple[float, list[Any]]:
    """The default strategies on GSM8K problem ``idx`` (seeded by it): (seconds, runs)."""
    from engine.compare import compare
    from engine.problems import get_problem
    from engine.search import default_strategies

    p = get_problem("gsm8k", idx)
    t0 = time.perf_counter()
    runs = compare(
        target,
        p.question,
        default_strategies(),
        budget=budget,
        prm=prm,
        reference=p.reference,
        seed=idx,
        max_tokens=max_tokens,
        concurrent=concurrent,
    )
    return time.perf_counter() - t0, runs


def run_compare_bench(
    model_path: str,
    budget: int = 8,
    max_tokens: int = 256,
    problems: Sequence[int] = (0,),
    prm: str = "judge",
    config: BackendConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """The default strategies at ``budget`` on GSM8K problems, side by side and then one after
    another, same seeds. Reports the wall times, their ratio, the tokens each mode generated (the
    texts can differ a little between the modes: batch composition moves float sums), and the PRM's
    share of beam search's time (measured when it runs alone)."""
    from engine.compare import compare

    config = config or BackendConfig(n_ctx=16384, n_seq_max=64)
    say = progress or (lambda s: None)
    out: dict[str, Any] = {"budget": budget, "max_tokens": max_tokens, "prm": prm, "problems": list(problems)}
    totals = {"side_by_side_s": 0.0, "sequential_s": 0.0}
    tokens = {"side_by_side": 0, "sequential": 0}
    beam_prm = beam_wall = 0.0
    per_problem = []
    with Backend(model_path, config) as backend:
        compare(backend, "What is 2 + 2?", ["best_of_n"], budget=2, prm=prm, max_tokens=8)  # warm-up
        for idx in problems:
            row: dict[str, Any] = {"index": idx}
            for mode, concurrent in (("side_by_side", True), ("sequential", False)):
                dt, runs = timed_compare(backend, idx, budget, prm, max_tokens, concurrent)
                totals[f"{mode}_s"] += dt
                work = sum(r.generated_tokens + r.prm_tokens for r in runs)
                tokens[mode] += work
                row[mode] = {
                    "seconds": round(dt, 3),
                    "tokens": work,
                    "runs": {r.spec.name: round(r.wall_s, 3) for r in runs},
                }
                say(f"gsm8k #{idx} {mode:<12} {dt:7.1f} s  ({work} tokens generated + scored)")
                if not concurrent:
                    beam = next(r for r in runs if r.spec.name == "beam_search")
                    beam_prm += beam.prm_s
                    beam_wall += beam.wall_s
            per_problem.append(row)
        out["model"] = backend.info.path
        out["accelerator"] = backend.info.accelerator
    out.update({k: round(v, 3) for k, v in totals.items()})
    out["ratio"] = (
        round(totals["side_by_side_s"] / totals["sequential_s"], 3) if totals["sequential_s"] else None
    )
    out["tokens"] = tokens
    # Time per unit of work, for when the two modes' texts (and so their work) diverge.
    sbs_rate = totals["side_by_side_s"] / max(tokens["side_by_side"], 1)
    seq_rate = totals["sequential_s"] / max(tokens["sequential"], 1)
    out["ratio_per_token"] = round(sbs_rate / seq_rate, 3)
    out["prm_share_beam"] = round(beam_prm / beam_wall, 3) if beam_wall else None
    out["per_problem"] = per_problem
    return out


def format_compare_bench(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"budget {r['budget']} per strategy, up to {r['max_tokens']} tokens per solution, "
            f"PRM {r['prm']}, GSM8K problems {r['problems']}, {r['accelerator']}",
            f"side by side : {r['side_by_side_s']:8.1f} s  ({r['tokens']['side_by_side']} tokens)",
            f"one by one   : {r['sequential_s']:8.1f} s  ({r['tokens']['sequential']} tokens)",
            f"ratio        : {r['ratio']:.3f}  (per token of work: {r['ratio_per_token']:.3f})",
            f"PRM share of beam search's time: {r['prm_share_beam']:.0%}",
        ]
    )


def run_revisions_bench(
    model_path: str,
    budget: int = 8,
    max_tokens: int = 256,
    problems: Sequence[int] = (0, 1, 2),
    config: BackendConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Generated tokens per second of revisions against best-of-N at the same budget on the same
    GSM8K problems (same seeds), each strategy run alone with the arithmetic PRM (cheap, so the
    figure is generation's), and of revisions with each attempt continuing the previous one's cells
    (``reuse``, the default) against decoding its whole chat again. ``ratio``: revisions' rate over
    best-of-N's; ``reuse_speedup``: with over without reuse."""
    from engine.compare import compare
    from engine.problems import get_problem
    from engine.search import budget_params

    config = config or BackendConfig(n_ctx=16384, n_seq_max=64)
    say = progress or (lambda s: None)
    modes = {
        "best_of_n": ("best_of_n", {}),
        "revisions": ("revisions", {}),
        "revisions_no_reuse": ("revisions", {"reuse": False}),
    }
    tot = {m: {"tokens": 0, "prompt_tokens": 0, "cached_tokens": 0, "seconds": 0.0} for m in modes}
    with Backend(model_path, config) as backend:
        compare(backend, "What is 2 + 2?", ["best_of_n"], budget=2, prm="arithmetic", max_tokens=8)  # warm-up
        for idx in problems:
            p = get_problem("gsm8k", idx)
            for mode, (name, over) in modes.items():
                (run,) = compare(
                    backend, p.question, [name], budget=budget, prm="arithmetic", seed=idx,
                    max_tokens=max_tokens, overrides={name: over} if over else None,
                )  # fmt: skip
                t = tot[mode]
                t["tokens"] += run.generated_tokens
                t["prompt_tokens"] += run.prompt_tokens
                t["cached_tokens"] += run.cached_tokens
                t["seconds"] += run.wall_s
                say(
                    f"gsm8k #{idx} {mode:<19} {run.generated_tokens:5d} tokens in {run.wall_s:6.1f} s "
                    f"({run.prompt_tokens - run.cached_tokens} prompt tokens decoded)"
                )
        out: dict[str, Any] = {
            "model": backend.info.path,
            "accelerator": backend.info.accelerator,
            "budget": budget,
            "max_tokens": max_tokens,
            "problems": list(problems),
            "params": {"revisions": budget_params("revisions", budget)},
        }
    for t in tot.values():
        t["seconds"] = round(t["seconds"], 3)
        t["tok_s"] = round(t["tokens"] / t["seconds"], 2) if t["seconds"] else 0.0
    out.update(tot)
    out["ratio"] = (
        round(tot["revisions"]["tok_s"] / tot["best_of_n"]["tok_s"], 3) if tot["best_of_n"]["tok_s"] else None
    )
    out["reuse_speedup"] = (
        round(tot["revisions"]["tok_s"] / tot["revisions_no_reuse"]["tok_s"], 3)
        if tot["revisions_no_reuse"]["tok_s"]
        else None
    )
    return out


def format_revisions_bench(r: dict[str, Any]) -> str:
    p = r["params"]["revisions"]
    lines = [
        f"budget {r['budget']} (revisions: {p['chains']} chains x {p['length']}), up to {r['max_tokens']} "
        f"tokens per solution, GSM8K problems {r['problems']}, {r['accelerator']}",
    ]
    for mode in ("best_of_n", "revisions", "revisions_no_reuse"):
        t = r[mode]
        lines.append(
            f"{mode:<19}: {t['tok_s']:7.1f} tok/s  ({t['tokens']} tokens in {t['seconds']:.1f} s; "
            f"{t['prompt_tokens'] - t['cached_tokens']} prompt tokens decoded, {t['cached_tokens']} reused)"
        )
    lines.append(f"revisions / best-of-N: {r['ratio']:.3f}   reuse speed-up: {r['reuse_speedup']:.3f}")
    return "\n".join(lines)


def run_sweep_bench(
    model_path: str,
    problems: int = 20,
    strategies: Sequence[str] = ("best_of_n", "beam_search", "revisions"),
    budgets: Sequence[int] = (1, 2, 4, 8),
    max_tokens: int = 128,
    n: int = 16,
    batch: int | None = None,
    config: BackendConfig | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """A sweep's throughput against the backend's own, on one model in one run: ``batched_tok_s`` is
    ``n`` samples of ``max_tokens`` tokens decoded together (as ``ponder bench``); ``sweep_tok_s`` is
    every token generated and scored by a sweep of ``problems`` arithmetic-ladder problems (arithmetic
    PRM, into a throw-away database) over its wall time; ``ratio`` the second over the first."""
    import tempfile
    from pathlib import Path

    from engine.store import Store
    from engine.sweep import SweepSpec, run_sweep

    config = config or BackendConfig(n_ctx=16384, n_seq_max=64)
    say = progress or (lambda s: None)
    spec = SweepSpec(
        "arith", limit=problems, strategies=tuple(strategies), budgets=tuple(budgets), prm="arithmetic",
        max_tokens=max_tokens,
    )  # fmt: skip
    with Backend(model_path, config) as backend, tempfile.TemporaryDirectory() as tmp:
        prompt = bench_prompt_tokens(backend)
        run_batched(backend, prompt, 2, 8)  # warm-up
        base = run_batched(backend, prompt, n, max_tokens)
        say(f"batched, {n} sequences: {base.decode_tok_s:.1f} tok/s")
        store = Store.open(Path(tmp) / "bench.db")
        try:
            last = {"done": -1}

            def on_progress(p: Any) -> None:
                if p.done != last["done"]:
                    last["done"] = p.done
                    say(f"sweep: {p.done}/{p.total} cells, {p.elapsed_s:.0f} s")

            t0 = time.perf_counter()
            res = run_sweep(backend, store, spec, on_progress=on_progress, batch=batch)
            wall = time.perf_counter() - t0
            runs = [r for r in store.sweep_cells(res.sweep_id).values() if r is not None]
        finally:
            store.close()
        out: dict[str, Any] = {
            "model": backend.info.path,
            "accelerator": backend.info.accelerator,
            "n": n,
            "max_tokens": max_tokens,
            "problems": problems,
            "strategies": list(strategies),
            "budgets": list(budgets),
            "batch": batch,
            "batched_tok_s": round(base.decode_tok_s, 2),
        }
    generated = sum(r.generated_tokens for r in runs)
    scored = sum(r.prm_tokens for r in runs)
    out.update(
        cells=len(runs),
        failed=res.failed,
        generated_tokens=generated,
        prm_tokens=scored,
        sweep_seconds=round(wall, 2),
        sweep_tok_s=round((generated + scored) / wall, 2) if wall > 0 else 0.0,
    )
    out["ratio"] = round(out["sweep_tok_s"] / out["batched_tok_s"], 3) if out["batched_tok_s"] else None
    return out


def format_sweep_bench(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{r['problems']} arithmetic-ladder problems x {', '.join(r['strategies'])} x budgets "
            f"{','.join(map(str, r['budgets']))}, {r['max_tokens']} tokens, arithmetic PRM, "
            f"{r['accelerator']}",
            f"batched ({r['n']} sequences): {r['batched_tok_s']:7.1f} tok/s",
            f"sweep ({r['cells']} cells, {r['failed']} failed): {r['sweep_tok_s']:7.1f} tok/s "
            f"({r['generated_tokens']} generated + {r['prm_tokens']} scored tokens in "
            f"{r['sweep_seconds']:.1f} s)",
            f"ratio: {r['ratio']:.3f}",
        ]
    )


# --- the session store ---------------------------------------------------------------------------------


def _synthetic_run(run_id: str, n_nodes: int, rng: Any) -> list[Any]:
    """A beam-search-shaped stream of ``n_nodes`` nodes (30 tokens each, with logprobs and scores)."""
    from engine.events import (
        NodeAdded,
        NodeFinished,
        NodePruned,
        NodeScored,
        RunFinished,
        RunStarted,
        Selected,
    )

    evs: list[Any] = [
        RunStarted(
            run_id,
            "beam_search",
            {"n": 8, "beam_width": 4},
            {"name": "bench.gguf"},
            {"name": "judge"},
            0,
            "A synthetic problem",
            "42",
        )
    ]
    for i in range(n_nodes):
        parent = None if i < 8 else int(rng.integers(0, i))
        lps = [round(float(x), 4) for x in -rng.exponential(0.7, 30)]
        evs.append(
            NodeAdded(
                run_id,
                i,
                parent,
                "step",
                f"## Step {i}: compute {i} * 3 = {3 * i}.\n\n" * 3,
                30,
                round(sum(lps), 4),
                lps,
            )
        )
        s = round(float(rng.random()), 4)
        evs.append(NodeScored(run_id, i, [s], s, "judge"))
        if i % 3 == 0:
            evs.append(NodePruned(run_id, i, i // 8))
        elif i % 7 == 0:
            evs.append(NodeFinished(run_id, i, str(i), "eos"))
    evs.append(Selected(run_id, "42", n_nodes - 1, "weighted", {"42": 1.0}))
    evs.append(RunFinished(run_id, "done", "", 30 * n_nodes, 200, 500, 12.5))
    return evs


def fill_store(path: str, sessions: int, runs: int, nodes: int, seed: int = 0) -> None:
    """Bulk-fill a store with synthetic sessions (one transaction per 25 sessions)."""
    import numpy as np
    from sqlalchemy import insert

    from engine.events import NodeAdded
    from engine.store import EventRow, NodeRow, RunRow, SessionRow, Store

    rng = np.random.default_rng(seed)
    template = _synthetic_run("T", nodes, rng)
    with Store.open(path) as store:
        for start in range(0, sessions, 25):
            srows, rrows, erows, nrows = [], [], [], []
            for k in range(start, min(sessions, start + 25)):
                sid = f"s{k:06d}"
                srows.append(
                    dict(
                        id=sid,
                        created=f"2026-01-01T00:{k // 60 % 60:02d}:{k % 60:02d}+00:00",
                        title=f"problem {k}",
                        problem=f"Problem number {k}: what is {k} * 3?",
                        reference=str(3 * k),
                        tags=[],
                        settings={},
                        build={},
                    )
                )
                for j in range(runs):
                    rid = f"{sid}r{j}"
                    rrows.append(
                        dict(
                            id=rid,
                            session_id=sid,
                            position=j,
                            strategy="beam_search",
                            params={},
                            model_name="bench.gguf",
                            status="done",
                            answer="42",
                            correct=k % 2 == 0,
                            n_events=len(template),
                            n_nodes=nodes,
                        )
                    )
                    for seq, ev in enumerate(template):
                        d = ev.to_dict()
                        d["run_id"] = rid
                        erows.append(dict(run_id=rid, seq=seq, kind=ev.kind, payload=d))
                        if isinstance(ev, NodeAdded):
                            nrows.append(
                                dict(
                                    run_id=rid,
                                    node_id=ev.node_id,
                                    parent_id=ev.parent_id,
                                    role=ev.role,
                                    text=ev.text,
                                    n_tokens=ev.n_tokens,
                                    logprob_sum=ev.logprob_sum,
                                )
                            )
            with store.engine.begin() as conn:
                conn.execute(insert(SessionRow), srows)
                conn.execute(insert(RunRow), rrows)
                conn.execute(insert(EventRow), erows)
                conn.execute(insert(NodeRow), nrows)


def run_store_bench(
    path: str | None = None,
    sessions: int = 1000,
    runs: int = 3,
    nodes: int = 200,
    repeat: int = 5,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Listing sessions and opening one (its runs' events, folded into traces) on a store of
    ``sessions`` x ``runs`` x ``nodes``; medians of ``repeat``."""
    import os
    import statistics
    import tempfile

    from engine.events import fold
    from engine.store import Store

    say = progress or (lambda s: None)
    tmp = None
    if path is None:
        tmp = tempfile.TemporaryDirectory(prefix="ponder-store-bench-")
        path = os.path.join(tmp.name, "bench.db")
    try:
        t0 = time.perf_counter()
        fill_store(path, sessions, runs, nodes)
        fill_s = time.perf_counter() - t0
        size = os.path.getsize(path) + (
            os.path.getsize(path + "-wal") if os.path.exists(path + "-wal") else 0
        )
        say(f"filled {sessions} x {runs} runs x {nodes} nodes in {fill_s:.1f} s ({size / 1e6:.0f} MB)")
        with Store.open(path) as store:
            timings: dict[str, list[float]] = {
                "list_50_s": [],
                "list_all_s": [],
                "open_one_s": [],
                "search_s": [],
            }
            target = f"s{sessions // 2:06d}"
            for _ in range(repeat):
                t = time.perf_counter()
                first = store.list_sessions(limit=50)
                timings["list_50_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                every = store.list_sessions()
                timings["list_all_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                store.list_sessions(search=f"number {sessions // 3}:", correct=True)
                timings["search_s"].append(time.perf_counter() - t)
                t = time.perf_counter()
                s = store.session(target)
                traces = [fold(store.events(r.id)) for r in s.runs]
                timings["open_one_s"].append(time.perf_counter() - t)
            assert len(first) == min(50, sessions) and len(every) == sessions
            assert sum(len(tr.nodes) for tr in traces) == runs * nodes
        out: dict[str, Any] = {
            "sessions": sessions,
            "runs_per_session": runs,
            "nodes_per_run": nodes,
            "events_per_run": len(_synthetic_run("T", nodes, __import__("numpy").random.default_rng(0))),
            "db_mb": round(size / 1e6, 1),
            "fill_s": round(fill_s, 1),
            "repeat": repeat,
        }
        out.update({k: round(statistics.median(v), 4) for k, v in timings.items()})
        return out
    finally:
        if tmp is not None:
            tmp.cleanup()


def format_store_bench(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{r['sessions']} sessions x {r['runs_per_session']} runs x {r['nodes_per_run']} nodes "
            f"({r['events_per_run']} events a run), {r['db_mb']} MB, median of {r['repeat']}",
            f"list newest 50       : {1000 * r['list_50_s']:8.1f} ms",
            f"list all             : {1000 * r['list_all_s']:8.1f} ms",
            f"search + filter      : {1000 * r['search_s']:8.1f} ms",
            f"open one (3 traces)  : {1000 * r['open_one_s']:8.1f} ms",
        ]
    )
