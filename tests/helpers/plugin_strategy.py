"""A toy plugin strategy (N greedy answers, the first one chosen) written where ``PONDER_STRATEGIES``
finds it: the registry alone makes its CLI flags and its app controls."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from engine.search import registry

TOY = textwrap.dedent(
    '''
    """A toy strategy: N greedy answers, the first one chosen."""
    from engine.search.common import added, choose, finished_event, score, scored_event, started
    from engine.protocol import Generate, GenItem, Release
    from engine.search.registry import Param, Strategy, register


    def toy(ctx, n=1, shout=False):
        yield started(ctx, "toy", {"n": n, "shout": shout})
        ids = [ctx.new_node() for _ in range(n)]
        msgs = ctx.question_messages()
        items = tuple(GenItem(i, ctx.sampling(i, greedy=True, stop=False), messages=msgs) for i in ids)
        res = yield Generate(items)
        for g in res:
            yield added(ctx, g, None, "solution")
        scored = yield from score(ctx, [g.text for g in res], [True] * n)
        yield Release(tuple(ids))
        for g, s in zip(res, scored):
            yield scored_event(ctx, g.node_id, s)
            yield finished_event(ctx, g.node_id, g.text, g.finish_reason)
        yield choose(ctx, ids, [g.text for g in res], [s.score for s in scored], "naive")


    register(Strategy(
        name="toy", label="Toy", run=toy, for_budget=lambda b, user: {"n": b},
        cost=lambda p: p["n"], sequences=lambda p: p["n"] + 1,
        params=(Param("shout", False, "Shout", "Say it loudly"),),
    ))
    '''
)


def installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fixture's body: the toy module's path, on ``PONDER_STRATEGIES``; unregistered after."""
    path = tmp_path / "toy_strategy.py"
    path.write_text(TOY)
    monkeypatch.setenv("PONDER_STRATEGIES", str(path))
    yield str(path)
    registry.unregister("toy")
