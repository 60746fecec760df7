"""The seam under the scheduler: one interface that executes what strategies ask for.

Strategies speak only Generate / Score / Release (``engine/protocol.py``). The scheduler
turns those requests into calls on an :class:`Executor` and feeds what comes back into the
strategies; it never sees a llama.cpp branch or an HTTP request. Two implementations:

* :class:`engine.backends.llama_cpp.executor.LlamaCppExecutor` — in process: every live branch of
  every run advances in one ``llama_decode`` per :meth:`Executor.poll`;
* :class:`engine.backends.server.executor.ServerExecutor` — OpenAI-compatible inference servers
  (llama-server, vLLM, SGLang; one or many): every request is in flight at once up to the servers'
  slots, and :meth:`Executor.poll` waits for whichever finishes first.

Strategies, the store, replay, export, sweeps and the app see the same events either way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeGuard, runtime_checkable

from engine.protocol import Generated, GenItem

# --- PRMs: what an executor is given to score with ----------------------------------------------------

PRMMode = Literal["direct", "stepped", "async"]


@runtime_checkable
class PRM(Protocol):
    """A process reward model: step scores in [0, 1] for each candidate (a list of steps).

    ``mode`` says how an executor drives it, so no executor has to guess from its attributes:

    * ``"direct"``: :meth:`score` answers at once (no model, or one the PRM runs itself);
    * ``"stepped"``: :meth:`score_gen` is a generator whose decodes ride in the executor's own
      batches (the in-process judge on the policy model); see :class:`SteppedPRM`;
    * ``"async"``: :meth:`score_async` is awaited among a server executor's requests; see
      :class:`AsyncPRM`.
    """

    name: str
    mode: PRMMode
    tokens_used: int  # model tokens read so far (0 for a PRM that runs no model)
    n_params: int  # parameters its FLOPs are counted with (0 for a PRM that runs no model)
    model_record: dict[str, Any] | None  # the PRM's own model, where it has one

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]: ...


@runtime_checkable
class SteppedPRM(PRM, Protocol):
    """A PRM whose scoring is a generator the executor steps between its own decodes."""

    def score_gen(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
        usage: list[int] | None = None,
    ) -> Generator[Any, None, list[list[float]]]: ...


@runtime_checkable
class AsyncPRM(PRM, Protocol):
    """A PRM whose scoring is awaited among a server executor's requests."""

    def score_async(
        self, question: str, candidates: Sequence[Sequence[str]], finished: Sequence[bool] | None = None
    ) -> Coroutine[Any, Any, tuple[list[list[float]], int]]: ...  # handed to the executor's event loop


def stepped(prm: PRM) -> TypeGuard[SteppedPRM]:
    """Whether ``prm`` says it is driven by :meth:`SteppedPRM.score_gen` (its ``mode``)."""
    return prm.mode == "stepped"


def awaited(prm: PRM) -> TypeGuard[AsyncPRM]:
    """Whether ``prm`` says it is driven by :meth:`AsyncPRM.score_async` (its ``mode``)."""
    return prm.mode == "async"


@dataclass(frozen=True)
class ScoreAsk:
    """One run's share of a Score request: its candidates (each a list of steps)."""

    run_id: str
    candidates: tuple[tuple[str, ...], ...]
    finished: tuple[bool, ...]


@dataclass
class GenDone:
    """A run's Generate request answered: one result per item, in order."""

    run_id: str
    results: list[Generated]
    prompt_tokens: int = 0  # prompt tokens decoded for this run (not served from a cache)
    cached_tokens: int = 0  # prompt tokens a cache already held


@dataclass
class ScoreDone:
    """A Score request answered: step scores per run, and the PRM's tokens and seconds."""

    scores: dict[str, list[list[float]]]
    prm_tokens: dict[str, int] = field(default_factory=dict)
    prm_s: dict[str, float] = field(default_factory=dict)


@dataclass
class RunFailed:
    """One run cannot go on (a server that kept failing it); the others continue."""

    run_id: str
    message: str


@dataclass
class Delta:
    """Streamed text of a node still generating (for panels that fill live)."""

    run_id: str
    node_id: int
    text: str


Outcome = GenDone | ScoreDone | RunFailed | Delta


def pooled(asks: Sequence[ScoreAsk]) -> tuple[list[tuple[str, ...]], list[bool]]:
    """The candidates of several runs' asks as one list (and whether each is finished)."""
    cands: list[tuple[str, ...]] = []
    finished: list[bool] = []
    for a in asks:
        cands += a.candidates
        finished += a.finished
    return cands, finished


def split_scores(
    asks: Sequence[ScoreAsk],
    cands: Sequence[tuple[str, ...]],
    scores: list[list[float]],
    used: int,
    dt: float,
) -> ScoreDone:
    """A pooled PRM pass back to its runs: each its own candidates' scores, and a share of the PRM's
    tokens and seconds in proportion to its steps."""
    total = sum(len(c) for c in cands) or 1
    out = ScoreDone({})
    start = 0
    for a in asks:
        n = len(a.candidates)
        share = sum(len(c) for c in cands[start : start + n]) / total
        out.scores[a.run_id] = scores[start : start + n]
        out.prm_tokens[a.run_id] = round(used * share)
        out.prm_s[a.run_id] = dt * share
        start += n
    return out


class Executor(ABC):
    """Executes the requests of many runs at once. Used from one thread (the scheduler's)."""

    kind: str = ""  # "llama.cpp" | "server"
    n_params_override: int | None = (
        None  # the model's parameters where its server does not say (--model-params)
    )
    cancel: Callable[[], bool] | None = None  # checked inside long work (see attach)
    stream_text: bool = False  # report Delta outcomes while nodes grow (see attach)

    def attach(self, cancel: Callable[[], bool] | None, stream_text: bool) -> None:
        """A scheduler starts serving runs: what it checks for cancellation, whether it wants
        streamed text."""
        self.cancel = cancel
        self.stream_text = stream_text

    # --- what runs record -------------------------------------------------------------------------

    @abstractmethod
    def model_record(self) -> dict[str, Any]:
        """What a run's RunStarted records about the model and the backend that ran it."""

    def describe(self) -> dict[str, Any]:
        """What the app's status bar says once the model is ready (a loaded model tells more)."""
        return self.model_record()

    def record(self) -> dict[str, Any]:
        """:meth:`model_record` with the user's parameter count where one was given."""
        rec = self.model_record()
        if self.n_params_override:
            rec["n_params"] = self.n_params_override
        return rec

    @abstractmethod
    def session_settings(self) -> dict[str, Any]:
        """What a saved session needs to run again on the same kind of backend (no credentials)."""

    # --- limits, checked before a compare runs (engine.run.compare.check_compare) ---------------------

    def prompt_fit(self, messages: tuple[tuple[str, str], ...]) -> tuple[int, int] | None:
        """(tokens of this chat prompt, context tokens) where the backend can say before running."""
        return None

    def thinking(self) -> bool:
        """Whether the model's chat template has a thinking block (``<think>…</think>``)."""
        return False

    # --- PRMs -------------------------------------------------------------------------------------

    @abstractmethod
    def make_prm(self, spec: str, reference: str | None) -> PRM:
        """The PRM ``spec`` names (judge, arithmetic, reference, a token PRM), on this backend."""

    def close_prm(self, prm: PRM) -> None:
        close = getattr(prm, "close", None)
        if close is not None:
            close()

    # --- requests ---------------------------------------------------------------------------------

    @abstractmethod
    def generate(self, run_id: str, items: Sequence[GenItem], keep_prompt: tuple | None = None) -> None:
        """Start growing ``items`` for run ``run_id``; answered later by a :class:`GenDone`.
        ``keep_prompt``: the run's question messages, a prompt worth keeping for later requests
        (other prompts, such as a revision's chat, are used once)."""

    @abstractmethod
    def score(self, prm: PRM, question: str, asks: Sequence[ScoreAsk]) -> ScoreDone | None:
        """Score the candidates of runs that share ``question``. Returns the answer at once when
        it is ready (a PRM that needs no model); otherwise None and a :class:`ScoreDone` later."""

    @abstractmethod
    def release(self, run_id: str, node_ids: Sequence[int]) -> None:
        """The run no longer continues these nodes."""

    @abstractmethod
    def end_run(self, run_id: str) -> None:
        """The run is over (done, failed or cancelled): drop everything it holds or waits for."""

    @abstractmethod
    def busy(self) -> bool:
        """Whether anything is in flight (a poll would make progress)."""

    @abstractmethod
    def poll(self) -> list[Outcome]:
        """Make progress and return what finished. In process: one decode; over servers: wait for
        the next response (or a short timeout, so cancellation is seen)."""

    def finish(self) -> None:  # noqa: B027 - most executors keep nothing between compares
        """The scheduler is done with its runs (free shared prompts and the like)."""

    def close(self) -> None:  # noqa: B027
        """Release what the executor itself holds (not a backend it was given)."""
