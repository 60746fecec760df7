"""Test-time search strategies: one function per strategy, one signature, found by name.

Every strategy is ``fn(ctx: RunContext, **params) -> generator of events and requests`` (see
``protocol.py``). :func:`budget_params` sets a strategy to spend a generation budget the way Snell
et al. count it: best-of-N and DVTS with N = budget; beam search with N beams = budget, or
N x (k+1) = budget with lookahead k; revisions with chains x length = budget.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from engine.errors import InvalidRequestError
from engine.search.beam_search import beam_search
from engine.search.best_of_n import best_of_n
from engine.search.dvts import dvts
from engine.search.protocol import RunContext, StrategyGen
from engine.search.revisions import revisions

STRATEGIES: dict[str, Callable[..., StrategyGen]] = {
    "best_of_n": best_of_n,
    "beam_search": beam_search,
    "dvts": dvts,
    "revisions": revisions,
}
DEFAULT_STRATEGIES = ("best_of_n", "beam_search", "revisions")


def get_strategy(name: str) -> Callable[..., StrategyGen]:
    try:
        return STRATEGIES[name]
    except KeyError:
        raise InvalidRequestError(
            f"Unknown strategy {name!r}; choose from {', '.join(STRATEGIES)}."
        ) from None


def budget_params(name: str, budget: int, **overrides: Any) -> dict[str, Any]:
    """The parameters that make strategy ``name`` spend ``budget`` generations."""
    get_strategy(name)
    if not isinstance(budget, int) or budget < 1:
        raise InvalidRequestError(f"The budget must be a whole number of generations >= 1 (got {budget}).")
    if name == "best_of_n":
        p: dict[str, Any] = {"n": budget}
    elif name == "beam_search":
        k = int(overrides.get("lookahead", 0))
        if k < 0:
            raise InvalidRequestError("lookahead must be >= 0")
        n = budget // (k + 1)
        if n < 1:
            raise InvalidRequestError(
                f"A budget of {budget} cannot pay for lookahead {k}: it needs at least {k + 1}."
            )
        p = {"n": n, "beam_width": min(4, n), "lookahead": k}
    elif name == "dvts":
        p = {"n": budget, "beam_width": min(4, budget)}
    else:
        chains = int(overrides.get("chains") or max(1, budget // 4))
        if not 1 <= chains <= budget:
            raise InvalidRequestError(f"Revisions need 1 to {budget} chains at a budget of {budget}.")
        p = {"chains": chains, "length": budget // chains}
    p.update({k: v for k, v in overrides.items() if not (k == "chains" and not v)})
    return p


def budget_cost(name: str, params: dict[str, Any]) -> int:
    """Generations a setting costs, as Snell counts them (the inverse of :func:`budget_params`)."""
    if name in ("best_of_n", "dvts"):
        return int(params["n"])
    if name == "beam_search":
        return int(params["n"]) * (int(params.get("lookahead", 0)) + 1)
    return int(params["chains"]) * int(params["length"])


def sequences_needed(name: str, params: dict[str, Any]) -> int:
    """The most sequences (llama.cpp branches) a strategy holds at once in process, PRM aside: what
    the context's ``n_seq_max`` must allow. Upper bounds checked against measured peaks in
    tests/test_limits.py: the shared prompt plus best-of-N's and DVTS's N samples; beam search's N
    children, its completed beams (fewer than N) and k x N lookahead rollouts; revisions' attempt
    and revision prompt per chain."""
    if name in ("best_of_n", "dvts"):
        return int(params["n"]) + 1
    if name == "beam_search":
        return (2 + int(params.get("lookahead", 0))) * int(params["n"]) + 1
    return 2 * int(params["chains"]) + 1


__all__ = [
    "STRATEGIES",
    "DEFAULT_STRATEGIES",
    "RunContext",
    "budget_params",
    "budget_cost",
    "get_strategy",
    "sequences_needed",
]
