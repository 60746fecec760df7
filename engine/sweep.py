"""Sweeps: every (problem, strategy, budget) of a problem set, saved in the store, then analysed.

``run_sweep`` runs what the store does not hold yet, one cell (one strategy at one budget on one
problem, a session of its own) at a time, and reports progress with an ETA; run it again after a
kill or a cancel and it does only the missing cells. A sweep is found again by its *key*: problem
set contents, model file, PRM, seed and max tokens; problems, strategies and budgets may grow
between calls (the cells already run are reused).

Best-of-N and revisions run once, at the largest budget; smaller budgets are read from those
samples by subsampling, as search-and-learn does: best-of-N at budget b is every (or, past
``samples``, a seeded random draw of) b-subset of the N solutions, and revisions at b take
``budget_params`` chains cut to its chain length; the naive / weighted / majority selections are
computed on each subset and their accuracy averaged. Beam search and DVTS run at every budget; their
three selections are computed from the completed beams.

``analyse`` reads the store and returns the summary: accuracy against budget per strategy and
selection, 5 difficulty bins (quantiles of the model's own pass@1 over the best-of-N samples, or of
their mean PRM score), the best strategy per bin and budget with its gain over best-of-N (weighted)
at the same budget, and the compute-optimal curve that picks per bin. The pick and its accuracy
come from the same problems (in-sample), as in Snell et al.'s oracle-difficulty figures.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.answers import is_correct
from engine.errors import InvalidRequestError, PonderError
from engine.problems import Problem, ProblemSet, resolve_problem_set
from engine.search import budget_params, default_strategies, registry, token_params
from engine.search.revisions import chain_groups, select_revisions
from engine.search.selection import METHODS, select
from engine.store import RunInfo, Store

DEFAULT_BUDGETS = (1, 2, 4, 8)


def subsampled(strategy: str) -> bool:
    """Whether a sweep runs ``strategy`` at the largest budget and reads the smaller ones from it."""
    return registry.get(strategy).sweep_reads != "exact"


N_BINS = 5
SAMPLES = 32  # subsets drawn per (problem, budget) when there are more than this


@dataclass(frozen=True)
class SweepSpec:
    problem_set: str  # gsm8k | math500 | arith | arith:SEED | a .jsonl path
    limit: int = 50
    offset: int = 0
    strategies: tuple[str, ...] = dataclasses.field(default_factory=default_strategies)
    budgets: tuple[int, ...] = DEFAULT_BUDGETS
    prm: str = "judge"
    seed: int = 0
    max_tokens: int = 512
    seeds: str = "independent"  # independent streams per strategy, or common random numbers
    budget_kind: str = "generations"  # generations (as Snell counts them) | tokens (generated tokens)
    temperature: float = 0.8  # 0: greedy (the large model's budget-1 answer in an exchange report)

    @property
    def tokens(self) -> bool:
        return self.budget_kind == "tokens"

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
        for s in self.strategies:
            for b in self.budgets:
                if self.tokens:
                    token_params(s, b, self.max_tokens)
                else:
                    budget_params(s, b)
        problem_indices(self, resolve_problem_set(self.problem_set))  # the set, its file, the offset


@dataclass(frozen=True)
class Cell:
    index: int  # the problem's index in its set
    strategy: str
    budget: int  # the budget it runs at (generations)

    @property
    def key(self) -> tuple[int, str, int]:
        return (self.index, self.strategy, self.budget)


def _fits(strategy: str, budget: int, run_budget: int) -> bool:
    """Can ``strategy`` at ``budget`` be read from a run at ``run_budget`` by subsampling?"""
    reads = registry.get(strategy).sweep_reads
    if reads == "subsets":
        return budget <= run_budget
    if reads == "chains":
        small, big = budget_params(strategy, budget), budget_params(strategy, run_budget)
        return small["chains"] <= big["chains"] and small["length"] <= big["length"]
    return budget == run_budget


def run_budgets(strategy: str, budgets: Sequence[int], tokens: bool = False) -> list[int]:
    """The budgets a strategy is actually run at to answer for ``budgets`` (token budgets: each)."""
    top = max(budgets)
    if tokens or not subsampled(strategy):
        return sorted(set(budgets))
    return sorted({top} | {b for b in budgets if not _fits(strategy, b, top)})


def source_budget(strategy: str, budget: int, budgets: Sequence[int], tokens: bool = False) -> int:
    """Which run answers for ``strategy`` at ``budget``."""
    runs = run_budgets(strategy, budgets, tokens)
    return budget if budget in runs else max(runs)


def plan_cells(spec: SweepSpec, indices: Sequence[int]) -> list[Cell]:
    """Problem by problem (so a stopped sweep leaves whole problems), cheap cells first."""
    out = []
    for i in indices:
        cells = [Cell(i, s, b) for s in spec.strategies for b in run_budgets(s, spec.budgets, spec.tokens)]
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
    key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:32]
    return key, {**ident, "model_path": model.get("path", "")}


def spec_of(info: Any, cells: Sequence[tuple[int, str, int]] = ()) -> SweepSpec:
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
    )
    d["strategies"] = tuple(d.get("strategies") or default_strategies())
    d["budgets"] = tuple(d.get("budgets") or DEFAULT_BUDGETS)
    return SweepSpec(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(SweepSpec)}})


def sweep_name(settings: dict[str, Any]) -> str:
    return (
        f"{settings['problem_set_name']} · {settings['model_name']} · PRM {settings['prm']} · "
        f"{settings['max_tokens']} tokens · seed {settings['seed']}"
    )


# --- running -----------------------------------------------------------------------------------------


@dataclass
class SweepProgress:
    sweep_id: str
    done: int  # cells finished, earlier calls included
    total: int
    units_done: int  # generations (budget) finished: cells differ in cost by their budget
    units_total: int
    elapsed_s: float  # this call
    eta_s: float | None  # None until a cell has finished in this call
    current: str  # the cell running now (or the last one)
    failed: int = 0  # cells that failed in this call (they are tried again next time)
    last_error: str = ""

    @property
    def fraction(self) -> float:
        return self.units_done / self.units_total if self.units_total else 1.0


@dataclass
class SweepResult:
    sweep_id: str
    ran: int  # cells run in this call
    skipped: int  # cells the store already held
    failed: int
    cancelled: bool
    errors: list[str] = field(default_factory=list)


def cell_label(p: Problem, c: Cell) -> str:
    return f"{p.label} · {c.strategy}@{c.budget}"


IN_PROCESS_BATCH = 16  # sequences a sweep keeps decoding at once in process (ponder bench: 8-24 peak here)


def run_sweep(
    backend: Any,
    store: Store,
    spec: SweepSpec,
    on_progress: Callable[[SweepProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    batch: int | None = None,
) -> SweepResult:
    """Run every cell of ``spec`` the store lacks, on ``backend`` in the calling thread.

    Cells run together through one scheduler, so that about ``batch`` sequences decode at once
    (default: :data:`IN_PROCESS_BATCH` in process, the servers' slots over servers): a new cell starts
    whenever the running ones hold fewer. Each cell is still a session of its own, linked to the
    sweep when it starts. ``batch=1`` runs one cell at a time, alone in its batches, so a resumed
    sweep reproduces an uninterrupted one token for token (cells sharing batches differ in float
    sums, as any two batch layouts do)."""
    from engine.sessions import recorded_compare

    spec.check()
    pset = resolve_problem_set(spec.problem_set)
    indices = problem_indices(spec, pset)
    from engine.backends.base import as_executor

    backend = as_executor(backend)
    key, settings = sweep_key(pset, backend.model_record(), spec)
    sweep_id = store.open_sweep(key, sweep_name(settings), settings)
    store.update_sweep(sweep_id, spec=dataclasses.asdict(spec))  # what the app reopens it with
    store.drop_orphan_sweep_sessions(sweep_id)  # a killed attempt's session that no cell points at
    cells = plan_cells(spec, indices)
    have = store.sweep_cells(sweep_id)
    done = {k for k, r in have.items() if r is not None and r.status == "done"}
    todo = [c for c in cells if c.key not in done]
    n_done = len(cells) - len(todo)
    units_total = sum(c.budget for c in cells)
    units_done = units_total - sum(c.budget for c in todo)
    units_now = 0
    t0 = time.monotonic()
    result = SweepResult(sweep_id, 0, n_done, 0, False)
    stop = cancel or (lambda: False)

    def report(current: str, last_error: str = "") -> None:
        if on_progress is None:
            return
        el = time.monotonic() - t0
        eta = el / units_now * (units_total - units_done) if units_now else None
        on_progress(
            SweepProgress(
                sweep_id,
                n_done,
                len(cells),
                units_done,
                units_total,
                el,
                eta,
                current,
                result.failed,
                last_error,
            )
        )

    report(cell_label(pset.problems[todo[0].index], todo[0]) if todo else "")
    if batch is None:
        batch = getattr(backend, "slots", None) or IN_PROCESS_BATCH
    if batch > 1 and todo:
        counts = {"n_done": n_done, "units_done": units_done, "units_now": 0}

        def progress(current: str, last_error: str = "") -> None:
            nonlocal n_done, units_done, units_now
            n_done, units_done, units_now = counts["n_done"], counts["units_done"], counts["units_now"]
            report(current, last_error)

        _run_together(backend, store, spec, pset, sweep_id, todo, batch, result, counts, progress, stop)
        return result
    for c in todo:
        if stop():
            result.cancelled = True
            break
        p = pset.problems[c.index]
        label = cell_label(p, c)
        report(label)
        try:
            sid, runs, err = recorded_compare(
                backend,
                store,
                p.question,
                [c.strategy],
                budget=c.budget,
                budget_tokens=c.budget if spec.tokens else None,
                prm=spec.prm,
                reference=p.reference,
                seed=spec.seed,
                seeds=spec.seeds,
                max_tokens=spec.max_tokens,
                temperature=None if spec.temperature == 0.8 else spec.temperature,
                concurrent=False,
                cancel=cancel,
                title=label,
                tags=("sweep", f"sweep:{sweep_id}"),
                on_session=lambda sid, c=c: store.set_sweep_cell(
                    sweep_id, c.index, c.strategy, c.budget, sid
                ),
            )
        except PonderError as e:
            result.failed += 1
            result.errors.append(f"{label}: {e}")
            report(label, f"{label}: {e}")
            continue
        status = runs[0].status if runs else "failed"
        if err:
            raise PonderError(f"The session database stopped taking writes: {err}")
        if status == "cancelled" or stop():
            result.cancelled = True
            break
        if status != "done":
            result.failed += 1
            msg = f"{label}: {status}: {runs[0].message if runs else ''}"
            result.errors.append(msg)
            report(label, msg)
            continue
        result.ran += 1
        n_done += 1
        units_done += c.budget
        units_now += c.budget
        report(label)
    return result


def _run_together(
    executor: Any,
    store: Store,
    spec: SweepSpec,
    pset: ProblemSet,
    sweep_id: str,
    todo: list[Cell],
    batch: int,
    result: SweepResult,
    counts: dict[str, int],
    report: Callable[..., None],
    stop: Callable[[], bool],
) -> None:
    """The cells of ``todo`` through one scheduler, a new one starting whenever the running cells
    hold fewer than ``batch`` sequences; each records into its own session."""
    from engine.compare import check_compare, prm_record, strategy_params
    from engine.events import RunFinished
    from engine.problems import clean_text
    from engine.search.protocol import Generate
    from engine.search.scheduler import Scheduler, StrategySpec, make_runs
    from engine.sessions import create_session

    queue = list(todo)
    live: dict[str, tuple[Cell, str, Any, str, Any]] = {}  # run id -> (cell, session, recorder, label, prm)
    tokens = spec.tokens
    model = executor.record()
    shared_prm = None if spec.prm == "reference" else executor.make_prm(spec.prm, None)
    disk: list[str] = []

    def asking(run: Any) -> int:
        """Generations a run has asked for and not had back (what it adds to the batch now)."""
        return len(run.pending.items) if isinstance(run.pending, Generate) else 0

    def feed(running: list[Any]) -> list[Any]:
        new: list[Any] = []
        room = batch - sum(asking(r) for r in running)
        while queue and (room > 0 or not (running or new)) and not stop() and not disk:
            c = queue.pop(0)
            p = pset.problems[c.index]
            label = cell_label(p, c)
            question = clean_text(p.question).strip()
            reference = clean_text(p.reference) if p.reference is not None else None
            budget_tokens = c.budget if tokens else None
            try:
                check_compare(executor, question, [c.strategy], c.budget, spec.prm, spec.max_tokens, False,
                              None, budget_tokens)  # fmt: skip
                params = strategy_params([c.strategy], c.budget, None, budget_tokens, spec.max_tokens)
                prm = shared_prm if shared_prm is not None else executor.make_prm(spec.prm, reference)
            except PonderError as e:
                result.failed += 1
                result.errors.append(f"{label}: {e}")
                report(label, f"{label}: {e}")
                continue
            link = next((x[2] for x in live.values()), None)
            if link is not None:
                link.commit()  # the running cells' writes first: this thread's own would wait on them
            sid = create_session(
                executor, store, question, reference, [c.strategy], c.budget, spec.prm, spec.seed,
                spec.seeds, spec.max_tokens, False, None, budget_tokens, None, title=label,
                tags=("sweep", f"sweep:{sweep_id}"), batch="shared with other cells",
                **({} if spec.temperature == 0.8 else {"temperature": spec.temperature}),
            )  # fmt: skip
            store.set_sweep_cell(sweep_id, c.index, c.strategy, c.budget, sid)
            prm_info = prm_record(prm, spec.prm)
            (run,) = make_runs(
                question, [StrategySpec(c.strategy, params[c.strategy])], seed=spec.seed, reference=reference,
                model=model, prm=prm_info, max_tokens=spec.max_tokens, seeds=spec.seeds,
                token_budget=budget_tokens or 0, temperature=spec.temperature,
            )  # fmt: skip
            run.prm = prm
            live[run.run_id] = (c, sid, store.recorder(sid, share=link), label, prm)
            new.append(run)
            # its first request is not known until it starts: count what it may hold at once
            room -= registry.get(run.spec.name).sequences(run.spec.params)
            report(f"{len(live)} cells running · {label}")
        return new

    def ended(run_id: str, status: str, message: str) -> None:
        c, _, rec, label, prm = live.pop(run_id)
        rec.close()
        if prm is not shared_prm:
            executor.close_prm(prm)
        if rec.error:
            disk.append(rec.error)
        if status == "cancelled":
            result.cancelled = True
        elif status != "done":
            result.failed += 1
            msg = f"{label}: {status}: {message}"
            result.errors.append(msg)
            report(label, msg)
        else:
            result.ran += 1
            counts["n_done"] += 1
            counts["units_done"] += c.budget
            counts["units_now"] += c.budget
            report(label)

    def on_event(run: Any, ev: Any) -> None:
        cell = live.get(run.run_id)
        if cell is None:
            return
        cell[2].record(ev)
        if isinstance(ev, RunFinished):
            ended(run.run_id, ev.status, ev.message)

    try:
        Scheduler(executor, shared_prm, on_event=on_event, cancel=lambda: stop() or bool(disk)).run_fed(feed)
    finally:
        for rid in list(live):  # a run that ended before it started records nothing
            ended(rid, "failed", "it ended before it started")
        if shared_prm is not None:
            executor.close_prm(shared_prm)
    if disk:
        raise PonderError(f"The session database stopped taking writes: {disk[0]}")
    if stop():
        result.cancelled = True


def format_progress(p: SweepProgress, width: int = 28) -> str:
    """One line: a bar, cells, percent, elapsed, ETA, the cell running."""
    filled = int(round(p.fraction * width))
    eta = "--:--" if p.eta_s is None else hms(p.eta_s)
    fail = f"  {p.failed} failed" if p.failed else ""
    return (
        f"[{'#' * filled}{'.' * (width - filled)}] {p.done}/{p.total} cells {p.fraction:4.0%}  "
        f"{hms(p.elapsed_s)} elapsed  ETA {eta}{fail}  {p.current}"
    )


def hms(s: float) -> str:
    """Seconds as m:ss, or h:mm:ss from an hour."""
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m}:{sec:02d}"


# --- analysis ----------------------------------------------------------------------------------------


@dataclass
class _Candidates:
    """What one run leaves for selection: per chain (revisions) or one flat list."""

    answers: list[list[str | None]]
    scores: list[list[float]]
    correct: list[list[bool]]
    groups: list[list[int | None]] | None = None  # equivalence labels across all, decided once

    def __post_init__(self) -> None:
        if self.groups is None:
            self.groups = chain_groups(self.answers)


def _candidates(store: Store, run: RunInfo, reference: str, memo: dict[str | None, bool]) -> _Candidates:
    nodes = store.nodes(run.id)

    def right(a: str | None) -> bool:
        if a not in memo:
            memo[a] = bool(is_correct(a, reference)) if a is not None else False
        return memo[a]

    if registry.get(run.strategy).sweep_reads == "chains":
        by_id = {n["node_id"]: n for n in nodes}
        child = {n["parent_id"]: n["node_id"] for n in nodes if n["parent_id"] is not None}
        chains = []
        for root in sorted(n["node_id"] for n in nodes if n["parent_id"] is None):
            chain, nid = [], root
            while nid is not None:
                chain.append(by_id[nid])
                nid = child.get(nid)
            chains.append(chain)
    else:  # best-of-N's solutions, beam search's / DVTS's completed beams
        chains = [[n for n in nodes if n["finish_reason"] is not None]]
    answers = [[n["answer"] for n in ch] for ch in chains]
    return _Candidates(
        answers,
        [[float(n["score"] or 0.0) for n in ch] for ch in chains],
        [[right(a) for a in ch] for ch in answers],
    )


def _subsets(n: int, k: int, samples: int, rng: random.Random) -> list[tuple[int, ...]]:
    if k >= n:
        return [tuple(range(n))]
    if math.comb(n, k) <= samples:
        return list(itertools.combinations(range(n), k))
    return [tuple(sorted(rng.sample(range(n), k))) for _ in range(samples)]


def _accuracy(
    strategy: str, budget: int, cand: _Candidates, samples: int, rng: random.Random, tokens: bool = False
) -> dict[str, float]:
    """Expected accuracy of each selection method at ``budget`` from one run's candidates (a run
    at a token budget is read whole)."""
    acc = {m: 0.0 for m in METHODS}
    reads = registry.get(strategy).sweep_reads
    if tokens and reads == "subsets":
        reads = "exact"
    if reads == "chains":
        p = (
            {"chains": len(cand.answers), "length": max((len(c) for c in cand.answers), default=0)}
            if tokens
            else budget_params(strategy, budget)
        )
        subs = _subsets(len(cand.answers), p["chains"], samples, rng)
        for sub in subs:
            ans = [cand.answers[c][: p["length"]] for c in sub]
            sc = [cand.scores[c][: p["length"]] for c in sub]
            gr = [cand.groups[c][: p["length"]] for c in sub]  # type: ignore[index]
            for m in METHODS:
                pick = select_revisions(ans, sc, m, gr)
                if pick.chain is not None:
                    acc[m] += cand.correct[sub[pick.chain]][pick.attempt]  # type: ignore[index]
        return {m: v / len(subs) for m, v in acc.items()}
    answers, scores, correct, groups = cand.answers[0], cand.scores[0], cand.correct[0], cand.groups[0]  # type: ignore[index]
    subs = (
        _subsets(len(answers), budget, samples, rng) if reads == "subsets" else [tuple(range(len(answers)))]
    )
    for sub in subs:
        for m in METHODS:
            sel = select([answers[i] for i in sub], [scores[i] for i in sub], m, [groups[i] for i in sub])
            if sel.index is not None:
                acc[m] += correct[sub[sel.index]]
    return {m: v / len(subs) for m, v in acc.items()}


def _tie_order(acc: float, strategy: str, method: str, budget: int, strategies: Sequence[str]) -> tuple:
    """Sort key for "best": higher accuracy, then the smaller budget, then the baseline (best-of-N,
    weighted; so a tie claims no gain), then the strategy listed first, then weighted, majority,
    naive (one candidate gives all three the same answer: call it weighted, the default)."""
    return (
        round(acc, 12),
        -budget,
        (strategy, method) == ("best_of_n", "weighted"),
        -list(strategies).index(strategy),
        -("weighted", "majority", "naive").index(method),
    )


def analyse(
    store: Store,
    sweep_id: str,
    spec: SweepSpec,
    difficulty: str = "pass1",
    samples: int = SAMPLES,
) -> dict[str, Any]:
    """The summary of a sweep's cells for ``spec``'s problems, strategies and budgets (see the
    module docstring). Only problems whose every cell is done count, so all strategies are compared
    on the same problems."""
    if difficulty not in ("pass1", "prm"):
        raise InvalidRequestError("difficulty is pass1 (the model's own) or prm (the PRM's mean score).")
    info = store.sweep(sweep_id)
    pset = resolve_problem_set(spec.problem_set)
    if pset.digest != info.settings.get("digest"):
        raise PonderError(
            f"The problem set {spec.problem_set} has changed since sweep {info.id} ran it; "
            "run it as a new sweep."
        )
    indices = problem_indices(spec, pset)
    cells = plan_cells(spec, indices)
    have = store.sweep_cells(info.id)
    budgets = sorted(set(spec.budgets))
    complete, incomplete, failed = [], [], []
    for i in indices:
        runs = [have.get(c.key) for c in cells if c.index == i]
        if all(r is not None and r.status == "done" for r in runs):
            complete.append(i)
        elif any(r is not None and r.status == "failed" for r in runs):
            failed.append(i)
        else:
            incomplete.append(i)

    per_problem: dict[int, dict[str, Any]] = {}
    for i in complete:
        p = pset.problems[i]
        memo: dict[str | None, bool] = {}
        cands: dict[tuple[str, int], _Candidates] = {}
        row: dict[str, Any] = {"index": i, "accuracy": {}, "tokens": {}}
        for s in spec.strategies:
            for rb in run_budgets(s, budgets, spec.tokens):
                run = have[(i, s, rb)]
                assert run is not None
                cands[(s, rb)] = _candidates(store, run, p.reference, memo)
                row["tokens"][f"{s}@{rb}"] = run.generated_tokens + run.prm_tokens
                row.setdefault("flops", {})[f"{s}@{rb}"] = run.flops
            for b in budgets:
                rng = random.Random(f"{spec.seed}-{i}-{s}-{b}")
                cand = cands[(s, source_budget(s, b, budgets, spec.tokens))]
                acc = _accuracy(s, b, cand, samples, rng, spec.tokens)
                for m, v in acc.items():
                    row["accuracy"].setdefault(s, {}).setdefault(m, {})[b] = v
        # difficulty: over best-of-N's solutions (independent samples), else every candidate read
        pool = (
            [cands[("best_of_n", max(budgets))]] if "best_of_n" in spec.strategies else list(cands.values())
        )
        flat_c = [c for cd in pool for ch in cd.correct for c in ch]
        flat_s = [x for cd in pool for ch in cd.scores for x in ch]
        row["pass1"] = sum(flat_c) / len(flat_c) if flat_c else 0.0
        row["prm_mean"] = sum(flat_s) / len(flat_s) if flat_s else 0.0
        row["level"] = p.meta.get("level")
        per_problem[i] = row

    def mean_acc(idx: Sequence[int]) -> dict[str, dict[str, dict[int, float]]]:
        out: dict[str, dict[str, dict[int, float]]] = {}
        for s in spec.strategies:
            for m in METHODS:
                out.setdefault(s, {})[m] = {
                    b: (sum(per_problem[i]["accuracy"][s][m][b] for i in idx) / len(idx)) if idx else 0.0
                    for b in budgets
                }
        return out

    def baseline(acc: dict[str, dict[str, dict[int, float]]], b: int) -> float | None:
        return acc["best_of_n"]["weighted"][b] if "best_of_n" in acc else None

    # difficulty bins: easiest first
    if difficulty == "pass1":
        order = sorted(complete, key=lambda i: (-per_problem[i]["pass1"], -per_problem[i]["prm_mean"], i))
    else:
        order = sorted(complete, key=lambda i: (-per_problem[i]["prm_mean"], i))
    n_bins = min(N_BINS, len(order))
    bins = []

    def pick(acc: dict[str, dict[str, dict[int, float]]], b: int) -> tuple[float, str, str]:
        options = [(acc[s][m][b], s, m) for s in spec.strategies for m in METHODS]
        return max(options, key=lambda o: _tie_order(o[0], o[1], o[2], b, spec.strategies))

    default = ("best_of_n" if "best_of_n" in spec.strategies else spec.strategies[0], "weighted")
    optimal = {b: 0.0 for b in budgets}
    held_out = {b: 0.0 for b in budgets}
    for k in range(n_bins):
        lo, hi = len(order) * k // n_bins, len(order) * (k + 1) // n_bins
        members = order[lo:hi]
        acc = mean_acc(members)
        # 2-fold held out: alternate problems of the bin (by difficulty) into two halves; each half
        # is scored with the choice the other half makes (the baseline when the other is empty)
        halves = [members[0::2], members[1::2]]
        half_acc = [mean_acc(h) if h else None for h in halves]
        per_budget = {}
        for b in budgets:
            for h in (0, 1):
                other = half_acc[1 - h]
                s_, m_ = pick(other, b)[1:] if other is not None else default
                if half_acc[h] is not None:
                    held_out[b] += half_acc[h][s_][m_][b] * len(halves[h])  # type: ignore[index]
            best = pick(acc, b)
            base = baseline(acc, b)
            per_budget[b] = {
                "strategy": best[1],
                "selection": best[2],
                "accuracy": best[0],
                "best_of_n": base,
                "gain": None if base is None else best[0] - base,
            }
            optimal[b] += best[0] * len(members)
        overall = max(
            ((acc[s][m][b], -b, s, m) for s in spec.strategies for m in METHODS for b in budgets),
            key=lambda o: _tie_order(o[0], o[2], o[3], -o[1], spec.strategies),
        )
        key_name = "pass1" if difficulty == "pass1" else "prm_mean"
        vals = [per_problem[i][key_name] for i in members]
        bins.append(
            {
                "bin": k + 1,
                "problems": members,
                "difficulty_range": [min(vals), max(vals)],
                "accuracy": acc,
                "best_per_budget": per_budget,
                "best": {
                    "strategy": overall[2],
                    "selection": overall[3],
                    "budget": -overall[1],
                    "accuracy": overall[0],
                },
            }
        )
    n = len(complete)
    overall_acc = mean_acc(complete)
    tokens: dict[str, dict[int, float]] = {}
    for s in spec.strategies:
        for rb in run_budgets(s, budgets, spec.tokens):
            vals = [per_problem[i]["tokens"][f"{s}@{rb}"] for i in complete]
            tokens.setdefault(s, {})[rb] = sum(vals) / len(vals) if vals else 0.0
    # FLOPs per problem at each budget: a run's own, or (read from a larger run) its share b / B of it
    flops: dict[str, dict[int, float]] = {}
    for s in spec.strategies:
        for b in budgets:
            src = source_budget(s, b, budgets, spec.tokens)
            vals = [per_problem[i]["flops"][f"{s}@{src}"] * (b / src) for i in complete]
            flops.setdefault(s, {})[b] = sum(vals) / len(vals) if vals else 0.0
    intervals = _intervals({i: per_problem[i] for i in complete}, spec.strategies, budgets, spec.seed)
    for bn in bins:
        bn["intervals"] = _intervals(
            {i: per_problem[i] for i in bn["problems"]}, spec.strategies, budgets, spec.seed, ("weighted",)
        )
    levels: dict[int, dict[str, Any]] = {}  # by the set's own level (the ladder's, MATH's), when it has one
    for lv in sorted({r["level"] for r in per_problem.values() if isinstance(r["level"], int)}):
        idx = [i for i in complete if per_problem[i]["level"] == lv]
        acc = mean_acc(idx)
        levels[lv] = {
            "problems": len(idx),
            "pass1": sum(per_problem[i]["pass1"] for i in idx) / len(idx),
            "accuracy": {s: acc[s]["weighted"] for s in spec.strategies},
        }
    return {
        "sweep": {"id": info.id, "name": info.name, **info.settings},
        "spec": {
            "problem_set": spec.problem_set,
            "offset": spec.offset,
            "limit": spec.limit,
            "strategies": list(spec.strategies),
            "budgets": budgets,
            "prm": spec.prm,
            "seed": spec.seed,
            "seeds": spec.seeds,
            "max_tokens": spec.max_tokens,
            "budget_kind": spec.budget_kind,
        },
        "problems": {
            "requested": len(indices),
            "complete": n,
            "incomplete": incomplete,
            "failed": failed,
        },
        "method": {
            "subsampled": [] if spec.tokens else [s for s in spec.strategies if subsampled(s)],
            "budget": "generated tokens per strategy (matched by tokens)"
            if spec.tokens
            else "generations per strategy (matched by generations, as Snell et al. count them)",
            "samples_per_budget": samples,
            "difficulty": difficulty,
            "bins": n_bins,
            "note": "Best strategy per bin is picked and scored on the same problems (in-sample); "
            "compute_optimal_held_out picks on one half of each bin and scores on the other (2-fold).",
        },
        "accuracy": overall_acc,
        # 95% percentile-bootstrap intervals over problems (what a sweep of this many problems can tell)
        "intervals": intervals,
        "flops_per_problem": flops,
        "compute_optimal": {b: (optimal[b] / n if n else 0.0) for b in budgets},
        # the same choice made on one half of each bin and scored on the other: an estimate of what
        # the per-bin choice is worth on problems it was not picked on
        "compute_optimal_held_out": {b: (held_out[b] / n if n else 0.0) for b in budgets},
        "tokens_per_run": tokens,
        "bins": bins,
        "levels": levels,
        "per_problem": [per_problem[i] for i in complete],
    }


BOOTSTRAP = 2000  # resamples of the problems for each interval


def _intervals(
    rows: dict[int, dict[str, Any]],
    strategies: Sequence[str],
    budgets: Sequence[int],
    seed: int,
    methods: Sequence[str] = METHODS,
) -> dict[str, dict[str, dict[int, list[float]]]]:
    """[low, high] of a 95% percentile bootstrap over problems of each mean accuracy (seeded: the
    same store gives the same intervals). One problem (or none) gives [mean, mean]."""
    import numpy as np

    idx = sorted(rows)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(idx), size=(BOOTSTRAP, len(idx))) if len(idx) > 1 else None
    out: dict[str, dict[str, dict[int, list[float]]]] = {}
    for s in strategies:
        for m in methods:
            for b in budgets:
                v = np.array([rows[i]["accuracy"][s][m][b] for i in idx], dtype=float)
                if picks is None:
                    lo = hi = float(v.mean()) if len(v) else 0.0
                else:
                    means = v[picks].mean(axis=1)
                    lo, hi = (float(x) for x in np.percentile(means, [2.5, 97.5]))
                out.setdefault(s, {}).setdefault(m, {})[b] = [lo, hi]
    return out


# --- writing the results -----------------------------------------------------------------------------


def markdown_table(summary: dict[str, Any], title: bool = True) -> str:
    budgets = summary["spec"]["budgets"]
    tokens = summary["spec"].get("budget_kind") == "tokens"
    unit, mark = ("generated tokens, matched by tokens", "T=") if tokens else ("generations", "N=")
    pr = summary["problems"]
    head = [f"# Sweep {summary['sweep']['id']}", "", summary["sweep"]["name"], ""] if title else []
    lines = [
        *head,
        f"{pr['complete']} of {pr['requested']} problems complete"
        + (f"; {len(pr['failed'])} with a failed run" if pr["failed"] else "")
        + (f"; {len(pr['incomplete'])} not yet run" if pr["incomplete"] else "")
        + ".",
        "",
        f"## Accuracy against budget ({unit})",
        "",
        "| strategy | selection | " + " | ".join(f"{mark}{b}" for b in budgets) + " |",
        "|---|---|" + "---:|" * len(budgets),
    ]
    for s, by_m in summary["accuracy"].items():
        for m, by_b in by_m.items():
            cells = " | ".join(f"{100 * by_b[b]:.1f}%" for b in budgets)
            lines.append(f"| {registry.title(s)} | {m} | {cells} |")
    co = summary["compute_optimal"]
    lines.append(
        "| **compute-optimal** | per bin | " + " | ".join(f"**{100 * co[b]:.1f}%**" for b in budgets) + " |"
    )
    if "compute_optimal_held_out" in summary:
        ho = summary["compute_optimal_held_out"]
        lines.append(
            "| compute-optimal, held out | 2-fold | "
            + " | ".join(f"{100 * ho[b]:.1f}%" for b in budgets)
            + " |"
        )
    diff = "pass@1" if summary["method"]["difficulty"] == "pass1" else "mean PRM score"
    lines += [
        "",
        f"## By difficulty ({summary['method']['bins']} quantile bins of the model's {diff}, 1 = easiest)",
        "",
        "| bin | problems | "
        + diff
        + " | "
        + " | ".join(f"best at {mark}{b} (gain over best-of-N)" for b in budgets)
        + " |",
        "|---:|---:|---|" + "---|" * len(budgets),
    ]
    for b in summary["bins"]:
        lo, hi = b["difficulty_range"]
        row = []
        for n in budgets:
            c = b["best_per_budget"][n]
            gain = "" if c["gain"] is None else f" ({100 * c['gain']:+.1f})"
            name = registry.title(c["strategy"])
            row.append(f"{name} {c['selection']} {100 * c['accuracy']:.0f}%{gain}")
        lines.append(f"| {b['bin']} | {len(b['problems'])} | {lo:.2f}-{hi:.2f} | " + " | ".join(row) + " |")
    if summary.get("levels"):
        top = budgets[-1]
        names = [registry.title(s) for s in summary["accuracy"]]
        lines += [
            "",
            "## By the set's own level (weighted selection)",
            "",
            "| level | problems | pass@1 | "
            + " | ".join(f"{n} {mark}{budgets[0]} / {mark}{top}" for n in names)
            + " |",
            "|---:|---:|---:|" + "---:|" * len(names),
        ]
        for lv, row in summary["levels"].items():
            accs = " | ".join(
                f"{100 * a[budgets[0]]:.0f}% / {100 * a[top]:.0f}%" for a in row["accuracy"].values()
            )
            lines.append(f"| {lv} | {row['problems']} | {100 * row['pass1']:.0f}% | {accs} |")
    lines += ["", summary["method"]["note"], ""]
    return "\n".join(lines)


def json_ready(summary: dict[str, Any]) -> dict[str, Any]:
    """Budgets are int keys in memory; JSON keeps them as strings. Round-trips with :func:`load_summary`."""
    return json.loads(json.dumps(summary))


def load_summary(text: str) -> dict[str, Any]:
    """summary.json back, with budget keys as ints again."""

    def fix(o: Any) -> Any:
        if isinstance(o, dict):
            return {(int(k) if isinstance(k, str) and k.isdigit() else k): fix(v) for k, v in o.items()}
        if isinstance(o, list):
            return [fix(x) for x in o]
        return o

    return fix(json.loads(text))


def model_identity(path: str) -> dict[str, Any]:
    """The model fields a sweep key uses, read from the file without loading it."""
    from engine.gguf_info import file_identity, read_gguf

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


def write_outputs(summary: dict[str, Any], out: str | Path) -> list[Path]:
    """summary.json, summary.md and the charts (PNG and SVG, :mod:`engine.plots`) in folder ``out``
    (created). Returns the files written."""
    from engine.plots import write_charts
    from engine.store import write_export

    folder = Path(out).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PonderError(f"Cannot create the output folder {folder}: {e.strerror or e}.") from None
    files = [
        write_export(folder / "summary.json", json.dumps(json_ready(summary), indent=1)),
        write_export(folder / "summary.md", markdown_table(summary)),
    ]
    return files + write_charts(summary, folder)
