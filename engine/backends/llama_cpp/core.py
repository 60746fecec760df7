"""What the pieces of :class:`~engine.backends.llama_cpp.backend.Backend` share.

The backend is built from mixins with one job each (``vocab``, ``branches``, ``decoding``,
``reading``); each uses state the backend sets up in ``__init__`` and methods another mixin defines.
:class:`BackendCore`, the base of every mixin, declares both once for the type checker; at run time it
is an empty class (the declarations are read only under ``TYPE_CHECKING``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import llama_cpp

    from engine.backends.llama_cpp.branch import Branch, StepStats
    from engine.backends.llama_cpp.config import BackendConfig
    from engine.sampling import SamplingParams


class _Slots(Protocol):
    """One C array of the batch (``int32_t *`` or ``int8_t *``), written an item at a time."""

    def __setitem__(self, i: int, value: int, /) -> None: ...


class _SeqIds(Protocol):
    """The batch's ``llama_seq_id **``: per token, its array of sequence ids."""

    def __getitem__(self, i: int, /) -> _Slots: ...


class Batch(Protocol):
    """The fields of a ``llama_batch`` (``llama_batch_init``) the backend writes. llama-cpp-python's
    own annotations declare ``pos`` an array of arrays; in C it is one ``llama_pos *``."""

    n_tokens: int
    token: _Slots
    pos: _Slots
    n_seq_id: _Slots
    seq_id: _SeqIds
    logits: _Slots


class BackendCore:
    if TYPE_CHECKING:
        # --- state (set in Backend.__init__) ---------------------------------------------------------
        config: BackendConfig
        path: str
        # llama.cpp's handles: set while the backend is open, None once closed
        _model: llama_cpp.llama_model_p | None
        _ctx: llama_cpp.llama_context_p | None
        _batch: Batch | None
        _vocab: llama_cpp.llama_vocab_p
        _mem: llama_cpp.llama_memory_t
        _turn: Callable[[], AbstractContextManager[None]]  # a turn on the CPU (engine.cpu_share)
        n_vocab: int
        n_ctx: int
        n_ctx_seq: int
        _free_seqs: list[int]
        _branches: dict[int, Branch]
        _parked: dict[int, Branch]
        _next_id: int
        _epoch: int  # decodes so far: a branch's logits row is valid while its epoch is current
        _pieces: dict[int, bytes]
        _eog: list[int] | None
        stats: StepStats
        template_warning: str | None
        chat_template: str | None

        # --- methods one mixin calls on another -----------------------------------------------------
        def _check_thread(self) -> None: ...  # backend

        def tokenize(  # vocab
            self, text: str, add_special: bool = True, parse_special: bool = True
        ) -> list[int]: ...

        def piece(self, token: int) -> bytes: ...  # vocab

        def detokenize(self, tokens: Iterable[int]) -> str: ...  # vocab

        def eog_tokens(self) -> list[int]: ...  # vocab

        def root(  # branches
            self, prompt: str | Sequence[int], params: SamplingParams | None = None
        ) -> Branch: ...

        def fork(  # branches
            self,
            parent: Branch,
            n: int = 1,
            params: SamplingParams | Sequence[SamplingParams] | None = None,
        ) -> list[Branch]: ...

        def free(self, branch: Branch) -> None: ...  # branches

        def _check_live(self, b: Branch) -> None: ...  # branches

        def _adopt(self, b: Branch) -> None: ...  # branches

        def _decode(self, n_tokens: int, n_live: int) -> None: ...  # decoding

        def prefill(  # decoding
            self, branches: Sequence[Branch], cancel: Callable[[], bool] | None = None
        ) -> None: ...

        def _has_row(self, b: Branch) -> bool: ...  # decoding

        def _logits_row(self, b: Branch, what: str) -> tuple[int, int, int]: ...  # decoding

        def _rewind_one(self, b: Branch) -> None: ...  # decoding
