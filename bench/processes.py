"""``ponder bench --processes P``: do P Ponder processes on one machine share it fairly?

Each copy is a separate process that loads the model, warms up, says it is ready and waits. The
parent then gives every copy the same time window (wall clock), and each generates N branches of
the bench prompt (EOS banned, as ``ponder bench``) over and over until the window closes, counting
its tokens. Fixed windows, not fixed work: a copy that starved the other would finish its work
early and hide it; in a shared window starvation shows as a low rate.

Phases, in one run: one copy alone with CPU sharing off (today's engine), one copy alone with it
on (``solo_tok_s``), then P copies at once (``each_tok_s``). ``fair_ratio`` = the slowest copy's
rate / (solo / P): 1.0 is a perfect split of the solo throughput. ``solo_cost`` = solo with sharing /
solo without. With ``unshared=True`` the P copies also run once with sharing off, for the figure
the lock exists to avoid.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.backend import bench_prompt_tokens
from engine import children
from engine.backends.llama_cpp import Backend, BackendConfig
from engine.cpu_share import cpu_turn
from engine.errors import PonderError
from engine.sampling import SamplingParams


def _child(model: str, n: int, max_tokens: int, threads: int | None) -> None:
    """Runs in a copy: load, warm up, say ready, wait for the window, generate in it, report."""
    config = BackendConfig(n_ctx=max(1024, 512 + n * max_tokens + 64), n_seq_max=n + 1, n_threads=threads)
    backend = Backend(model, config)
    prompt = bench_prompt_tokens(backend)
    params = SamplingParams(temperature=0.8, top_p=1.0, seed=0, max_tokens=max_tokens, ignore_eos=True)
    root = backend.root(prompt, params)
    backend.prefill([root])

    def burst(deadline: float) -> int:
        kids = backend.fork(root, n, params)
        try:
            while time.time() < deadline and not all(k.finished for k in kids):
                backend.step([k for k in kids if not k.finished])
            return sum(k.n_generated for k in kids)
        finally:
            for k in kids:
                backend.free(k)

    burst(time.time() + 1.0)  # page the weights in
    print("ready", flush=True)
    start, end = (float(x) for x in sys.stdin.readline().split())
    while time.time() < start:
        time.sleep(0.001)
    tokens = 0
    while time.time() < end:
        tokens += burst(end)
    wall = time.time() - start
    turn = cpu_turn()
    print(
        json.dumps({"tokens": tokens, "wall_s": wall, "waited_s": turn.waited_s, "turns": turn.turns}),
        flush=True,
    )
    backend.close()


def _phase(
    model: str, copies: int, share: bool, n: int, max_tokens: int, seconds: float, threads: int | None
) -> list[dict[str, Any]]:
    env = dict(os.environ, PONDER_CPU_SHARE="1" if share else "0")
    cmd = [sys.executable, "-m", "bench.processes", model, str(n), str(max_tokens), str(threads or 0)]
    procs = [
        children.start(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
        )
        for _ in range(copies)
    ]
    try:
        for p in procs:
            line = p.stdout.readline() if p.stdout else ""
            if line.strip() != "ready":
                err = (p.stderr.read() if p.stderr else "")[-2000:]
                raise PonderError(f"A bench copy did not start: {err.strip() or 'no output'}")
        start = time.time() + 0.3
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(f"{start} {start + seconds}\n")
            p.stdin.flush()
        out = []
        for p in procs:
            o, e = p.communicate(timeout=seconds * 20 + 120)
            lines = [x for x in o.splitlines() if x.startswith("{")]
            if p.returncode != 0 or not lines:
                raise PonderError(f"A bench copy failed (exit {p.returncode}): {e.strip()[-2000:]}")
            r = json.loads(lines[-1])
            r["tok_s"] = r["tokens"] / r["wall_s"] if r["wall_s"] > 0 else 0.0
            out.append(r)
        return out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def run_processes_bench(
    model: str,
    processes: int = 2,
    n: int = 8,
    max_tokens: int = 64,
    seconds: float = 15.0,
    threads: int | None = None,
    unshared: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    if processes < 2:
        raise PonderError("--processes needs at least 2 copies to compare with one.")
    say = progress or (lambda s: None)
    say(f"alone, sharing off: {seconds:.0f} s")
    base = _phase(model, 1, False, n, max_tokens, seconds, threads)[0]
    say(f"  {base['tok_s']:.1f} tok/s")
    say(f"alone, sharing on: {seconds:.0f} s")
    solo = _phase(model, 1, True, n, max_tokens, seconds, threads)[0]
    say(f"  {solo['tok_s']:.1f} tok/s")
    say(f"{processes} copies at once, sharing on: {seconds:.0f} s")
    each = _phase(model, processes, True, n, max_tokens, seconds, threads)
    say("  " + ", ".join(f"{r['tok_s']:.1f}" for r in each) + " tok/s")
    result: dict[str, Any] = {
        "model": model,
        "processes": processes,
        "n": n,
        "max_tokens": max_tokens,
        "seconds": seconds,
        "threads": threads,
        "unshared_solo_tok_s": round(base["tok_s"], 2),
        "solo_tok_s": round(solo["tok_s"], 2),
        "solo_cost": round(solo["tok_s"] / base["tok_s"], 3) if base["tok_s"] else None,
        "each_tok_s": [round(r["tok_s"], 2) for r in each],
        "each_waited_s": [round(r["waited_s"], 2) for r in each],
        "fair_ratio": round(min(r["tok_s"] for r in each) / (solo["tok_s"] / processes), 3)
        if solo["tok_s"]
        else None,
        "total_ratio": round(sum(r["tok_s"] for r in each) / solo["tok_s"], 3) if solo["tok_s"] else None,
    }
    if unshared:
        say(f"{processes} copies at once, sharing off: {seconds:.0f} s")
        raw = _phase(model, processes, False, n, max_tokens, seconds, threads)
        say("  " + ", ".join(f"{r['tok_s']:.1f}" for r in raw) + " tok/s")
        result["unshared_each_tok_s"] = [round(r["tok_s"], 2) for r in raw]
        result["unshared_fair_ratio"] = (
            round(min(r["tok_s"] for r in raw) / (base["tok_s"] / processes), 3) if base["tok_s"] else None
        )
    return result


def format_processes_bench(r: dict[str, Any]) -> str:
    lines = [
        f"{r['processes']} Ponder processes on one machine: N={r['n']} branches each, "
        f"{r['seconds']:.0f} s windows",
        f"  alone, sharing off   {r['unshared_solo_tok_s']:8.1f} tok/s",
        f"  alone, sharing on    {r['solo_tok_s']:8.1f} tok/s  (x{r['solo_cost']} of sharing off)",
        "  at once, sharing on  " + ", ".join(f"{x:.1f}" for x in r["each_tok_s"]) + " tok/s",
        f"  fair_ratio {r['fair_ratio']} (slowest copy / (solo / {r['processes']}); 1.0 is a fair split)",
    ]
    if "unshared_each_tok_s" in r:
        lines.append(
            "  at once, sharing off "
            + ", ".join(f"{x:.1f}" for x in r["unshared_each_tok_s"])
            + f" tok/s (fair_ratio {r['unshared_fair_ratio']})"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # a bench copy
    _model, _n, _tokens, _threads = sys.argv[1:5]
    _child(_model, int(_n), int(_tokens), int(_threads) or None)
