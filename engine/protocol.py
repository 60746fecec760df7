"""How a strategy talks to the scheduler.

A strategy is a generator. It yields :mod:`engine.events` (recorded and passed on as they are) and
*requests*; the scheduler answers each request by sending the result back into the generator:

* :class:`Generate` — grow some nodes: each :class:`GenItem` continues a node the strategy holds
  (``parent``) or starts from a chat prompt (``messages``); the answer is one :class:`Generated` per
  item, in order. A generated node stays held (it can be continued) until released.
* :class:`Score` — PRM step scores for candidates (each a list of step texts); the answer is one
  list of step scores per candidate.
* :class:`Release` — the strategy no longer needs these nodes (pruned or done); the answer is None.

The scheduler merges the Generate requests of every strategy into shared decode batches and the
Score requests into shared PRM passes; a test can instead drive a strategy with scripted answers.
"""

from __future__ import annotations

import zlib
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from engine.answers import extract_answer, is_numeric
from engine.events import Event
from engine.sampling import SamplingParams, derive_seed

SYSTEM_PROMPT = (
    "Solve the following math problem efficiently and clearly:\n\n"
    "- For simple problems (2 steps or fewer):\nProvide a concise solution with minimal explanation.\n\n"
    "- For complex problems (3 steps or more):\nUse this step-by-step format:\n\n"
    "## Step 1: [Concise description]\n[Brief explanation and calculations]\n\n"
    "## Step 2: [Concise description]\n[Brief explanation and calculations]\n\n...\n\n"
    "Regardless of the approach, always conclude with:\n\n"
    "Therefore, the final answer is: $\\boxed{answer}$. I hope it is correct.\n\n"
    "Where [answer] is just the final number or expression that solves the problem."
)  # search-and-learn's system prompt

Messages = tuple[tuple[str, str], ...]  # ((role, content), ...), hashable so prompts can be shared


@dataclass(frozen=True)
class GenItem:
    """Grow one node. It starts from a chat prompt (``messages``), or continues a node the run
    holds (``parent``), or both: ``messages`` whose prompt begins with the parent's prompt and text
    (a revision's chat after its attempt), so the parent's cells are reused and only the rest is
    decoded (a backend that cannot tell falls back to the whole prompt).

    A continuation may first ``cut`` text from the end of the parent's text (an end-of-thinking
    tag) and then force ``prefix`` (budget forcing's "Wait"); an end-of-generation token that ended
    the parent is dropped. The answer's text is what was sampled after the prefix."""

    node_id: int
    params: SamplingParams
    parent: int | None = None
    messages: Messages | None = None
    prefix: str = ""
    cut: str = ""
    template: tuple[tuple[str, Any], ...] = ()  # chat template switches, e.g. (("enable_thinking", False),)

    @property
    def prompt_key(self) -> tuple | None:
        """What identifies the item's chat prompt: its messages, and its template switches if any."""
        if self.messages is None:
            return None
        return (self.messages, self.template) if self.template else self.messages

    def __post_init__(self) -> None:
        if self.parent is None and self.messages is None:
            raise ValueError("a GenItem continues a parent or starts from messages")
        if (self.prefix or self.cut) and (self.parent is None or self.messages is not None):
            raise ValueError("prefix and cut continue a parent's text, not a chat")


@dataclass(frozen=True)
class Generate:
    items: tuple[GenItem, ...]


@dataclass(frozen=True)
class Generated:
    node_id: int
    text: str
    n_tokens: int
    logprobs: tuple[float, ...]
    finish_reason: str  # eos | stop | length | cancelled
    pieces: tuple[str, ...] = ()  # the text of each token (a character split across tokens goes to its last)


@dataclass(frozen=True)
class Score:
    candidates: tuple[tuple[str, ...], ...]
    finished: tuple[bool, ...]


@dataclass(frozen=True)
class Release:
    node_ids: tuple[int, ...]


Request = Generate | Score | Release
# What the scheduler sends back is the request's answer: list[Generated] for Generate, one list of
# step scores per candidate (list[list[float]]) for Score, None for Release. Its type depends on the
# request, which a Generator's one send type cannot say: each ``x: T = yield request`` names it.
StrategyGen = Generator[Event | Request, Any, None]


@dataclass
class RunContext:
    """What every strategy gets: the problem, the run's identity and the shared settings."""

    run_id: str
    problem: str
    seed: int = 0
    reference: str | None = None
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048
    delimiter: str = "\n\n"
    aggregation: str = "last"
    system_prompt: str = SYSTEM_PROMPT
    model: dict[str, Any] = field(default_factory=dict)
    prm_record: dict[str, Any] = field(default_factory=dict)  # what the run records of its PRM
    strategy: str = ""  # set by the scheduler: independent seed streams are drawn per strategy
    seeds: str = "independent"  # independent | common (every strategy's node k draws the same numbers)
    thinking: bool = False  # set by the scheduler: the chat template has a thinking block
    budget_tokens: int = 0  # generated tokens the run may spend (0: counted in generations)
    _next_node: int = 0

    def new_node(self) -> int:
        n = self._next_node
        self._next_node += 1
        return n

    def token_cap(self, used: int, n_items: int, want: int) -> int:
        """``want`` tokens for each of ``n_items`` generations, cut so that the run's token budget
        (when it has one) holds: each gets an equal share of what is left (at least 1)."""
        if self.budget_tokens <= 0:
            return want
        return max(1, min(want, (self.budget_tokens - used) // max(1, n_items)))

    def answer(self, text: str | None) -> str | None:
        """The final answer ``text`` gives, read as a number where the reference is one (GSM8K,
        the arithmetic ladder: a phrase that names no number gives way to the next rule)."""
        return extract_answer(text, numeric=is_numeric(self.reference))

    def out_of_tokens(self, used: int) -> bool:
        """Whether a run with a token budget has used it up (``used``: tokens generated so far)."""
        return self.budget_tokens > 0 and used >= self.budget_tokens

    def node_seed(self, node_id: int) -> int:
        if self.seeds == "common":
            return derive_seed(self.seed, node_id)
        return derive_seed(self.seed, zlib.crc32(self.strategy.encode("utf-8")), node_id)

    def question_messages(self) -> Messages:
        return (("system", self.system_prompt), ("user", self.problem))

    def sampling(
        self, node_id: int, max_tokens: int | None = None, stop: bool = True, greedy: bool = False
    ) -> SamplingParams:
        """The node's sampling parameters, seeded so a rerun reproduces: from (run seed, strategy,
        node id) with independent streams, from (run seed, node id) with common random numbers (for
        paired comparisons: every strategy's node k draws the same numbers)."""
        return SamplingParams(
            temperature=0.0 if greedy else self.temperature,
            top_p=self.top_p,
            seed=self.node_seed(node_id),
            max_tokens=max(1, max_tokens if max_tokens is not None else self.max_tokens),
            stop=(self.delimiter,) if stop else (),
        )
