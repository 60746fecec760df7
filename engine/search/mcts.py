"""Monte Carlo tree search over reasoning steps (UCT), as optillm's ``mcts`` and llm-reasoners do.

The question is the root; every tree node is one step (text up to the step delimiter). Each
iteration:

1. **selection**: from the root, go to the child with the highest UCT score
   ``Q + c * sqrt(ln N_parent / N_child)`` (an unvisited child first) until a node not yet expanded;
   a subtree whose every leaf has ended is solved and never chosen again (MCTS-Solver's rule: a
   finished solution teaches nothing new when visited twice);
2. **expansion**: sample ``children`` next steps from it (the whole rest of the solution at
   ``max_depth``);
3. **evaluation**: each child's value is the PRM's score of its path (``rollout="none"``), or of
   its path completed greedily to the end (``rollout="greedy"``: a rollout is a whole solution, so it
   is charged to the budget like one);
4. **backpropagation**: each child's value is added to it and to every node above it.

The budget, in generations as Snell counts them, is the number of whole solutions the search may
write: steps that end a solution and greedy rollouts. It stops there, when a token budget is spent,
when the tree is solved, or after ``n * max_depth * 2`` iterations. The answer follows the most
visited children from the root (``final="visits"``) or the best mean value (``final="value"``) to a
finished solution; where that path ends before one, the best-valued solution found.

Events: every step a :class:`~engine.events.NodeAdded` (a rollout's text a ``lookahead`` node under
the step it completes), each child's PRM score a ``NodeScored``, and after each iteration a
:class:`~engine.events.NodeValued` for every node whose visits and mean value changed, so a replay
shows the search grow iteration by iteration.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from engine.answers import group_answers
from engine.events import NodeValued, Selected
from engine.protocol import Generate, Generated, GenItem, Release, RunContext, StrategyGen
from engine.search.common import Scored, added, finished_event, is_done, score, scored_event, started
from engine.search.registry import Param, Strategy, register

ROLLOUTS = ("none", "greedy")
FINALS = ("visits", "value")


@dataclass(eq=False)
class TreeNode:
    """A step in the search tree (the root: the question, with no node id)."""

    node_id: int | None
    parent: TreeNode | None = None
    text: str = ""  # the whole path's text
    tokens: int = 0  # the whole path's tokens
    depth: int = 0
    terminal: bool = False  # the step ended the solution
    reason: str = "stop"
    children: list[TreeNode] = field(default_factory=list)
    visits: int = 0
    total: float = 0.0
    solution: int | None = None  # the node whose path is this node's whole solution (itself, or its rollout)
    solution_value: float | None = None

    @property
    def mean(self) -> float:
        return self.total / self.visits if self.visits else 0.0

    @property
    def expanded(self) -> bool:
        return bool(self.children)

    @property
    def solved(self) -> bool:
        """Nothing left to search below: it ended, or every child's subtree has."""
        return self.terminal or (self.expanded and all(c.solved for c in self.children))


def uct(child: TreeNode, parent_visits: int, c: float) -> float:
    """UCT: the child's mean value plus ``c`` times its exploration bonus; unvisited first."""
    if child.visits == 0:
        return math.inf
    return child.mean + c * math.sqrt(math.log(max(1, parent_visits)) / child.visits)


def select(root: TreeNode, c: float) -> TreeNode | None:
    """The leaf an iteration expands: the best UCT child at every level, solved subtrees skipped
    (None: the whole tree is solved)."""
    node = root
    while node.expanded:
        open_ = [ch for ch in node.children if not ch.solved]
        if not open_:
            return None
        node = max(open_, key=lambda ch: uct(ch, node.visits, c))
    return None if node.terminal else node


def backpropagate(node: TreeNode, value: float) -> list[TreeNode]:
    """Add ``value`` to ``node`` and to every node above it; the nodes changed, leaf first."""
    out = []
    cur: TreeNode | None = node
    while cur is not None:
        cur.visits += 1
        cur.total += value
        out.append(cur)
        cur = cur.parent
    return out


def final_path(root: TreeNode, final: str) -> list[TreeNode]:
    """From the root, the most visited (or best valued) child at every level."""
    path, node = [], root
    while node.children:
        key = (lambda ch: (ch.visits, ch.mean)) if final == "visits" else (lambda ch: (ch.mean, ch.visits))
        node = max(node.children, key=key)
        path.append(node)
    return path


def mcts(
    ctx: RunContext,
    n: int = 8,
    exploration: float = 1.0,
    children: int = 3,
    rollout: str = "none",
    max_depth: int = 8,
    final: str = "visits",
) -> StrategyGen:
    params = {
        "n": n,
        "exploration": exploration,
        "children": children,
        "rollout": rollout,
        "max_depth": max_depth,
        "final": final,
    }
    yield started(ctx, "mcts", params)
    root = TreeNode(None)
    msgs = ctx.question_messages()
    tokens_used = [0]  # generated tokens, for a token budget
    solutions: list[TreeNode] = []  # nodes whose path is a whole solution (terminal steps, rollouts)
    texts_by_id: dict[int, str] = {}
    rollout_of: dict[int, TreeNode] = {}
    for it in range(max(1, n * max_depth * 2)):
        if len(solutions) >= n or ctx.out_of_tokens(tokens_used[0]):
            break
        leaf = select(root, exploration)
        if leaf is None:
            break  # every path has ended: nothing left to search
        last = leaf.depth + 1 >= max_depth
        k = max(1, children)
        items = []
        for _ in range(k):
            nid = ctx.new_node()
            want = ctx.token_cap(tokens_used[0], k, ctx.max_tokens - leaf.tokens)
            p = ctx.sampling(nid, want, stop=not last)
            items.append(
                GenItem(nid, p, parent=leaf.node_id)
                if leaf.node_id is not None
                else GenItem(nid, p, messages=msgs)
            )
        res: list[Generated] = yield Generate(tuple(items))
        tokens_used[0] += sum(g.n_tokens for g in res)
        kids = []
        for g in res:
            yield added(ctx, g, leaf.node_id, "step")
            kid = TreeNode(
                g.node_id,
                leaf,
                leaf.text + g.text,
                leaf.tokens + g.n_tokens,
                leaf.depth + 1,
                reason=g.finish_reason,
            )
            kid.terminal = last or is_done(g, kid.tokens, ctx) or ctx.out_of_tokens(tokens_used[0])
            kids.append(kid)
        leaf.children = kids
        if leaf.node_id is not None:
            yield Release((leaf.node_id,))  # its children hold its cells; it is never grown again
        values = yield from _evaluate(ctx, kids, rollout, tokens_used, rollout_of)
        changed: dict[int, TreeNode] = {}
        for kid, v in zip(kids, values, strict=True):
            for t in backpropagate(kid, v):
                if t.node_id is not None:
                    changed[t.node_id] = t
            if kid.solution is not None:
                solutions.append(kid)
                texts_by_id[kid.solution] = (
                    rollout_of[kid.solution].text if kid.solution in rollout_of else kid.text
                )
        for nid in sorted(changed):
            t = changed[nid]
            yield NodeValued(ctx.run_id, nid, t.visits, t.mean, it)
    held = _held(root)
    if held:
        yield Release(tuple(held))
    yield _choose(ctx, root, solutions, texts_by_id, final)


def _evaluate(
    ctx: RunContext,
    kids: list[TreeNode],
    rollout: str,
    tokens_used: list[int],
    rollout_of: dict[int, TreeNode],
):
    """Each new child's value: its path's PRM score, or (greedy rollout) its path completed to the
    end and scored; a child that ended, and every rollout, is a whole solution."""
    ext: dict[int, tuple[int, str, str]] = {}  # child id -> (rollout node id, rollout text, reason)
    if rollout == "greedy":
        open_ = [k for k in kids if not k.terminal]
        if open_:
            items = []
            for kid in open_:
                nid = ctx.new_node()
                want = ctx.token_cap(tokens_used[0], len(open_), ctx.max_tokens - kid.tokens)
                items.append(
                    GenItem(nid, ctx.sampling(nid, want, stop=False, greedy=True), parent=kid.node_id)
                )
            res: list[Generated] = yield Generate(tuple(items))
            tokens_used[0] += sum(g.n_tokens for g in res)
            for kid, g in zip(open_, res, strict=True):
                yield added(ctx, g, kid.node_id, "lookahead")
                ext[kid.node_id] = (g.node_id, g.text, g.finish_reason)  # type: ignore[index]  # kids have nodes
    texts = [k.text + (ext[k.node_id][1] if k.node_id in ext else "") for k in kids]
    finished = [k.terminal or k.node_id in ext for k in kids]
    scored: list[Scored] = yield from score(ctx, texts, finished)
    done: list[int] = []
    for kid, text, s in zip(kids, texts, scored, strict=True):
        yield scored_event(ctx, kid.node_id, s)  # type: ignore[arg-type]  # a kid has its node
        if kid.terminal:
            kid.solution, kid.solution_value = kid.node_id, s.score
            yield finished_event(ctx, kid.node_id, kid.text, kid.reason)  # type: ignore[arg-type]  # a kid's node
            done.append(kid.node_id)  # type: ignore[arg-type]  # a kid has its node
        elif kid.node_id in ext:
            rid, _, reason = ext[kid.node_id]
            kid.solution, kid.solution_value = rid, s.score
            rollout_of[rid] = TreeNode(rid, kid, text, terminal=True, reason=reason)
            yield scored_event(ctx, rid, s)
            yield finished_event(ctx, rid, text, reason)
            done.append(rid)
    if done:  # released after scoring: a judge on the policy model reads them from their cells
        yield Release(tuple(done))
    return [s.score for s in scored]


def _held(root: TreeNode) -> list[int]:
    """Leaves still holding cells: open steps never expanded."""
    out, stack = [], [root]
    while stack:
        t = stack.pop()
        if t.children:
            stack.extend(t.children)
        elif t.node_id is not None and not t.terminal:
            out.append(t.node_id)
    return sorted(out)


def _choose(
    ctx: RunContext, root: TreeNode, solutions: list[TreeNode], texts: dict[int, str], final: str
) -> Selected:
    """The final path's solution (else the best-valued solution found); the tally: each answer's
    visits over the solutions that give it."""
    path = final_path(root, final)
    pick = next((t for t in reversed(path) if t.solution is not None), None)
    if pick is None and solutions:
        pick = max(solutions, key=lambda t: (t.solution_value or 0.0, t.visits))
    if pick is None or pick.solution is None:
        return Selected(ctx.run_id, None, None, "naive", {})
    answers = [ctx.answer(texts[t.solution]) for t in solutions]  # type: ignore[index]  # a solution's node is set
    groups = group_answers(answers)
    tally: dict[str, float] = {}
    for t, a, g in zip(solutions, answers, groups, strict=True):
        if a is not None and g is not None:
            key = answers[g]
            tally[key] = tally.get(key, 0.0) + t.visits  # type: ignore[index, arg-type]  # g is a's group: its answer is a str
    return Selected(ctx.run_id, ctx.answer(texts[pick.solution]), pick.solution, "naive", tally)


register(
    Strategy(
        name="mcts",
        label="MCTS",
        short="MCTS",
        summary="Monte Carlo tree search over steps: UCT selection, PRM values backed up, N solutions",
        shown=("n", "children", "rollout"),
        run=mcts,
        for_budget=lambda budget, user: {"n": budget},
        cost=lambda p: int(p["n"]),
        # an expansion's children, their rollouts, and the open leaves (parked when the context is full)
        sequences=lambda p: 2 * int(p.get("children", 3)) + 1,
        candidates=lambda p: int(p["n"]),
        token_rule="expected",
        params=(
            Param(
                "exploration",
                1.0,
                "Exploration c",
                "UCT's exploration constant: larger visits more",
                0.0,
                4.0,
            ),
            Param("children", 3, "Children", "Next steps sampled at each expansion", 1, 8),
            Param(
                "rollout",
                "none",
                "Rollout",
                "none: a step's value is the PRM's score of its path; greedy: of its path completed to "
                "the end (each rollout a solution, charged to the budget)",
                choices=ROLLOUTS,
            ),
            Param("max_depth", 8, "Max depth", "Steps in a solution; the last step writes the rest", 1, 32),
            Param(
                "final",
                "visits",
                "Final choice",
                "visits: follow the most visited children; value: the best mean value",
                choices=FINALS,
            ),
        ),
        drawn_as="tree",
        answer_is_path=True,
        colour="#882255",  # Tol's wine: the Okabe-Ito eight are taken
        order=50,
    )
)
