"""Tests' shorthand for one compare: keywords become one CompareRequest that run_compare runs.

``target`` is an executor, or a llama.cpp Backend the test owns (wrapped in an in-process executor
that leaves it open)."""

from __future__ import annotations

from typing import Any

from engine.backends.llama_cpp.executor import LlamaCppExecutor
from engine.events import NodeAdded, RunFinished, RunStarted, Selected, TextDelta
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


def check_complete(runs) -> None:
    """Every run done, every node scored, one selection, a text and logprob per token, no stop
    token in any node's text."""
    for r in runs:
        events = [e for e in r.events if not isinstance(e, TextDelta)]
        assert isinstance(events[0], RunStarted) and isinstance(events[-1], RunFinished)
        assert events[-1].status == "done", events[-1].message
        trace = r.trace()
        unscored = [n.id for n in trace.nodes.values() if not n.scores and n.role != "lookahead"]
        assert trace.nodes and unscored == []  # every node scored
        assert sum(isinstance(e, Selected) for e in events) == 1  # one selection
        for e in events:
            if isinstance(e, NodeAdded):  # token shading works: a text and logprob per token
                assert len(e.token_logprobs) == e.n_tokens == len(e.token_texts)
                assert "".join(e.token_texts) == e.text
                assert "<|im_end|>" not in e.text and "<|im_start|>" not in e.text
        assert events[-1].generated_tokens == sum(e.n_tokens for e in events if isinstance(e, NodeAdded))
