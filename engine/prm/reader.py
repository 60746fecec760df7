"""What the in-process PRMs need of a model: the calls :class:`~engine.prm.judge.JudgePRM` and
:class:`~engine.prm.token_prm.TokenPRM` make on a llama.cpp backend and its branches.

The prm layer sits below the backends (``pyproject.toml``'s import-linter layers), so it names no
backend class: :class:`engine.backends.llama_cpp.Backend` and its ``Branch`` satisfy these protocols
as they are. Each protocol is generic in the branch type ``B``: what ``root`` and ``fork`` hand out is
what ``extend``, ``free`` and the reads take back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

import numpy as np

from engine.prm.formats import Vocabulary


class ReadBranch(Protocol):
    """One branch as a PRM sees it: its tokens, how many still wait for a decode, whether it is gone."""

    @property
    def tokens(self) -> list[int]: ...

    @property
    def pending(self) -> int: ...

    @property
    def freed(self) -> bool: ...


B = TypeVar("B", bound=ReadBranch)
_B_in = TypeVar("_B_in", bound=ReadBranch, contravariant=True)


class Decoder(Protocol[_B_in]):
    """Decodes what branches hold (a scoring generator's requests, :func:`~engine.prm.judge.drive`)."""

    def prefill(self, branches: Sequence[_B_in], cancel: Callable[[], bool] | None = None) -> None: ...


class BranchModel(Vocabulary, Decoder[B], Protocol[B]):
    """A model with branches of one context: grown, forked (cells shared), freed."""

    @property
    def free_slots(self) -> int: ...

    def root(self, prompt: Sequence[int]) -> B: ...

    def fork(self, parent: B, n: int = 1) -> list[B]: ...

    def extend(self, branch: B, text: str | Sequence[int]) -> None: ...

    def free(self, branch: B) -> None: ...


class JudgeModel(BranchModel[B], Protocol[B]):
    """What the judge reads with: chat prompts as tokens, next-token logprobs of its verdict words."""

    def chat_tokens(self, messages: Sequence[dict[str, str]]) -> list[int]: ...

    def logprobs_now(self, branches: Sequence[B], token_ids: Sequence[int]) -> np.ndarray: ...


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class _Decoded(Protocol):
    @property
    def tokens_decoded(self) -> int: ...


class TokenModel(BranchModel[B], Protocol[B]):
    """What a token PRM reads with: logprobs at given positions of a pending run, the model's name
    (for messages) and the tokens it decoded (the PRM's cost)."""

    @property
    def info(self) -> _Named: ...

    @property
    def stats(self) -> _Decoded: ...

    def read_positions(
        self,
        branches: Sequence[B],
        positions: Sequence[Sequence[int]],
        token_ids: Sequence[int],
        cancel: Callable[[], bool] | None = None,
    ) -> list[np.ndarray]: ...


__all__ = ["B", "BranchModel", "Decoder", "JudgeModel", "ReadBranch", "TokenModel"]
