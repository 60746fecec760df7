"""The reference PRM: a finished candidate's final answer against the known answer (the pass@N oracle)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.answers import extract_answer, is_correct
from engine.errors import InvalidRequestError
from engine.executor import PRMMode
from engine.prm.steps import NEUTRAL, check_candidates


@dataclass
class ReferencePRM:
    """The oracle: 1 when a finished candidate's final answer equals the reference, 0 when not;
    steps before the end, and unfinished candidates, are neutral."""

    reference: str | None
    name: str = "reference"
    tokens_used: int = 0
    mode: PRMMode = field(default="direct", init=False)
    n_params: int = field(default=0, init=False)
    model_record: dict[str, Any] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self.reference is None or not str(self.reference).strip():
            raise InvalidRequestError("The reference PRM needs a reference answer (give --reference).")

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        check_candidates(candidates)
        out = []
        for i, steps in enumerate(candidates):
            scores = [NEUTRAL] * len(steps)
            done = True if finished is None else finished[i]
            if steps and done:
                ok = is_correct(extract_answer("".join(steps)), self.reference)
                scores[-1] = 1.0 if ok else 0.0
            out.append(scores)
        return out
