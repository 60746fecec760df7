"""What the compare form asks for, as plain data (no Qt): the strategy controls fill it, the window
checks it and hands it to the engine. Tests can build and check one without a window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CompareForm:
    problem: str
    strategies: list[str]
    budget: int
    prm: str = "judge"
    reference: str | None = None
    budget_kind: str = "generations"  # or "tokens": the budget is generated tokens per strategy
    max_tokens: int = 384
    seed: int = 0
    seeds: str = "independent"
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def budget_tokens(self) -> int | None:
        return self.budget if self.budget_kind == "tokens" else None

    def problem_text(self) -> str:
        return self.problem.strip()

    def check(self) -> str | None:
        """What stops this form from running, said to the user; None when it can run. A budget a
        strategy cannot spend is refused here, before anything changes."""
        if not self.problem_text():
            return "Type a problem first."
        if not self.strategies:
            return "Choose at least one strategy."
        if self.prm == "reference" and not self.reference:
            return "The reference PRM needs a reference answer."
        from engine.compare import strategy_params
        from engine.errors import PonderError

        try:
            strategy_params(self.strategies, self.budget, self.overrides, self.budget_tokens, self.max_tokens)
        except PonderError as e:
            return str(e)
        return None
