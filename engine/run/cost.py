"""What a compare or a sweep will cost, said before it runs (and refused when it is too much).

Any budget can queue, so nothing else stops a typo (``--budget 100000``) from running for days.
Before the model loads, ``compare``, ``sweep`` and the app estimate the work:

- **generations and tokens** per strategy: a generation budget spends ``budget`` generations of the
  tokens one generation of this model took in the sessions this store recorded (else of
  :data:`ASSUMED_TOKENS_PER_GENERATION`, at most ``max_tokens``); a token budget spends its tokens;
- **the rate**: this machine's recorded end-to-end tokens/s for this model (sessions in the store, on
  this host, with the same GPU offload; the PRM's time is in it when they used the same PRM), else a
  rate assumed from the model's parameters and the CPU threads (:data:`ASSUMED_FLOPS_PER_THREAD`),
  with the PRM's share (its kind's ``time_share``) on top;
- **the store's growth**: bytes per generated token as this store holds them (else
  :data:`ASSUMED_BYTES_PER_TOKEN`), against the free space of its disk.

A run over :data:`REASONABLE_S` (an hour), or one the disk cannot hold, is refused unless the user
says yes (``--yes``, the app's confirmation), with the estimate and the budget that fits an hour. A
budget over :data:`MAX_GENERATIONS` generations per strategy is refused outright
(:meth:`engine.run.request.CompareRequest.checked` holds the same ceiling).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import InvalidRequestError
from engine.prm import registry as prm_kinds
from engine.run.request import MAX_GENERATIONS, CompareRequest
from engine.search import registry

if TYPE_CHECKING:  # what the estimate reads; neither loads for it
    from engine.executor import Executor
    from engine.store import Store

REASONABLE_S = 3600.0  # longer than an hour: said, and run only when the user says yes
ASSUMED_TOKENS_PER_GENERATION = 320  # a worked solution of a GSM8K-like problem (before any record)
ASSUMED_FLOPS_PER_THREAD = 10e9  # useful FLOP/s one CPU thread gives batched decoding (2 x params a token)
ASSUMED_GPU_SPEEDUP = 10.0  # with layers offloaded and nothing recorded: a guess, said as one
ASSUMED_BYTES_PER_TOKEN = 80  # text, per-token log-probabilities and texts, events and nodes
MIN_RECORDED_S = 0.5  # sessions shorter than this say little about a rate


class CostRefused(InvalidRequestError):
    """A run refused before anything ran because of what it would cost; ``estimate`` says why."""

    def __init__(self, message: str, estimate: Estimate | None) -> None:
        super().__init__(message)
        self.estimate = estimate


@dataclass(frozen=True)
class ModelFacts:
    """What the estimate knows of the model before it loads."""

    name: str  # as the store records it (the file's name, or the served model's id)
    n_params: int | None = None  # parameters (None: unknown, as from a server that does not say)
    n_gpu_layers: int = 0
    threads: int | None = None  # CPU threads (None: all cores, up to 8)
    on_server: bool = False


@dataclass(frozen=True)
class Rate:
    tok_s: float | None  # None: no estimate possible (a server's model with nothing recorded)
    source: str  # said to the user: where the figure comes from
    prm_included: bool = False  # recorded with the same PRM: its time is in the rate
    tokens_per_generation: Mapping[str, float] = field(default_factory=dict)  # recorded, per strategy


@dataclass(frozen=True)
class Estimate:
    """The work of one or more compares (a sweep's cells), and what it will take here."""

    what: str  # "this compare", "this sweep (12 cells left)"
    strategies: tuple[str, ...]
    budget: int  # the largest budget in generations (for the "fits an hour" advice)
    generations: int  # over every strategy and cell
    max_per_strategy: int  # the most generations one strategy of one compare spends
    tokens: int
    rate: Rate
    prm_share: float  # added to the time (0 when the rate holds it)
    store_bytes: int
    free_bytes: int | None
    fits_hour: int | None = None  # the largest budget (generations) that fits REASONABLE_S; None: n/a
    advice: str | None = None  # instead of the budget that fits (a sweep: the --limit that fits)

    @property
    def seconds(self) -> float | None:
        if not self.rate.tok_s:
            return None
        return self.tokens / self.rate.tok_s * (1.0 + self.prm_share)

    @property
    def over_ceiling(self) -> bool:
        return self.max_per_strategy > MAX_GENERATIONS

    @property
    def too_long(self) -> bool:
        s = self.seconds
        return s is not None and s > REASONABLE_S

    @property
    def too_big_for_disk(self) -> bool:
        return self.free_bytes is not None and self.store_bytes > self.free_bytes

    def duration(self) -> str:
        s = self.seconds
        if s is None:
            return "an unknown time"
        if s < 90:
            return f"about {max(1, round(s))} seconds"
        if s < 5400:
            return f"about {round(s / 60)} minutes"
        if s < 86400 * 3:
            return f"about {s / 3600:.1f} hours"
        return f"about {s / 86400:.0f} days"

    def line(self) -> str:
        """One paragraph for the user: the estimate and where its figures come from."""
        rate = f"{self.rate.tok_s:,.0f} tokens/s" if self.rate.tok_s else "an unknown rate"
        prm = ""
        if self.prm_share:
            prm = f", plus {self.prm_share:.0%} for the PRM"
        elif self.rate.prm_included:
            prm = " (the PRM's time included)"
        return (
            f"{self.what.capitalize()} would take {self.duration()}: {self.generations:,} generations, "
            f"about {self.tokens:,} tokens at {rate} ({self.rate.source}){prm}; the session store would "
            f"grow by about {_bytes(self.store_bytes)}."
        )

    def refusal(self) -> str | None:
        """Why this run is refused without a yes (None: it may run)."""
        if self.over_ceiling:
            return (
                f"A budget of {self.max_per_strategy:,} generations per strategy is over Ponder's ceiling "
                f"of {MAX_GENERATIONS:,} (README: Budgets). {self.line()}"
            )
        if self.too_big_for_disk:
            return (
                f"{self.line()} Its disk has {_bytes(self.free_bytes or 0)} free. Free some space or "
                "choose a smaller budget, or run it anyway with --yes."
            )
        if self.too_long:
            fits = f" A budget of {self.fits_hour} fits an hour." if self.fits_hour else ""
            if self.advice:
                fits = f" {self.advice}"
            return f"{self.line()}{fits} Run it anyway with --yes (the app asks)."
        return None


def _bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def facts_of_file(path: str, n_gpu_layers: int = 0, threads: int | None = None) -> ModelFacts:
    """What the estimate knows of a GGUF before it loads, from its header."""
    from engine.gguf_info import read_gguf

    info = read_gguf(path)
    return ModelFacts(name=info.name, n_params=info.n_params, n_gpu_layers=n_gpu_layers, threads=threads)


def facts_of_executor(executor: Executor) -> ModelFacts:
    """What the estimate knows of an executor's model (a server's: what it says of itself)."""
    m = executor.model_record()
    return ModelFacts(
        name=str(m.get("name") or ""),
        n_params=m.get("n_params") or None,
        n_gpu_layers=int(m.get("n_gpu_layers_requested", 0) or 0),
        on_server=m.get("backend") != "llama.cpp",
    )


# --- the parts -------------------------------------------------------------------------------------


def generations_of(request: CompareRequest, name: str) -> int:
    """Generations one strategy of ``request`` spends (its budget, or what its token budget buys);
    works on an unchecked request: no parameters are resolved."""
    if not request.budget_tokens:
        return max(0, int(request.budget))
    strat = registry.find(name)
    per = max(1, request.max_tokens)
    if strat is not None and strat.token_rule == "expected":
        per = max(1, request.solution_tokens or min(request.max_tokens, 256))
    return max(1, request.budget_tokens // per)


def tokens_of(request: CompareRequest, name: str, per_generation: float) -> int:
    if request.budget_tokens:
        return int(request.budget_tokens)
    return int(generations_of(request, name) * min(per_generation, request.max_tokens))


def recorded_rate(facts: ModelFacts, prm: str, store: Store | None) -> Rate | None:
    """This machine's rate for the model, from the sessions the store recorded (None: none)."""
    if store is None or not facts.name:
        return None
    try:
        sessions = store.recorded_rates(facts.name, facts.n_gpu_layers)
    except Exception:  # noqa: BLE001 - a store that cannot say has recorded nothing usable
        return None
    same = [s for s in sessions if s["settings"].get("prm") == prm]
    use = same or sessions
    tokens = wall = 0.0
    per: dict[str, list[float]] = {}
    for s in use:
        runs = [r for r in s["runs"] if r["status"] == "done" and r["tokens"] > 0]
        walls = [float(r["wall_s"]) for r in runs]
        w = (max(walls) if s["settings"].get("concurrent", True) else sum(walls)) if walls else 0.0
        if w < MIN_RECORDED_S:
            continue
        tokens += sum(r["tokens"] for r in runs)
        wall += w
        budget = s["settings"].get("budget")
        if budget and not s["settings"].get("budget_tokens"):
            for r in runs:
                per.setdefault(r["strategy"], []).append(r["tokens"] / budget)
    if wall <= 0 or tokens <= 0:
        return None
    n = len(use)
    source = f"recorded on this machine: {n} session{'s' if n != 1 else ''} of {facts.name}"
    return Rate(
        tok_s=tokens / wall,
        source=source,
        prm_included=bool(same),
        tokens_per_generation={k: sum(v) / len(v) for k, v in per.items()},
    )


def assumed_rate(facts: ModelFacts, consulted: bool = True) -> Rate:
    """A rate from the model's size and the CPU threads (``consulted``: the store was asked and had
    no record; else it was not asked, as for a budget over the ceiling)."""
    if facts.on_server or not facts.n_params:  # a server's hardware is not this machine's: no guess
        where = "its server" if facts.on_server else "this machine"
        return Rate(None, f"no rate recorded for {facts.name or 'this model'} on {where} yet")
    threads = facts.threads or min(os.cpu_count() or 1, 8)
    tok_s = ASSUMED_FLOPS_PER_THREAD * threads / (2.0 * facts.n_params)
    how = f"{threads} CPU thread{'s' if threads != 1 else ''}"
    if facts.n_gpu_layers:
        tok_s *= ASSUMED_GPU_SPEEDUP
        how = "GPU offload (a guess)"
    said = "; nothing recorded yet" if consulted else ""
    return Rate(tok_s, f"assumed for {facts.n_params / 1e6:,.0f}M parameters on {how}{said}")


def store_growth(tokens: int, store: Store | None) -> tuple[int, int | None]:
    """(bytes the store would grow by, bytes free on its disk)."""
    per = float(ASSUMED_BYTES_PER_TOKEN)
    free = None
    if store is not None:
        try:
            size, recorded = store.footprint()
            if recorded >= 2_000:  # the text, events and nodes as stored, plus the indexes' share
                per = max(per / 4, 1.25 * size / recorded)
            free = shutil.disk_usage(Path(store.path).parent).free
        except Exception:  # noqa: BLE001 - no figure is better than a wrong refusal
            pass
    return int(tokens * per), free


# --- the estimate ----------------------------------------------------------------------------------


def estimate(
    requests: Sequence[CompareRequest],
    facts: ModelFacts,
    store: Store | None = None,
    what: str = "this compare",
) -> Estimate:
    """The work of ``requests`` (one compare, or a sweep's cells) on this model and machine."""
    if not requests:
        raise InvalidRequestError("Nothing to estimate: no compare.")
    first = requests[0]
    strategies = tuple(first.strategies) or tuple(registry.default_names())
    rate = recorded_rate(facts, first.prm, store) or assumed_rate(facts, consulted=store is not None)
    gens = tokens = 0
    most = 0
    for req in requests:
        for name in tuple(req.strategies) or strategies:
            g = generations_of(req, name)
            per = rate.tokens_per_generation.get(name, _any(rate) or ASSUMED_TOKENS_PER_GENERATION)
            gens += g
            most = max(most, g)
            tokens += tokens_of(req, name, per)
    share = 0.0 if rate.prm_included else prm_kinds.time_share(first.prm)
    grow, free = store_growth(tokens, store)
    est = Estimate(
        what=what,
        strategies=strategies,
        budget=max(int(r.budget) for r in requests),
        generations=gens,
        max_per_strategy=most,
        tokens=tokens,
        rate=rate,
        prm_share=share,
        store_bytes=grow,
        free_bytes=free,
    )
    return _with_fit(est, requests)


def _any(rate: Rate) -> float | None:
    vals = list(rate.tokens_per_generation.values())
    return sum(vals) / len(vals) if vals else None


def _with_fit(est: Estimate, requests: Sequence[CompareRequest]) -> Estimate:
    """The largest budget every strategy can spend whose estimate fits an hour (time scales with it)."""
    s = est.seconds
    first = requests[0]
    if not s or first.budget_tokens or est.budget < 1:
        return est
    linear = int(est.budget * REASONABLE_S / s)
    for b in range(min(linear, MAX_GENERATIONS), 0, -1):
        if all(_accepts(n, b, first.overrides.get(n)) for n in est.strategies):
            return dataclasses.replace(est, fits_hour=b)
    return est


def _accepts(name: str, budget: int, given: Mapping[str, Any] | None) -> bool:
    strat = registry.find(name)
    if strat is None:
        return True
    try:
        return strat.accepts(budget, dict(given or {}))
    except InvalidRequestError:
        return False


def sweep_estimate(
    pending: Sequence[CompareRequest], facts: ModelFacts, store: Store | None = None
) -> Estimate:
    """The estimate of a sweep's cells still to run, its advice the ``--limit`` that fits an hour."""
    n = len(pending)
    est = estimate(pending, facts, store, f"this sweep ({n} cell{'s' if n != 1 else ''} to run)")
    problems = len({r.problem for r in pending})
    s = est.seconds
    if s and problems:
        fit = int(problems * REASONABLE_S / s)
        advice = (
            f"--limit {fit} fits an hour at these budgets."
            if fit >= 1
            else f"One problem takes about {s / problems / 3600:.1f} hours at these budgets: choose smaller."
        )
        est = dataclasses.replace(est, advice=advice)
    return est


def gate(est: Estimate, yes: bool) -> None:
    """Refuse (exit 2, nothing saved) what ``est`` says is too much; ``yes`` lets all but the
    ceiling through."""
    why = est.refusal()
    if why is None:
        return
    if est.over_ceiling or not yes:
        raise CostRefused(why, est)
