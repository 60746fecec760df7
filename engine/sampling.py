"""Sampling parameters of one branch, self-checking, and seed derivation."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from engine.errors import InvalidRequestError

# llama.cpp treats 0xFFFFFFFF (LLAMA_DEFAULT_SEED) as "pick a random seed": never hand it over.
_SEED_MASK = 0xFFFFFFFF
_RANDOM_SEED = 0xFFFFFFFF


@dataclass(frozen=True)
class SamplingParams:
    """How one branch samples. ``temperature == 0`` means greedy (the seed is then irrelevant).

    Defaults follow search-and-learn: temperature 0.8, top-p 1.0, no top-k / min-p.
    Stop strings are kept in the text; generation stops at the token that completes one.
    """

    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int = 0
    max_tokens: int = 2048
    stop: tuple[str, ...] = field(default_factory=tuple)
    ignore_eos: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):  # a common slip: stop="\n\n"
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        checks = [
            (math.isfinite(self.temperature) and self.temperature >= 0, "temperature must be >= 0"),
            (0.0 < self.top_p <= 1.0, "top_p must be in (0, 1]"),
            (self.top_k >= 0, "top_k must be >= 0 (0 turns it off)"),
            (0.0 <= self.min_p < 1.0, "min_p must be in [0, 1)"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
            (all(isinstance(s, str) and s for s in self.stop), "stop strings must be non-empty text"),
            (isinstance(self.seed, int) and self.seed >= 0, "seed must be a non-negative integer"),
        ]
        for ok, msg in checks:
            if not ok:
                raise InvalidRequestError(f"Invalid sampling parameters: {msg}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @property
    def llama_seed(self) -> int:
        """The seed as llama.cpp's dist sampler takes it (32 bits, never the 'random' value)."""
        s = self.seed & _SEED_MASK
        return s - 1 if s == _RANDOM_SEED else s

    def with_seed(self, seed: int) -> SamplingParams:
        return replace(self, seed=seed)


def derive_seed(run_seed: int, *path: int) -> int:
    """A 32-bit seed from a run seed and a node path (splitmix64 mixing): distinct nodes get
    unrelated streams, and the same (run seed, node) always gets the same one."""
    x = run_seed & 0xFFFFFFFFFFFFFFFF
    for p in path:
        x = (x ^ (p & 0xFFFFFFFFFFFFFFFF)) + 0x9E3779B97F4A7C15
        x &= 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
    return x & 0x7FFFFFFF
