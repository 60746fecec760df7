"""Where a trace's cards go, computed outside the Qt items (pure Python, no Qt): a search by round
(each round a row; pruned candidates collapsed into one stub per round unless expanded), revision
chains as a tidy tree, best-of-N as a ranked column; and what each card says beside its score."""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.events import Trace
from engine.search.registry import drawn_as

NODE_W, NODE_H = 190.0, 54.0  # cards with text: best-of-N samples, revision attempts
GAP_X, GAP_Y = 14.0, 30.0
CARD_W, CARD_H = 112.0, 34.0  # a search's step cards: score, note, answer or the step's first words
CARD_GAP = 8.0
ROW_GAP = 18.0
STUB_W = 84.0


def drawn_as_tree(strategy: str) -> bool:
    """Trees (steps) and chains (attempts, segments) are drawn joined; the rest as a ranked column."""
    return drawn_as(strategy) in ("tree", "chain")


@dataclass
class Stub:
    """One round's pruned candidates, drawn as one card (or, expanded, as a toggle beside them)."""

    round: int
    nodes: list[int]
    best: float | None
    expanded: bool
    pos: tuple[float, float] = (0.0, 0.0)
    parents: list[int] = field(default_factory=list)


@dataclass
class Layout:
    pos: dict[int, tuple[float, float]]  # top-left corner of every drawn card
    size: tuple[float, float]  # a card's width and height
    stubs: dict[int, Stub] = field(default_factory=dict)  # by round
    rounds: dict[int, tuple[float, float]] = field(default_factory=dict)  # a round's top and bottom
    joined: bool = True  # edges drawn from parents to children


def depth_of(trace: Trace, nid: int) -> int:
    d, cur = 0, trace.nodes[nid].parent_id
    while cur is not None:
        d, cur = d + 1, trace.nodes[cur].parent_id
    return d


def round_layout(
    trace: Trace, expanded: frozenset[int] | set[int] = frozenset(), per_line: int = 6
) -> Layout:
    """Rows by round (a node's depth). Kept candidates come first, in their parents' order; a
    round's pruned candidates (that nothing grew from) collapse into a stub unless ``expanded``
    holds the round. A row wider than ``per_line`` cards wraps onto more lines."""
    rows = _rows(trace)  # parents come before children (events add them so)
    pos: dict[int, tuple[float, float]] = {}
    stubs: dict[int, Stub] = {}
    rounds: dict[int, tuple[float, float]] = {}
    order: dict[int, int] = {}  # a placed node's index, to keep children in their parents' order
    y = 0.0
    step_x = CARD_W + CARD_GAP
    for d in sorted(rows):
        ids = rows[d]
        pruned = [i for i in ids if trace.nodes[i].pruned_at is not None and not trace.nodes[i].children]
        gone = set(pruned)
        kept = [i for i in ids if i not in gone]

        def key(i: int) -> tuple[int, float, int]:
            n = trace.nodes[i]
            return (order.get(n.parent_id, -1) if n.parent_id is not None else -1, -(n.score or 0.0), i)

        kept.sort(key=key)
        pruned.sort(key=key)
        shown = kept + (pruned if d in expanded else [])
        slots = len(shown) + (1 if pruned else 0)
        width = min(slots, per_line)
        lines = max(1, -(-slots // per_line))
        x0 = -(width * step_x - CARD_GAP) / 2  # rows centred on one axis
        for k, nid in enumerate(shown):
            pos[nid] = (x0 + (k % per_line) * step_x, y + (k // per_line) * (CARD_H + CARD_GAP))
            order[nid] = len(order)
        if pruned:
            k = len(shown)
            scores = [s for i in pruned if (s := trace.nodes[i].score) is not None]
            parents = list(dict.fromkeys(p for i in pruned if (p := trace.nodes[i].parent_id) is not None))
            stubs[d] = Stub(
                d,
                pruned,
                max(scores) if scores else None,
                d in expanded,
                (x0 + (k % per_line) * step_x, y + (k // per_line) * (CARD_H + CARD_GAP)),
                parents,
            )
        bottom = y + lines * (CARD_H + CARD_GAP) - CARD_GAP
        rounds[d] = (y, bottom)
        y = bottom + ROW_GAP
    return Layout(pos, (CARD_W, CARD_H), stubs, rounds)


def extent(lay: Layout) -> tuple[float, float]:
    """Width and height of what a layout draws."""
    w, h = lay.size
    boxes = [(x, y, w) for x, y in lay.pos.values()] + [(*st.pos, STUB_W) for st in lay.stubs.values()]
    if not boxes:
        return 0.0, 0.0
    x0 = min(x for x, _, _ in boxes)
    x1 = max(x + bw for x, _, bw in boxes)
    y1 = max(y for _, y, _ in boxes) + h
    return x1 - x0, y1 - min(y for _, y, _ in boxes)


def fitting_per_line(
    trace: Trace, expanded: frozenset[int] | set[int], width: float, height: float, lo: int = 3
) -> int:
    """How many cards a row holds before it wraps so that the whole search is drawn largest in a
    view of this size (wide rows wrap in a tall, narrow panel; never more than the widest row)."""
    widest = max((len(r) for r in _rows(trace).values()), default=1) + 1
    best, best_k = lo, -1.0
    # A handful of widths, not every one: the layout is redone each time the trace grows.
    tries = sorted(
        {n for n in (lo, 4, 5, 6, 7, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96, 128) if lo <= n < widest}
    )
    for n in [*tries, max(lo, widest)]:
        w, h = extent(round_layout(trace, expanded, n))
        k = min(width / max(w, 1.0), height / max(h, 1.0), 1.0)
        if k >= best_k - 1e-6:  # on a tie the wider rows: fewer lines to a round
            best, best_k = n, max(k, best_k)
    return best


def _rows(trace: Trace) -> dict[int, list[int]]:
    depths: dict[int, int] = {}
    rows: dict[int, list[int]] = {}
    for nid in trace.nodes:
        p = trace.nodes[nid].parent_id
        depths[nid] = 0 if p is None or p not in depths else depths[p] + 1
        rows.setdefault(depths[nid], []).append(nid)
    return rows


def layout(
    trace: Trace, strategy: str, expanded: frozenset[int] | set[int] = frozenset(), per_line: int = 6
) -> Layout:
    """Where every card goes. Pure: no Qt items are touched."""
    kind = drawn_as(strategy)
    if kind == "tree":
        return round_layout(trace, expanded, per_line)
    pos: dict[int, tuple[float, float]] = {}
    if kind != "chain":  # best-of-N: one ranked column
        ranked = sorted(trace.roots, key=lambda i: -(trace.nodes[i].score or 0.0))
        for row, nid in enumerate(ranked):
            pos[nid] = (0.0, row * (NODE_H + GAP_Y / 2))
        return Layout(pos, (NODE_W, NODE_H), joined=False)
    slot = [0.0]

    def place(nid: int, depth: int) -> float:  # a tidy tree: parents centred over their children
        kids = trace.nodes[nid].children
        if kids:
            xs = [place(k, depth + 1) for k in kids]
            x = (xs[0] + xs[-1]) / 2
        else:
            x = slot[0]
            slot[0] += NODE_W + GAP_X
        pos[nid] = (x, depth * (NODE_H + GAP_Y))
        return x

    for r in trace.roots:
        place(r, 0)
    return Layout(pos, (NODE_W, NODE_H))


def card_notes(trace: Trace, groups: list[int] | None = None) -> dict[int, str]:
    """A best-of-N card's answer and its votes (candidates with an equivalent answer): "→ 18 ×3".
    ``groups``: the answers' equivalence classes (:func:`engine.answers.group_answers`, which may be
    slow: the app computes it off the GUI thread); without it, computed here."""
    ids, answers = answer_ids(trace)
    if groups is None or len(groups) != len(ids):
        groups = equivalent_groups(answers)
    votes = {g: groups.count(g) for g in set(groups)}
    return {i: f"→ {a[:12]} ×{votes[g]}" for i, a, g in zip(ids, answers, groups, strict=True)}


def answer_ids(trace: Trace) -> tuple[list[int], list[str]]:
    """The best-of-N cards with an answer, and their answers."""
    found = [(i, a) for i in trace.roots if (a := trace.nodes[i].answer) is not None]
    return [i for i, _ in found], [a for _, a in found]


def equivalent_groups(answers: list[str]) -> list[int]:
    """Answers grouped by mathematical equivalence (math-verify; its first import alone takes a
    good part of a second): the app runs it on the offload thread."""
    from engine.answers import group_answers

    # group_answers takes a list[str | None] (a list is invariant: hence the copy) and gives None
    # only for no answer, which none of these is
    return [g for g in group_answers(list(answers)) if g is not None]


def exact_groups(answers: list[str]) -> list[int]:
    """Answers grouped by their text alone: what a card shows until the equivalence check is back."""
    seen: dict[str, int] = {}
    return [seen.setdefault(a.strip(), len(seen)) for a in answers]


def tree_notes(trace: Trace, answers: bool = True) -> dict[int, str]:
    """What a step card says beside its score: MCTS's visits and mean value ("N 5 · V .62"), a
    particle's weight and copies when it was resampled
    ("w .42 ×3"; ×0: it died), a forced continuation ("Wait") or answer, and an ended node's answer
    (unless ``answers`` is False: a search's card shows the answer on its second line)."""
    out = {}
    wait = str((trace.started.params if trace.started else {}).get("wait") or "Wait")
    for nid, n in trace.nodes.items():
        bits = []
        if n.visits is not None and n.value is not None:  # MCTS: visits and mean value
            bits.append(f"N {n.visits} · V {n.value:.2f}".replace("V 0.", "V ."))
        if n.weight is not None:
            bits.append(f"w {n.weight:.2f} ×{n.copies}")
        if n.role == "continuation":  # made to go on ("Wait"), or cut short and going on
            bits.append(f"“{wait}”" if n.text.lstrip().startswith(wait) else "continued")
        elif n.role == "answer":
            bits.append("forced answer")
        if answers and n.answer is not None and n.finish_reason is not None:
            bits.append(f"→ {n.answer[:10]}")
        if bits:
            out[nid] = " · ".join(bits)
    return out


def elide(text: str, width: int = 34, lines: int = 2) -> str:
    words = " ".join(text.split())
    out = [words[i : i + width] for i in range(0, min(len(words), width * lines), width)]
    if len(words) > width * lines:
        out[-1] = out[-1][:-1] + "…"
    return "\n".join(out) or "…"
