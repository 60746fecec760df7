"""One compare, as one value: :class:`CompareRequest`.

The CLI, the app's form, a sweep cell and ``sessions rerun`` each build one; :meth:`checked` cleans
its texts, validates it and resolves every strategy's parameters once; it then crosses into the
worker thread whole (like llama.cpp server's ``task_params`` carried by a task) and
:func:`engine.run.compare.run_compare` runs it. A saved session keeps :meth:`settings`, from which
:meth:`from_session` builds the same request again.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.prm import registry as prm_kinds
from engine.problems import clean_text
from engine.search import budget_params, default_strategies, registry, token_params

if TYPE_CHECKING:  # a request is made without the store
    from engine.store import SessionInfo

SEED_MODES = ("independent", "common")  # a stream per strategy, or common random numbers
# The most generations one strategy of one compare may spend (README: Budgets). A typo such as
# --budget 100000 would otherwise queue days of work; engine.run.cost refuses far less with an estimate.
MAX_GENERATIONS = 4096


def strategy_params(
    names: Sequence[str],
    budget: int,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    budget_tokens: int | None = None,
    max_tokens: int = 2048,
    solution_tokens: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Each strategy's parameters for a budget of ``budget`` generations, or, with
    ``budget_tokens``, of that many generated tokens (see :meth:`Strategy.token_params`)."""
    out = {}
    for name in names:
        given = dict((overrides or {}).get(name, {}))
        if budget_tokens:
            out[name] = token_params(name, budget_tokens, max_tokens, solution_tokens, **given)
        else:
            out[name] = budget_params(name, budget, **given)
    return out


@dataclass(frozen=True)
class CompareRequest:
    """Strategies side by side on one problem at a matched budget, and how to run and save them."""

    problem: str
    strategies: tuple[str, ...] = ()  # empty: the registry's defaults
    budget: int = 8  # generations per strategy (Snell's unit)
    budget_tokens: int | None = None  # or: generated tokens per strategy
    solution_tokens: int | None = None  # with budget_tokens: tokens one solution is planned at
    overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # per strategy
    prm: str = field(default_factory=prm_kinds.default_name)
    reference: str | None = None
    seed: int = 0
    seeds: str = "independent"
    max_tokens: int = 2048
    temperature: float | None = None  # None: the strategies' default (0.8)
    concurrent: bool = True  # side by side; False: one after another
    stream_text: bool = False  # TextDelta events while nodes grow (for panels that fill live)
    title: str = ""
    tags: tuple[str, ...] = ()
    rerun_of: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # more session settings (a sweep cell's batch)
    params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # resolved by checked()

    # --- checking ---------------------------------------------------------------------------------

    @property
    def is_checked(self) -> bool:
        return bool(self.params) and set(self.params) == set(self.strategies)

    def checked(self) -> CompareRequest:
        """This request cleaned (valid Unicode, the problem stripped, an empty reference dropped),
        validated in the user's terms and with each strategy's parameters resolved; raises
        :class:`~engine.errors.InvalidRequestError` (a budget a strategy cannot spend is a
        :class:`~engine.search.registry.BudgetError`). A checked request is returned as it is."""
        if self.is_checked:
            return self
        problem = clean_text(self.problem or "").strip()
        if not problem:
            raise InvalidRequestError("The problem is empty: give the question to solve.")
        reference = clean_text(self.reference) if self.reference is not None else None
        if reference is not None and not reference.strip():
            reference = None
        strategies = tuple(self.strategies) or tuple(default_strategies())
        if not strategies:
            raise InvalidRequestError("Choose at least one strategy.")
        if self.max_tokens < 1:
            raise InvalidRequestError("max_tokens must be >= 1")
        if self.budget_tokens is not None and self.budget_tokens < 1:
            raise InvalidRequestError("--budget-tokens must be at least 1 token.")
        if self.solution_tokens is not None and (self.solution_tokens < 1 or not self.budget_tokens):
            raise InvalidRequestError("--solution-tokens goes with --budget-tokens and is at least 1.")
        if self.temperature is not None and not 0.0 <= self.temperature <= 5.0:
            raise InvalidRequestError("The temperature is between 0 (greedy) and 5.")
        if self.seeds not in SEED_MODES:
            raise InvalidRequestError(f"seeds is one of {', '.join(SEED_MODES)} (got {self.seeds!r}).")
        self._check_ceiling(strategies)
        params = strategy_params(
            strategies, self.budget, self.overrides, self.budget_tokens, self.max_tokens, self.solution_tokens
        )
        return dataclasses.replace(
            self,
            problem=problem,
            reference=reference,
            strategies=strategies,
            overrides={k: dict(v) for k, v in self.overrides.items()},
            title=clean_text(self.title),
            tags=tuple(clean_text(t) for t in self.tags),
            params=params,
        )

    def _check_ceiling(self, strategies: Sequence[str]) -> None:
        """Refuse a budget over :data:`MAX_GENERATIONS` generations per strategy, before any
        parameters are worked out (a token budget by the generations it would buy)."""
        if not self.budget_tokens:
            most = self.budget if isinstance(self.budget, int) else 0
        else:
            per = max(1, min(self.max_tokens, self.solution_tokens or min(self.max_tokens, 256)))
            most = self.budget_tokens // per
        if most > MAX_GENERATIONS:
            raise InvalidRequestError(
                f"A budget of {most:,} generations per strategy is over Ponder's ceiling of "
                f"{MAX_GENERATIONS:,} (README: Budgets)."
            )

    # --- what a session keeps -----------------------------------------------------------------------

    def settings(self) -> dict[str, Any]:
        """What a saved session needs to run this request again (the executor adds its own)."""
        out: dict[str, Any] = {
            "strategies": list(self.strategies),
            "budget": self.budget,
            "prm": self.prm,
            "seed": self.seed,
            "seeds": self.seeds,
        }
        if self.budget_tokens:
            out.update(budget_tokens=self.budget_tokens, solution_tokens=self.solution_tokens)
        out.update(
            max_tokens=self.max_tokens,
            concurrent=self.concurrent,
            overrides={k: dict(v) for k, v in self.overrides.items()},
            **dict(self.extra),
        )
        if self.temperature is not None:
            out["temperature"] = self.temperature
        return out

    @classmethod
    def from_session(cls, session: SessionInfo, **changes: Any) -> CompareRequest:
        """The request a saved session ran (its problem, reference, title, tags and settings),
        with ``changes`` on top (a rerun's tags and ``rerun_of``)."""
        st = session.settings
        base = cls(
            problem=session.problem,
            reference=session.reference,
            strategies=tuple(st["strategies"]),
            budget=st["budget"],
            budget_tokens=st.get("budget_tokens"),
            solution_tokens=st.get("solution_tokens"),
            overrides=st.get("overrides") or {},
            prm=st["prm"],
            seed=st["seed"],
            seeds=st.get("seeds") or "common",  # saved before seed streams per strategy: common
            max_tokens=st["max_tokens"],
            temperature=st.get("temperature"),
            concurrent=st["concurrent"],
            title=session.title,
            tags=tuple(session.tags),
        )
        return dataclasses.replace(base, **changes)

    # --- what a reader is told ----------------------------------------------------------------------

    def budget_kind(self) -> str:
        return "tokens" if self.budget_tokens else "generations"

    def budget_line(self) -> str:
        """The budget as the CLI and the export say it."""
        if not self.budget_tokens:
            return f"{self.budget} generations per strategy (matched by generations)"
        shown = "; ".join(f"{n} {shown_params(n, p)}" for n, p in self.params.items())
        return f"at most {self.budget_tokens} generated tokens per strategy (matched by tokens: {shown})"


def shown_params(name: str, params: Mapping[str, Any]) -> str:
    """The parameters a strategy's registry entry shows, as ``n=8, selection=weighted``."""
    keys = registry.get(name).shown
    return ", ".join(f"{k}={params[k]}" for k in keys if k in params)
