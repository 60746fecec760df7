"""``ponder bench --limit``: the in-process batched backend against llama.cpp's own limit.

``llama-batched-bench`` (built by ``make server`` from the same vendored llama.cpp as llama-server and
the llama-cpp-python wheel) decodes B sequences that share one prompt (``-pps``) with random tokens and
no sampling: the most tokens/s this llama.cpp gets out of the model for that batch. Ponder's side is
:func:`bench.backend.run_batched` on the same model, threads, batch sizes, prompt length and tokens per
sequence, in one context of each KV layout:

* ``unified``: one KV buffer for every sequence (Ponder's default; a fork shares the prompt's cells);
* ``streams``: one stream per sequence (``kv_unified = false``; a fork copies the parent's stream).

Each row gives Ponder's decode tokens/s (wall time of the generation, sampling included), the same
without sampling (the time inside ``llama_decode`` alone: what the tool measures), the engine's, and
their ratios; ``sample_share`` is the part of Ponder's time spent sampling, which the tool does not do.
With ``repeat`` > 1 the two sides run in interleaved rounds and each figure is a side's best round
(``ponder_runs`` and ``engine_runs`` keep every round's).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from bench.backend import bench_prompt_tokens, run_batched
from engine.backends.llama_cpp import Backend, BackendConfig
from engine.errors import PonderError

LAYOUTS = ("unified", "streams")
PAD = 256  # cells of slack per sequence (llama.cpp pads a stream's size)


def _quiet(_: str) -> None:
    pass


def context_for(layout: str, n: int, prompt: int, tokens: int) -> int:
    """Cells for ``n`` sequences sharing a ``prompt``-token prompt, each generating ``tokens``: the
    same for both sides. One stream per sequence needs the prompt in every stream."""
    per = prompt + tokens + PAD
    return (n + 1) * per if layout == "streams" else prompt + (n + 1) * (tokens + PAD)


def engine_rows(
    binary: str,
    model: str,
    layout: str,
    ns: Sequence[int],
    prompt: int,
    tokens: int,
    config: BackendConfig,
    timeout: float = 1800.0,
) -> dict[int, float]:
    """``llama-batched-bench`` for every B in ``ns`` in one process: B -> decode tokens/s (S_TG)."""
    ctx = context_for(layout, max(ns), prompt, tokens)
    cmd = [
        binary, "-m", model, "-c", str(ctx), "-b", str(config.n_batch),
        "-ub", str(config.n_ubatch or config.n_batch), "-npp", str(prompt), "-ntg", str(tokens),
        "-npl", ",".join(str(n) for n in ns), "-pps", "-t", str(config.threads),
        "-tb", str(config.threads_batch), "-ngl", str(config.n_gpu_layers), "-fa", config.flash_attn,
        "--output-format", "jsonl", "-kvu" if layout == "unified" else "-no-kvu",
    ]  # fmt: skip
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PonderError(f"llama-batched-bench did not finish in {timeout:.0f} s") from None
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise PonderError(f"llama-batched-bench failed (status {r.returncode}): {' / '.join(tail)}")
    out: dict[int, float] = {}
    for line in r.stdout.splitlines():
        line = line.strip()
        if line.startswith("{"):
            row = json.loads(line)
            out[int(row["pl"])] = float(row["speed_tg"])
    missing = [n for n in ns if n not in out]
    if missing:
        raise PonderError(f"llama-batched-bench gave no row for B = {missing} (context {ctx})")
    return out


def ponder_rows(
    model: str,
    layout: str,
    ns: Sequence[int],
    prompt_tokens: list[int],
    tokens: int,
    config: BackendConfig,
) -> dict[int, dict[str, float]]:
    """The batched backend in a context of ``layout``, one run per B: B -> {tok_s, decode_tok_s,
    sample_share}."""
    ctx = context_for(layout, max(ns), len(prompt_tokens), tokens)
    cfg = BackendConfig(
        n_ctx=ctx,
        n_batch=config.n_batch,
        n_ubatch=config.n_ubatch,
        n_seq_max=max(ns) + 1,
        n_threads=config.n_threads,
        n_threads_batch=config.n_threads_batch,
        n_gpu_layers=config.n_gpu_layers,
        flash_attn=config.flash_attn,
        kv_unified=layout == "unified",
    )
    backend = Backend(model, cfg)
    out: dict[int, dict[str, float]] = {}
    try:
        run_batched(backend, prompt_tokens, 2, 8)  # page the weights in
        for n in ns:
            row = run_batched(backend, prompt_tokens, n, tokens)
            out[n] = {
                "tok_s": row.decode_tok_s,
                # the first token of each sequence comes from the prompt's logits: the tool, too,
                # decodes tokens - 1 batches after its prompt (and one more it does not count)
                "decode_tok_s": row.tokens / row.decode_s if row.decode_s > 0 else 0.0,
                "sample_share": row.sample_s / row.seconds if row.seconds > 0 else 0.0,
            }
    finally:
        backend.close()
    return out


def run_limit(
    model: str,
    ns: Sequence[int] = (1, 4, 8, 16),
    tokens: int = 128,
    config: BackendConfig | None = None,
    progress: Callable[[str], None] | None = None,
    repeat: int = 1,
    layouts: Sequence[str] = LAYOUTS,
) -> dict[str, Any]:
    """Both sides, both layouts, one run: rows of {n, layout, ponder_tok_s, engine_tok_s, ratio, ...}
    and each B's ratio against the engine at its best layout."""
    from engine.backends.server.build import tool_binary

    say = progress or _quiet
    config = config or BackendConfig()
    binary = str(tool_binary("llama-batched-bench"))
    probe = Backend(model, BackendConfig(n_ctx=1024, n_seq_max=1, n_threads=config.n_threads))
    try:
        prompt = bench_prompt_tokens(probe)
        info = probe.info
    finally:
        probe.close()
    # Rounds, each running both sides in both layouts, the order turned round every other round; a
    # side's figure is its best round. This VM's speed drifts by 10-20% within minutes, and drift
    # only ever slows a run: the best of interleaved rounds is each side at its least disturbed.
    measure: dict[str, Callable[[str], dict[int, Any]]] = {
        "llama-batched-bench": lambda layout: engine_rows(
            binary, model, layout, ns, len(prompt), tokens, config
        ),
        "Ponder": lambda layout: ponder_rows(model, layout, ns, prompt, tokens, config),
    }
    runs: dict[str, dict[tuple[str, int], list[Any]]] = {who: {} for who in measure}
    for k in range(repeat):
        flip = k % 2 == 1
        for layout in reversed(layouts) if flip else layouts:
            for who in reversed(list(measure)) if flip else list(measure):
                say(f"round {k + 1}/{repeat}, {layout}: {who}")
                got = measure[who](layout)
                for n in ns:
                    runs[who].setdefault((layout, n), []).append(got[n])
    engine_runs, ponder_runs = runs["llama-batched-bench"], runs["Ponder"]
    rows: list[dict[str, Any]] = []
    for layout in layouts:
        for n in ns:
            e_all = engine_runs[(layout, n)]
            p_all = ponder_runs[(layout, n)]
            e = max(e_all)
            p = max(p_all, key=lambda r: r["tok_s"])
            rows.append(
                {
                    "n": n,
                    "layout": layout,
                    "ponder_tok_s": round(p["tok_s"], 3),
                    "engine_tok_s": round(e, 3),
                    "ratio": round(p["tok_s"] / e, 3) if e else None,
                    "ponder_decode_tok_s": round(p["decode_tok_s"], 2),
                    "decode_ratio": round(p["decode_tok_s"] / e, 3) if e else None,
                    "sample_share": round(p["sample_share"], 3),
                    "ponder_runs": [round(r["tok_s"], 1) for r in p_all],
                    "engine_runs": [round(x, 1) for x in e_all],
                }
            )
            say(f"  B={n:<3} {layout:<8} Ponder {p['tok_s']:7.1f} tok/s, engine {e:7.1f} tok/s")
    best: dict[str, Any] = {}
    for n in ns:
        mine = [r for r in rows if r["n"] == n]
        top_engine = max(mine, key=lambda r: r["engine_tok_s"])
        top_ponder = max(mine, key=lambda r: r["ponder_tok_s"])
        best[str(n)] = {
            "engine_layout": top_engine["layout"],
            "ponder_layout": top_ponder["layout"],
            "ratio": round(top_ponder["ponder_tok_s"] / top_engine["engine_tok_s"], 3),
        }
    return {
        "model": info.path,
        "model_name": info.name,
        "accelerator": info.accelerator,
        "threads": config.threads,
        "n_gpu_layers": config.n_gpu_layers,
        "prompt_tokens": len(prompt),
        "tokens": tokens,
        "repeat": repeat,
        "engine": binary,
        "rows": rows,
        "best": best,
    }


def format_limit(result: dict[str, Any]) -> str:
    lines = [
        f"model: {result['model_name']}, {result['accelerator']}, {result['threads']} threads; a "
        f"{result['prompt_tokens']}-token prompt shared by B sequences of {result['tokens']} tokens",
        "engine: llama-batched-bench from the same llama.cpp (random tokens, no sampling); each side's "
        f"best of {result['repeat']} interleaved rounds",
        "",
        f"{'B':>3}  {'layout':<8} {'Ponder tok/s':>12} {'engine tok/s':>12} {'ratio':>6}"
        f"  {'w/o sampling':>12} {'sampling':>8}",
    ]
    for r in result["rows"]:
        lines.append(
            f"{r['n']:>3}  {r['layout']:<8} {r['ponder_tok_s']:>12.1f} {r['engine_tok_s']:>12.1f} "
            f"{r['ratio']:>5.2f}x  {r['ponder_decode_tok_s']:>12.1f} {100 * r['sample_share']:>7.1f}%"
        )
    lines.append("")
    for n, b in result["best"].items():
        lines.append(
            f"B={n}: Ponder at its best ({b['ponder_layout']}) / the engine at its best "
            f"({b['engine_layout']}) = {b['ratio']:.2f}x"
        )
    return "\n".join(lines)
