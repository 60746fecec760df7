"""Search logic, exactly: each strategy driven by a scripted backend and a scripted PRM.

A scripted driver (tests/helpers/scripted.py's Script) answers the strategy's requests (texts chosen
per node, scores per candidate), so each test can say which beams must survive, what lookahead
costs, when weighted and majority part ways, what a revision sees, and that DVTS subtrees never
mix. Real llama.cpp runs are in
tests/integration/test_compare.py."""

from __future__ import annotations

import pytest
from scripted import Script, ctx

from engine.errors import InvalidRequestError
from engine.events import NodeAdded, NodePruned, NodeScored, RunStarted, Selected, fold
from engine.search import budget_cost, budget_params, get_strategy
from engine.search.revisions import REVISE_PROMPT
from engine.search.selection import select

# --- selection ----------------------------------------------------------------------------------


def test_weighted_and_majority_disagree():
    answers = ["41", "42", "42", "42", "41"]
    scores = [0.9, 0.2, 0.1, 0.3, 0.8]
    assert select(answers, scores, "majority").answer == "42"
    w = select(answers, scores, "weighted")
    assert w.answer == "41" and w.tally == {"41": pytest.approx(1.7), "42": pytest.approx(0.6)}
    assert w.index == 0  # the best-scored candidate of the winning answer
    n = select(answers, scores, "naive")
    assert n.answer == "41" and n.index == 0


def test_selection_groups_equivalent_answers_and_breaks_ties_by_first_seen():
    assert select(["0.5", "\\frac{1}{2}", "3"], [0.4, 0.4, 0.7], "weighted").answer == "0.5"
    assert select(["3", "4", "4", "3"], [1, 1, 1, 1], "majority").answer == "3"
    assert select([None, None], [0.5, 0.6], "weighted").answer is None
    with pytest.raises(InvalidRequestError):
        select(["1"], [1.0], "vibes")


# --- budget -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["best_of_n", "beam_search", "dvts", "revisions"])
@pytest.mark.parametrize("budget", [4, 8, 16])
def test_budget_params_spend_the_budget(name, budget):
    assert budget_cost(name, budget_params(name, budget)) == budget


def test_lookahead_is_paid_from_the_budget():
    p = budget_params("beam_search", 8, lookahead=1)
    assert p["n"] == 4 and budget_cost("beam_search", p) == 8
    with pytest.raises(InvalidRequestError, match="lookahead 3 every beam costs 4.*nearest budgets.* 4"):
        budget_params("beam_search", 2, lookahead=3)
    with pytest.raises(InvalidRequestError, match="nearest budgets it can spend are 8 and 10"):
        budget_params("beam_search", 9, lookahead=1)
    with pytest.raises(InvalidRequestError, match="budget"):
        budget_params("best_of_n", 0)
    with pytest.raises(InvalidRequestError, match="Unknown strategy 'no_such_strategy'"):
        get_strategy("no_such_strategy")


# --- best-of-N ------------------------------------------------------------------------------------


def test_best_of_n_samples_n_from_the_prompt_and_selects():
    texts = {0: "6 * 7 = 41. \\boxed{41}", 1: "\\boxed{42}", 2: "\\boxed{42}", 3: "\\boxed{41}"}
    prm = {"41": 0.9, "42": 0.2}
    s = Script(lambda it: (texts[it.node_id], "eos"), lambda c, f: [prm["41" if "41" in c[-1] else "42"]])
    s.run(get_strategy("best_of_n")(ctx(), n=4, selection="weighted"))
    (gen,) = s.generates
    assert len(gen.items) == 4 and all(it.messages is not None and it.parent is None for it in gen.items)
    assert len({it.params.seed for it in gen.items}) == 4  # distinct, derived from (seed, node)
    assert s.of(Selected)[0].answer == "41"
    s2 = Script(lambda it: (texts[it.node_id], "eos"), lambda c, f: [prm["41" if "41" in c[-1] else "42"]])
    s2.run(get_strategy("best_of_n")(ctx(), n=4, selection="majority"))
    assert s2.of(Selected)[0].answer in ("41", "42")  # a 2-2 tie: the first answer seen wins
    assert s2.of(Selected)[0].answer == "41"
    trace = fold(s.events)
    assert all(node.scores for node in trace.nodes.values())


# --- beam search -----------------------------------------------------------------------------------


def test_beam_search_keeps_the_top_n_over_m_each_round():
    # Round 1: four first steps scored 0.1, 0.9, 0.5, 0.7 -> nodes 1 and 3 survive (N/M = 2).
    # Round 2 (the last, iterations=2): each survivor gets M = 2 children generated to the end.
    first = {0: 0.1, 1: 0.9, 2: 0.5, 3: 0.7}

    def text(it):
        if it.parent is None:
            return f"step of {it.node_id}\n\n", "stop"
        return f"end of {it.node_id} \\boxed{{{it.parent}}}", "eos"

    def score(steps, finished):
        if len(steps) == 1:
            nid = int(steps[0].split()[-1])
            return [first[nid]]
        return [0.5, 0.8 if "boxed{1}" in steps[-1] else 0.3]

    s = Script(text, score).run(get_strategy("beam_search")(ctx(), n=4, beam_width=2, iterations=2))
    r1, r2 = s.generates
    assert [it.parent for it in r1.items] == [None] * 4
    assert sorted(it.parent for it in r2.items) == [1, 1, 3, 3]
    assert all(it.params.stop == ("\n\n",) for it in r1.items)
    assert all(it.params.stop == () for it in r2.items)  # the last round generates to the end
    pruned = {e.node_id for e in s.of(NodePruned)}
    assert pruned == {0, 2}
    assert s.of(Selected)[0].answer == "1"  # children of node 1 score 0.8
    assert set(s.released) >= {0, 1, 2, 3}


def test_beam_search_moves_ended_beams_to_completed_and_stops_at_n():
    # Every first step already ends (EOS): all N beams are complete after one round.
    s = Script(lambda it: (f"\\boxed{{{it.node_id % 2}}}", "eos"), lambda c, f: [0.5]).run(
        get_strategy("beam_search")(ctx(), n=4, beam_width=2, iterations=40)
    )
    assert len(s.generates) == 1
    assert s.of(NodePruned) == []
    assert s.of(Selected)[0].answer in ("0", "1")


def test_lookahead_rolls_out_k_greedy_steps_and_scores_the_rollout():
    k = 2

    def text(it):
        return f"s{it.node_id}\n\n", "stop"

    seen = []

    def score(steps, finished):
        seen.append(len(steps))
        return [0.5] * len(steps)

    s = Script(text, score).run(
        get_strategy("beam_search")(ctx(), n=4, beam_width=2, iterations=3, lookahead=k)
    )
    looks = [e for e in s.of(NodeAdded) if e.role == "lookahead"]
    steps = [e for e in s.of(NodeAdded) if e.role == "step"]
    # Rounds 1 and 2 are not the last: each of the 4 open candidates rolls out k greedy steps.
    assert len(looks) == 2 * 4 * k
    rollout_items = [it for g in s.generates for it in g.items if it.params.temperature == 0.0]
    assert len(rollout_items) == len(looks)
    assert all(it.parent is not None for it in rollout_items)
    # Cost: N x (k+1) generations per round before the last.
    assert len(steps) + len(looks) == 4 * (k + 1) * 2 + 4
    # The score of a round-1 candidate covers its step plus k rollout steps.
    assert seen[:4] == [1 + k] * 4
    assert {e.node_id for e in s.of(NodeScored)} == {e.node_id for e in steps}


# --- DVTS -------------------------------------------------------------------------------------------


def test_dvts_subtrees_stay_independent():
    owner: dict[int, int] = {}

    def text(it):
        if it.parent is None:
            owner[it.node_id] = it.node_id // 4  # 4 children per subtree in round 1 (ids 0-3, 4-7)
        else:
            owner[it.node_id] = owner[it.parent]
        return f"x {it.node_id}\n\n", "stop"  # a number standing alone: each path has an answer

    def score(steps, finished):
        nid = int(steps[-1].split()[-1])
        return [1.0 / (1 + nid % 4)]  # the first child of each expansion is best

    s = Script(text, score).run(get_strategy("dvts")(ctx(), n=8, beam_width=4, iterations=3))
    rounds = s.generates
    assert len(rounds[0].items) == 8 and all(it.parent is None for it in rounds[0].items)
    for g in rounds[1:]:
        parents = [it.parent for it in g.items]
        assert len(set(parents)) == 2  # one current node per subtree
        for it in g.items:
            assert owner[it.node_id] == owner[it.parent]
    # Each subtree continued only with its own best child.
    assert sorted({it.parent for it in rounds[1].items}) == [0, 4]
    sel = s.of(Selected)[0]
    assert len(sel.tally) >= 1
    started = s.of(RunStarted)[0]
    assert started.params["subtrees"] == 2


# --- revisions ------------------------------------------------------------------------------------


def test_revision_context_holds_the_last_four_attempts():
    s = Script(lambda it: (f"attempt {it.node_id} \\boxed{{{it.node_id}}}", "eos"), lambda c, f: [0.5]).run(
        get_strategy("revisions")(ctx(), chains=1, length=6)
    )
    msgs = [g.items[0].messages for g in s.generates]
    assert msgs[0] == (("system", ctx().system_prompt), ("user", "What is 6 * 7?"))
    last = msgs[5]
    attempts = [text for role, text in last if role == "assistant"]
    assert attempts == [f"attempt {i} \\boxed{{{i}}}" for i in (1, 2, 3, 4)]
    assert [text for role, text in last if role == "user"][1:] == [REVISE_PROMPT] * 4
    roles = [e.role for e in s.of(NodeAdded)]
    assert roles == ["solution"] + ["revision"] * 5
    assert [e.parent_id for e in s.of(NodeAdded)] == [None, 0, 1, 2, 3, 4]


def test_revisions_select_within_chains_then_across():
    # Nodes per round: (chain 0, chain 1) = (0, 1), then (2, 3).
    # Chain 0 says 7 (0.9) then 5 (0.2); chain 1 says 5 (0.2) twice.
    answers = {0: "7", 1: "5", 2: "5", 3: "5"}

    def text(it):
        return f"\\boxed{{{answers[it.node_id]}}}", "eos"

    def score(steps, finished):
        return [0.9 if "boxed{7}" in steps[-1] else 0.2]

    s = Script(text, score).run(get_strategy("revisions")(ctx(), chains=2, length=2, selection="weighted"))
    assert s.of(Selected)[0].answer == "7"  # chain 0 -> 7 (0.9); chain 1 -> 5 (0.4): 7 wins
    m = Script(text, score).run(get_strategy("revisions")(ctx(), chains=2, length=2, selection="majority"))
    assert m.of(Selected)[0].answer == "5"  # three attempts say 5
