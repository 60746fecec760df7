"""What Ponder knows about each strategy, in one place.

A strategy is one module that defines its generator function and registers a :class:`Strategy`:
its name and display name, its parameters (defaults, ranges, help: the app's ⚙ menus and the CLI's
options are generated from them), its budget rule both ways (parameters for a generation budget, the
cost of parameters, and optionally parameters for a token budget), the sequences it holds at once,
the selection methods it supports and how its trace is drawn. Nothing else in Ponder names a
strategy: adding one is one module (in this package, or any module named in ``PONDER_STRATEGIES``)
plus its tests.

Budgets are spent exactly or refused: ``for_budget`` returns parameters whose ``cost`` is the budget,
or raises :class:`BudgetError`, which names the nearest budgets the strategy can spend.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import InvalidRequestError
from engine.events import Trace
from engine.modules import import_all


class BudgetError(InvalidRequestError):
    """A budget a strategy cannot spend as asked; says which budgets it can."""


@dataclass(frozen=True)
class Param:
    """One parameter a user may set. ``default`` gives its type (int, float or str); a str with
    ``choices`` is a choice (``choices_from``: choices read when asked, from a registry that
    plugins extend). ``special``: the text shown for the lowest value (``auto``)."""

    name: str
    default: Any
    label: str
    help: str
    lo: float | None = None
    hi: float | None = None
    choices: tuple[str, ...] = ()
    special: str = ""
    choices_from: Callable[[], tuple[str, ...]] | None = None

    def options(self) -> tuple[str, ...]:
        """The choices (none for a parameter that is not a choice)."""
        return self.choices_from() if self.choices_from is not None else self.choices

    @property
    def kind(self) -> str:
        if self.options():
            return "choice"
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "float"
        return "str"

    def convert(self, value: Any) -> Any:
        """``value`` (from a command line, a menu, a saved session) as this parameter's type, checked
        against its range and choices."""
        try:
            if self.kind == "int":
                v: Any = int(value)
            elif self.kind == "float":
                v = float(value)
            elif self.kind == "bool":
                v = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes", "on")
            else:
                v = str(value)
        except (TypeError, ValueError):
            raise InvalidRequestError(f"{self.name} must be a {self.kind} (got {value!r}).") from None
        options = self.options()
        if options and v not in options:
            raise InvalidRequestError(f"{self.name} must be one of {', '.join(options)} (got {v!r}).")
        if self.lo is not None and v < self.lo or self.hi is not None and v > self.hi:
            raise InvalidRequestError(f"{self.name} must be between {self.lo} and {self.hi} (got {v}).")
        return v


def selection_param(methods: tuple[str, ...] | None = None) -> Param:
    """The ``selection`` parameter of a strategy that ends in a vote: one of ``methods`` (default:
    every registered selector, ``engine/selectors/``), the first by default."""
    from engine import selectors

    return Param(
        "selection",
        (methods or selectors.names())[0],
        "Selection",
        "How the final answer is picked from the scored candidates",
        choices=methods or (),
        choices_from=None if methods else selectors.names,
    )


@dataclass(frozen=True)
class Strategy:
    """Everything about one strategy (see the module docstring)."""

    name: str
    label: str  # for people: "Best-of-N"
    run: Callable[..., Any]  # fn(ctx: RunContext, **params) -> generator of events and requests
    for_budget: Callable[[int, dict[str, Any]], dict[str, Any]]  # (budget, user params) -> params
    cost: Callable[[dict[str, Any]], int]  # params -> generations spent
    sequences: Callable[[dict[str, Any]], int]  # params -> most sequences held at once (PRM aside)
    params: tuple[Param, ...] = ()  # what a user may set (the budget sets the rest)
    summary: str = ""  # one line for tooltips and help
    shown: tuple[str, ...] = ("n",)  # parameters a panel header and a report show
    candidates: Callable[[dict[str, Any]], int] | None = None  # params -> finished candidates expected
    for_tokens: Callable[[int, int, dict[str, Any]], dict[str, Any]] | None = None
    # (token budget, tokens per generation, user params) -> params; None: as for_budget at the
    # nearest budget to token budget // tokens per generation (see token_rule)
    token_rule: str = "fit"  # fit: generations of max tokens each, so the budget always holds;
    # expected: generations of the expected solution length, the strategy stopping when spent
    drawn_as: str = "column"  # column (ranked cards) | tree (steps) | chain (attempts, segments)
    answer_is_path: bool = False  # the chosen answer is the text of a path of nodes (steps, segments)
    sweep_reads: str = "exact"  # subsets (best-of-N: smaller budgets are subsets) | chains | exact
    colour: str = "#777777"  # charts; the Okabe-Ito palette
    short: str = ""  # for charts and tables: "best-of-N" (default: the label, lower case)
    order: int = 100  # place in lists
    default: bool = False  # in the default selection
    budget_is_maximum: bool = False  # it may stop early (adaptive best-of-N): the budget is a ceiling
    count_spent: Callable[[Trace], int] | None = None  # generations a finished run spent (None: its budget)
    baseline: bool = False  # what the others are measured against (one strategy: the sweep's gains,
    # its default pick, the exchange report's large model and its greedy answers)

    def generations_spent(self, trace: Trace, params: dict[str, Any]) -> int:
        """Generations a run spent: the strategy's own count where its budget is a maximum, else
        what its parameters cost."""
        if self.count_spent is not None:
            return int(self.count_spent(trace))
        return int(self.cost(params))

    @property
    def title(self) -> str:
        return self.short or self.label.lower()

    def param(self, name: str) -> Param | None:
        return next((p for p in self.params if p.name == name), None)

    def defaults(self) -> dict[str, Any]:
        return {p.name: p.default for p in self.params}

    def user_params(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """``given`` checked: known names only, converted to each parameter's type."""
        out = {}
        for k, v in (given or {}).items():
            if v is None:  # unset
                continue
            p = self.param(k)
            if p is None:
                known = ", ".join(q.name for q in self.params) or "none"
                raise InvalidRequestError(f"{self.label} has no parameter {k!r} (its parameters: {known}).")
            out[k] = p.convert(v)
        return out

    def budget_params(self, budget: int, given: dict[str, Any] | None = None) -> dict[str, Any]:
        """The parameters that spend ``budget`` generations exactly (``given`` set by the user)."""
        if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
            raise InvalidRequestError(
                f"The budget must be a whole number of generations >= 1 (got {budget})."
            )
        user = self.user_params(given)
        params = {**self.defaults(), **user, **self.for_budget(budget, user)}
        spent = self.cost(params)
        if spent != budget:  # a rule that does not keep its word is a bug, not a user error
            raise AssertionError(f"{self.name} at budget {budget} would spend {spent}")
        return params

    def token_params(
        self,
        tokens: int,
        max_tokens: int,
        given: dict[str, Any] | None = None,
        solution_tokens: int | None = None,
    ) -> dict[str, Any]:
        """Parameters that spend at most ``tokens`` generated tokens: ``fit`` strategies as many
        generations of ``max_tokens`` as fit; ``expected`` ones as many of ``solution_tokens`` (the
        expected length of a solution; default ``min(max_tokens, 256)``), stopping when spent."""
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 1:
            raise InvalidRequestError(f"The token budget must be a whole number >= 1 (got {tokens}).")
        user = self.user_params(given)
        per = max(1, max_tokens)
        if self.token_rule == "expected":
            per = max(1, solution_tokens or min(max_tokens, 256))
        if self.for_tokens is not None:
            return {**self.defaults(), **user, **self.for_tokens(tokens, per, user)}
        gens = tokens // per
        if gens < 1:
            what = "--max-tokens" if self.token_rule == "fit" else "the expected solution length"
            raise BudgetError(
                f"{self.label} needs a token budget of at least {per} (one generation of {what} "
                f"{per}); got {tokens}."
            )
        return self.budget_params(self.nearest_budget(gens, user), user)

    def accepts(self, budget: int, given: dict[str, Any] | None = None) -> bool:
        try:
            self.budget_params(budget, given)
        except BudgetError:
            return False
        return True

    def nearest_budget(self, budget: int, given: dict[str, Any] | None = None) -> int:
        """The largest budget not above ``budget`` this strategy spends exactly (at least 1 if any)."""
        for b in range(budget, 0, -1):
            if self.accepts(b, given):
                return b
        raise BudgetError(f"{self.label} cannot spend {budget} generations with {given}.")


def refuse(label: str, budget: int, step: int, why: str) -> BudgetError:
    """A budget that is not a multiple of ``step``: say why, and the nearest budgets that are."""
    lo = budget - budget % step
    near = [b for b in (lo, lo + step) if b >= step]
    return BudgetError(
        f"{label} cannot spend a budget of {budget} generations: {why}. "
        f"The nearest budgets it can spend are {' and '.join(str(b) for b in near)}."
    )


def multiple_of(label: str, budget: int, step: int, why: str) -> int:
    """``budget // step`` when ``step`` divides ``budget``; else a :class:`BudgetError`."""
    if step < 1:
        raise InvalidRequestError(f"{label}: {why} must be at least 1.")
    if budget % step:
        raise refuse(label, budget, step, why)
    return budget // step


def divisor_at_most(budget: int, cap: int) -> int:
    """The largest divisor of ``budget`` not above ``cap`` (at least 1)."""
    return next(d for d in range(max(1, min(cap, budget)), 0, -1) if budget % d == 0)


_REGISTRY: dict[str, Strategy] = {}
_loaded: set[str] = set()  # what load() has imported: "" for this package, then modules and files


def register(strategy: Strategy) -> Strategy:
    """Add (or replace) a strategy. Called by the strategy's own module."""
    if not strategy.name.isidentifier():
        raise ValueError(f"a strategy name is an identifier, not {strategy.name!r}")
    if strategy.drawn_as not in ("column", "tree", "chain"):
        raise ValueError(f"drawn_as is column, tree or chain, not {strategy.drawn_as!r}")
    if strategy.token_rule not in ("fit", "expected"):
        raise ValueError(f"token_rule is fit or expected, not {strategy.token_rule!r}")
    if strategy.sweep_reads not in ("subsets", "chains", "exact"):
        raise ValueError(f"sweep_reads is subsets, chains or exact, not {strategy.sweep_reads!r}")
    _REGISTRY[strategy.name] = strategy
    return strategy


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_file(path: Path) -> None:
    name = f"ponder_strategy_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise InvalidRequestError(f"PONDER_STRATEGIES: cannot load {path}.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


def load(extra: Iterable[str] | None = None) -> None:
    """Import every strategy module of this package, then the modules (or .py files) named in
    ``PONDER_STRATEGIES`` (comma-separated) and ``extra``. Each registers itself."""
    if "" not in _loaded:
        _loaded.add("")
        import_all(Path(__file__).parent, "engine.search")  # this package's modules
    wanted = [s.strip() for s in os.environ.get("PONDER_STRATEGIES", "").split(",") if s.strip()]
    for item in [*wanted, *(extra or ())]:
        if item in _loaded:  # asked on every lookup: import once
            continue
        try:
            if item.endswith(".py") or os.sep in item:
                _load_file(Path(item).expanduser())
            else:
                importlib.import_module(item)
            _loaded.add(item)
        except InvalidRequestError:
            raise
        except Exception as e:  # a user's module that does not import: say so, do not crash
            raise InvalidRequestError(f"PONDER_STRATEGIES: {item} could not be loaded: {e}") from e


def strategies() -> list[Strategy]:
    """Every registered strategy, in display order."""
    load()
    return sorted(_REGISTRY.values(), key=lambda s: (s.order, s.name))


def names() -> list[str]:
    return [s.name for s in strategies()]


def baseline() -> str:
    """The strategy the others are measured against (the one registered with ``baseline=True``)."""
    return next(s.name for s in strategies() if s.baseline)


def default_names() -> tuple[str, ...]:
    return tuple(s.name for s in strategies() if s.default)


def get(name: str) -> Strategy:
    load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidRequestError(f"Unknown strategy {name!r}; choose from {', '.join(names())}.") from None


def find(name: str) -> Strategy | None:
    """The strategy, or None for a name no module registers (a session saved by a plugin)."""
    load()
    return _REGISTRY.get(name)


def label(name: str) -> str:
    s = find(name)
    return s.label if s is not None else name


def title(name: str) -> str:
    s = find(name)
    return s.title if s is not None else name


def drawn_as(name: str) -> str:
    """How a strategy's trace is drawn ("tree", "chain" or "column"); a ranked column for a name no
    module registers. The app's layout and the HTML export both ask here."""
    s = find(name)
    return s.drawn_as if s is not None else "column"


def answer_is_path(name: str) -> bool:
    """Whether the strategy's chosen answer is the text of a path of nodes (what
    :meth:`engine.events.Trace.chosen` is told)."""
    s = find(name)
    return s is not None and s.answer_is_path


__all__ = [
    "BudgetError",
    "answer_is_path",
    "baseline",
    "drawn_as",
    "Param",
    "Strategy",
    "default_names",
    "divisor_at_most",
    "find",
    "get",
    "label",
    "load",
    "multiple_of",
    "names",
    "refuse",
    "register",
    "selection_param",
    "strategies",
    "title",
    "unregister",
]
