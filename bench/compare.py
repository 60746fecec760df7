"""``ponder bench --compare | --revisions | --sweep``: the run layer's figures on one model in process.

* ``--compare``: the default strategies at a budget on GSM8K problems, side by side against one after
  another (same seeds): wall times, their ratio, the tokens of work and the PRM's share of beam search.
* ``--revisions``: revisions' generated tokens/s against best-of-N's at the same budget, and with
  each attempt continuing the previous one's cells against decoding its whole chat again.
* ``--sweep``: a sweep's tokens/s against the backend's own batched rate.

Each compare is a :class:`~engine.run.request.CompareRequest` run by
:func:`~engine.run.compare.run_compare` on an executor that owns the model
(:func:`~engine.run.opening.in_process`), in the calling thread.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from bench.backend import bench_prompt_tokens, run_batched
from engine.backends.llama_cpp import BackendConfig
from engine.executor import Executor
from engine.problems import get_problem
from engine.run.compare import run_compare
from engine.run.opening import in_process
from engine.run.request import CompareRequest
from engine.search import budget_params, default_strategies
from engine.store import Store
from engine.sweeps import SweepSpec, run_sweep


def _warm_up(executor: Executor, prm: str) -> None:
    """A first small compare: pages the weights in and builds the PRM before any clock starts."""
    run_compare(executor, CompareRequest("What is 2 + 2?", ("best_of_n",), budget=2, prm=prm, max_tokens=8))


def _quiet(_: str) -> None:
    pass


def _default_config(config: BackendConfig | None) -> BackendConfig:
    return config or BackendConfig(n_ctx=16384, n_seq_max=64)


def timed_compare(
    executor: Executor,
    idx: int,
    budget: int,
    prm: str,
    max_tokens: int,
    concurrent: bool,
    strategies: Sequence[str] | None = None,
) -> tuple[float, list[Any]]:
    """The strategies (default: the default ones) on GSM8K problem ``idx`` (seeded by it): (seconds, runs)."""
    p = get_problem("gsm8k", idx)
    request = CompareRequest(
        p.question, tuple(strategies or default_strategies()), budget=budget, prm=prm,
        reference=p.reference, seed=idx, max_tokens=max_tokens, concurrent=concurrent,
    )  # fmt: skip
    t0 = time.perf_counter()
    runs = run_compare(executor, request).runs
    return time.perf_counter() - t0, runs


# --- side by side against one after another ------------------------------------------------------------


def run_compare_bench(
    model_path: str,
    budget: int = 8,
    max_tokens: int = 256,
    problems: Sequence[int] = (0,),
    prm: str = "judge",
    config: BackendConfig | None = None,
    progress: Callable[[str], None] | None = None,
    strategies: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The strategies (default: the default ones; any registered, MCTS and adaptive best-of-N
    among them) at ``budget`` on GSM8K problems, side by side and then one after
    another, same seeds. Reports the wall times, their ratio, the tokens each mode generated (the
    texts can differ a little between the modes: batch composition moves float sums), and the PRM's
    share of beam search's time (measured when it runs alone)."""
    say = progress or _quiet
    out: dict[str, Any] = {"budget": budget, "max_tokens": max_tokens, "prm": prm, "problems": list(problems)}
    out["strategies"] = list(strategies or default_strategies())
    totals = {"side_by_side_s": 0.0, "sequential_s": 0.0}
    tokens = {"side_by_side": 0, "sequential": 0}
    beam = {"prm_s": 0.0, "wall_s": 0.0}
    per_problem = []
    executor = in_process(model_path, _default_config(config))
    try:
        _warm_up(executor, prm)
        for idx in problems:
            row: dict[str, Any] = {"index": idx}
            for mode, concurrent in (("side_by_side", True), ("sequential", False)):
                dt, runs = timed_compare(executor, idx, budget, prm, max_tokens, concurrent, strategies)
                totals[f"{mode}_s"] += dt
                work = sum(r.generated_tokens + r.prm_tokens for r in runs)
                tokens[mode] += work
                row[mode] = {
                    "seconds": round(dt, 3),
                    "tokens": work,
                    "runs": {r.spec.name: round(r.wall_s, 3) for r in runs},
                }
                say(f"gsm8k #{idx} {mode:<12} {dt:7.1f} s  ({work} tokens generated + scored)")
                b = next((r for r in runs if r.spec.name == "beam_search"), None)
                if not concurrent and b is not None:
                    beam["prm_s"] += b.prm_s
                    beam["wall_s"] += b.wall_s
            per_problem.append(row)
        out["model"] = executor.backend.info.path
        out["accelerator"] = executor.backend.info.accelerator
    finally:
        executor.close()
    return _compare_figures(out, totals, tokens, beam, per_problem)


def _compare_figures(
    out: dict[str, Any],
    totals: dict[str, float],
    tokens: dict[str, int],
    beam: dict[str, float],
    per_problem: list[dict[str, Any]],
) -> dict[str, Any]:
    out.update({k: round(v, 3) for k, v in totals.items()})
    out["ratio"] = (
        round(totals["side_by_side_s"] / totals["sequential_s"], 3) if totals["sequential_s"] else None
    )
    out["tokens"] = tokens
    # Time per unit of work, for when the two modes' texts (and so their work) diverge.
    sbs_rate = totals["side_by_side_s"] / max(tokens["side_by_side"], 1)
    seq_rate = totals["sequential_s"] / max(tokens["sequential"], 1)
    out["ratio_per_token"] = round(sbs_rate / seq_rate, 3)
    out["prm_share_beam"] = round(beam["prm_s"] / beam["wall_s"], 3) if beam["wall_s"] else None
    out["per_problem"] = per_problem
    return out


def format_compare_bench(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{', '.join(r.get('strategies') or [])} at budget {r['budget']} per strategy, up to "
            f"{r['max_tokens']} tokens per solution, PRM {r['prm']}, GSM8K problems {r['problems']}, "
            f"{r['accelerator']}",
            f"side by side : {r['side_by_side_s']:8.1f} s  ({r['tokens']['side_by_side']} tokens)",
            f"one by one   : {r['sequential_s']:8.1f} s  ({r['tokens']['sequential']} tokens)",
            f"ratio        : {r['ratio']:.3f}  (per token of work: {r['ratio_per_token']:.3f})",
            f"PRM share of beam search's time: {r['prm_share_beam']:.0%}"
            if r["prm_share_beam"] is not None
            else "PRM share of beam search's time: - (beam search did not run)",
        ]
    )


# --- revisions against best-of-N, with and without reusing cells ---------------------------------------

REVISION_MODES = {
    "best_of_n": ("best_of_n", {}),
    "revisions": ("revisions", {}),
    "revisions_no_reuse": ("revisions", {"reuse": False}),
}


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
    say = progress or _quiet
    tot = {m: {"tokens": 0, "prompt_tokens": 0, "cached_tokens": 0, "seconds": 0.0} for m in REVISION_MODES}
    executor = in_process(model_path, _default_config(config))
    try:
        _warm_up(executor, "arithmetic")
        for idx in problems:
            p = get_problem("gsm8k", idx)
            for mode, (name, over) in REVISION_MODES.items():
                request = CompareRequest(
                    p.question, (name,), budget=budget, prm="arithmetic", seed=idx, max_tokens=max_tokens,
                    overrides={name: over} if over else {},
                )  # fmt: skip
                (run,) = run_compare(executor, request).runs
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
            "model": executor.backend.info.path,
            "accelerator": executor.backend.info.accelerator,
            "budget": budget,
            "max_tokens": max_tokens,
            "problems": list(problems),
            "params": {"revisions": budget_params("revisions", budget)},
        }
    finally:
        executor.close()
    return _revisions_figures(out, tot)


def _revisions_figures(out: dict[str, Any], tot: dict[str, dict[str, Any]]) -> dict[str, Any]:
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
    for mode in REVISION_MODES:
        t = r[mode]
        lines.append(
            f"{mode:<19}: {t['tok_s']:7.1f} tok/s  ({t['tokens']} tokens in {t['seconds']:.1f} s; "
            f"{t['prompt_tokens'] - t['cached_tokens']} prompt tokens decoded, {t['cached_tokens']} reused)"
        )
    lines.append(f"revisions / best-of-N: {r['ratio']:.3f}   reuse speed-up: {r['reuse_speedup']:.3f}")
    return "\n".join(lines)


# --- a sweep's throughput against the backend's --------------------------------------------------------


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
    PRM, into a throw-away database) over its wall time; ``ratio`` the second over the first. The
    backend's rate is the best of two runs before the sweep and one after (``batched_runs``)."""
    say = progress or _quiet
    spec = SweepSpec(
        "arith", limit=problems, strategies=tuple(strategies), budgets=tuple(budgets), prm="arithmetic",
        max_tokens=max_tokens,
    )  # fmt: skip
    executor = in_process(model_path, _default_config(config))
    try:
        backend = executor.backend
        prompt = bench_prompt_tokens(backend)
        run_batched(backend, prompt, 2, 8)  # warm-up
        # The backend's rate before and after the sweep, the best of them: this VM's speed drifts
        # by 10-20% within minutes, and drift only slows a run (one slow baseline flatters the ratio)
        base = [run_batched(backend, prompt, n, max_tokens).decode_tok_s for _ in range(2)]
        say(f"batched, {n} sequences: {max(base):.1f} tok/s")
        sweep = _timed_sweep(executor, spec, batch, say)
        base.append(run_batched(backend, prompt, n, max_tokens).decode_tok_s)
        say(f"batched again: {base[-1]:.1f} tok/s")
        out: dict[str, Any] = {
            "model": backend.info.path,
            "accelerator": backend.info.accelerator,
            "n": n,
            "max_tokens": max_tokens,
            "problems": problems,
            "strategies": list(strategies),
            "budgets": list(budgets),
            "batch": batch,
            "batched_tok_s": round(max(base), 2),
            "batched_runs": [round(x, 2) for x in base],
        }
    finally:
        executor.close()
    out.update(sweep)
    out["ratio"] = round(out["sweep_tok_s"] / out["batched_tok_s"], 3) if out["batched_tok_s"] else None
    return out


def _timed_sweep(
    executor: Executor, spec: SweepSpec, batch: int | None, say: Callable[[str], None]
) -> dict[str, Any]:
    """``spec`` swept into a throw-away database: its cells, tokens and tokens per second."""
    last = {"done": -1}

    def on_progress(p: Any) -> None:
        if p.done != last["done"]:
            last["done"] = p.done
            say(f"sweep: {p.done}/{p.total} cells, {p.elapsed_s:.0f} s")

    with tempfile.TemporaryDirectory() as tmp, Store.open(Path(tmp) / "bench.db") as store:
        t0 = time.perf_counter()
        res = run_sweep(executor, store, spec, on_progress=on_progress, batch=batch)
        wall = time.perf_counter() - t0
        runs = [r for r in store.sweep_cells(res.sweep_id).values() if r is not None]
    generated = sum(r.generated_tokens for r in runs)
    scored = sum(r.prm_tokens for r in runs)
    return {
        "prompt_tokens": sum(r.prompt_tokens for r in runs),  # evaluated
        "cached_tokens": sum(r.cached_tokens for r in runs),  # taken from a cache
        "cells": len(runs),
        "failed": res.failed,
        "generated_tokens": generated,
        "prm_tokens": scored,
        "sweep_seconds": round(wall, 2),
        "sweep_tok_s": round((generated + scored) / wall, 2) if wall > 0 else 0.0,
    }


def format_sweep_bench(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            f"{r['problems']} arithmetic-ladder problems x {', '.join(r['strategies'])} x budgets "
            f"{','.join(map(str, r['budgets']))}, {r['max_tokens']} tokens, arithmetic PRM, "
            f"{r['accelerator']}",
            f"batched ({r['n']} sequences): {r['batched_tok_s']:7.1f} tok/s (best of "
            f"{', '.join(f'{x:.1f}' for x in r['batched_runs'])})",
            f"sweep ({r['cells']} cells, {r['failed']} failed): {r['sweep_tok_s']:7.1f} tok/s "
            f"({r['generated_tokens']} generated + {r['prm_tokens']} scored tokens in "
            f"{r['sweep_seconds']:.1f} s)",
            f"ratio: {r['ratio']:.3f}",
        ]
    )
