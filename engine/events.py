"""A run is a stream of events; a trace is a fold over them (see ../shared/DESIGN.md).

Strategies yield these; the live GUI, the SQLite store, the HTML export and replay consume the same
objects, so a live run and a replayed one are drawn by one code path. Every event is a small frozen
dataclass that checks itself and round-trips through JSON (``to_dict`` / ``event_from_dict``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

from engine import selectors
from engine.errors import InvalidRequestError

ROLES = ("step", "solution", "revision", "lookahead", "continuation", "answer")
# continuation: a chain made to go on (budget forcing's "Wait"); answer: an answer forced at the end
FINISH_REASONS = ("eos", "stop", "length", "cancelled")
RUN_STATUSES = ("done", "cancelled", "failed")


def _require(ok: bool, what: str) -> None:
    if not ok:
        raise InvalidRequestError(f"Invalid event: {what}")


def _known(node: TraceNode | None, what: str) -> TraceNode:
    """``node``, which the event names and the trace must hold."""
    _require(node is not None, what)
    assert node is not None  # for the type checker: _require raised otherwise
    return node


@dataclass(frozen=True)
class Event:
    kind: ClassVar[str] = "event"
    run_id: str

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["kind"] = self.kind
        return d


@dataclass(frozen=True)
class RunStarted(Event):
    kind: ClassVar[str] = "run_started"
    strategy: str
    params: dict[str, Any]
    model: dict[str, Any]
    prm: dict[str, Any]  # the PRM's record (name, spec, kind, model, n_params; engine.prm.PRMKind.record)
    seed: int
    problem: str
    reference: str | None = None

    def __post_init__(self) -> None:
        _require(bool(self.strategy), "a run needs a strategy name")
        _require(bool(self.problem.strip()), "a run needs a problem")


@dataclass(frozen=True)
class NodeAdded(Event):
    kind: ClassVar[str] = "node_added"
    node_id: int
    parent_id: int | None
    role: str
    text: str
    n_tokens: int
    logprob_sum: float
    token_logprobs: list[float] = field(default_factory=list)
    token_texts: list[str] = field(default_factory=list)  # one per token when known (for shading)

    def __post_init__(self) -> None:
        _require(self.role in ROLES, f"role must be one of {ROLES}, got {self.role!r}")
        _require(self.n_tokens >= 0, "n_tokens must be >= 0")
        _require(self.parent_id is None or self.parent_id != self.node_id, "a node cannot be its own parent")


@dataclass(frozen=True)
class NodeScored(Event):
    kind: ClassVar[str] = "node_scored"
    node_id: int
    step_scores: list[float]
    score: float
    scorer: str

    def __post_init__(self) -> None:
        _require(all(math.isfinite(s) for s in self.step_scores), "step scores must be finite")
        _require(math.isfinite(self.score), "the score must be finite")


@dataclass(frozen=True)
class NodePruned(Event):
    kind: ClassVar[str] = "node_pruned"
    node_id: int
    iteration: int


@dataclass(frozen=True)
class NodeFinished(Event):
    kind: ClassVar[str] = "node_finished"
    node_id: int
    answer: str | None
    finish_reason: str

    def __post_init__(self) -> None:
        _require(self.finish_reason in FINISH_REASONS, f"finish_reason must be one of {FINISH_REASONS}")


@dataclass(frozen=True)
class Selected(Event):
    kind: ClassVar[str] = "selected"
    answer: str | None
    node_id: int | None
    method: str
    tally: dict[str, float]

    def __post_init__(self) -> None:
        _require(self.method in selectors.names(), f"method must be one of {', '.join(selectors.names())}")


@dataclass(frozen=True)
class RunFinished(Event):
    kind: ClassVar[str] = "run_finished"
    status: str
    message: str = ""
    generated_tokens: int = 0
    prompt_tokens: int = 0
    prm_tokens: int = 0
    wall_s: float = 0.0
    cached_tokens: int = 0  # of the prompt tokens, those served from KV already held (shared, reused)
    policy_flops: float = 0.0  # 2 x policy parameters x (prompt + generated tokens)
    prm_flops: float = 0.0  # 2 x PRM parameters x PRM tokens

    def __post_init__(self) -> None:
        _require(self.status in RUN_STATUSES, f"status must be one of {RUN_STATUSES}")


@dataclass(frozen=True)
class Resampled(Event):
    """Particle filtering resampled its particles after round ``iteration``: ``nodes`` are the
    particles' current nodes with their normalised ``weights``; ``sources`` holds, for each particle
    of the next round, the node it continues (copied from). A node absent from ``sources`` died."""

    kind: ClassVar[str] = "resampled"
    iteration: int
    nodes: list[int]
    weights: list[float]
    sources: list[int]

    def __post_init__(self) -> None:
        _require(len(self.nodes) == len(self.weights), "one weight per node")
        _require(all(math.isfinite(w) and w >= 0 for w in self.weights), "weights must be finite and >= 0")
        _require(set(self.sources) <= set(self.nodes), "a particle is copied from a node of the round")


@dataclass(frozen=True)
class TextDelta(Event):
    """Streamed text of a node still being generated (throttled; not needed for replay)."""

    kind: ClassVar[str] = "text_delta"
    node_id: int
    text: str


@dataclass(frozen=True)
class NodeValued(Event):
    """Monte Carlo tree search backed a value up through node ``node_id`` in ``iteration``: it has
    now been visited ``visits`` times with mean value ``value`` (its PRM values and its
    descendants'). Replayed in order, these grow the search iteration by iteration."""

    kind: ClassVar[str] = "node_valued"
    node_id: int
    visits: int
    value: float
    iteration: int

    def __post_init__(self) -> None:
        _require(self.visits >= 1, "a valued node has been visited")
        _require(math.isfinite(self.value), "the value must be finite")
        _require(self.iteration >= 0, "iterations count from 0")


EVENT_TYPES: dict[str, type[Event]] = {
    cls.kind: cls
    for cls in (
        RunStarted,
        NodeAdded,
        NodeScored,
        NodePruned,
        NodeFinished,
        Selected,
        RunFinished,
        TextDelta,
        Resampled,
        NodeValued,
    )
}


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild an event from ``to_dict`` output (e.g. a row of the store or a JSONL line)."""
    d = dict(d)
    kind = d.pop("kind", None)
    cls = EVENT_TYPES.get(kind)
    if cls is None:
        raise InvalidRequestError(f"Unknown event kind {kind!r}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise InvalidRequestError(f"Event {kind} has unknown fields {sorted(unknown)}")
    try:
        return cls(**d)
    except TypeError as e:
        raise InvalidRequestError(f"Event {kind} is incomplete: {e}") from None


# --- the fold --------------------------------------------------------------------------------------


@dataclass
class TraceNode:
    id: int
    parent_id: int | None
    role: str
    text: str
    n_tokens: int
    logprob_sum: float
    token_logprobs: list[float]
    token_texts: list[str] = field(default_factory=list)
    children: list[int] = field(default_factory=list)
    step_scores: dict[str, list[float]] = field(default_factory=dict)  # per scorer
    scores: dict[str, float] = field(default_factory=dict)
    pruned_at: int | None = None
    answer: str | None = None
    finish_reason: str | None = None
    live_text: str = ""
    weight: float | None = None  # particle filtering: its normalised weight when last resampled
    copies: int | None = None  # ... and how many particles of the next round continue it (0: died)
    visits: int | None = None  # Monte Carlo tree search: times the search went through it
    value: float | None = None  # ... and the mean value backed up through it

    @property
    def score(self) -> float | None:
        """The aggregated PRM score (of the first scorer), None while unscored."""
        return next(iter(self.scores.values()), None)

    @property
    def path_step_scores(self) -> list[float] | None:
        """Per-step PRM scores (of the first scorer); a beam node's cover its whole path."""
        return next(iter(self.step_scores.values()), None)


@dataclass
class Trace:
    """What a run looks like after the events seen so far. ``apply`` is the only way to change it,
    so a replayed stream rebuilds exactly the live trace."""

    run_id: str | None = None
    started: RunStarted | None = None
    nodes: dict[int, TraceNode] = field(default_factory=dict)
    roots: list[int] = field(default_factory=list)
    selected: Selected | None = None
    finished: RunFinished | None = None
    resamplings: list[Resampled] = field(default_factory=list)
    iterations: int = 0  # Monte Carlo tree search: iterations backed up so far
    n_events: int = 0

    def apply(self, ev: Event) -> None:
        if self.run_id is None:
            _require(isinstance(ev, RunStarted), "a run's first event is RunStarted")
            self.run_id = ev.run_id
        _require(ev.run_id == self.run_id, f"event of run {ev.run_id} in the trace of {self.run_id}")
        _require(self.finished is None, "no event may follow RunFinished")
        self.n_events += 1
        if isinstance(ev, RunStarted):
            _require(self.started is None, "RunStarted twice")
            self.started = ev
        elif isinstance(ev, NodeAdded):
            _require(ev.node_id not in self.nodes, f"node {ev.node_id} added twice")
            _require(ev.parent_id is None or ev.parent_id in self.nodes, f"unknown parent {ev.parent_id}")
            self.nodes[ev.node_id] = TraceNode(
                ev.node_id,
                ev.parent_id,
                ev.role,
                ev.text,
                ev.n_tokens,
                ev.logprob_sum,
                list(ev.token_logprobs),
                list(ev.token_texts),
            )
            if ev.parent_id is None:
                self.roots.append(ev.node_id)
            else:
                self.nodes[ev.parent_id].children.append(ev.node_id)
        elif isinstance(ev, TextDelta):
            pass  # live only: the node's final text arrives with NodeAdded
        else:
            node_id = getattr(ev, "node_id", None)
            node = self.nodes.get(node_id) if node_id is not None else None
            if isinstance(ev, NodeScored):
                node = _known(node, f"score for unknown node {node_id}")
                node.step_scores[ev.scorer] = list(ev.step_scores)
                node.scores[ev.scorer] = ev.score
            elif isinstance(ev, NodePruned):
                node = _known(node, f"pruning unknown node {node_id}")
                node.pruned_at = ev.iteration
            elif isinstance(ev, NodeFinished):
                node = _known(node, f"finishing unknown node {node_id}")
                node.answer = ev.answer
                node.finish_reason = ev.finish_reason
            elif isinstance(ev, Resampled):
                _require(all(i in self.nodes for i in ev.nodes), "resampling unknown nodes")
                for i, w in zip(ev.nodes, ev.weights, strict=True):
                    self.nodes[i].weight = w
                    self.nodes[i].copies = ev.sources.count(i)
                self.resamplings.append(ev)
            elif isinstance(ev, NodeValued):
                node = _known(node, f"a value for unknown node {node_id}")
                node.visits = ev.visits
                node.value = ev.value
                self.iterations = max(self.iterations, ev.iteration + 1)
            elif isinstance(ev, Selected):
                _require(
                    ev.node_id is None or ev.node_id in self.nodes, f"selected unknown node {ev.node_id}"
                )
                self.selected = ev
            elif isinstance(ev, RunFinished):
                self.finished = ev

    def chosen(self, answer_is_path: bool) -> set[int]:
        """The nodes the selection picked: with ``answer_is_path`` (the strategy's registry entry
        says its answer is a path of steps or segments) the whole path, elsewhere (samples,
        attempts) the one node; empty before the selection."""
        sel = self.selected
        if sel is None or sel.node_id is None or sel.node_id not in self.nodes:
            return set()
        if answer_is_path:
            return set(self.path_to(sel.node_id))
        return {sel.node_id}

    def path_to(self, node_id: int) -> list[int]:
        """Node ids from a root down to ``node_id`` (a beam's full solution)."""
        out = []
        cur: int | None = node_id
        while cur is not None:
            out.append(cur)
            cur = self.nodes[cur].parent_id
        return out[::-1]

    def text_of(self, node_id: int) -> str:
        return "".join(self.nodes[i].text for i in self.path_to(node_id))


def fold(events: list[Event]) -> Trace:
    t = Trace()
    for ev in events:
        t.apply(ev)
    return t
