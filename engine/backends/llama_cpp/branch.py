"""A branch: one line of text growing in one KV sequence, and what a decode step reports."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.sampling import SamplingParams


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
    # Cells at positions [base, n_past) are this branch's own: below ``base`` it shares its parent's
    # (counted there). A parked branch holds no sequence: its tokens and text stay, its cells are gone.
    base: int = 0
    parked: bool = False

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


@dataclass
class StepStats:
    decode_calls: int = 0
    tokens_decoded: int = 0
    tokens_sampled: int = 0
    tokens_adopted: int = 0  # pending tokens whose KV was shared from another branch, not decoded
    parked: int = 0  # finished branches set aside to free their sequence and cells
    streams_copied: int = 0  # whole KV streams copied (forks and adoptions, a stream per sequence)
    # passes llama.cpp makes over the streams (a stream per sequence: one per run of consecutive ids
    # in a decode; at least this many, more where the runs' sequences have unequal token counts)
    stream_passes: int = 0
    decode_s: float = 0.0
    sample_s: float = 0.0
