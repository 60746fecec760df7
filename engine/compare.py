"""``compare(problem, strategies, budget)``: strategies side by side at a matched budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.answers import is_correct
from engine.backend import Backend
from engine.errors import InvalidRequestError, PonderError
from engine.events import Event
from engine.models import load_catalog
from engine.prm import ArithmeticPRM, JudgePRM, ReferencePRM, TokenPRM
from engine.search import DEFAULT_STRATEGIES, budget_params, get_strategy
from engine.search.scheduler import Run, Scheduler, StrategySpec, make_runs

PRM_CHOICES = ("judge", "arithmetic", "reference")


def make_prm(spec: str, backend: Backend, reference: str | None, prm_backends: list[Backend]) -> Any:
    """``judge`` (the policy model as judge), ``arithmetic``, ``reference`` or a PRM GGUF path whose
    format ``models/catalog.toml`` names. A PRM GGUF gets its own backend, appended to
    ``prm_backends`` for the caller to close."""
    if spec == "judge":
        return JudgePRM(backend)
    if spec == "arithmetic":
        return ArithmeticPRM()
    if spec == "reference":
        return ReferencePRM(reference)
    path = Path(spec).expanduser()
    if not path.suffix.lower() == ".gguf" and not path.exists():
        raise InvalidRequestError(
            f"--prm must be one of {', '.join(PRM_CHOICES)} or a PRM GGUF file; got {spec!r}."
        )
    entry = next((c for c in load_catalog() if c.matches(path)), None)
    if entry is None or not entry.prm_format:
        raise PonderError(
            f"{path.name} is not a PRM that models/catalog.toml knows: add an entry with its prm_format "
            "(math-shepherd or rlhflow) and tokens."
        )
    prm_backend = Backend(path, backend.config)
    prm_backends.append(prm_backend)
    return TokenPRM(
        prm_backend,
        entry.prm_format,
        step_tag=entry.settings.get("step_tag", "ки"),
        good_token=entry.settings.get("good_token", "+"),
        bad_token=entry.settings.get("bad_token", "-"),
        name=entry.id,
    )


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
    backend: Backend,
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
    another with ``concurrent=False``), on ``backend`` in the calling thread."""
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
    prm_backends: list[Backend] = []
    scorer = None
    try:
        scorer = make_prm(prm, backend, reference, prm_backends)
        prm_info = {"name": getattr(scorer, "name", prm), "spec": prm}
        if prm_backends:
            prm_info["model"] = prm_backends[0].info.as_dict()
        model = {
            k: v
            for k, v in backend.info.as_dict().items()
            if k
            in (
                "path",
                "name",
                "file_size",
                "sha256_1mb",
                "quantization",
                "n_gpu_layers_requested",
                "n_layers_offloaded",
                "accelerator",
            )
        }
        runs = make_runs(
            problem.strip(),
            specs,
            seed=seed,
            reference=reference,
            model=model,
            prm=prm_info,
            max_tokens=max_tokens,
        )
        Scheduler(backend, scorer, on_event=on_event, cancel=cancel, stream_text=stream_text).run(
            runs, concurrent
        )
        return runs
    finally:
        if scorer is not None and hasattr(scorer, "close"):
            scorer.close()  # the judge's kept KV state
        for b in prm_backends:
            b.close()
