"""Run strategies side by side on one backend, merging their work into shared batches.

Like llama.cpp's server loop: every strategy is a generator (see ``protocol.py``); the scheduler
advances each until it asks for something, then serves all the asks together:

* Generate requests of every strategy become branches of the one context, and every live branch of
  every strategy advances in the same ``llama_decode`` (continuous batching: a strategy whose
  request finishes gets its results and may add new branches while the others keep generating);
* a chat prompt is decoded once and forked (all strategies share the question's KV cells);
* Score requests waiting at the same time go to the PRM in one call (one batched pass);
* Release requests free branches at once.

Runs report through :mod:`engine.events`; the scheduler adds ``RunFinished`` with each run's
generated / prompt / PRM tokens and wall time. ``concurrent=False`` runs the same strategies one
after another (the baseline of ``ponder bench --compare``).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.backend import Backend, Branch, TokenEvent
from engine.errors import Cancelled, PonderError
from engine.events import Event, RunFinished, Selected, TextDelta, fold
from engine.search import get_strategy
from engine.search.protocol import Generate, Generated, GenItem, Release, RunContext, Score


@dataclass
class StrategySpec:
    name: str
    params: dict[str, Any]


@dataclass
class Run:
    """One strategy's run: its events and counters."""

    spec: StrategySpec
    ctx: RunContext
    gen: Any = None
    events: list[Event] = field(default_factory=list)
    pending: Any = None
    in_flight: list[tuple[GenItem, Branch]] | None = None
    scoring: bool = False  # its Score request is being served by a job
    nodes: dict[int, Branch] = field(default_factory=dict)
    done: bool = False
    status: str = "done"
    message: str = ""
    generated_tokens: int = 0
    prompt_tokens: int = 0
    prm_tokens: int = 0
    prm_s: float = 0.0
    t0: float = 0.0
    wall_s: float = 0.0

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def selected(self) -> Selected | None:
        return next((e for e in reversed(self.events) if isinstance(e, Selected)), None)

    def trace(self):
        return fold([e for e in self.events if not isinstance(e, TextDelta)])


EventSink = Callable[[Run, Event], None]


@dataclass
class _ScoreJob:
    """One PRM pass over the candidates of the runs that asked together."""

    spans: list[tuple[Run, int, int]]  # (run, first candidate, count)
    cands: list[tuple[str, ...]]
    tokens_before: int
    t0: float
    gen: Any = None
    need: list[Branch] = field(default_factory=list)


class Scheduler:
    def __init__(
        self,
        backend: Backend,
        prm: Any,
        on_event: EventSink | None = None,
        cancel: Callable[[], bool] | None = None,
        stream_text: bool = False,
    ) -> None:
        self.backend = backend
        self.prm = prm
        self.on_event = on_event
        self.cancel = cancel
        self.stream_text = stream_text
        self._roots: dict[tuple, Branch] = {}
        self._shared_keys: set[tuple] = set()
        self._jobs: list[_ScoreJob] = []

    # --- running ------------------------------------------------------------------------------------

    def run(self, runs: Sequence[Run], concurrent: bool = True) -> list[Run]:
        try:
            if concurrent:
                self._loop(list(runs))
            else:
                for r in runs:
                    self._loop([r])
        finally:
            for job in self._jobs:
                job.gen.close()  # frees the job's branches
            self._jobs.clear()
            for root in self._roots.values():
                if not root.freed:
                    self.backend.free(root)
            self._roots.clear()
        return list(runs)

    def _pieces(self, tokens: list[int]) -> tuple[str, ...]:
        import codecs

        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return tuple(dec.decode(self.backend.piece(t)) for t in tokens)

    def _emit(self, run: Run, ev: Event) -> None:
        run.events.append(ev)
        if self.on_event is not None:
            self.on_event(run, ev)

    def _advance(self, run: Run, value: Any) -> None:
        """Resume a strategy with ``value`` until it asks for something or ends."""
        try:
            item = run.gen.send(value)
            while isinstance(item, Event):
                self._emit(run, item)
                item = run.gen.send(None)
            run.pending = item
        except StopIteration:
            self._finish(run, "done", "")
        except PonderError as e:
            self._finish(run, "failed", str(e))

    def _finish(self, run: Run, status: str, message: str) -> None:
        if run.done:
            return
        run.done = True
        run.pending = None
        for b in list(run.nodes.values()):
            if not b.freed:
                self.backend.free(b)
        run.nodes.clear()
        if run.in_flight:
            for _, b in run.in_flight:
                if not b.freed:
                    self.backend.free(b)
            run.in_flight = None
        run.wall_s = time.perf_counter() - run.t0
        run.status, run.message = status, message
        if run.events:  # a run that never started (no RunStarted) records nothing
            self._emit(
                run,
                RunFinished(
                    run.run_id,
                    status,
                    message,
                    run.generated_tokens,
                    run.prompt_tokens,
                    run.prm_tokens,
                    round(run.wall_s, 4),
                ),
            )

    def _loop(self, runs: list[Run]) -> None:
        for r in runs:
            r.t0 = time.perf_counter()
            r.gen = get_strategy(r.spec.name)(r.ctx, **r.spec.params)
            self._advance(r, None)
        while True:
            live = [r for r in runs if not r.done]
            if not live:
                return
            if self.cancel is not None and self.cancel():
                for r in live:
                    self._finish(r, "cancelled", "Cancelled by the user.")
                return
            try:
                if self._serve_releases(live):
                    continue
                if self._serve_scores(live):
                    continue
                self._start_generations(live)
                self._step(live)
            except Cancelled:
                for r in live:
                    self._finish(r, "cancelled", "Cancelled by the user.")
                return
            except PonderError as e:  # a full KV cache, a PRM that cannot judge ...: every live run fails
                for r in live:
                    self._finish(r, "failed", str(e))
                return

    def _serve_releases(self, live: list[Run]) -> bool:
        served = False
        for r in live:
            if isinstance(r.pending, Release):
                for nid in r.pending.node_ids:
                    b = r.nodes.pop(nid, None)
                    if b is not None and not b.freed:
                        self.backend.free(b)
                served = True
                self._advance(r, None)
        return served

    def _serve_scores(self, live: list[Run]) -> bool:
        """Score requests waiting now go to the PRM together. A PRM that can score incrementally
        (``score_gen``) becomes a job whose decodes ride in the generation batches; others score
        at once. Returns True when something was answered synchronously."""
        asking = [r for r in live if isinstance(r.pending, Score) and not r.scoring]
        if not asking:
            return False
        cands: list[tuple[str, ...]] = []
        finished: list[bool] = []
        spans = []
        for r in asking:
            spans.append((r, len(cands), len(r.pending.candidates)))
            cands += r.pending.candidates
            finished += r.pending.finished
        job = _ScoreJob(spans, cands, getattr(self.prm, "tokens_used", 0), time.perf_counter())
        if hasattr(self.prm, "score_gen"):
            for r in asking:
                r.scoring = True
            job.gen = self.prm.score_gen(asking[0].ctx.problem, cands, finished, cancel=self.cancel)
            self._jobs.append(job)
            self._resume_job(job)
            return False
        self._complete_job(job, self.prm.score(asking[0].ctx.problem, cands, finished, cancel=self.cancel))
        return True

    def _resume_job(self, job: _ScoreJob) -> None:
        try:
            job.need = job.gen.send(None)
        except StopIteration as stop:
            self._jobs.remove(job)
            self._complete_job(job, stop.value)

    def _complete_job(self, job: _ScoreJob, scores: list[list[float]]) -> None:
        dt = time.perf_counter() - job.t0
        used = getattr(self.prm, "tokens_used", 0) - job.tokens_before
        total_steps = sum(len(c) for c in job.cands) or 1
        for r, start, n in job.spans:
            share = sum(len(c) for c in job.cands[start : start + n]) / total_steps
            r.prm_tokens += round(used * share)
            r.prm_s += dt * share
            r.scoring = False
            if not r.done:
                self._advance(r, scores[start : start + n])

    def _root_for(self, run: Run, messages: tuple) -> Branch:
        root = self._roots.get(messages)
        if root is None or root.freed:
            tokens = self.backend.chat_tokens([{"role": role, "content": text} for role, text in messages])
            root = self.backend.root(tokens)
            self._roots[messages] = root
            run.prompt_tokens += len(tokens)
        return root

    def _start_generations(self, live: list[Run]) -> None:
        new = [r for r in live if isinstance(r.pending, Generate) and r.in_flight is None]
        if not new:
            return
        # Decode every new prompt in one batch before forking from them.
        roots = []
        for r in new:
            for item in r.pending.items:
                if item.messages is not None:
                    roots.append(self._root_for(r, item.messages))
            self._shared_keys.add(r.ctx.question_messages())
        self.backend.prefill([x for x in dict.fromkeys(roots) if x.pending > 0], cancel=self.cancel)
        for r in new:
            flight = []
            for item in r.pending.items:
                if item.parent is not None:
                    parent = r.nodes.get(item.parent)
                    if parent is None:
                        raise PonderError(
                            f"strategy {r.spec.name} continued node {item.parent}, which it does not hold"
                        )
                else:
                    parent = self._roots[item.messages]
                (child,) = self.backend.fork(parent, 1, item.params)
                flight.append((item, child))
            r.in_flight = flight
        # Prompts used once (revision chats) are not kept: their children hold the cells.
        for key in [k for k in self._roots if k not in self._shared_keys]:
            self.backend.free(self._roots.pop(key))

    def _step(self, live: list[Run]) -> None:
        flying = [r for r in live if r.in_flight is not None]
        probes = [b for job in self._jobs for b in job.need if b.pending > 0]
        if not flying and not probes:
            if self._jobs:  # everything they asked for is decoded already
                for job in list(self._jobs):
                    self._resume_job(job)
                return
            if any(not r.done and r.pending is None for r in live):
                raise PonderError("a strategy stopped without finishing")
            return
        branches = [b for r in flying for _, b in r.in_flight if not b.finished]
        events = self.backend.step(branches, probes=probes)
        if self.stream_text and self.on_event is not None:
            self._stream(flying, events)
        # Jobs read their rows now, before the next decode overwrites them.
        for job in list(self._jobs):
            if all(b.pending == 0 for b in job.need):
                self._resume_job(job)
        for r in flying:
            if all(b.finished for _, b in r.in_flight):
                results = []
                for item, b in r.in_flight:
                    r.generated_tokens += b.n_generated
                    r.nodes[item.node_id] = b
                    results.append(
                        Generated(
                            item.node_id,
                            b.text,
                            b.n_generated,
                            tuple(b.logprobs),
                            b.finish_reason or "length",
                            self._pieces(b.generated),
                        )
                    )
                r.in_flight = None
                self._advance(r, results)

    def _stream(self, flying: list[Run], events: list[TokenEvent]) -> None:
        owner = {id(b): (r, item.node_id) for r in flying for item, b in r.in_flight}
        for ev in events:
            hit = owner.get(id(ev.branch))
            if hit is not None and ev.piece:
                r, nid = hit
                self.on_event(r, TextDelta(r.run_id, nid, ev.piece))  # type: ignore[misc]


def make_runs(
    problem: str,
    strategies: Sequence[StrategySpec],
    seed: int = 0,
    reference: str | None = None,
    model: dict[str, Any] | None = None,
    prm: dict[str, Any] | None = None,
    **ctx_kw: Any,
) -> list[Run]:
    """One Run per strategy, each with its own id and the same seed, problem and settings."""
    out = []
    for spec in strategies:
        ctx = RunContext(
            run_id=uuid.uuid4().hex[:12],
            problem=problem,
            seed=seed,
            reference=reference,
            model=dict(model or {}),
            prm=dict(prm or {}),
            **ctx_kw,
        )
        out.append(Run(spec, ctx))
    return out
