"""Running a sweep: every cell the store lacks, resumably, through one scheduler.

Each cell is a :class:`~engine.run.request.CompareRequest` of its own (one strategy at one budget
on one problem, a session of its own); one at a time they go through
:func:`~engine.run.compare.run_compare`, together they are each :func:`~engine.run.compare.prepare`-d
and fed to one scheduler as room frees up.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from engine.errors import PonderError
from engine.events import Event, RunFinished
from engine.executor import PRM, Executor
from engine.prm import registry as prm_kinds
from engine.problems import Problem, ProblemSet, resolve_problem_set
from engine.protocol import Generate
from engine.run.compare import Prepared, prepare, run_compare
from engine.run.request import CompareRequest
from engine.run.scheduler import Run, Scheduler
from engine.search import registry
from engine.store import Store
from engine.sweeps.plan import Cell, SweepSpec, plan_cells, problem_indices, sweep_key, sweep_name

IN_PROCESS_BATCH = 16  # sequences a sweep keeps decoding at once in process (ponder bench: 8-24 peak here)


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


def cell_request(spec: SweepSpec, p: Problem, c: Cell, sweep_id: str, shared: bool = False) -> CompareRequest:
    """The compare one cell runs (``shared``: in batches shared with other cells)."""
    return CompareRequest(
        problem=p.question,
        strategies=(c.strategy,),
        budget=c.budget,
        budget_tokens=c.budget if spec.tokens else None,
        overrides={c.strategy: spec.given(c.strategy)} if spec.given(c.strategy) else {},
        prm=spec.prm,
        reference=p.reference,
        seed=spec.seed,
        seeds=spec.seeds,
        max_tokens=spec.max_tokens,
        temperature=None if spec.temperature == 0.8 else spec.temperature,
        concurrent=False,
        title=cell_label(p, c),
        tags=("sweep", f"sweep:{sweep_id}"),
        extra={"batch": "shared with other cells"} if shared else {},
    )


@dataclass
class _Tally:
    """What a sweep call has done so far, and how it reports it."""

    sweep_id: str
    total: int
    units_total: int
    n_done: int
    units_done: int
    result: SweepResult
    on_progress: Callable[[SweepProgress], None] | None
    units_now: int = 0
    t0: float = field(default_factory=time.monotonic)

    def report(self, current: str, last_error: str = "") -> None:
        if self.on_progress is None:
            return
        el = time.monotonic() - self.t0
        eta = el / self.units_now * (self.units_total - self.units_done) if self.units_now else None
        self.on_progress(
            SweepProgress(
                self.sweep_id, self.n_done, self.total, self.units_done, self.units_total, el, eta,
                current, self.result.failed, last_error,
            )
        )  # fmt: skip

    def failed(self, label: str, message: str) -> None:
        self.result.failed += 1
        self.result.errors.append(message)
        self.report(label, message)

    def ran(self, c: Cell, label: str) -> None:
        self.result.ran += 1
        self.n_done += 1
        self.units_done += c.budget
        self.units_now += c.budget
        self.report(label)


def pending_requests(store: Store, spec: SweepSpec, model: dict[str, Any]) -> list[CompareRequest]:
    """The compares the cells of ``spec`` the store lacks would run (``model``: the executor's model
    record, or :func:`~engine.sweeps.plan.model_identity` of a GGUF before it loads), for the cost
    estimate; writes nothing."""
    spec.check()
    pset = resolve_problem_set(spec.problem_set)
    key, _ = sweep_key(pset, model, spec)
    sweep_id = next((w.id for w in store.list_sweeps() if w.key == key), None)
    have = store.sweep_cells(sweep_id) if sweep_id else {}
    done = {k for k, r in have.items() if r is not None and r.status == "done"}
    cells = [c for c in plan_cells(spec, problem_indices(spec, pset)) if c.key not in done]
    return [cell_request(spec, pset.problems[c.index], c, sweep_id or "") for c in cells]


def run_sweep(
    executor: Executor,
    store: Store,
    spec: SweepSpec,
    on_progress: Callable[[SweepProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    batch: int | None = None,
) -> SweepResult:
    """Run every cell of ``spec`` the store lacks, on ``executor`` in the calling thread.

    Cells run together through one scheduler, so that about ``batch`` sequences decode at once
    (default: :data:`IN_PROCESS_BATCH` in process, the servers' slots over servers): a new cell starts
    whenever the running ones hold fewer. Each cell is still a session of its own, linked to the
    sweep when it starts. ``batch=1`` runs one cell at a time, alone in its batches, so a resumed
    sweep reproduces an uninterrupted one token for token (cells sharing batches differ in float
    sums, as any two batch layouts do)."""
    spec.check()
    pset = resolve_problem_set(spec.problem_set)
    indices = problem_indices(spec, pset)
    key, settings = sweep_key(pset, executor.model_record(), spec)
    sweep_id = store.open_sweep(key, sweep_name(settings), settings)
    store.update_sweep(sweep_id, spec=dataclasses.asdict(spec))  # what the app reopens it with
    store.drop_orphan_sweep_sessions(sweep_id)  # a killed attempt's session that no cell points at
    cells = plan_cells(spec, indices)
    have = store.sweep_cells(sweep_id)
    done = {k for k, r in have.items() if r is not None and r.status == "done"}
    todo = [c for c in cells if c.key not in done]
    units_total = sum(c.budget for c in cells)
    result = SweepResult(sweep_id, 0, len(cells) - len(todo), 0, False)
    tally = _Tally(
        sweep_id, len(cells), units_total, len(cells) - len(todo),
        units_total - sum(c.budget for c in todo), result, on_progress,
    )  # fmt: skip
    tally.report(cell_label(pset.problems[todo[0].index], todo[0]) if todo else "")
    stop = cancel or (lambda: False)
    if batch is None:
        batch = getattr(executor, "slots", None) or IN_PROCESS_BATCH
    if batch > 1 and todo:
        _Together(executor, store, spec, pset, todo, batch, tally, stop).run()
    else:
        _one_at_a_time(executor, store, spec, pset, todo, tally, stop)
    return result


def _one_at_a_time(
    executor: Executor,
    store: Store,
    spec: SweepSpec,
    pset: ProblemSet,
    todo: list[Cell],
    tally: _Tally,
    stop: Callable[[], bool],
) -> None:
    """Each cell alone in its batches (``batch=1``): a resumed sweep reproduces an uninterrupted one."""
    result, sweep_id = tally.result, tally.sweep_id
    for c in todo:
        if stop():
            result.cancelled = True
            break
        p = pset.problems[c.index]
        label = cell_label(p, c)
        tally.report(label)

        def link(sid: str, c: Cell = c) -> None:
            store.set_sweep_cell(sweep_id, c.index, c.strategy, c.budget, sid)

        try:
            out = run_compare(
                executor, cell_request(spec, p, c, sweep_id), cancel=stop, store=store, on_session=link
            )
        except PonderError as e:
            tally.failed(label, f"{label}: {e}")
            continue
        status = out.runs[0].status if out.runs else "failed"
        if out.error:
            raise PonderError(f"The session database stopped taking writes: {out.error}")
        if status == "cancelled" or stop():
            result.cancelled = True
            break
        if status != "done":
            tally.failed(label, f"{label}: {status}: {out.runs[0].message if out.runs else ''}")
            continue
        tally.ran(c, label)


class _Together:
    """The cells of ``todo`` through one scheduler, a new one starting whenever the running cells
    hold fewer than ``batch`` sequences; each records into its own session."""

    def __init__(
        self,
        executor: Executor,
        store: Store,
        spec: SweepSpec,
        pset: ProblemSet,
        todo: list[Cell],
        batch: int,
        tally: _Tally,
        stop: Callable[[], bool],
    ) -> None:
        self.executor, self.store, self.spec, self.pset = executor, store, spec, pset
        self.queue, self.batch, self.tally, self.stop = list(todo), batch, tally, stop
        self.live: dict[str, tuple[Cell, Prepared, str]] = {}  # run id -> (cell, its compare, label)
        self.disk: list[str] = []  # the recording error that stops the sweep
        self.shared_scorer: PRM | None = None

    def run(self) -> None:
        spec, executor = self.spec, self.executor
        # A PRM that scores against each problem's reference is made per cell; any other serves them all.
        shared = not prm_kinds.needs_reference(spec.prm)
        self.shared_scorer = executor.make_prm(spec.prm, None) if shared else None
        try:
            Scheduler(executor, self.shared_scorer, on_event=self.on_event, cancel=self.stopped).run_fed(
                self.feed
            )
        finally:
            for rid in list(self.live):  # a run that ended before it started records nothing
                self.ended(rid, "failed", "it ended before it started")
            if self.shared_scorer is not None:
                executor.close_prm(self.shared_scorer)
        if self.disk:
            raise PonderError(f"The session database stopped taking writes: {self.disk[0]}")
        if self.stop():
            self.tally.result.cancelled = True

    def stopped(self) -> bool:
        return self.stop() or bool(self.disk)

    def feed(self, running: list[Run]) -> list[Run]:
        new: list[Run] = []
        room = self.batch - sum(_asking(r) for r in running)
        while self.queue and (room > 0 or not (running or new)) and not self.stop() and not self.disk:
            run = self.start(self.queue.pop(0))
            if run is not None:
                new.append(run)
                # its first request is not known until it starts: count what it may hold at once
                room -= registry.get(run.spec.name).sequences(run.spec.params)
        return new

    def start(self, c: Cell) -> Run | None:
        """One cell prepared (checked, its session saved and linked to the sweep), or None when it
        is refused (counted as failed)."""
        p = self.pset.problems[c.index]
        label = cell_label(p, c)
        link = next((x[1].recorder for x in self.live.values()), None)
        if link is not None:
            link.commit()  # the running cells' writes first: this thread's own would wait on them
        sweep_id = self.tally.sweep_id

        def linked(sid: str) -> None:
            self.store.set_sweep_cell(sweep_id, c.index, c.strategy, c.budget, sid)

        try:
            prepared = prepare(
                self.executor, cell_request(self.spec, p, c, sweep_id, shared=True), None, self.store,
                scorer=self.shared_scorer, share=link, on_session=linked,
            )  # fmt: skip
        except PonderError as e:
            self.tally.failed(label, f"{label}: {e}")
            return None
        (run,) = prepared.runs
        self.live[run.run_id] = (c, prepared, label)
        self.tally.report(f"{len(self.live)} cells running · {label}")
        return run

    def ended(self, run_id: str, status: str, message: str) -> None:
        c, prepared, label = self.live.pop(run_id)
        prepared.close()
        if prepared.recorder is not None and prepared.recorder.error:  # (a sweep always records)
            self.disk.append(prepared.recorder.error)
        if status == "cancelled":
            self.tally.result.cancelled = True
        elif status != "done":
            self.tally.failed(label, f"{label}: {status}: {message}")
        else:
            self.tally.ran(c, label)

    def on_event(self, run: Run, ev: Event) -> None:
        cell = self.live.get(run.run_id)
        if cell is None:
            return
        cell[1].sink(run, ev)
        if isinstance(ev, RunFinished):
            self.ended(run.run_id, ev.status, ev.message)


def _asking(run: Run) -> int:
    """Generations a run has asked for and not had back (what it adds to the batch now)."""
    return len(run.pending.items) if isinstance(run.pending, Generate) else 0


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
