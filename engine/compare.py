"""``compare(problem, strategies, budget)``: strategies side by side at a matched budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.answers import is_correct
from engine.backends.base import as_executor
from engine.errors import InvalidRequestError
from engine.events import Event
from engine.search import DEFAULT_STRATEGIES, budget_params, get_strategy
from engine.search.scheduler import Run, Scheduler, StrategySpec, make_runs


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

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(run: Run) -> RunSummary:
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
    )


def compare(
    backend: Any,
    problem: str,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    budget: int = 8,
    prm: str = "judge",
    reference: str | None = None,
    seed: int = 0,
    max_tokens: int = 2048,
    concurrent: bool = True,
    on_event: Callable[[Run, Event], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
    stream_text: bool = False,
) -> list[Run]:
    """Run ``strategies`` on ``problem`` with a generation budget each, side by side (or one after
    another with ``concurrent=False``), in the calling thread. ``backend`` is an
    :class:`~engine.backends.base.Executor` (in process or over servers) or a llama.cpp
    :class:`~engine.backends.llama_cpp.Backend` owned by this thread."""
    if not problem or not problem.strip():
        raise InvalidRequestError("The problem is empty: give the question to solve.")
    if not strategies:
        raise InvalidRequestError("Choose at least one strategy.")
    if max_tokens < 1:
        raise InvalidRequestError("max_tokens must be >= 1")
    specs = []
    for name in strategies:
        get_strategy(name)
        specs.append(StrategySpec(name, budget_params(name, budget, **(overrides or {}).get(name, {}))))
    if reference is not None and not str(reference).strip():
        reference = None
    executor = as_executor(backend)
    scorer = executor.make_prm(prm, reference)
    try:
        prm_info = {"name": getattr(scorer, "name", prm), "spec": prm}
        if getattr(scorer, "model_record", None):
            prm_info["model"] = scorer.model_record
        runs = make_runs(
            problem.strip(),
            specs,
            seed=seed,
            reference=reference,
            model=executor.model_record(),
            prm=prm_info,
            max_tokens=max_tokens,
        )
        Scheduler(executor, scorer, on_event=on_event, cancel=cancel, stream_text=stream_text).run(
            runs, concurrent
        )
        return runs
    finally:
        executor.close_prm(scorer)
