"""What the compare form asks for, as plain data (no Qt): the strategy controls fill it, the window
checks it and hands it to the engine. Tests can build and check one without a window."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from engine.errors import PonderError
from engine.prm import registry as prm_kinds
from engine.run.request import CompareRequest


@dataclass
class CompareForm:
    problem: str
    strategies: list[str]
    budget: int
    prm: str = field(default_factory=prm_kinds.default_name)
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

    def request(self) -> CompareRequest:
        """The compare this form asks for (unchecked): the one value the engine runs."""
        return CompareRequest(
            problem=self.problem_text(),
            strategies=tuple(self.strategies),
            budget=self.budget,
            budget_tokens=self.budget_tokens,
            overrides=self.overrides,
            prm=self.prm,
            reference=self.reference,
            seed=self.seed,
            seeds=self.seeds,
            max_tokens=self.max_tokens,
            stream_text=True,
        )

    def checked(self) -> tuple[CompareRequest | None, str | None]:
        """(the checked request, None), or (None, what stops this form from running, said to the
        user). A budget a strategy cannot spend is refused here, before anything changes."""
        if not self.problem_text():
            return None, "Type a problem first."
        if not self.strategies:
            return None, "Choose at least one strategy."
        if prm_kinds.needs_reference(self.prm) and not self.reference:
            return None, f"The {self.prm} PRM needs a reference answer."
        try:
            return self.request().checked(), None
        except PonderError as e:
            return None, str(e)

    def check(self) -> str | None:
        """What stops this form from running, said to the user; None when it can run."""
        return self.checked()[1]
