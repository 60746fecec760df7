"""Run strategies side by side on one executor, merging their work into shared batches.

Like llama.cpp's server loop: every strategy is a generator (see ``protocol.py``); the scheduler
advances each until it asks for something, then hands the asks to an
:class:`~engine.executor.Executor` (in process: one llama.cpp context; or inference servers) and
feeds back what it answers:

* Generate requests of every strategy are in flight together (in process: every live branch advances
  in the same ``llama_decode``; over servers: every request is sent at once, up to the servers'
  slots); a strategy whose request finishes gets its results and may ask again while the others go on;
* Score requests go to the PRM as they come, one pass per run, each run's candidates scored against
  its own problem with its own PRM (in process a judge's passes ride in the generation batches);
* Release requests free nodes at once.

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

from engine.errors import Cancelled, PonderError
from engine.events import Event, RunFinished, Selected, TextDelta, fold
from engine.executor import PRM, Delta, Executor, GenDone, Outcome, RunFailed, ScoreAsk, ScoreDone
from engine.protocol import Generate, Release, Request, RunContext, Score, StrategyGen
from engine.search import get_strategy


@dataclass
class StrategySpec:
    name: str
    params: dict[str, Any]


@dataclass
class Run:
    """One strategy's run: its events and counters."""

    spec: StrategySpec
    ctx: RunContext
    gen: StrategyGen | None = None
    events: list[Event] = field(default_factory=list)
    pending: Request | None = None  # what its strategy asked for last
    waiting: bool = False  # its request is with the executor
    done: bool = False
    status: str = "done"
    message: str = ""
    generated_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    prm_tokens: int = 0
    prm_s: float = 0.0
    scorer: PRM | None = None  # the run's own PRM (a sweep's reference PRM knows each problem's answer)
    t0: float = 0.0
    wall_s: float = 0.0

    @property
    def run_id(self) -> str:
        return self.ctx.run_id

    @property
    def policy_flops(self) -> float:
        """2 x the policy's parameters x every token it read or wrote for this run: its prompts
        (each once per run, shared or not) and its generations."""
        return 2.0 * float(self.ctx.model.get("n_params") or 0) * (self.prompt_tokens + self.generated_tokens)

    @property
    def prm_flops(self) -> float:
        return 2.0 * float(self.ctx.prm_record.get("n_params") or 0) * self.prm_tokens

    @property
    def selected(self) -> Selected | None:
        return next((e for e in reversed(self.events) if isinstance(e, Selected)), None)

    def trace(self):
        return fold([e for e in self.events if not isinstance(e, TextDelta)])


EventSink = Callable[[Run, Event], None]


class Scheduler:
    def __init__(
        self,
        executor: Executor,
        scorer: PRM | None,
        on_event: EventSink | None = None,
        cancel: Callable[[], bool] | None = None,
        stream_text: bool = False,
    ) -> None:
        self.executor = executor
        self.scorer = scorer
        self.on_event = on_event
        self.cancel = cancel
        self.stream_text = stream_text

    # --- running ------------------------------------------------------------------------------------

    def run(self, runs: Sequence[Run], concurrent: bool = True) -> list[Run]:
        self.executor.attach(self.cancel, self.stream_text)
        try:
            if concurrent:
                self._loop(list(runs))
            else:
                for r in runs:
                    self._loop([r])
        finally:
            self.executor.finish()
        return list(runs)

    def run_fed(self, feed: Callable[[list[Run]], list[Run]]) -> None:
        """Run what ``feed`` hands over, as it hands it over: ``feed`` gets the live runs before each
        step and returns new runs to start now (none: it has nothing more, or waits for room). Ends
        when no run is live and ``feed`` has nothing. How a sweep keeps many problems in one batch."""
        self.executor.attach(self.cancel, self.stream_text)
        try:
            self._loop([], feed)
        finally:
            self.executor.finish()

    def _emit(self, run: Run, ev: Event) -> None:
        run.events.append(ev)
        if self.on_event is not None:
            self.on_event(run, ev)

    def _advance(self, run: Run, value: Any) -> None:
        """Resume a strategy with ``value`` (the answer to its request: see StrategyGen) until it asks
        for something or ends."""
        run.waiting = False
        gen = run.gen
        assert gen is not None  # set by _start before the first step
        try:
            item = gen.send(value)
            while isinstance(item, Event):
                self._emit(run, item)
                item = gen.send(None)
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
        self.executor.end_run(run.run_id)
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
                    run.cached_tokens,
                    run.policy_flops,
                    run.prm_flops,
                ),
            )

    def _start(self, runs: list[Run], by_id: dict[str, Run], thinking: bool) -> None:
        for r in runs:
            by_id[r.run_id] = r
            r.ctx.thinking = thinking
            r.t0 = time.perf_counter()
            r.gen = get_strategy(r.spec.name)(r.ctx, **r.spec.params)
            self._advance(r, None)

    def _loop(self, runs: list[Run], feed: Callable[[list[Run]], list[Run]] | None = None) -> None:
        by_id: dict[str, Run] = {}
        thinking = self.executor.thinking()
        self._start(runs, by_id, thinking)
        while True:
            live = [r for r in runs if not r.done]
            if feed is not None and not (self.cancel is not None and self.cancel()):
                new = feed(live)
                if new:
                    runs += new
                    self._start(new, by_id, thinking)
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
                if not self.executor.busy():
                    if any(r.pending is None for r in live):
                        raise PonderError("a strategy stopped without finishing")
                    continue
                self._deliver(by_id, self.executor.poll())
            except Cancelled:
                for r in live:
                    self._finish(r, "cancelled", "Cancelled by the user.")
                return
            except PonderError as e:  # a full KV cache, a PRM that cannot judge ...: every live run fails
                for r in live:
                    self._finish(r, "failed", str(e))
                if feed is None:
                    return  # (a sweep goes on with its next cells)

    def _serve_releases(self, live: list[Run]) -> bool:
        served = False
        for r in live:
            if isinstance(r.pending, Release):
                self.executor.release(r.run_id, r.pending.node_ids)
                served = True
                self._advance(r, None)
        return served

    def _serve_scores(self, live: list[Run]) -> bool:
        """Score requests waiting now go to the PRM, one pass per run (its candidates judged against
        its own problem). Returns True when something was answered at once (a PRM that needs no
        model)."""
        asking = [(r, r.pending) for r in live if isinstance(r.pending, Score) and not r.waiting]
        if not asking:
            return False
        answered = False
        for r, req in asking:
            # One pass per run, so the PRM's tokens are the run's own (runs of one question still
            # share the judge's cached verdicts and cells).
            r.waiting = True
            group = [r]
            asks = [ScoreAsk(r.run_id, req.candidates, req.finished)]
            done = self.executor.score(r.scorer or self.scorer, r.ctx.problem, asks)  # type: ignore[arg-type]  # a scoring run has a PRM
            if done is not None:
                self._scored(done, {r.run_id: r for r in group})
                answered = True
        return answered

    def _scored(self, done: ScoreDone, by_id: dict[str, Run]) -> None:
        for rid, scores in done.scores.items():
            r = by_id.get(rid)
            if r is None or r.done:
                continue
            r.prm_tokens += done.prm_tokens.get(rid, 0)
            r.prm_s += done.prm_s.get(rid, 0.0)
            self._advance(r, scores)

    def _start_generations(self, live: list[Run]) -> None:
        for r in live:
            if isinstance(r.pending, Generate) and not r.waiting:
                r.waiting = True
                self.executor.generate(r.run_id, r.pending.items, keep_prompt=r.ctx.question_messages())

    def _deliver(self, by_id: dict[str, Run], outcomes: list[Outcome]) -> None:
        for o in outcomes:
            if isinstance(o, Delta):
                r = by_id.get(o.run_id)
                if r is not None and not r.done and self.on_event is not None:
                    self.on_event(r, TextDelta(r.run_id, o.node_id, o.text))
            elif isinstance(o, GenDone):
                r = by_id.get(o.run_id)
                if r is None or r.done:
                    continue
                r.generated_tokens += sum(g.n_tokens for g in o.results)
                r.prompt_tokens += o.prompt_tokens
                r.cached_tokens += o.cached_tokens
                self._advance(r, o.results)
            elif isinstance(o, ScoreDone):
                self._scored(o, by_id)
            elif isinstance(o, RunFailed):
                r = by_id.get(o.run_id)
                if r is not None:
                    self._finish(r, "failed", o.message)


def make_runs(
    problem: str,
    strategies: Sequence[StrategySpec],
    seed: int = 0,
    reference: str | None = None,
    model: dict[str, Any] | None = None,
    prm_record: dict[str, Any] | None = None,
    **ctx_kw: Any,
) -> list[Run]:
    """One Run per strategy, each with its own id and the same seed, problem and settings."""
    out = []
    for spec in strategies:
        ctx = RunContext(
            run_id=uuid.uuid4().hex[:12],
            strategy=spec.name,
            problem=problem,
            seed=seed,
            reference=reference,
            model=dict(model or {}),
            prm_record=dict(prm_record or {}),
            **ctx_kw,
        )
        out.append(Run(spec, ctx))
    return out
