"""A sweep's plan: its spec, its cells (which strategy at which budget on which problem), the key
that finds it again, and which runs answer for which budgets.

Best-of-N and revisions run once, at the largest budget; smaller budgets are read from those
samples by subsampling, as search-and-learn does (see :mod:`engine.sweeps.analysis`). Beam search
and DVTS run at every budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from engine.errors import InvalidRequestError, PonderError
from engine.gguf_info import file_identity, read_gguf
from engine.prm import registry as prm_kinds
from engine.problems import ProblemSet, resolve_problem_set
from engine.search import budget_params, default_strategies, registry, token_params
from engine.store import Store, SweepInfo

DEFAULT_BUDGETS = (1, 2, 4, 8)


def subsampled(strategy: str) -> bool:
    """Whether a sweep runs ``strategy`` at the largest budget and reads the smaller ones from it."""
    return registry.get(strategy).sweep_reads != "exact"


@dataclass(frozen=True)
class SweepSpec:
    problem_set: str  # gsm8k | math500 | arith | arith:SEED | a .jsonl path
    limit: int = 50
    offset: int = 0
    strategies: tuple[str, ...] = dataclasses.field(default_factory=default_strategies)
    budgets: tuple[int, ...] = DEFAULT_BUDGETS
    prm: str = dataclasses.field(default_factory=prm_kinds.default_name)
    seed: int = 0
    max_tokens: int = 512
    seeds: str = "independent"  # independent streams per strategy, or common random numbers
    budget_kind: str = "generations"  # generations (as Snell counts them) | tokens (generated tokens)
    temperature: float = 0.8  # 0: greedy (the large model's budget-1 answer in an exchange report)
    # Strategy parameters set by the user (``--adaptive-best-of-n-threshold 0.8``: {"adaptive_best_of_n":
    # {"threshold": 0.8}}); the budget still sets N, chains x length... A sweep with any is a sweep of
    # its own (its cells are not the defaults' cells).
    params: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)

    @property
    def tokens(self) -> bool:
        return self.budget_kind == "tokens"

    def given(self, strategy: str) -> dict[str, Any]:
        """The parameters the user set for ``strategy`` (none: {})."""
        return dict(self.params.get(strategy) or {})

    def check(self) -> None:
        if self.limit < 1:
            raise InvalidRequestError("--limit must be at least 1 problem.")
        if self.offset < 0:
            raise InvalidRequestError("--offset must be >= 0.")
        if not self.strategies:
            raise InvalidRequestError("Choose at least one strategy.")
        for s in self.strategies:
            registry.get(s)  # an unknown name is refused, naming the known ones
        if self.budget_kind not in ("generations", "tokens"):
            raise InvalidRequestError("A sweep's budgets are generations or tokens.")
        if not self.budgets or any(b < 1 for b in self.budgets):
            raise InvalidRequestError(
                "Budgets are whole numbers of tokens >= 1, e.g. 256,512,1024."
                if self.tokens
                else "Budgets are whole numbers of generations >= 1, e.g. 1,2,4,8."
            )
        if self.max_tokens < 16:
            raise InvalidRequestError("--max-tokens must be at least 16.")
        for s in self.params:
            if s not in self.strategies:
                raise InvalidRequestError(
                    f"Parameters are set for {registry.label(s)}, which the sweep's strategies do "
                    "not include."
                )
            registry.get(s).user_params(dict(self.params[s]))  # unknown names and bad values refused
        for s in self.strategies:
            for b in self.budgets:
                if self.tokens:
                    token_params(s, b, self.max_tokens, **self.given(s))
                else:
                    budget_params(s, b, **self.given(s))
        problem_indices(self, resolve_problem_set(self.problem_set))  # the set, its file, the offset


@dataclass(frozen=True)
class Cell:
    index: int  # the problem's index in its set
    strategy: str
    budget: int  # the budget it runs at (generations)

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.index, self.strategy, self.budget)


def _fits(strategy: str, budget: int, run_budget: int, given: Mapping[str, Any] | None = None) -> bool:
    """Can ``strategy`` at ``budget`` be read from a run at ``run_budget`` by subsampling?"""
    reads = registry.get(strategy).sweep_reads
    if reads == "subsets":
        return budget <= run_budget
    if reads == "chains":
        small = budget_params(strategy, budget, **(given or {}))
        big = budget_params(strategy, run_budget, **(given or {}))
        return small["chains"] <= big["chains"] and small["length"] <= big["length"]
    return budget == run_budget


def run_budgets(
    strategy: str, budgets: Sequence[int], tokens: bool = False, given: Mapping[str, Any] | None = None
) -> list[int]:
    """The budgets a strategy is actually run at to answer for ``budgets`` (token budgets: each;
    ``given``: the strategy's parameters set by the user)."""
    top = max(budgets)
    if tokens or not subsampled(strategy):
        return sorted(set(budgets))
    return sorted({top} | {b for b in budgets if not _fits(strategy, b, top, given)})


def source_budget(
    strategy: str,
    budget: int,
    budgets: Sequence[int],
    tokens: bool = False,
    given: Mapping[str, Any] | None = None,
) -> int:
    """Which run answers for ``strategy`` at ``budget``."""
    runs = run_budgets(strategy, budgets, tokens, given)
    return budget if budget in runs else max(runs)


def plan_cells(spec: SweepSpec, indices: Sequence[int]) -> list[Cell]:
    """Problem by problem (so a stopped sweep leaves whole problems), cheap cells first."""
    out = []
    for i in indices:
        cells = [
            Cell(i, s, b)
            for s in spec.strategies
            for b in run_budgets(s, spec.budgets, spec.tokens, spec.given(s))
        ]
        out += sorted(cells, key=lambda c: (c.budget, spec.strategies.index(c.strategy)))
    return out


def problem_indices(spec: SweepSpec, pset: ProblemSet) -> list[int]:
    if spec.offset >= len(pset):
        raise InvalidRequestError(
            f"{pset.name} has {len(pset)} problems; --offset {spec.offset} is past the end."
        )
    return list(range(spec.offset, min(spec.offset + spec.limit, len(pset))))


def sweep_key(pset: ProblemSet, model: dict[str, Any], spec: SweepSpec) -> tuple[str, dict[str, Any]]:
    """(key, settings): what makes two sweeps' cells interchangeable."""
    ident = {
        "problem_set": pset.spec,
        "problem_set_name": pset.name,
        "digest": pset.digest,
        "model_name": model.get("name", ""),
        "model_sha256_1mb": model.get("sha256_1mb", ""),
        "model_size": model.get("file_size", 0),
        "prm": spec.prm,
        "seed": spec.seed,
        "max_tokens": spec.max_tokens,
    }
    if spec.tokens:  # token budgets are other cells than generation budgets
        ident["budget_kind"] = "tokens"
    if spec.seeds != "common":  # sweeps saved before seed streams per strategy ran common ones
        ident["seeds"] = spec.seeds
    if spec.temperature != 0.8:  # sweeps saved before the choice sampled at 0.8
        ident["temperature"] = spec.temperature
    params = {s: dict(sorted(p.items())) for s, p in sorted(spec.params.items()) if p}
    if params:  # sweeps saved before strategy parameters ran the defaults
        ident["params"] = params
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    return key, {**ident, "model_path": model.get("path", "")}


def spec_of(info: SweepInfo, cells: Sequence[tuple[int, str, int]] = ()) -> SweepSpec:
    """The spec a stored sweep (``SweepInfo``) last ran with; for a sweep that did not save it,
    what its ``cells`` (keys of ``Store.sweep_cells``) show."""
    d = dict(info.settings.get("spec") or {})
    if not d and cells:
        idx = sorted({c[0] for c in cells})
        strategies = [s for s in registry.names() if any(c[1] == s for c in cells)]
        budgets = {c[2] for c in cells}
        top = max(budgets)
        if all(subsampled(s) for s in strategies):  # only the top was run: read the powers of two
            budgets |= {2**k for k in range(top.bit_length()) if 2**k <= top}
        d = {
            "offset": idx[0],
            "limit": idx[-1] - idx[0] + 1,
            "strategies": strategies,
            "budgets": sorted(budgets),
        }
    d.update(
        problem_set=info.settings["problem_set"],
        prm=info.settings["prm"],
        seed=info.settings["seed"],
        max_tokens=info.settings["max_tokens"],
        seeds=info.settings.get("seeds") or "common",
        budget_kind=info.settings.get("budget_kind") or "generations",
        temperature=info.settings.get("temperature", 0.8),
        params=info.settings.get("params") or {},
    )
    d["strategies"] = tuple(d.get("strategies") or default_strategies())
    d["budgets"] = tuple(d.get("budgets") or DEFAULT_BUDGETS)
    return SweepSpec(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(SweepSpec)}})


def sweep_name(settings: dict[str, Any]) -> str:
    name = (
        f"{settings['problem_set_name']} · {settings['model_name']} · PRM {settings['prm']} · "
        f"{settings['max_tokens']} tokens · seed {settings['seed']}"
    )
    return name + "".join(f" · {describe_params(s, p)}" for s, p in (settings.get("params") or {}).items())


def describe_params(strategy: str, given: Mapping[str, Any]) -> str:
    """``adaptive best-of-N threshold 0.8, round_size 2``: a strategy's parameters set by the user."""
    vals = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in given.items())
    return f"{registry.get(strategy).title} {vals}"


def model_identity(path: str) -> dict[str, Any]:
    """The model fields a sweep key uses, read from the file without loading it."""
    ident = file_identity(path)
    return {
        "path": ident["path"],
        "name": read_gguf(path).name,
        "sha256_1mb": ident["sha256_1mb"],
        "file_size": ident["size"],
    }


def find_sweep(store: Store, spec: SweepSpec, model: str | dict[str, Any]) -> str:
    """The id of the sweep ``spec`` on this model names (for reading it without running): a GGUF
    path, or a server executor's model record."""
    pset = resolve_problem_set(spec.problem_set)
    key, _ = sweep_key(pset, model_identity(model) if isinstance(model, str) else model, spec)
    for w in store.list_sweeps():
        if w.key == key:
            return w.id
    raise PonderError(
        f"No sweep of {pset.name} with this model, PRM {spec.prm}, seed {spec.seed} and "
        f"{spec.max_tokens} max tokens in {store.path}: run it first (without --report-only)."
    )
