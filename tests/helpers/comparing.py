"""Tests' shorthand for one compare: keywords become one CompareRequest that run_compare runs.

``target`` is an executor, or a llama.cpp Backend the test owns (wrapped in an in-process executor
that leaves it open)."""

from __future__ import annotations

from typing import Any

from engine.backends.llama_cpp.executor import LlamaCppExecutor
from engine.executor import Executor
from engine.run.compare import run_compare
from engine.run.request import CompareRequest


def executor_of(target: Any) -> Executor:
    return target if isinstance(target, Executor) else LlamaCppExecutor(target)


def request(problem: str, strategies: Any = None, **kw: Any) -> CompareRequest:
    return CompareRequest(problem=problem, strategies=tuple(strategies or ()), **kw)


def compare(target: Any, problem: str, strategies: Any = None, on_event=None, cancel=None, **kw: Any) -> list:
    """The runs of one compare, not recorded."""
    return run_compare(executor_of(target), request(problem, strategies, **kw), on_event, cancel).runs


def recorded_compare(
    target: Any,
    store: Any,
    problem: str,
    strategies: Any = None,
    on_event=None,
    cancel=None,
    on_session=None,
    **kw,
) -> tuple[str | None, list, str | None]:
    """(session id, runs, recording error) of one compare recorded into ``store``."""
    out = run_compare(
        executor_of(target), request(problem, strategies, **kw), on_event, cancel, store, on_session
    )
    return out.session_id, out.runs, out.error
