"""Shared prefixes of token sequences: what a KV cache (ours or a server's) can reuse."""

from __future__ import annotations

from collections.abc import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int], limit: int | None = None) -> int:
    """Length of the common prefix of ``a`` and ``b`` (within ``limit``), by bisection over slice
    comparisons (which run in C). Both must be the same kind of sequence (lists or tuples)."""
    limit = min(len(a), len(b)) if limit is None else limit
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
