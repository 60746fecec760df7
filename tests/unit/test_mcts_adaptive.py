"""Monte Carlo tree search and adaptive best-of-N, exactly: their rules on given numbers, and each
strategy driven by a scripted executor (tests/helpers/scripted.py's Script)."""

from __future__ import annotations

import itertools
import math

import pytest
from scripted import Script, ctx

from engine.events import NodeAdded, NodeFinished, NodeValued, RunStarted, Selected, fold
from engine.search import budget_cost, budget_params, get_strategy, registry, token_params
from engine.search.adaptive_best_of_n import beta_cdf, confidence, settled
from engine.search.mcts import TreeNode, backpropagate, final_path, select, uct

# --- the UCT rule -----------------------------------------------------------------------------------


def _tree(stats):
    """A root with children of given (visits, total value)."""
    root = TreeNode(None, visits=sum(v for v, _ in stats))
    root.children = [TreeNode(i, root, depth=1, visits=v, total=t) for i, (v, t) in enumerate(stats)]
    return root


def test_uct_prefers_an_unvisited_child_then_balances_value_and_visits():
    root = _tree([(4, 3.2), (1, 0.5), (0, 0.0)])
    assert uct(root.children[2], root.visits, 1.0) == math.inf
    assert select(root, 1.0).node_id == 2  # unvisited first
    root = _tree([(4, 3.2), (1, 0.5)])  # means 0.8 and 0.5; N = 5
    ucts = [uct(c, 5, 1.0) for c in root.children]
    assert ucts[0] == pytest.approx(0.8 + math.sqrt(math.log(5) / 4))
    assert ucts[1] == pytest.approx(0.5 + math.sqrt(math.log(5) / 1))
    assert select(root, 1.0).node_id == 1  # exploration wins at c = 1 ...
    assert select(root, 0.1).node_id == 0  # ... exploitation at c = 0.1


def test_a_solved_subtree_is_never_chosen_again():
    root = _tree([(3, 2.7), (3, 0.3)])
    root.children[0].terminal = True  # the better child ended its solution
    assert select(root, 0.0).node_id == 1
    root.children[1].terminal = True
    assert select(root, 0.0) is None  # the whole tree is solved


def test_backpropagation_adds_a_value_to_every_node_above():
    root = _tree([(2, 1.0)])
    leaf = TreeNode(7, root.children[0], depth=2)
    root.children[0].children = [leaf]
    changed = backpropagate(leaf, 0.9)
    assert [t.node_id for t in changed] == [7, 0, None]
    assert (leaf.visits, leaf.total) == (1, 0.9)
    assert (root.children[0].visits, root.children[0].mean) == (3, pytest.approx(1.9 / 3))
    assert root.visits == 3


def test_the_final_choice_follows_visits_or_value():
    root = _tree([(6, 3.0), (2, 1.8)])  # most visited 0 (mean 0.5); best valued 1 (mean 0.9)
    assert [t.node_id for t in final_path(root, "visits")] == [0]
    assert [t.node_id for t in final_path(root, "value")] == [1]


# --- the stopping rule ------------------------------------------------------------------------------


def _binomial_cdf_half(a: int, b: int) -> float:
    n = a + b - 1  # I_{1/2}(a, b) for whole a, b: a binomial tail
    return sum(math.comb(n, j) for j in range(a, n + 1)) / 2**n


@pytest.mark.parametrize("a, b", [(1, 1), (5, 1), (4, 2), (9, 3), (2, 7), (20, 15)])
def test_the_beta_cdf_matches_its_closed_form(a, b):
    assert beta_cdf(0.5, a, b) == pytest.approx(_binomial_cdf_half(a, b), abs=1e-12)


def test_the_beta_cdf_for_weighted_votes_matches_numerical_integration():
    a, b = 3.7, 1.4
    n = 200_000
    xs = [(i + 0.5) / n for i in range(n // 2)]
    dens = [x ** (a - 1) * (1 - x) ** (b - 1) for x in xs]
    norm = math.exp(math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    assert beta_cdf(0.5, a, b) == pytest.approx(sum(dens) / n / norm, rel=1e-4)


@pytest.mark.parametrize(
    "votes, threshold, stop",
    [
        (["7"] * 4, 0.95, True),  # P = 1 - 1/32 = 0.969
        (["7"] * 3 + ["8"], 0.95, False),  # P(Beta(4, 2) > 1/2) = 0.8125
        (["7"] * 3 + ["8"], 0.80, True),
        (["7"] * 7 + ["8"], 0.95, True),  # 0.9805
        (["7", "8", "9", "10"], 0.95, False),
        ([None] * 4, 0.5, False),  # no answer: no vote
        (["0.5", "1/2", "\\frac{1}{2}", "3"], 0.80, True),  # equivalent answers vote together
    ],
)
def test_the_stopping_rule_at_given_votes(votes, threshold, stop):
    assert settled(votes, [1.0] * len(votes), threshold)[0] is stop


def test_confidence_values():
    assert confidence(4, 0) == pytest.approx(1 - 1 / 32)
    assert confidence(3, 1) == pytest.approx(0.8125)
    assert confidence(0, 0) == pytest.approx(0.5)
    weighted = settled(["7", "7", "8"], [0.9, 0.8, 0.1], 0.9)
    assert weighted[1] == pytest.approx(confidence(1.7, 0.1))


# --- adaptive best-of-N on a scripted executor --------------------------------------------------------


def test_adaptive_best_of_n_stops_after_a_settled_round_and_spends_no_more():
    s = Script(lambda it: ("So it is 42.", "eos"), lambda st, f: [0.9]).run(
        get_strategy("adaptive_best_of_n")(ctx(), n=16, round_size=4, threshold=0.95)
    )
    assert [len(g.items) for g in s.generates] == [4]
    sel = s.of(Selected)[0]
    assert sel.answer == "42" and sel.method == "majority"
    trace = fold(s.events)
    assert registry.get("adaptive_best_of_n").generations_spent(trace, {"n": 16}) == 4
    assert sorted(s.released) == [0, 1, 2, 3]


def test_adaptive_best_of_n_spends_its_whole_budget_when_the_vote_stays_split():
    ids = itertools.count()
    s = Script(lambda it: (f"So it is {next(ids) % 3}.", "eos"), lambda st, f: [0.5]).run(
        get_strategy("adaptive_best_of_n")(ctx(), n=10, round_size=4)
    )
    assert [len(g.items) for g in s.generates] == [4, 4, 2]  # the last round only what is left
    assert len(s.of(NodeFinished)) == 10


def test_adaptive_best_of_n_weighted_by_the_prm_picks_by_weighted_selection():
    answers = iter(["1", "2", "2", "2"])
    scores = {"1": 0.95, "2": 0.05}

    def text(it):
        return f"So it is {next(answers)}.", "eos"

    def score(steps, finished):
        return [scores[steps[-1].split()[-1].rstrip(".")]]

    s = Script(text, score).run(get_strategy("adaptive_best_of_n")(ctx(), n=4, round_size=4, weighting="prm"))
    sel = s.of(Selected)[0]
    assert sel.method == "weighted" and sel.answer == "1"  # 0.95 outweighs 3 x 0.05


def test_adaptive_best_of_n_budget_rules_both_ways():
    p = budget_params("adaptive_best_of_n", 12)
    assert p["n"] == 12 and budget_cost("adaptive_best_of_n", p) == 12
    t = token_params("adaptive_best_of_n", 4096, 512)
    assert t["n"] == 8  # a token budget buys generations of --max-tokens, as best-of-N's does
    assert registry.get("adaptive_best_of_n").budget_is_maximum


# --- MCTS on a scripted executor -------------------------------------------------------------------


def _steps(end_every: int = 3):
    """Texts for items: a step ends its solution every ``end_every``-th generation."""
    k = itertools.count(1)

    def text(it):
        i = next(k)
        if i % end_every == 0:
            return f"So the answer is {40 + i % 3}.", "eos"
        return f"step {i}\n\n", "stop"

    return text


def test_mcts_writes_its_budget_of_solutions_and_backs_values_up():
    s = Script(_steps(), lambda st, f: [0.1 * len(st)] * len(st)).run(
        get_strategy("mcts")(ctx(), n=5, children=2, max_depth=6)
    )
    trace = fold(s.events)
    finished = s.of(NodeFinished)
    assert len(finished) >= 5  # it stops at the iteration that reached the budget
    assert len(finished) <= 5 + 1  # ... an expansion of 2 may end two solutions at once
    # every value event agrees with the fold, and a node's visits are its children's plus its own
    for node in trace.nodes.values():
        if node.visits is not None and node.children:
            kids = [trace.nodes[c].visits or 0 for c in node.children]
            assert node.visits == sum(kids) + 1
    last = {e.node_id: e for e in s.of(NodeValued)}
    assert all(trace.nodes[i].visits == e.visits for i, e in last.items())
    assert trace.iterations == max(e.iteration for e in s.of(NodeValued)) + 1
    sel = s.of(Selected)[0]
    assert sel.node_id is not None and trace.nodes[sel.node_id].finish_reason is not None
    assert set(s.released) == set(trace.nodes)  # every node's cells go back
    assert s.of(RunStarted)[0].params["children"] == 2


def test_mcts_greedy_rollouts_are_solutions_charged_to_the_budget():
    s = Script(_steps(end_every=100), lambda st, f: [0.5] * len(st)).run(
        get_strategy("mcts")(ctx(), n=4, children=2, rollout="greedy", max_depth=6)
    )
    rollouts = [e for e in s.of(NodeAdded) if e.role == "lookahead"]
    assert len(rollouts) == 4  # one expansion's two children, each rolled out: two iterations
    greedy = [it for g in s.generates for it in g.items if it.params.temperature == 0.0]
    assert len(greedy) == 4
    assert {e.node_id for e in s.of(NodeFinished)} == {e.node_id for e in rollouts}


def test_mcts_stops_when_the_tree_is_solved():
    s = Script(lambda it: ("So the answer is 7.", "eos"), lambda st, f: [1.0]).run(
        get_strategy("mcts")(ctx(), n=16, children=3)
    )
    assert len(s.generates) == 1 and len(s.of(NodeFinished)) == 3  # every first step ended
    assert s.of(Selected)[0].answer == "7"


def test_mcts_budget_rules_both_ways():
    p = budget_params("mcts", 16)
    assert p["n"] == 16 and budget_cost("mcts", p) == 16
    assert token_params("mcts", 2048, 512, solution_tokens=256)["n"] == 8
    assert registry.get("mcts").drawn_as == "tree" and registry.get("mcts").answer_is_path
