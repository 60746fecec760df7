"""The batched llama.cpp backend: one model, one context, many branches in one decode.

How it works (see ../shared/notes/llama-cpp-python-0.3.36.md for the API facts):

* One context with ``n_seq_max`` sequences and a **unified** KV cache. Each :class:`Branch` owns one
  sequence id. A branch holds its full token list; ``n_past`` of them are in the KV cache, the rest
  are *pending* and go into the next decode.
* A prompt is decoded once in its branch; :meth:`Backend.fork` tags the parent's cells for each child
  with ``llama_memory_seq_cp`` (metadata only under ``kv_unified``), so N children share the prompt.
  When the parent's logits row is still valid, children sample their first token straight from it
  (as llama.cpp's ``examples/parallel`` does); otherwise each child re-decodes only the tokens the
  parent had not decoded yet (usually one).
* :meth:`Backend.step` puts the pending tokens of **every** live branch into one ``llama_decode``,
  then samples each branch with its own sampler chain (its own seed) and records the logprob of the
  sampled token from the same logits rows.
* :meth:`Backend.free` removes a branch's sequence from the cache; a cell is released when no
  sequence references it any more, so pruning hundreds of branches never leaks cells.

Everything that would make llama.cpp abort the process (n_seq_max > n_batch, a sequence id out of
range, sampling a row without logits, a position past the context) is checked here first. One thread
owns the context: every public method checks it is called from the thread that created the backend.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from engine import llama_lib
from engine.errors import (
    Cancelled,
    DecodeError,
    InvalidRequestError,
    KVCacheFullError,
    ModelLoadError,
    PromptTooLongError,
    TooManyBranchesError,
    UnsupportedModelError,
    WrongThreadError,
)
from engine.fastsample import logsumexp_rows, sample_rows
from engine.gguf_info import GGUFInfo, file_identity, read_gguf
from engine.sampling import SamplingParams

log = logging.getLogger(__name__)

FINISH_EOS = "eos"
FINISH_STOP = "stop"
FINISH_LENGTH = "length"
FINISH_CANCELLED = "cancelled"

_KV_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8}
_FLASH = {"auto": -1, "off": 0, "on": 1}


def default_threads() -> int:
    """Physical cores are what llama.cpp's matmuls scale with; without a way to count them here,
    use the logical count capped at 8 (beyond that, hyper-threads slow decoding down)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 4)
    return max(1, min(n, 8))


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

    def __post_init__(self) -> None:
        max_seq = int(llama_cpp.llama_max_parallel_sequences())
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


@dataclass(eq=False)  # identity: two branches with the same text are still two sequences
class Branch:
    """One line of text growing in one KV sequence. Created by :meth:`Backend.root` or
    :meth:`Backend.fork`; read its ``text``, ``tokens``, ``logprobs`` and ``finish_reason``."""

    id: int
    seq: int
    params: SamplingParams
    tokens: list[int]
    n_past: int
    gen_start: int  # index in tokens where this branch's own generation began
    parent: int | None = None
    finish_reason: str | None = None
    logprobs: list[float] = field(default_factory=list)
    _text_parts: list[str] = field(default_factory=list, repr=False)
    _text_len: int = 0
    _decoder: Any = field(default=None, repr=False)
    _sampler: Any = field(default=None, repr=False)  # llama.cpp sampler chain, or None when
    _rng: Any = field(default=None, repr=False)  # ... the plain chain samples in numpy (fastsample)
    _logits: tuple[int, int, int] | None = field(default=None, repr=False)  # (epoch, batch idx, out idx)
    freed: bool = False

    @property
    def generated(self) -> list[int]:
        """The tokens this branch generated itself (after its fork point)."""
        return self.tokens[self.gen_start :]

    @property
    def n_generated(self) -> int:
        return len(self.tokens) - self.gen_start

    @property
    def text(self) -> str:
        """The generated text (stop strings included; whole tokens, so text and KV agree)."""
        if len(self._text_parts) > 1:
            self._text_parts[:] = ["".join(self._text_parts)]
        return self._text_parts[0] if self._text_parts else ""

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def pending(self) -> int:
        return len(self.tokens) - self.n_past


def plain_chain(p: SamplingParams) -> bool:
    """Temperature sampling with no truncation: the search-and-learn default, sampled in numpy."""
    return not p.greedy and p.top_k == 0 and p.top_p >= 1.0 and p.min_p == 0.0


@dataclass(frozen=True)
class TokenEvent:
    """One sampled token of one branch, as :meth:`Backend.step` reports it."""

    branch: Branch
    token: int
    piece: str
    logprob: float


def _common_prefix(a: list[int], b: list[int], limit: int) -> int:
    """Length of the common prefix of ``a`` and ``b`` within ``limit`` (slices compare in C)."""
    if a[:limit] == b[:limit]:
        return limit
    lo, hi = 0, limit - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


@dataclass
class StepStats:
    decode_calls: int = 0
    tokens_decoded: int = 0
    tokens_sampled: int = 0
    tokens_adopted: int = 0  # pending tokens whose KV was shared from another branch, not decoded
    decode_s: float = 0.0
    sample_s: float = 0.0


class Backend:
    """A loaded GGUF with one batched context. Create it in the thread that will use it."""

    def __init__(self, model_path: str | os.PathLike[str], config: BackendConfig | None = None) -> None:
        self._owner = threading.get_ident()
        self.config = config or BackendConfig()
        self._model = None
        self._ctx = None
        self._batch = None
        self._closed = False
        self.gguf: GGUFInfo = read_gguf(model_path)  # typed errors for missing/non-GGUF/truncated
        self.path = self.gguf.path
        llama_lib.ensure_init()
        self._load_model()
        try:
            self._check_model()
            self._create_context()
        except BaseException:
            self.close()
            raise
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ctx))
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.config.n_batch, 0, 1)
        self._free_seqs = list(range(self.config.n_seq_max - 1, -1, -1))  # pop() gives 0 first
        self._branches: dict[int, Branch] = {}
        self._next_id = 0
        self._epoch = 0
        self._pieces: dict[int, bytes] = {}
        self._eog: list[int] | None = None
        self.stats = StepStats()
        self.template_warning: str | None = None
        self.chat_template: str | None = self._read_chat_template()
        ident = file_identity(self.path)
        self.info = ModelInfo(
            path=self.path,
            name=self.gguf.name,
            architecture=self.gguf.architecture,
            n_params=int(llama_cpp.llama_model_n_params(self._model)),
            n_layer=int(llama_cpp.llama_model_n_layer(self._model)),
            n_ctx_train=int(llama_cpp.llama_model_n_ctx_train(self._model)),
            n_vocab=self.n_vocab,
            quantization=self.gguf.quantization,
            file_size=ident["size"],
            sha256_1mb=ident["sha256_1mb"],
            description=self._model_desc(),
            has_chat_template=self.chat_template is not None,
            n_gpu_layers_requested=self.config.n_gpu_layers,
            n_layers_offloaded=self._offloaded,
            accelerator=llama_lib.build_info().accelerator,
        )

    # --- loading ------------------------------------------------------------------------------------

    def _load_model(self) -> None:
        mp = llama_cpp.llama_model_default_params()
        mp.n_gpu_layers = self.config.n_gpu_layers
        mp.use_mmap = self.config.use_mmap
        mark = llama_lib.log_mark()
        model = llama_cpp.llama_model_load_from_file(self.path.encode("utf-8"), mp)
        logged = llama_lib.log_since(mark)
        if not model:
            why = llama_lib.errors_since(mark) or "llama.cpp could not load it"
            if "unknown model architecture" in why:
                raise UnsupportedModelError(
                    self.path,
                    f"this llama.cpp build does not know the architecture '{self.gguf.architecture}' ({why})",
                )
            raise ModelLoadError(self.path, why)
        self._model = model
        self._offloaded = 0
        for _lvl, msg in logged:
            if "offloaded" in msg and "layers to GPU" in msg:
                try:
                    self._offloaded = int(msg.split("offloaded", 1)[1].split("/", 1)[0])
                except ValueError:
                    pass

    def _check_model(self) -> None:
        m = self._model
        if llama_cpp.llama_model_is_recurrent(m) or llama_cpp.llama_model_is_hybrid(m):
            raise UnsupportedModelError(
                self.path,
                f"'{self.gguf.architecture}' is a recurrent/hybrid model; Ponder forks branches "
                "mid-text, which needs a pure-attention model",
            )
        if llama_cpp.llama_model_has_encoder(m):
            raise UnsupportedModelError(self.path, "encoder-decoder models are not supported")
        if not llama_cpp.llama_model_has_decoder(m):
            raise UnsupportedModelError(self.path, "this is not a text-generation (decoder) model")

    def _create_context(self) -> None:
        c = self.config
        cp = llama_cpp.llama_context_default_params()
        cp.n_ctx = c.n_ctx
        cp.n_batch = c.n_batch
        cp.n_ubatch = c.n_ubatch or c.n_batch
        cp.n_seq_max = c.n_seq_max
        cp.n_threads = c.threads
        cp.n_threads_batch = c.threads_batch
        cp.kv_unified = True  # seq_cp is metadata-only and any [p0, p1) fork works
        cp.swa_full = True  # sliding-window models keep every position, so mid-text forks work
        cp.flash_attn_type = _FLASH[c.flash_attn]
        cp.type_k = _KV_TYPES[c.type_k]
        cp.type_v = _KV_TYPES[c.type_v]
        cp.no_perf = False
        mark = llama_lib.log_mark()
        ctx = llama_cpp.llama_init_from_model(self._model, cp)
        if not ctx:
            why = llama_lib.errors_since(mark) or "llama.cpp could not create the context"
            raise ModelLoadError(self.path, f"cannot create a context of {c.n_ctx} tokens: {why}")
        self._ctx = ctx

    def _model_desc(self) -> str:
        buf = ctypes.create_string_buffer(256)
        llama_cpp.llama_model_desc(self._model, buf, 256)
        return buf.value.decode(errors="replace")

    def _read_chat_template(self) -> str | None:
        t = llama_cpp.llama_model_chat_template(self._model, None)
        return t.decode("utf-8", errors="replace") if t else None

    # --- lifetime -----------------------------------------------------------------------------------

    def _check_thread(self) -> None:
        if threading.get_ident() != self._owner:
            raise WrongThreadError(
                "This backend belongs to another thread: llama.cpp contexts are not thread-safe. "
                "Submit the work to the thread that owns it (engine.worker.BackendWorker)."
            )
        if self._closed:
            raise InvalidRequestError("This backend is closed.")

    def close(self) -> None:
        if self._closed:
            return
        if threading.get_ident() != self._owner:
            raise WrongThreadError("Close the backend from the thread that owns it.")
        self._closed = True
        for b in list(getattr(self, "_branches", {}).values()):
            if b._sampler:
                llama_cpp.llama_sampler_free(b._sampler)
                b._sampler = None
        if self._batch is not None:
            llama_cpp.llama_batch_free(self._batch)
            self._batch = None
        if self._ctx:
            llama_cpp.llama_free(self._ctx)
            self._ctx = None
        if self._model:
            llama_cpp.llama_model_free(self._model)
            self._model = None

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- text ---------------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special: bool = True, parse_special: bool = True) -> list[int]:
        self._check_thread()
        data = text.encode("utf-8")
        n_max = len(data) + 16
        buf = (llama_cpp.llama_token * n_max)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        if n < 0:
            n_max = -n
            buf = (llama_cpp.llama_token * n_max)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buf, n_max, add_special, parse_special)
        return list(buf[:n])

    def piece(self, token: int) -> bytes:
        """The bytes of one token (special tokens render empty in generated text)."""
        p = self._pieces.get(token)
        if p is None:
            buf = ctypes.create_string_buffer(128)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 128, 0, False)
            if n < 0:
                buf = ctypes.create_string_buffer(-n)
                n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            p = buf.raw[:n]
            self._pieces[token] = p
        return p

    def detokenize(self, tokens: Iterable[int]) -> str:
        self._check_thread()
        return b"".join(self.piece(t) for t in tokens).decode("utf-8", errors="replace")

    def bos_token(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self._vocab))

    def _special_text(self, token: int) -> str:
        if token < 0:
            return ""
        buf = ctypes.create_string_buffer(128)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 128, 0, True)
        return buf.raw[: max(n, 0)].decode("utf-8", errors="replace")

    def render_chat(self, messages: Sequence[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """Render messages with the GGUF's own ``tokenizer.chat_template`` (falling back to a plain
        template, with :attr:`template_warning` set, when the model has none)."""
        self._check_thread()
        from engine.chat import render_chat

        text, warning = render_chat(
            self.chat_template,
            messages,
            bos_token=self._special_text(int(llama_cpp.llama_vocab_bos(self._vocab))),
            eos_token=self._special_text(int(llama_cpp.llama_vocab_eos(self._vocab))),
            add_generation_prompt=add_generation_prompt,
        )
        if warning and self.template_warning is None:
            self.template_warning = warning
            warnings.warn(warning, stacklevel=2)
        return text

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """Tokens of a rendered chat prompt. The template already writes BOS where the model wants
        it, so BOS is only added when the rendered text does not start with it."""
        text = self.render_chat(messages)
        bos = self._special_text(int(llama_cpp.llama_vocab_bos(self._vocab)))
        add_special = not (bos and text.startswith(bos))
        return self.tokenize(text, add_special=add_special, parse_special=True)

    def eog_tokens(self) -> list[int]:
        """Every end-of-generation token of the vocabulary (EOS, EOT, <|im_end|> ...)."""
        if self._eog is None:
            self._eog = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t)]
        return self._eog

    # --- branches -----------------------------------------------------------------------------------

    @property
    def branches(self) -> list[Branch]:
        """The branches not yet freed."""
        return list(self._branches.values())

    @property
    def free_slots(self) -> int:
        return len(self._free_seqs)

    def _new_branch(
        self, params: SamplingParams, tokens: list[int], n_past: int, parent: int | None
    ) -> Branch:
        if not self._free_seqs:
            raise TooManyBranchesError(self.config.n_seq_max)
        seq = self._free_seqs.pop()
        if not 0 <= seq < self.config.n_seq_max:  # llama.cpp aborts on an out-of-range seq id
            raise InvalidRequestError(f"sequence id {seq} out of range")
        b = Branch(
            id=self._next_id,
            seq=seq,
            params=params,
            tokens=tokens,
            n_past=n_past,
            gen_start=len(tokens),
            parent=parent,
        )
        self._next_id += 1
        b._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if plain_chain(params):
            b._rng = np.random.Generator(np.random.PCG64(params.seed))
        else:
            b._sampler = self._make_sampler(params)
        self._branches[b.id] = b
        return b

    def _make_sampler(self, p: SamplingParams) -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if p.ignore_eos:
            eog = self.eog_tokens()
            bias = (llama_cpp.llama_logit_bias * len(eog))()
            for i, t in enumerate(eog):
                bias[i].token = t
                bias[i].bias = float("-inf")
            add(chain, llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(eog), bias))
        if p.greedy:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if p.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(p.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(p.llama_seed))
        return chain

    def root(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> Branch:
        """A new branch holding ``prompt`` (text is tokenized with BOS as the model wants). Nothing is
        decoded until the next :meth:`step` or :meth:`fork`."""
        self._check_thread()
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not tokens:
            raise InvalidRequestError("The prompt is empty.")
        if len(tokens) >= self.n_ctx:
            raise PromptTooLongError(len(tokens), self.n_ctx)
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise InvalidRequestError(f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})")
        return self._new_branch(params or SamplingParams(), tokens, 0, None)

    def extend(self, branch: Branch, text: str | Sequence[int]) -> None:
        """Append text (or tokens) to a branch, e.g. a forced step. Decoded with the next step; the
        branch becomes live again, and its generation (text, logprobs, max_tokens) restarts after it."""
        self._check_thread()
        self._check_live(branch)
        toks = self.tokenize(text, add_special=False) if isinstance(text, str) else [int(t) for t in text]
        if len(branch.tokens) + len(toks) >= self.n_ctx:
            raise PromptTooLongError(len(branch.tokens) + len(toks), self.n_ctx)
        branch.tokens.extend(toks)
        branch._logits = None
        self._restart_generation(branch)

    def _restart_generation(self, b: Branch) -> None:
        b.gen_start = len(b.tokens)
        b.finish_reason = None
        b.logprobs = []
        b._text_parts = []
        b._text_len = 0
        b._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _check_live(self, b: Branch) -> None:
        if b.freed or self._branches.get(b.id) is not b:
            raise InvalidRequestError(f"branch {b.id} was freed or belongs to another backend")

    def fork(
        self, parent: Branch, n: int = 1, params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[Branch]:
        """``n`` children continuing from everything ``parent`` holds (prompt and generated text).

        ``params`` is one SamplingParams for all (then child ``i`` gets ``seed + i``) or one per
        child. The parent's KV cells are shared, not copied. A parent whose prompt was never decoded
        is decoded first, once, so the children never decode it again."""
        self._check_thread()
        self._check_live(parent)
        if n < 1:
            raise InvalidRequestError("fork needs n >= 1")
        if params is None:
            params = parent.params
        if isinstance(params, SamplingParams):
            plist = [params.with_seed(params.seed + i) for i in range(n)]
        else:
            plist = list(params)
            if len(plist) != n:
                raise InvalidRequestError(f"fork got {len(plist)} sampling params for {n} children")
        if n > len(self._free_seqs):
            raise TooManyBranchesError(self.config.n_seq_max)
        if parent.pending > 1:
            self.prefill([parent])
        # Children reuse the parent's logits row if it is still the current one; otherwise they
        # re-decode from the last token the parent has in the cache.
        share_logits = self._has_row(parent)
        n_copy = parent.n_past if (share_logits or parent.pending == 1) else max(parent.n_past - 1, 0)
        children = []
        for p in plist:
            child = self._new_branch(p, list(parent.tokens), n_copy, parent.id)
            llama_cpp.llama_memory_seq_rm(self._mem, child.seq, -1, -1)
            if n_copy > 0:
                llama_cpp.llama_memory_seq_cp(self._mem, parent.seq, child.seq, 0, n_copy)
            if share_logits:
                child._logits = parent._logits
            children.append(child)
        return children

    def free(self, branch: Branch) -> None:
        """Drop a branch: its sequence leaves the cache (cells no one else uses are released) and its
        sequence id is reused."""
        self._check_thread()
        if branch.freed:
            return
        self._check_live(branch)
        llama_cpp.llama_memory_seq_rm(self._mem, branch.seq, -1, -1)
        if branch._sampler:
            llama_cpp.llama_sampler_free(branch._sampler)
            branch._sampler = None
        branch.freed = True
        del self._branches[branch.id]
        self._free_seqs.append(branch.seq)
        if not self._branches:
            # An empty cache starts over at cell 0, so a re-run lays out its cells exactly as the
            # first run did (same batch shapes, same float sums: reproducible texts).
            llama_cpp.llama_memory_clear(self._mem, True)

    def free_all(self) -> None:
        for b in list(self._branches.values()):
            self.free(b)

    def seq_positions(self, branch: Branch) -> tuple[int, int]:
        """(min, max) position the cache holds for a branch; (-1, -1) when empty."""
        self._check_thread()
        return (
            int(llama_cpp.llama_memory_seq_pos_min(self._mem, branch.seq)),
            int(llama_cpp.llama_memory_seq_pos_max(self._mem, branch.seq)),
        )

    # --- decoding -----------------------------------------------------------------------------------

    def _decode(self, n_tokens: int, n_live: int) -> None:
        self._batch.n_tokens = n_tokens
        t0 = time.perf_counter()
        ret = llama_cpp.llama_decode(self._ctx, self._batch)
        self.stats.decode_s += time.perf_counter() - t0
        self.stats.decode_calls += 1
        if ret == 0:
            self.stats.tokens_decoded += n_tokens
            self._epoch += 1
            return
        if ret == 1:
            raise KVCacheFullError(self.n_ctx, n_live, n_tokens)
        if ret == 2:
            raise Cancelled("Decoding was aborted.")
        raise DecodeError(f"llama_decode failed with code {ret}")

    def _fill(self, work: list[tuple[Branch, int, bool]]) -> list[tuple[Branch, int]]:
        """Write (branch, count, wants_logits) chunks into the batch; returns (branch, batch idx) for
        the rows that will carry logits."""
        batch = self._batch
        i = 0
        outs = []
        for b, count, wants in work:
            start = b.n_past
            for k in range(count):
                pos = start + k
                batch.token[i] = b.tokens[pos]
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = b.seq
                batch.logits[i] = 0
                i += 1
            if wants:
                batch.logits[i - 1] = 1
                outs.append((b, i - 1))
        return outs

    def _plan(self, branches: Sequence[Branch]) -> tuple[list[tuple[Branch, int, bool]], int]:
        """Pack pending tokens into one batch of at most n_batch tokens. A branch whose pending
        tokens do not all fit gets a chunk now (no logits) and the rest in a later decode."""
        return self._plan_capped(branches, self.config.n_batch)

    def _plan_capped(
        self, branches: Sequence[Branch], cap: int
    ) -> tuple[list[tuple[Branch, int, bool]], int]:
        work = []
        used = 0
        # Single-token branches first so that long prompts never starve generation.
        for b in sorted(branches, key=lambda b: b.pending):
            pend = b.pending
            if pend == 0 or used >= cap:
                continue
            take = min(pend, cap - used)
            work.append((b, take, take == pend))
            used += take
        return work, used

    ADOPT_MIN = 4  # shorter runs of shared pending tokens are simply decoded

    def _adopt(self, b: Branch) -> None:
        """Share, instead of decoding, the KV cells of pending tokens that another live branch
        already holds: same tokens from position 0 (so the same cells in every layer), as llama.cpp's
        server reuses a cached prompt. A judge reading a candidate the policy just wrote then
        decodes only its own question. The last token is always decoded, for its logits."""
        want = len(b.tokens) - 1
        if want - b.n_past < self.ADOPT_MIN:
            return
        toks, base = b.tokens, b.n_past
        best, best_k = None, base
        for o in self._branches.values():
            limit = min(o.n_past, want)
            if o is b or limit - base < self.ADOPT_MIN or limit <= best_k:
                continue
            k = _common_prefix(toks, o.tokens, limit)
            if k > best_k:
                best, best_k = o, k
        if best is None or best_k - base < self.ADOPT_MIN:
            return
        llama_cpp.llama_memory_seq_rm(self._mem, b.seq, base, -1)
        llama_cpp.llama_memory_seq_cp(self._mem, best.seq, b.seq, base, best_k)
        b.n_past = best_k
        b._logits = None
        self.stats.tokens_adopted += best_k - base

    def prefill(self, branches: Sequence[Branch], cancel: Callable[[], bool] | None = None) -> None:
        """Decode every pending token of ``branches`` (logits kept at each one's last token)."""
        self._check_thread()
        for b in branches:
            self._check_live(b)
            self._adopt(b)
        todo = [b for b in branches if b.pending > 0]
        while todo:
            if cancel is not None and cancel():
                raise Cancelled()
            work, n = self._plan(todo)
            outs = self._fill(work)
            self._decode(n, len(todo))
            for b, count, _ in work:
                b.n_past += count
            for j, (b, idx) in enumerate(outs):
                b._logits = (self._epoch, idx, j)
            todo = [b for b in todo if b.pending > 0]

    def step(
        self,
        branches: Sequence[Branch] | None = None,
        logprobs: bool = True,
        probes: Sequence[Branch] = (),
    ) -> list[TokenEvent]:
        """Advance every unfinished branch by one token in one shared decode.

        ``probes`` are branches to *decode but not sample* (a judge's verdict prompt, a step being
        scored): their pending tokens ride in the same batch, after the generating branches, and
        their logits row is kept until the next decode. Branches or probes with more pending
        tokens than fit the batch are decoded in part. Returns one event per sampled token."""
        self._check_thread()
        live = [b for b in (branches if branches is not None else self._branches.values()) if not b.finished]
        for b in (*live, *probes):
            self._check_live(b)
        ready = [b for b in live if self._has_row(b)]
        need = [b for b in live if b.pending > 0]
        stale = [b for b in live if b.pending == 0 and b not in ready]
        for b in stale:  # logits gone (another decode ran): re-decode the last token
            self._rewind_one(b)
            need.append(b)
        for b in (*need, *probes):
            self._adopt(b)
        probing = [p for p in probes if p.pending > 0]
        if not need and not probing:
            return self._sample(ready, logprobs)
        # Generating branches first (one token each), then probes fill the rest of the batch.
        work, n = self._plan(need)
        room = self.config.n_batch - n
        if probing and room > 0:
            more, m = self._plan_capped(probing, room)
            work += more
            n += m
        events = self._sample(ready, logprobs) if ready else []  # rows of the previous decode
        if n == 0:
            return events
        outs = self._fill(work)
        self._decode(n, len(live) + len(probing))
        for b, count, _ in work:
            b.n_past += count
        for j, (b, idx) in enumerate(outs):
            b._logits = (self._epoch, idx, j)
        probe_ids = {id(p) for p in probes}
        events.extend(self._sample([b for b, _ in outs if id(b) not in probe_ids], logprobs))
        return events

    def _has_row(self, b: Branch) -> bool:
        """Whether the branch's logits row (for its next token) is still in the context's output."""
        return b.pending == 0 and b._logits is not None and b._logits[0] == self._epoch

    def _rewind_one(self, b: Branch) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, b.seq, b.n_past - 1, -1)
        b.n_past -= 1
        b._logits = None

    def _sample(self, branches: list[Branch], want_logprobs: bool) -> list[TokenEvent]:
        if not branches:
            return []
        t0 = time.perf_counter()
        for b in branches:
            if not self._has_row(b):  # llama.cpp asserts (kills the process) on a row without logits
                raise InvalidRequestError(f"branch {b.id} has no logits to sample from")
        # All output rows of the last decode, in batch order; valid until the next decode.
        n_out = max(b._logits[2] for b in branches) + 1
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_out, self.n_vocab))
        toks = [0] * len(branches)
        lps = [0.0] * len(branches)
        fast = [i for i, b in enumerate(branches) if b._rng is not None]
        if fast:
            sub = rows[[branches[i]._logits[2] for i in fast]]  # a copy: sampling may ban tokens in it
            lse = logsumexp_rows(sub) if want_logprobs else None
            eog = np.asarray(self.eog_tokens()) if any(branches[i].params.ignore_eos for i in fast) else None
            drawn = sample_rows(
                sub,
                [branches[i].params.temperature for i in fast],
                [branches[i]._rng.random() for i in fast],
                [eog if branches[i].params.ignore_eos else None for i in fast],
            )
            for j, i in enumerate(fast):
                toks[i] = drawn[j]
                if lse is not None:  # the model's logprob (T=1, nothing banned), from the raw row
                    lps[i] = float(rows[branches[i]._logits[2], drawn[j]] - lse[j])
        chain = [i for i, b in enumerate(branches) if b._rng is None]
        if chain:
            for i in chain:
                b = branches[i]
                toks[i] = int(llama_cpp.llama_sampler_sample(b._sampler, self._ctx, b._logits[1]))
            if want_logprobs:
                sub = rows[[branches[i]._logits[2] for i in chain]]
                lse = logsumexp_rows(sub)
                for j, i in enumerate(chain):
                    lps[i] = float(sub[j, toks[i]] - lse[j])
        events = []
        n_ctx = self.n_ctx
        for b, tok, lp in zip(branches, toks, lps, strict=True):
            b._logits = None
            b.tokens.append(tok)
            b.logprobs.append(lp)
            if llama_cpp.llama_vocab_is_eog(self._vocab, tok):
                b.finish_reason = FINISH_EOS
                events.append(TokenEvent(b, tok, "", lp))
                continue
            piece = b._decoder.decode(self.piece(tok))
            if piece:
                b._text_parts.append(piece)
                b._text_len += len(piece)
            events.append(TokenEvent(b, tok, piece, lp))
            p = b.params
            if p.stop and piece and self._hit_stop(b, len(piece)):
                b.finish_reason = FINISH_STOP
            elif b.n_generated >= p.max_tokens or len(b.tokens) >= n_ctx:
                b.finish_reason = FINISH_LENGTH
        self.stats.tokens_sampled += len(branches)
        self.stats.sample_s += time.perf_counter() - t0
        return events

    def _hit_stop(self, b: Branch, n_new: int) -> bool:
        longest = max(len(s) for s in b.params.stop)
        text = b.text
        tail = text[max(0, len(text) - n_new - longest + 1) :]
        return any(s in tail for s in b.params.stop)

    def next_token_logprobs(self, branch: Branch, token_ids: Sequence[int]) -> np.ndarray:
        """Logprobs of ``token_ids`` as the next token after everything ``branch`` holds (its
        pending tokens are decoded first). For verdict tokens of judges and PRMs."""
        self._check_live(branch)
        return self.logprobs_now([branch], token_ids)[0]

    def _rows_logprobs(self, branches: Sequence[Branch], token_ids: Sequence[int]) -> np.ndarray:
        for b in branches:
            if not self._has_row(b):
                raise InvalidRequestError(f"branch {b.id} has no logits to read")
        n_out = max(b._logits[2] for b in branches) + 1
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_out, self.n_vocab))
        sub = rows[[b._logits[2] for b in branches]].astype(np.float64)
        lse = logsumexp_rows(sub)
        return sub[:, list(token_ids)] - lse[:, None]

    def read_positions(
        self,
        branches: Sequence[Branch],
        positions: Sequence[Sequence[int]],
        token_ids: Sequence[int],
        cancel: Callable[[], bool] | None = None,
    ) -> list[np.ndarray]:
        """Decode every pending token of ``branches`` (packed into shared batches) and return, per
        branch, the log-softmax over ``token_ids`` of the logits *at* each absolute position in
        ``positions`` (each must be pending: >= n_past). For token PRMs that read a verdict at every
        step tag in one pass."""
        self._check_thread()
        for b, pos in zip(branches, positions, strict=True):
            self._check_live(b)
            bad = [p for p in pos if not b.n_past <= p < len(b.tokens)]
            if bad:
                raise InvalidRequestError(f"position {bad[0]} of branch {b.id} is not pending")
        out = [np.empty((len(p), len(token_ids))) for p in positions]
        want = [dict((p, j) for j, p in enumerate(pos)) for pos in positions]
        cap = self.config.n_batch
        batch = self._batch
        ids = list(token_ids)
        todo = [i for i, b in enumerate(branches) if b.pending > 0]
        while todo:
            if cancel is not None and cancel():
                raise Cancelled()
            n = 0
            reads: list[tuple[int, int, int]] = []  # (branch index, position, batch idx) per output row
            plan: list[tuple[int, int]] = []
            for i in todo:
                b = branches[i]
                take = min(b.pending, cap - n)
                if take <= 0:
                    break
                for k in range(take):
                    pos = b.n_past + k
                    batch.token[n] = b.tokens[pos]
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = b.seq
                    last = k == take - 1 and take == b.pending
                    out_here = pos in want[i] or last
                    batch.logits[n] = 1 if out_here else 0
                    if out_here:
                        reads.append((i, pos, n))
                    n += 1
                plan.append((i, take))
            self._decode(n, len(todo))
            rows = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits(self._ctx), shape=(len(reads), self.n_vocab)
            )
            for r, (i, pos, idx) in enumerate(reads):
                if pos in want[i]:
                    row = rows[r : r + 1].astype(np.float64)
                    out[i][want[i][pos]] = row[0, ids] - logsumexp_rows(row)[0]
                if pos == len(branches[i].tokens) - 1:
                    branches[i]._logits = (self._epoch, idx, r)
            for i, take in plan:
                branches[i].n_past += take
            todo = [i for i in todo if branches[i].pending > 0]
        return out

    def logprobs_now(self, branches: Sequence[Branch], token_ids: Sequence[int]) -> np.ndarray:
        """Next-token logprobs of ``branches``, read from the current output rows; a branch without
        one (pending tokens, or a row overwritten by a later decode) is decoded for it."""
        self._check_thread()
        current = [i for i, b in enumerate(branches) if self._has_row(b)]
        if len(current) == len(branches):
            return self._rows_logprobs(branches, token_ids)
        out = np.empty((len(branches), len(token_ids)))
        if current:  # read before the decode below overwrites them
            out[current] = self._rows_logprobs([branches[i] for i in current], token_ids)
        rest = [i for i in range(len(branches)) if i not in set(current)]
        out[rest] = self.batch_next_token_logprobs([branches[i] for i in rest], token_ids)
        return out

    def batch_next_token_logprobs(self, branches: Sequence[Branch], token_ids: Sequence[int]) -> np.ndarray:
        """:meth:`next_token_logprobs` for many branches, packed into as few decodes as fit the batch
        (rows follow ``branches``)."""
        self._check_thread()
        for b in branches:
            self._check_live(b)
            if b.pending == 0:  # its row would not survive the group's decode: re-decode its last token
                self._rewind_one(b)
        out = np.empty((len(branches), len(token_ids)), dtype=np.float64)
        cap = self.config.n_batch
        i = 0
        while i < len(branches):
            group, used = [], 0
            while i < len(branches) and (not group or used + branches[i].pending <= cap):
                group.append(branches[i])
                used += branches[i].pending
                i += 1
            self.prefill(group)  # one decode when the group fits, several for one long branch
            out[i - len(group) : i] = self._rows_logprobs(group, token_ids)
        return out

    def score_tokens(
        self, tokens: Sequence[int], start: int, cancel: Callable[[], bool] | None = None
    ) -> np.ndarray:
        """Teacher forcing: the logprob of each of ``tokens[start:]`` given everything before it,
        in one pass (chunked by n_batch) over a temporary sequence. ``start`` must be >= 1."""
        self._check_thread()
        tokens = [int(t) for t in tokens]
        if not 1 <= start <= len(tokens):
            raise InvalidRequestError("score_tokens needs 1 <= start <= len(tokens)")
        if len(tokens) >= self.n_ctx:
            raise PromptTooLongError(len(tokens), self.n_ctx)
        if start == len(tokens):
            return np.empty(0, dtype=np.float64)
        tmp = self.root(tokens, SamplingParams(temperature=0.0))
        out = np.empty(len(tokens) - start, dtype=np.float64)
        batch = self._batch
        try:
            pos = 0
            while pos < len(tokens) - 1:
                if cancel is not None and cancel():
                    raise Cancelled()
                n = min(self.config.n_batch, len(tokens) - 1 - pos)
                reads = []
                for i in range(n):
                    p = pos + i
                    batch.token[i] = tokens[p]
                    batch.pos[i] = p
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = tmp.seq
                    want = p >= start - 1
                    batch.logits[i] = 1 if want else 0
                    if want:
                        reads.append(p)
                self._decode(n, 1)
                tmp.n_past = pos + n
                if reads:
                    ptr = llama_cpp.llama_get_logits(self._ctx)
                    rows = np.ctypeslib.as_array(ptr, shape=(len(reads), self.n_vocab)).astype(np.float64)
                    lse = logsumexp_rows(rows)
                    for j, p in enumerate(reads):
                        out[p + 1 - start] = rows[j, tokens[p + 1]] - lse[j]
                pos += n
        finally:
            self.free(tmp)
        return out

    def generate(
        self,
        branches: Sequence[Branch],
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[list[TokenEvent]], None] | None = None,
        logprobs: bool = True,
    ) -> list[Branch]:
        """Step until every branch is finished (EOS, a stop string, max_tokens, the context end) or
        ``cancel()`` returns true, in which case the unfinished ones end as 'cancelled'."""
        self._check_thread()
        todo = [b for b in branches if not b.finished]
        while todo:
            if cancel is not None and cancel():
                for b in todo:
                    b.finish_reason = FINISH_CANCELLED
                break
            events = self.step(todo, logprobs=logprobs)
            if on_step is not None and events:
                on_step(events)
            todo = [b for b in todo if not b.finished]
        return list(branches)

    def sample_n(
        self,
        prompt: str | Sequence[int],
        n: int,
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[list[TokenEvent]], None] | None = None,
        keep: bool = False,
        on_start: Callable[[list[Branch]], None] | None = None,
    ) -> list[Branch]:
        """The common case: decode ``prompt`` once, fork ``n`` branches, generate them together.
        ``on_start`` sees the branches before the first token. Branches are freed afterwards
        unless ``keep``; their text, tokens and logprobs stay readable."""
        self._check_thread()
        base = params if isinstance(params, SamplingParams) or params is None else params[0]
        root = self.root(prompt, base)
        try:
            self.prefill([root], cancel=cancel)
            children = self.fork(root, n, params)
        finally:
            self.free(root)
        try:
            if on_start is not None:
                on_start(children)
            self.generate(children, cancel=cancel, on_step=on_step)
        finally:
            if not keep:
                for c in children:
                    self.free(c)
        return children
