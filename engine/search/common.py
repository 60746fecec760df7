"""Pieces every strategy uses: events for generated nodes, scoring through the PRM, selection."""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from engine.events import Event, NodeAdded, NodeFinished, NodeScored, RunStarted, Selected
from engine.prm import aggregate, split_steps
from engine.protocol import Generated, Request, RunContext, Score
from engine.search.selection import select


def started(ctx: RunContext, strategy: str, params: dict[str, Any]) -> RunStarted:
    return RunStarted(
        ctx.run_id,
        strategy,
        {
            **params,
            "temperature": ctx.temperature,
            "top_p": ctx.top_p,
            "max_tokens": ctx.max_tokens,
            "delimiter": ctx.delimiter,
            "aggregation": ctx.aggregation,
            "seeds": ctx.seeds,
            **({"budget_tokens": ctx.budget_tokens} if ctx.budget_tokens else {}),
        },
        dict(ctx.model),
        dict(ctx.prm_record),
        ctx.seed,
        ctx.problem,
        ctx.reference,
    )


def added(ctx: RunContext, g: Generated, parent: int | None, role: str) -> NodeAdded:
    return NodeAdded(
        ctx.run_id,
        g.node_id,
        parent,
        role,
        g.text,
        g.n_tokens,
        float(sum(g.logprobs)),
        list(g.logprobs),
        list(g.pieces),
    )


@dataclass
class Scored:
    steps: list[float]
    score: float


def score(
    ctx: RunContext, texts: Sequence[str], finished: Sequence[bool]
) -> Generator[Event | Request, Any, list[Scored]]:
    """Ask the PRM for step scores of full solution texts; aggregate them the run's way."""
    cands = tuple(tuple(split_steps(t, ctx.delimiter)) for t in texts)
    raw = yield Score(cands, tuple(bool(f) for f in finished))
    return [Scored(list(s), aggregate(s, ctx.aggregation) if s else 0.0) for s in raw]


def scored_event(ctx: RunContext, node_id: int, s: Scored) -> NodeScored:
    return NodeScored(ctx.run_id, node_id, s.steps, s.score, str(ctx.prm_record.get("name", "prm")))


def finished_event(ctx: RunContext, node_id: int, text: str, reason: str) -> NodeFinished:
    return NodeFinished(ctx.run_id, node_id, ctx.answer(text), reason)


def choose(
    ctx: RunContext, node_ids: Sequence[int], texts: Sequence[str], scores: Sequence[float], method: str
) -> Selected:
    answers = [ctx.answer(t) for t in texts]
    sel = select(answers, scores, method)
    return Selected(
        ctx.run_id, sel.answer, node_ids[sel.index] if sel.index is not None else None, method, sel.tally
    )


def is_done(g: Generated, total_tokens: int, ctx: RunContext) -> bool:
    """A beam ends at EOS, at its token budget, or with an empty step."""
    return (
        g.finish_reason in ("eos", "length", "cancelled")
        or not g.text.strip()
        or total_tokens >= ctx.max_tokens
    )
