"""The cost of a compare or sweep, said before it runs (engine.run.cost), and the progress lines
(engine.cli.progress), on hand-made inputs: no model is loaded."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest

from engine.errors import InvalidRequestError
from engine.events import NodeAdded, NodeFinished, RunFinished, RunStarted
from engine.prm import registry as prm_kinds
from engine.run import cost
from engine.run.cost import CostRefused, ModelFacts, estimate, gate, sweep_estimate
from engine.run.request import MAX_GENERATIONS, CompareRequest
from engine.search import registry

SMOL = ModelFacts("SmolLM2", n_params=135_000_000, threads=2)


def test_the_ceiling_holds_in_every_request_whatever_the_estimate():
    CompareRequest("q", strategies=("best_of_n",), budget=MAX_GENERATIONS).checked()
    with pytest.raises(InvalidRequestError, match="ceiling of 4,096"):
        CompareRequest("q", strategies=("best_of_n",), budget=MAX_GENERATIONS + 1).checked()
    with pytest.raises(InvalidRequestError, match="ceiling"):  # a token budget by what it buys
        CompareRequest("q", strategies=("best_of_n",), budget_tokens=10**9, max_tokens=256).checked()
    est = estimate([CompareRequest("q", budget=100_000)], SMOL)
    assert est.over_ceiling and "ceiling of 4,096" in est.refusal()
    with pytest.raises(CostRefused):
        gate(est, yes=True)  # --yes does not lift the ceiling


def test_the_estimate_counts_generations_tokens_and_the_prms_share():
    one = estimate([CompareRequest("q", budget=8, prm="arithmetic")], SMOL)
    assert one.generations == 8 * len(registry.default_names())
    assert one.tokens == one.generations * cost.ASSUMED_TOKENS_PER_GENERATION
    rate = cost.ASSUMED_FLOPS_PER_THREAD * 2 / (2 * 135e6)
    assert one.rate.tok_s == pytest.approx(rate) and "assumed for 135M parameters" in one.rate.source
    assert one.seconds == pytest.approx(one.tokens / rate)
    judged = estimate([CompareRequest("q", budget=8, prm="judge")], SMOL)
    assert judged.seconds == pytest.approx(one.seconds * (1 + prm_kinds.get("judge").time_share))
    double = estimate([CompareRequest("q", budget=16, prm="arithmetic")], SMOL)
    assert double.seconds == pytest.approx(2 * one.seconds)
    short = estimate([CompareRequest("q", budget=8, prm="arithmetic", max_tokens=64)], SMOL)
    assert short.tokens == short.generations * 64  # a generation never runs past max_tokens
    tokens = estimate([CompareRequest("q", strategies=("best_of_n",), budget_tokens=5000)], SMOL)
    assert tokens.tokens == 5000


def test_a_long_run_names_the_budget_that_fits_an_hour_and_runs_with_yes():
    est = estimate([CompareRequest("q", budget=2048)], SMOL)
    assert est.too_long and est.seconds > cost.REASONABLE_S
    why = est.refusal()
    assert f"A budget of {est.fits_hour} fits an hour" in why and "--yes" in why and "hours" in why
    fit = estimate([CompareRequest("q", budget=est.fits_hour)], SMOL)
    assert not fit.too_long and fit.refusal() is None
    assert all(registry.get(n).accepts(est.fits_hour) for n in registry.default_names())
    with pytest.raises(CostRefused):
        gate(est, yes=False)
    gate(est, yes=True)
    gate(estimate([CompareRequest("q", budget=64)], SMOL), yes=False)  # runs as it always did


class _Store:
    """What the estimate reads of a store: recorded sessions and the bytes per token."""

    def __init__(self, sessions, footprint=(0, 0), path="/tmp/x.db"):
        self._sessions, self._footprint, self.path = sessions, footprint, path

    def recorded_rates(self, name, n_gpu_layers):
        return self._sessions

    def footprint(self):
        return self._footprint


def _session(prm, tokens_by_strategy, wall, budget=4):
    runs = [
        {"strategy": s, "tokens": t, "wall_s": wall, "status": "done"} for s, t in tokens_by_strategy.items()
    ]
    return {"settings": {"prm": prm, "budget": budget, "concurrent": True}, "runs": runs}


def test_a_recorded_rate_replaces_the_assumed_one():
    store = _Store([_session("judge", {"best_of_n": 800, "beam_search": 400}, wall=10.0)])
    est = estimate([CompareRequest("q", strategies=("best_of_n", "beam_search"), budget=8)], SMOL, store)
    assert est.rate.tok_s == pytest.approx(120.0)  # 1,200 tokens in 10 s side by side
    assert est.rate.prm_included and est.prm_share == 0  # the judge's time is in the record
    assert "recorded on this machine: 1 session of SmolLM2" in est.rate.source
    assert est.tokens == 8 * 200 + 8 * 100  # each strategy's own tokens per budget unit
    other = estimate([CompareRequest("q", strategies=("best_of_n",), budget=8, prm="judge")], SMOL,
                     _Store([_session("arithmetic", {"best_of_n": 800}, wall=10.0)]))  # fmt: skip
    assert not other.rate.prm_included and other.prm_share == prm_kinds.get("judge").time_share
    empty = estimate(
        [CompareRequest("q", budget=8)], SMOL, _Store([_session("judge", {"best_of_n": 5}, 0.1)])
    )
    assert "nothing recorded yet" in empty.rate.source  # too short a session to say anything


def test_a_server_with_nothing_recorded_is_not_guessed_at():
    est = estimate([CompareRequest("q", budget=2048)], ModelFacts("qwen", 7e9, on_server=True), _Store([]))
    assert est.seconds is None and est.refusal() is None  # runs: its hardware is unknown here
    assert estimate([CompareRequest("q", budget=5000)], ModelFacts("qwen", on_server=True)).over_ceiling


def test_a_run_the_disk_cannot_hold_is_refused_without_yes(tmp_path, monkeypatch):
    store = _Store([], footprint=(10_000_000, 10_000), path=str(tmp_path / "s.db"))  # 1 kB a token
    monkeypatch.setattr(cost.shutil, "disk_usage", lambda p: SimpleNamespace(free=1_000_000))
    est = estimate([CompareRequest("q", strategies=("best_of_n",), budget=4, prm="arithmetic")], SMOL, store)
    assert est.store_bytes == int(1.25 * 1000 * est.tokens) and est.too_big_for_disk
    assert "disk has 1.0 MB free" in est.refusal()
    with pytest.raises(CostRefused):
        gate(est, yes=False)


def test_a_sweep_estimate_advises_the_limit_that_fits():
    cells = [CompareRequest(f"problem {i}", strategies=("best_of_n",), budget=256) for i in range(40)]
    est = sweep_estimate(cells, SMOL)
    assert est.what == "this sweep (40 cells to run)" and est.too_long
    limit = int(est.advice.split()[1])
    assert 1 <= limit < 40 and f"--limit {limit} fits an hour" in est.refusal()


# --- progress lines ---------------------------------------------------------------------------------


def test_off_a_terminal_progress_is_plain_lines_one_per_run():
    from engine.cli.progress import Progress

    out = io.StringIO()
    req = CompareRequest("q", strategies=("best_of_n",), budget=2, prm="arithmetic").checked()
    p = Progress.for_compare(req, stream=out)
    assert not p.live and p.plain
    run = SimpleNamespace(spec=SimpleNamespace(name="best_of_n"))
    with p:
        p(run, RunStarted("r", "best_of_n", {}, {}, {}, 0, "q"))
        for i in range(2):
            p(run, NodeAdded("r", i, None, "solution", "x", 30, -1.0))
            p(run, NodeFinished("r", i, "5", "eos"))
        p(run, RunFinished("r", "done", generated_tokens=60, wall_s=2.0))
    text = out.getvalue()
    assert "\x1b[" not in text
    assert text.strip() == "best_of_n done in 2.0 s: 2 generations, 60 tokens (30.0 tokens/s)"
    assert "best_of_n 2/2 generations, 60 tokens" in p.status_line()
    quiet = Progress.for_compare(req, json=True, stream=io.StringIO())
    assert not quiet.live and not quiet.plain  # --json in a log: nothing but the JSON
