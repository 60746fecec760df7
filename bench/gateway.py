"""``ponder bench --server A --server B --gateway G``: Ponder's own pool against an existing gateway.

The same sweep (``--sweep-problems`` arithmetic-ladder problems x best-of-N and beam search x budgets
2 and 4, arithmetic PRM, ``--max-tokens``) runs twice over the same servers: once through Ponder's
client-side pool (each server probed for its slots; prompts sent where their prefix was last sent),
once through the gateway ``G`` in front of them (one endpoint; Ponder keeps as many requests in flight
as the servers have slots together, and tokenizes itself: a gateway takes text prompts). Each route
reports generated + scored tokens per second of wall time and the share of prompt tokens the servers
took from their caches (what the servers' answers say: ``cache_n`` / ``cached_tokens``).
``--repeat`` alternates which route goes first; each route's best round is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from bench.compare import _timed_sweep
from engine.backends.server.executor import ServerExecutor
from engine.backends.server.pool import ServerPool
from engine.sweeps import SweepSpec

STRATEGIES = ("best_of_n", "beam_search")
BUDGETS = (2, 4)


def _route(label: str, pool: ServerPool, spec: SweepSpec, say: Callable[[str], None]) -> dict[str, Any]:
    ex = ServerExecutor(pool)
    try:
        out = _timed_sweep(ex, spec, None, lambda m: say(f"{label}: {m}"))
    finally:
        ex.close()
    seen = out["prompt_tokens"] + out["cached_tokens"]
    out["cache_share"] = round(out["cached_tokens"] / seen, 3) if seen else 0.0
    return out


def run_gateway_bench(
    servers: Sequence[str],
    gateway: str,
    *,
    tokenizer: str | None = None,
    problems: int = 8,
    max_tokens: int = 128,
    repeat: int = 1,
    api_key: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    say = progress or (lambda _m: None)
    spec = SweepSpec(
        "arith",
        limit=problems,
        strategies=STRATEGIES,
        budgets=BUDGETS,
        prm="arithmetic",
        max_tokens=max_tokens,
    )
    probe = ServerPool.connect(list(servers), api_key)
    slots = probe.total_slots
    probe.close()
    rounds: dict[str, list[dict[str, Any]]] = {"pool": [], "gateway": []}
    for k in range(repeat):
        order = ("pool", "gateway") if k % 2 == 0 else ("gateway", "pool")
        for route in order:
            if route == "pool":
                pool = ServerPool.connect(list(servers), api_key)
            else:
                pool = ServerPool.connect([gateway], api_key, parallel=slots, tokenizer=tokenizer)
            r = _route(route, pool, spec, say)
            say(
                f"{route}: {r['sweep_tok_s']:.1f} tok/s, {100 * r['cache_share']:.0f}% of prompt tokens "
                "cached"
            )
            rounds[route].append(r)
    best = {k: max(v, key=lambda r: r["sweep_tok_s"]) for k, v in rounds.items()}
    return {
        "servers": list(servers),
        "gateway": gateway,
        "slots": slots,
        "problems": problems,
        "strategies": list(STRATEGIES),
        "budgets": list(BUDGETS),
        "max_tokens": max_tokens,
        "pool": best["pool"],
        "gateway_route": best["gateway"],
        "rounds": {k: [r["sweep_tok_s"] for r in v] for k, v in rounds.items()},
        "gateway_vs_pool": round(best["gateway"]["sweep_tok_s"] / best["pool"]["sweep_tok_s"], 3)
        if best["pool"]["sweep_tok_s"]
        else None,
    }


def format_gateway_bench(r: dict[str, Any]) -> str:
    lines = [
        f"{r['problems']} arithmetic-ladder problems x {', '.join(r['strategies'])} x budgets "
        f"{','.join(map(str, r['budgets']))}, {r['max_tokens']} tokens, arithmetic PRM, over "
        f"{len(r['servers'])} servers ({r['slots']} slots)",
    ]
    for label, key in (("Ponder's pool", "pool"), (f"gateway {r['gateway']}", "gateway_route")):
        x = r[key]
        lines.append(
            f"{label:>32}: {x['sweep_tok_s']:7.1f} tok/s, {100 * x['cache_share']:4.1f}% of prompt tokens "
            f"from cache ({x['cells']} cells, {x['failed']} failed, {x['sweep_seconds']:.1f} s)"
        )
    lines.append(f"gateway / pool: {r['gateway_vs_pool']:.3f}")
    return "\n".join(lines)
