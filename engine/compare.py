"""``compare(problem, strategies, budget)``: strategies side by side at a matched budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.answers import is_correct
from engine.backends.base import as_executor
from engine.errors import InvalidRequestError, PromptTooLongError
from engine.events import Event
from engine.problems import clean_text
from engine.search import budget_params, default_strategies, token_params
from engine.search.protocol import SYSTEM_PROMPT
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
    cached_tokens: int = 0  # of the prompt tokens, served from KV already held (shared or reused)
    policy_flops: float = 0.0
    prm_flops: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prm_record(scorer: Any, spec: str) -> dict[str, Any]:
    """What a run records about its PRM: name, spec, its model where it has one, and the parameters
    its FLOPs are counted with (0 for a PRM that runs no model)."""
    info: dict[str, Any] = {"name": getattr(scorer, "name", spec), "spec": spec}
    if getattr(scorer, "model_record", None):
        info["model"] = scorer.model_record
    info["n_params"] = int(getattr(scorer, "n_params", 0) or 0)
    return info


def human_flops(x: float) -> str:
    """FLOPs as a reader takes them in: 3.1 TFLOP, 870 GFLOP; "-" when unknown (no parameter count)."""
    if not x:
        return "-"
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            v = x / scale
            return f"{v:.3g} {unit}FLOP"
    return f"{x:.0f} FLOP"


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
        cached_tokens=run.cached_tokens,
        policy_flops=run.policy_flops,
        prm_flops=run.prm_flops,
    )


SEED_MODES = ("independent", "common")  # a stream per strategy, or common random numbers


def strategy_params(
    names: Sequence[str],
    budget: int,
    overrides: dict[str, dict[str, Any]] | None = None,
    budget_tokens: int | None = None,
    max_tokens: int = 2048,
    solution_tokens: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Each strategy's parameters for a budget of ``budget`` generations, or, with
    ``budget_tokens``, of that many generated tokens (see :meth:`Strategy.token_params`)."""
    out = {}
    for name in names:
        given = (overrides or {}).get(name, {})
        if budget_tokens:
            out[name] = token_params(name, budget_tokens, max_tokens, solution_tokens, **given)
        else:
            out[name] = budget_params(name, budget, **given)
    return out


def check_compare(
    executor: Any,
    problem: str,
    strategies: Sequence[str],
    budget: int,
    prm: str,
    max_tokens: int,
    concurrent: bool,
    overrides: dict[str, dict[str, Any]] | None = None,
    budget_tokens: int | None = None,
    solution_tokens: int | None = None,
) -> None:
    """What can be known before anything runs, said in the user's terms (budget, tokens, context):
    a problem longer than the context, or no room left for a solution after it. Any budget runs:
    generations beyond the sequences decoded at once wait for one to finish (continuous batching)."""
    if not problem or not problem.strip():
        raise InvalidRequestError("The problem is empty: give the question to solve.")
    # Every strategy known, and able to spend the budget as asked.
    strategy_params(strategies, budget, overrides, budget_tokens, max_tokens, solution_tokens)
    check_prompt(executor, problem, max_tokens)


def check_prompt(executor: Any, problem: str, max_tokens: int) -> None:
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


def compare(
    backend: Any,
    problem: str,
    strategies: Sequence[str] | None = None,
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
    seeds: str = "independent",
    budget_tokens: int | None = None,
    solution_tokens: int | None = None,
    temperature: float | None = None,
) -> list[Run]:
    """Run ``strategies`` on ``problem`` with a generation budget each, side by side (or one after
    another with ``concurrent=False``), in the calling thread. ``backend`` is an
    :class:`~engine.backends.base.Executor` (in process or over servers) or a llama.cpp
    :class:`~engine.backends.llama_cpp.Backend` owned by this thread."""
    problem = clean_text(problem or "")
    if strategies is None:
        strategies = default_strategies()
    reference = clean_text(reference) if reference is not None else None
    if not problem.strip():
        raise InvalidRequestError("The problem is empty: give the question to solve.")
    if not strategies:
        raise InvalidRequestError("Choose at least one strategy.")
    if max_tokens < 1:
        raise InvalidRequestError("max_tokens must be >= 1")
    if temperature is not None and not 0.0 <= temperature <= 5.0:
        raise InvalidRequestError("The temperature is between 0 (greedy) and 5.")
    if seeds not in SEED_MODES:
        raise InvalidRequestError(f"seeds is one of {', '.join(SEED_MODES)} (got {seeds!r}).")
    params = strategy_params(strategies, budget, overrides, budget_tokens, max_tokens, solution_tokens)
    specs = [StrategySpec(name, params[name]) for name in strategies]
    if reference is not None and not str(reference).strip():
        reference = None
    executor = as_executor(backend)
    check_compare(
        executor,
        problem,
        strategies,
        budget,
        prm,
        max_tokens,
        concurrent,
        overrides,
        budget_tokens,
        solution_tokens,
    )
    scorer = executor.make_prm(prm, reference)
    try:
        prm_info = prm_record(scorer, prm)
        runs = make_runs(
            problem.strip(),
            specs,
            seed=seed,
            reference=reference,
            model=executor.record(),
            prm=prm_info,
            max_tokens=max_tokens,
            seeds=seeds,
            token_budget=budget_tokens or 0,
            **({} if temperature is None else {"temperature": temperature}),
        )
        Scheduler(executor, scorer, on_event=on_event, cancel=cancel, stream_text=stream_text).run(
            runs, concurrent
        )
        return runs
    finally:
        executor.close_prm(scorer)
