"""``run_compare(executor, request)``: strategies side by side at a matched budget.

One path serves a plain compare, a recorded one (``store``), a sweep's cells (which
:func:`prepare` each and feed them to one scheduler) and a rerun: :func:`prepare` checks the request
against the executor, saves its session, makes its runs and its PRM; a
:class:`~engine.run.scheduler.Scheduler` runs them; :meth:`Prepared.close` ends the recording.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.answers import is_correct
from engine.errors import InvalidRequestError, PromptTooLongError
from engine.events import Event
from engine.executor import PRM, Executor
from engine.llama_lib import build_snapshot
from engine.prm import registry as prm_kinds
from engine.protocol import SYSTEM_PROMPT
from engine.run.request import CompareRequest
from engine.run.scheduler import EventSink, Run, Scheduler, StrategySpec, make_runs
from engine.search import registry

if TYPE_CHECKING:  # the store loads where a session is recorded
    from engine.store import Recorder, Store


@dataclass
class RunSummary:
    strategy: str
    run_id: str
    status: str
    answer: str | None
    correct: bool | None
    tally: dict[str, float]
    generated_tokens: int
    prompt_tokens: int
    prm_tokens: int
    seconds: float
    prm_seconds: float
    message: str = ""
    cached_tokens: int = 0  # of the prompt tokens, served from KV already held (shared or reused)
    policy_flops: float = 0.0
    prm_flops: float = 0.0
    generations: int = 0  # generations spent (the budget, except where it is a maximum: adaptive best-of-N)
    budget: int = 0  # generations the budget allowed

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarise(run: Run) -> RunSummary:
    sel = run.selected
    answer = sel.answer if sel else None
    return RunSummary(
        strategy=run.spec.name,
        run_id=run.run_id,
        status=run.status,
        answer=answer,
        correct=is_correct(answer, run.ctx.reference) if run.ctx.reference else None,
        tally=dict(sel.tally) if sel else {},
        generated_tokens=run.generated_tokens,
        prompt_tokens=run.prompt_tokens,
        prm_tokens=run.prm_tokens,
        seconds=round(run.wall_s, 3),
        prm_seconds=round(run.prm_s, 3),
        message=run.message,
        cached_tokens=run.cached_tokens,
        policy_flops=run.policy_flops,
        prm_flops=run.prm_flops,
        generations=_spent(run),
        budget=_budget(run),
    )


def _budget(run: Run) -> int:
    strat = registry.find(run.spec.name)
    try:
        return int(strat.cost(dict(run.spec.params))) if strat is not None else 0
    except (KeyError, TypeError, ValueError):
        return 0


def _spent(run: Run) -> int:
    strat = registry.find(run.spec.name)
    if strat is None or strat.count_spent is None:
        return _budget(run)
    return int(strat.count_spent(run.trace()))


def prm_record(scorer: PRM, spec: str) -> dict[str, Any]:
    """What a run records about its PRM (its kind's :meth:`~engine.prm.PRMKind.record`): name, spec,
    kind, its model where it has one, and the parameters its FLOPs are counted with."""
    return dict(prm_kinds.get(spec).record(scorer, spec))


def check_prompt(executor: Executor, problem: str, max_tokens: int) -> None:
    """The problem as a chat prompt fits the context with room for a solution (where the backend
    can tell before running)."""
    fit = executor.prompt_fit((("system", SYSTEM_PROMPT), ("user", problem.strip())))
    if fit is None:
        return
    n_prompt, n_ctx = fit
    if n_prompt >= n_ctx:
        raise PromptTooLongError(n_prompt, n_ctx)
    if n_prompt + 1 + min(max_tokens, 16) > n_ctx:
        raise InvalidRequestError(
            f"The problem takes {n_prompt} of the context's {n_ctx} tokens, leaving no room for a "
            "solution. Shorten the problem or raise the context size (--ctx)."
        )


def check_compare(executor: Executor, request: CompareRequest) -> CompareRequest:
    """What can be known before anything runs, said in the user's terms (budget, tokens, context):
    the request checked, and its problem fits the executor's context with room for a solution. Any
    budget runs: generations beyond the sequences decoded at once wait for one to finish."""
    request = request.checked()
    check_prompt(executor, request.problem, request.max_tokens)
    return request


@dataclass
class CompareResult:
    session_id: str | None  # None when nothing was recorded (no store)
    runs: list[Run]
    error: str | None = None  # the recording error when the disk refused writes midway
    summaries: list[RunSummary] = field(default_factory=list)


@dataclass
class Prepared:
    """A checked request on an executor: its runs and PRM, and its session and recorder when it is
    recorded. ``sink`` records each event and passes it on."""

    request: CompareRequest
    executor: Executor
    runs: list[Run]
    scorer: PRM
    owns_scorer: bool  # made for this request (closed with it), not shared by the caller
    session_id: str | None = None
    store: Store | None = None
    recorder: Recorder | None = None
    forward: EventSink | None = None

    def sink(self, run: Run, ev: Event) -> None:
        if self.recorder is not None:
            self.recorder.record(ev)
        if self.forward is not None:
            self.forward(run, ev)

    def close(self, ok: bool = True) -> None:
        """Recording ended, the PRM closed when it is the request's own; after a failure, a
        session in which no run started (a request refused midway) is deleted."""
        try:
            if self.recorder is not None:
                self.recorder.close()
                store, sid = self.store, self.session_id
                assert store is not None and sid is not None  # a recorder records into a saved session
                if not ok and store.session(sid).runs == []:
                    store.delete_session(sid)
        finally:
            if self.owns_scorer:
                self.executor.close_prm(self.scorer)

    def result(self) -> CompareResult:
        error = self.recorder.error if self.recorder is not None else None
        return CompareResult(self.session_id, self.runs, error, [summarise(r) for r in self.runs])


def prepare(
    executor: Executor,
    request: CompareRequest,
    sink: EventSink | None = None,
    store: Store | None = None,
    *,
    scorer: PRM | None = None,
    share: Recorder | None = None,
    on_session: Callable[[str], None] | None = None,
) -> Prepared:
    """Check ``request`` on ``executor`` (refused before a session is saved for it), save its
    session in ``store`` (``on_session`` hears its id at once: a sweep links its cell then), make
    its runs and its PRM (``scorer``: one the caller shares among requests), and record into the
    session (``share``: another recorder's connection, for cells that run together)."""
    request = check_compare(executor, request)
    owned = scorer is None  # made here, so closed here
    if scorer is None:
        scorer = executor.make_prm(request.prm, request.reference)
    try:
        sid: str | None = None
        rec: Recorder | None = None
        if store is not None:
            sid = store.create_session(
                request.problem,
                request.reference,
                title=request.title,
                tags=list(request.tags),
                settings={**request.settings(), **executor.session_settings()},
                build=build_snapshot(),
                rerun_of=request.rerun_of,
            )
            if on_session is not None:
                on_session(sid)
            rec = store.recorder(sid, share=share)
        specs = [StrategySpec(name, dict(request.params[name])) for name in request.strategies]
        runs = make_runs(
            request.problem,
            specs,
            seed=request.seed,
            reference=request.reference,
            model=executor.record(),
            prm_record=prm_record(scorer, request.prm),
            max_tokens=request.max_tokens,
            seeds=request.seeds,
            budget_tokens=request.budget_tokens or 0,
            **({} if request.temperature is None else {"temperature": request.temperature}),
        )
    except BaseException:
        if rec is not None:
            rec.close()
        if sid is not None and store is not None:
            store.delete_session(sid)
        if owned:
            executor.close_prm(scorer)
        raise
    for run in runs:
        run.scorer = scorer
    return Prepared(request, executor, runs, scorer, owned, sid, store, rec, sink)


def run_compare(
    executor: Executor,
    request: CompareRequest,
    sink: EventSink | None = None,
    cancel: Callable[[], bool] | None = None,
    store: Store | None = None,
    on_session: Callable[[str], None] | None = None,
) -> CompareResult:
    """Run ``request``'s strategies on ``executor`` side by side (or one after another), in the
    calling thread (the one that owns the executor), every event to ``sink`` and, with ``store``,
    recorded into a new session."""
    prepared = prepare(executor, request, sink, store, on_session=on_session)
    ok = False
    try:
        scheduler = Scheduler(
            executor, prepared.scorer, on_event=prepared.sink, cancel=cancel, stream_text=request.stream_text
        )
        scheduler.run(prepared.runs, prepared.request.concurrent)
        ok = True
    finally:
        prepared.close(ok)
    return prepared.result()
