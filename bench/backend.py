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
    decode_s: float = 0.0  # of ``seconds``: inside llama_decode (batched only)
    sample_s: float = 0.0  # of ``seconds``: sampling (batched only)

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
    d0, s0 = backend.stats.decode_s, backend.stats.sample_s
    t0 = time.perf_counter()
    backend.generate(kids)
    dt = time.perf_counter() - t0
    tokens = sum(k.n_generated for k in kids)
    for k in kids:
        backend.free(k)
    decode_s, sample_s = backend.stats.decode_s - d0, backend.stats.sample_s - s0
    return BenchRow("batched", n, tokens, dt, decode_s=decode_s, sample_s=sample_s)


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
