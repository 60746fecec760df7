"""Scripted stand-ins for llama.cpp: no model, every answer chosen by the test.

``Script`` drives one strategy's generator and answers its requests (texts chosen per node, scores
per candidate), so a test can say which beams survive, which particles are copied, when "Wait" is
appended. ``ScriptedExecutor`` is an ``engine.executor.Executor`` for the scheduler: it answers every
Generate with "<problem> step k" steps and records which runs shared each batch; ``ScriptedPRM``
records which problem each score call judged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine.events import Event
from engine.executor import Executor, GenDone, Outcome, ScoreAsk, ScoreDone
from engine.protocol import Generate, Generated, GenItem, Release, RunContext, Score

# --- one strategy, driven request by request ------------------------------------------------------


class Script:
    """Answers requests: ``text(item) -> (text, finish_reason)``, ``score(steps, finished) -> [..]``."""

    def __init__(
        self, text: Callable[[GenItem], tuple[str, str]], score: Callable[[tuple, bool], list[float]]
    ):
        self.text, self.score = text, score
        self.generates: list[Generate] = []
        self.scores: list[Score] = []
        self.released: list[int] = []
        self.events: list[Event] = []

    def run(self, gen) -> Script:
        value = None
        while True:
            try:
                item = gen.send(value)
            except StopIteration:
                return self
            value = None
            if isinstance(item, Event):
                self.events.append(item)
            elif isinstance(item, Generate):
                self.generates.append(item)
                out = []
                for it in item.items:
                    text, reason = self.text(it)
                    out.append(Generated(it.node_id, text, max(1, len(text.split())), (-0.1,), reason))
                value = out
            elif isinstance(item, Score):
                self.scores.append(item)
                value = [self.score(c, f) for c, f in zip(item.candidates, item.finished, strict=True)]
            elif isinstance(item, Release):
                self.released += list(item.node_ids)
            else:  # pragma: no cover
                raise AssertionError(item)

    def of(self, kind):
        return [e for e in self.events if isinstance(e, kind)]


def ctx(**kw) -> RunContext:
    return RunContext(run_id="r", problem="What is 6 * 7?", seed=1, prm_record={"name": "scripted"}, **kw)


def pf_script(best_text="Step A", scores=None) -> Script:
    """Particle filtering's script. Round 0: particle k writes "P<k>"; later rounds end. Scores by
    the text's first particle."""

    def text(item):
        if item.messages is not None:
            return f"P{item.node_id}\n\n", "stop"
        return "The answer is \\boxed{7}.", "eos"

    def score(steps, finished):
        first = steps[0].strip()
        return [(scores or {}).get(first, 0.01)] * len(steps)

    return Script(text, score)


# --- many runs through the scheduler --------------------------------------------------------------

POLICY_PARAMS = 1_000
PRM_PARAMS = 100
TOKENS_PER_STEP = 3
PRM_TOKENS_PER_STEP = 5


class ScriptedPRM:
    name = "scripted"
    n_params = PRM_PARAMS

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []  # (question judged, run asking)


class ScriptedExecutor(Executor):
    """Answers every Generate with "<problem> step k" steps of 3 tokens (a solution ends at its
    third step), and every Score at once, one score per step. A poll answers everything in flight:
    one "batch"; ``batches`` records which runs each held."""

    kind = "scripted"

    def __init__(self) -> None:
        self.batches: list[set[str]] = []
        self._flight: dict[str, tuple[GenItem, ...]] = {}
        self._problem: dict[str, str] = {}  # run -> its problem, from its chat prompt
        self._depth: dict[tuple[str, int], int] = {}
        self._counted: set[tuple[str, Any]] = set()
        self._ready: list[Outcome] = []

    def model_record(self) -> dict[str, Any]:
        return {"name": "scripted", "n_params": POLICY_PARAMS}

    def session_settings(self) -> dict[str, Any]:
        return {}

    def make_prm(self, spec: str, reference: str | None) -> Any:
        return ScriptedPRM()

    def generate(self, run_id: str, items: Sequence[GenItem], keep_prompt: tuple | None = None) -> None:
        self._flight[run_id] = tuple(items)

    def score(self, prm: Any, question: str, asks: Sequence[ScoreAsk]) -> ScoreDone | None:
        out = ScoreDone({})
        for a in asks:
            prm.calls.append((question, a.run_id))
            out.scores[a.run_id] = [[0.5 + 0.1 * (k % 3) for k in range(len(c))] for c in a.candidates]
            out.prm_tokens[a.run_id] = PRM_TOKENS_PER_STEP * sum(len(c) for c in a.candidates)
        return out

    def release(self, run_id: str, node_ids: Sequence[int]) -> None:
        pass

    def end_run(self, run_id: str) -> None:
        self._flight.pop(run_id, None)

    def busy(self) -> bool:
        return bool(self._flight)

    def poll(self) -> list[Outcome]:
        self.batches.append(set(self._flight))
        out: list[Outcome] = []
        for rid, items in self._flight.items():
            results, prompt = [], 0
            for it in items:
                if it.messages is not None:
                    self._problem[rid] = dict(it.messages)["user"]
                    if (rid, it.prompt_key) not in self._counted:  # a prompt counts once per run
                        self._counted.add((rid, it.prompt_key))
                        prompt += sum(len(t.split()) for _, t in it.messages)
                depth = 1 if it.parent is None else self._depth[(rid, it.parent)] + 1
                self._depth[(rid, it.node_id)] = depth
                text = f"{self._problem[rid]} step {depth}" + ("" if depth >= 3 else "\n\n")
                results.append(
                    Generated(it.node_id, text, TOKENS_PER_STEP, (-0.1,) * 3, "eos" if depth >= 3 else "stop")
                )
            out.append(GenDone(rid, results, prompt_tokens=prompt))
        self._flight.clear()
        return out
