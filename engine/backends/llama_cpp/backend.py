"""The batched llama.cpp backend: one model, one context, many branches in one decode.

How it works (see ../shared/notes/llama-cpp-python-0.3.36.md for the API facts):

* One context with ``n_seq_max`` sequences, in one of two KV layouts (``BackendConfig.kv_unified``):
  a **unified** cache (every sequence's cells in one buffer, a fork shares the parent's cells) or a
  stream per sequence (a fork copies them); see docs/architecture.md, "The KV layouts". Each
  :class:`Branch` owns one sequence id. A branch holds its full token list; ``n_past`` of them are
  in the KV cache, the rest are *pending* and go into the next decode.
* A prompt is decoded once in its branch; :meth:`Backend.fork` tags the parent's cells for each child
  with ``llama_memory_seq_cp`` (metadata only under ``kv_unified``; a copy of the cells per stream
  otherwise), so N children share the prompt's decode.
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

import ctypes
import logging
import os
import threading

import llama_cpp

from engine import llama_lib
from engine.backends.llama_cpp.branch import Branch, StepStats
from engine.backends.llama_cpp.branch_table import BranchTable
from engine.backends.llama_cpp.config import _FLASH, _KV_TYPES, BackendConfig, ModelInfo
from engine.backends.llama_cpp.decoding import DecodeMixin
from engine.backends.llama_cpp.reading import ReadMixin
from engine.backends.llama_cpp.vocab import VocabMixin
from engine.cpu_share import cpu_turn, no_turn, sharing_enabled
from engine.errors import InvalidRequestError, ModelLoadError, UnsupportedModelError, WrongThreadError
from engine.gguf_info import GGUFInfo, check_vocab, file_identity, read_gguf

log = logging.getLogger(__name__)


class Backend(VocabMixin, BranchTable, DecodeMixin, ReadMixin):
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
        self.n_ctx = int(llama_cpp.llama_n_ctx(self._ctx))  # cells in all
        # the most tokens one branch may hold: all of them in a unified cache, its stream's otherwise
        self.n_ctx_seq = int(llama_cpp.llama_n_ctx_seq(self._ctx))
        self._mem = llama_cpp.llama_get_memory(self._ctx)
        self._batch = llama_cpp.llama_batch_init(self.config.n_batch, 0, 1)
        self._free_seqs = list(range(self.config.n_seq_max))  # ids not in use (handed out by _take_seqs)
        self._branches: dict[int, Branch] = {}
        self._parked: dict[int, Branch] = {}
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
        check_vocab(self.gguf)  # llama.cpp would abort the process on a damaged vocabulary
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
        n_layers = 0
        for _lvl, msg in logged:
            if "offloaded" in msg and "layers to GPU" in msg:
                try:
                    done, total = msg.split("offloaded", 1)[1].split("layers", 1)[0].split("/", 1)
                    self._offloaded, n_layers = int(done), int(total)
                except ValueError:
                    pass
        # Decodes that run on CPU cores take a machine-wide turn (engine.cpu_share); a model wholly
        # on a GPU does not spin on the CPU and needs none.
        on_gpu = n_layers > 0 and self._offloaded >= n_layers
        self._turn = cpu_turn() if sharing_enabled() and not on_gpu else no_turn

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
        # unified: seq_cp is metadata-only and any [p0, p1) fork works; streams: whole copies only
        cp.kv_unified = c.kv_unified
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
