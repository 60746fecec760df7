"""Steps and their scores: a solution cut into steps, step scores made one number, verdict shares."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from engine.errors import InvalidRequestError

AGGREGATIONS = ("last", "min", "prod", "mean")
NEUTRAL = 0.5


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """A solution's steps, each keeping its delimiter (so ``"".join(steps) == text``); empty or
    whitespace-only pieces are merged into the step before them."""
    if not text:
        return []
    parts = text.split(delimiter)
    steps: list[str] = []
    for i, part in enumerate(parts):
        piece = part + (delimiter if i < len(parts) - 1 else "")
        if not piece:
            continue
        if steps and not part.strip():
            steps[-1] += piece
        else:
            steps.append(piece)
    return steps


def aggregate(step_scores: Sequence[float], how: str = "last") -> float:
    if how not in AGGREGATIONS:
        raise InvalidRequestError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    return float(sum(step_scores) / len(step_scores))


def check_candidates(candidates: Sequence[Sequence[str]]) -> None:
    """Refuse a candidate given as one string: each is a list of steps."""
    for c in candidates:
        if isinstance(c, str):
            raise InvalidRequestError("each candidate is a list of steps, not a string (use split_steps)")


def verdict_share(logprobs: Any, n_good: int) -> list[float]:
    """Per row of logprobs over [good tokens..., bad tokens...]: P(good) / (P(good) + P(bad))."""
    p = np.exp(np.asarray(logprobs, dtype=np.float64))
    good, bad = p[:, :n_good].sum(axis=1), p[:, n_good:].sum(axis=1)
    return [float(g / (g + b)) if g + b > 0 else NEUTRAL for g, b in zip(good, bad, strict=True)]
