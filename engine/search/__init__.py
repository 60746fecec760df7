"""Test-time search strategies: one function per strategy, one signature, found by name.

Every strategy is ``fn(ctx: RunContext, **params) -> generator of events and requests`` (see
``protocol.py``) and registers what Ponder knows about it in :mod:`engine.search.registry` (its
parameters, its budget rule both ways, how it is drawn). The helpers here answer by name.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.protocol import RunContext, StrategyGen
from engine.search import registry


def default_strategies() -> tuple[str, ...]:
    """What a compare runs when no strategies are named."""
    return registry.default_names()


def get_strategy(name: str) -> Callable[..., StrategyGen]:
    return registry.get(name).run


def budget_params(name: str, budget: int, **given: Any) -> dict[str, Any]:
    """The parameters that make strategy ``name`` spend ``budget`` generations exactly (or a
    :class:`~engine.search.registry.BudgetError` naming the nearest budgets it can spend)."""
    return registry.get(name).budget_params(budget, given)


def token_params(
    name: str, tokens: int, max_tokens: int, solution_tokens: int | None = None, **given: Any
) -> dict[str, Any]:
    """The parameters that make strategy ``name`` spend at most ``tokens`` generated tokens."""
    return registry.get(name).token_params(tokens, max_tokens, given, solution_tokens)


def budget_cost(name: str, params: dict[str, Any]) -> int:
    """Generations a setting costs, as Snell counts them (the inverse of :func:`budget_params`)."""
    return registry.get(name).cost(params)


def sequences_needed(name: str, params: dict[str, Any]) -> int:
    """The most sequences (llama.cpp branches) a strategy holds at once in process, PRM aside: what
    the context's ``n_seq_max`` must allow. Bounds checked against measured peaks in
    tests/integration/test_limits.py."""
    return registry.get(name).sequences(params)


__all__ = [
    "RunContext",
    "budget_cost",
    "budget_params",
    "default_strategies",
    "get_strategy",
    "registry",
    "sequences_needed",
    "token_params",
]
