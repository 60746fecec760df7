"""The strategy registry, particle filtering, budget forcing and seed streams, exactly: scripted
backends answer the strategies' requests (tests/helpers/scripted.py's Script), so each test can say
which particles survive, when "Wait" is appended and where the thinking closes. Real llama.cpp runs
are in tests/integration/test_strategies_cli.py (the CLI and a plugin strategy) and
tests/gui/test_gui_strategies.py (the app)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scripted import Script, ctx, pf_script

from engine.events import NodeAdded, NodeFinished, NodePruned, NodeScored, Resampled, Selected, fold
from engine.protocol import RunContext
from engine.search import budget_params, registry
from engine.search.budget_forcing import budget_forcing
from engine.search.particle_filtering import particle_filtering, resample, weights
from engine.search.registry import BudgetError

# --- the registry -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", registry.names())
def test_every_budget_rule_round_trips_or_names_budgets_it_can_spend(name):
    strat = registry.get(name)
    accepted = [b for b in range(1, 33) if strat.accepts(b)]
    assert accepted, name
    for b in range(1, 33):
        if b in accepted:
            p = budget_params(name, b)
            assert strat.cost(p) == b
            assert strat.sequences(p) >= 1
        else:
            with pytest.raises(BudgetError) as e:
                budget_params(name, b)
            near = [int(x) for x in str(e.value).split("spend are ")[1].rstrip(".").split(" and ")]
            assert near and all(strat.accepts(x) for x in near), str(e.value)
            assert min(abs(x - b) for x in near) < 4


def test_refused_budgets_say_why_and_what_to_use():
    with pytest.raises(BudgetError, match=r"DVTS cannot spend a budget of 6 .* are 4 and 8"):
        budget_params("dvts", 6)
    assert budget_params("dvts", 6, beam_width=3)["n"] == 6  # a beam width that divides it
    with pytest.raises(BudgetError, match=r"3 chains of equal length.* 9 and 12"):
        budget_params("revisions", 10, chains=3)
    p = budget_params("revisions", 9)  # auto chains: a divisor, so the budget is spent exactly
    assert p["chains"] * p["length"] == 9
    with pytest.raises(BudgetError, match="2 chains"):
        budget_params("budget_forcing", 5, chains=2)


def test_parameters_are_checked_and_typed_by_the_registry():
    strat = registry.get("particle_filtering")
    assert strat.user_params({"temperature": "0.5", "resampling": "multinomial"}) == {
        "temperature": 0.5,
        "resampling": "multinomial",
    }
    with pytest.raises(Exception, match="resampling must be one of systematic, multinomial"):
        strat.user_params({"resampling": "stratified"})
    with pytest.raises(Exception, match="no parameter 'beam_width'"):
        strat.user_params({"beam_width": 2})
    with pytest.raises(Exception, match="between 0.01 and 100"):
        strat.user_params({"temperature": 0})


def test_token_budgets_set_each_strategy():
    bf = registry.get("budget_forcing").token_params(600, 256)
    assert bf["think_tokens"] + bf["answer_tokens"] <= 600 and bf["think_tokens"] == 450
    assert registry.get("best_of_n").token_params(600, 256)["n"] == 2  # as many samples as fit
    assert registry.get("dvts").token_params(6 * 256, 256)["n"] == 4  # the nearest budget it spends
    with pytest.raises(BudgetError, match="at least 256"):
        registry.get("beam_search").token_params(100, 256)


# --- seeds --------------------------------------------------------------------------------------


def test_independent_streams_per_strategy_and_common_numbers_on_request():
    def seeds(strategy, mode):
        c = RunContext("r", "q", seed=3, strategy=strategy, seeds=mode)
        return [c.node_seed(i) for i in range(4)]

    assert seeds("best_of_n", "independent") != seeds("beam_search", "independent")
    assert seeds("best_of_n", "independent") == seeds("best_of_n", "independent")  # reproducible
    assert seeds("best_of_n", "common") == seeds("beam_search", "common")
    assert len(set(seeds("best_of_n", "independent"))) == 4


# --- particle filtering -------------------------------------------------------------------------


def test_weights_follow_the_documented_formula():
    scores = [0.9, 0.5, 0.2]
    logits = [math.log(r / (1 - r)) for r in scores]
    for t in (1.0, 0.5, 2.0):
        ex = [math.exp(x / t) for x in logits]
        assert weights(scores, t) == pytest.approx([e / sum(ex) for e in ex])
    assert weights([1.0, 0.0], 1.0)[0] == pytest.approx(1.0) and all(
        math.isfinite(w) for w in weights([1.0, 0.0])
    )
    sharp, flat = weights(scores, 0.25), weights(scores, 4.0)
    assert sharp[0] > weights(scores)[0] > flat[0]


def test_systematic_resampling_gives_floor_or_ceil_copies_and_seeds_reproduce():
    w = [0.5, 0.3, 0.2]
    for seed in range(20):
        picks = resample(w, 10, "systematic", np.random.Generator(np.random.PCG64(seed)))
        counts = [picks.count(i) for i in range(3)]
        assert counts == [5, 3, 2]  # n w exactly: low variance
    a = resample(w, 8, "multinomial", np.random.Generator(np.random.PCG64(7)))
    b = resample(w, 8, "multinomial", np.random.Generator(np.random.PCG64(7)))
    assert a == b and len(a) == 8 and set(a) <= {0, 1, 2}


def test_particle_filtering_copies_the_strong_particle_and_kills_the_weak():
    s = pf_script(scores={"P0": 0.99})
    s.run(particle_filtering(ctx(), n=4))
    (rs,) = s.of(Resampled)
    assert rs.iteration == 0 and rs.nodes == [0, 1, 2, 3]
    assert rs.sources == [0, 0, 0, 0]  # weight 0.9998: every systematic point falls in it
    assert rs.weights[0] == pytest.approx(weights([0.99, 0.01, 0.01, 0.01])[0])
    assert sorted(e.node_id for e in s.of(NodePruned)) == [1, 2, 3]
    # Round 1: four particles continue node 0; the dead nodes were released before it.
    assert [it.parent for it in s.generates[1].items] == [0, 0, 0, 0]
    assert {1, 2, 3} <= set(s.released)
    t = fold(s.events)
    assert t.nodes[0].copies == 4 and t.nodes[1].copies == 0
    assert all(n.scores for n in t.nodes.values())  # every node scored
    assert len(s.of(Selected)) == 1 and s.of(Selected)[0].answer == "7"
    assert sorted(e.node_id for e in s.of(NodeFinished)) == [4, 5, 6, 7]


def test_particle_filtering_reruns_reproduce_and_ended_particles_stop_growing():
    def text(item):
        if item.messages is not None:  # particle 1 ends at once
            return ("\\boxed{3}", "eos") if item.node_id == 1 else (f"P{item.node_id}\n\n", "stop")
        return "\\boxed{7}", "eos"

    def score(steps, finished):
        return [0.6 if "boxed" in steps[-1] else 0.4] * len(steps)

    runs = [
        Script(text, score).run(particle_filtering(ctx(), n=4, resampling="multinomial")) for _ in range(2)
    ]
    assert runs[0].of(Resampled) == runs[1].of(Resampled)
    (rs,) = runs[0].of(Resampled)
    # Copies of the ended particle never ask to grow: round 1 continues only the live nodes.
    live_copies = [src for src in rs.sources if src != 1]
    assert [it.parent for it in runs[0].generates[1].items] == live_copies
    assert 1 in runs[0].released


# --- budget forcing -----------------------------------------------------------------------------


def test_budget_forcing_appends_wait_exactly_when_the_chain_stops_early():
    answers = iter(["First try.", "Hmm, again.", "The answer is \\boxed{5}."])
    s = Script(lambda item: (next(answers), "eos"), lambda steps, f: [0.5] * len(steps))
    s.run(budget_forcing(ctx(max_tokens=50), segments=3))
    items = [g.items[0] for g in s.generates]
    assert [it.prefix for it in items] == ["", "\n\nWait", "\n\nWait"]  # ended early twice: Wait
    assert items[0].messages is not None and items[1].parent == 0 and items[2].parent == 1
    roles = [e.role for e in s.of(NodeAdded)]
    assert roles == ["solution", "continuation", "continuation"]  # the third end is accepted
    assert s.of(NodeAdded)[1].text == "\n\nWaitHmm, again."
    assert {e.node_id for e in s.of(NodeScored)} == {0, 1, 2} and len(s.of(Selected)) == 1
    assert s.of(Selected)[0].answer == "5"


def test_budget_forcing_goes_on_without_wait_when_cut_short_and_forces_the_answer_at_the_end():
    s = Script(
        lambda item: (
            ("so the answer is 96", "length") if not item.prefix.endswith(":") else (" 9 and not 2", "eos")
        ),
        lambda steps, f: [0.5] * len(steps),
    )
    s.run(budget_forcing(ctx(max_tokens=5), segments=2))
    items = [g.items[0] for g in s.generates]
    assert [it.prefix for it in items] == ["", "", "\n\nFinal Answer:"]
    assert [e.role for e in s.of(NodeAdded)] == ["solution", "continuation", "answer"]
    assert s.of(Selected)[0].answer == "9"  # read from the forced answer, not the thinking's "96"
    assert s.of(NodeFinished)[0].answer == "9"


def test_budget_forcing_closes_the_thinking_at_the_token_budget():
    said = iter(
        [
            ("<think>\nfour words here </think>", "stop"),  # 5 tokens (words): tries to end early
            ("a b c d e f", "length"),  # 6 more: 11 >= 10, the budget is spent
            ("The answer is \\boxed{12}.", "eos"),
        ]
    )
    s = Script(lambda item: next(said), lambda steps, f: [0.5] * len(steps))
    s.run(budget_forcing(ctx(max_tokens=100, thinking=True), think_tokens=10, segments=1000))
    items = [g.items[0] for g in s.generates]
    assert items[0].params.stop == ("</think>",) and items[0].params.max_tokens == 10
    assert items[1].cut == "</think>" and items[1].prefix == "Wait"  # the end suppressed
    assert items[1].params.max_tokens == 5  # what is left of the 10
    assert items[2].prefix == "\n</think>\n\n" and items[2].cut == ""  # closed at the budget
    assert items[2].params.max_tokens == 256 and not items[2].params.stop
    assert s.of(Selected)[0].answer == "12"
