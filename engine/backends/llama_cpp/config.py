"""How a model is loaded and its context sized (:class:`BackendConfig`), and what a run records
about the model (:class:`ModelInfo`). Every setting is checked before it reaches llama.cpp."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import llama_cpp

from engine.errors import InvalidRequestError

FINISH_EOS = "eos"
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"

_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8}
_FLASH = {"auto": -1, "off": 0, "on": 1}


def max_parallel_sequences() -> int:
    """The most sequences one llama.cpp context can decode at once (this build's LLAMA_MAX_SEQ)."""
    return int(llama_cpp.llama_max_parallel_sequences())


def default_threads() -> int:
    """Physical cores are what llama.cpp's matmuls scale with; without a way to count them here,
    use the logical count capped at 8 (beyond that, hyper-threads slow decoding down)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 4)
    return max(1, min(n, 8))


STREAMS_MIN_SAMPLES = 4  # auto: a stream per sequence for one prompt sampled at least this many ways,
STREAMS_MIN_TOKENS = 512  # each up to at least this many tokens (docs/batching.md, "Which layout")


def auto_kv_layout(samples: int, max_tokens: int, prompt_tokens: int) -> str:
    """The KV layout ``auto`` picks for one prompt of at most ``prompt_tokens`` tokens sampled
    ``samples`` ways up to ``max_tokens`` each, from ``ponder bench`` on the embedded model
    (docs/batching.md). A stream per sequence pays where the samples are many and long (a query
    attends over its own cells, not every sample's: at 16 samples of 512 tokens Ponder ran 1.14x its
    unified rate, llama-batched-bench 1.29x), and only where the prompt is not the bulk of it: every
    stream holds a copy of it. Anything that runs several prompts or forks and prunes mid-text (a
    compare, a sweep, the app) keeps one unified cache: there llama.cpp decodes a batch in one pass
    per run of consecutive sequence ids, and a sweep ran 0.64 of the backend's rate with streams
    against 0.90 unified."""
    if samples >= STREAMS_MIN_SAMPLES and max_tokens >= STREAMS_MIN_TOKENS and prompt_tokens <= max_tokens:
        return "streams"
    return "unified"


@dataclass(frozen=True)
class BackendConfig:
    """How to load a model and size its context. Checked before anything reaches llama.cpp."""

    n_ctx: int = 4096
    n_batch: int = 512
    n_ubatch: int | None = None  # None: n_batch
    n_seq_max: int = 64
    n_threads: int | None = None
    n_threads_batch: int | None = None
    n_gpu_layers: int = 0  # -1: all layers
    flash_attn: str = "auto"  # auto | on | off
    type_k: str = "f16"
    type_v: str = "f16"
    use_mmap: bool = True
    # The KV cache's layout. True: one unified buffer for every sequence (a fork tags the parent's
    # cells, so children share the prompt; any [p0, p1) copy works; each query attends over every
    # cell up to the highest in use). False: one stream per sequence (n_ctx / n_seq_max cells each;
    # a query attends over its own stream only; a fork copies the parent's whole stream and a
    # branch can only adopt another's cells from position 0). See docs/batching.md.
    kv_unified: bool = True

    def __post_init__(self) -> None:
        max_seq = max_parallel_sequences()
        checks = [
            (self.n_ctx >= 64, f"n_ctx must be at least 64 (got {self.n_ctx})"),
            (self.n_batch >= 1, "n_batch must be >= 1"),
            (
                self.n_ubatch is None or 1 <= self.n_ubatch <= self.n_batch,
                "n_ubatch must be between 1 and n_batch",
            ),
            (1 <= self.n_seq_max <= max_seq, f"n_seq_max must be between 1 and {max_seq}"),
            # llama.cpp aborts the process when a batch cannot hold one token per sequence.
            (
                self.n_seq_max <= self.n_batch,
                f"n_seq_max ({self.n_seq_max}) must not exceed n_batch ({self.n_batch})",
            ),
            (self.n_threads is None or self.n_threads >= 1, "n_threads must be >= 1"),
            (self.n_threads_batch is None or self.n_threads_batch >= 1, "n_threads_batch must be >= 1"),
            (self.n_gpu_layers >= -1, "n_gpu_layers must be -1 (all) or >= 0"),
            (self.flash_attn in _FLASH, f"flash_attn must be one of {sorted(_FLASH)}"),
            (self.type_k in _KV_TYPES, f"type_k must be one of {sorted(_KV_TYPES)}"),
            (self.type_v in _KV_TYPES, f"type_v must be one of {sorted(_KV_TYPES)}"),
            (
                self.kv_unified or self.n_ctx // self.n_seq_max >= 64,
                f"with a stream per sequence each of the {self.n_seq_max} sequences gets n_ctx / n_seq_max "
                f"= {self.n_ctx // self.n_seq_max} cells; give n_ctx at least {64 * self.n_seq_max}",
            ),
            (
                self.type_v in ("f16", "f32") or self.flash_attn != "off",
                "a quantized V cache needs flash attention (flash_attn 'auto' or 'on')",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise InvalidRequestError(f"Invalid backend configuration: {msg}")

    @property
    def threads(self) -> int:
        return self.n_threads or default_threads()

    @property
    def threads_batch(self) -> int:
        return self.n_threads_batch or self.threads


@dataclass
class ModelInfo:
    """What a run records about the model it used."""

    path: str
    name: str
    architecture: str
    n_params: int
    n_layer: int
    n_ctx_train: int
    n_vocab: int
    quantization: str
    file_size: int
    sha256_1mb: str
    description: str
    has_chat_template: bool
    n_gpu_layers_requested: int
    n_layers_offloaded: int
    accelerator: str

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def config_dict(config: BackendConfig) -> dict[str, Any]:
    """What a saved session records of the context it ran in (a rerun loads the same)."""
    return {
        "n_ctx": config.n_ctx,
        "n_seq_max": config.n_seq_max,
        "n_batch": config.n_batch,
        "n_ubatch": config.n_ubatch,
        "n_gpu_layers": config.n_gpu_layers,
        "threads": config.threads,
        "flash_attn": config.flash_attn,
        "kv_layout": "unified" if config.kv_unified else "streams",
    }
