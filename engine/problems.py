"""The problem sets Ponder ships (assets/problems/): GSM8K test and MATH-500."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.answers import extract_answer
from engine.errors import InvalidRequestError, PonderError

PROBLEMS_DIR = Path(__file__).resolve().parent.parent / "assets" / "problems"
PROBLEM_SETS = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500_test.jsonl"}


@dataclass(frozen=True)
class Problem:
    set_name: str
    index: int
    question: str
    reference: str  # the final answer only
    solution: str = ""  # the reference reasoning, when the set has one
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.set_name} #{self.index}"


def _parse(name: str, i: int, row: dict[str, Any]) -> Problem:
    if name == "gsm8k":
        ans = row["answer"]
        return Problem(name, i, row["question"], extract_answer(ans) or "", ans)
    return Problem(
        name,
        i,
        row["problem"],
        row["answer"],
        row.get("solution", ""),
        {k: row[k] for k in ("subject", "level", "unique_id") if k in row},
    )


@lru_cache(maxsize=4)
def load_problem_set(name: str) -> tuple[Problem, ...]:
    if name not in PROBLEM_SETS:
        raise InvalidRequestError(f"Unknown problem set {name!r}; choose one of {', '.join(PROBLEM_SETS)}.")
    path = PROBLEMS_DIR / PROBLEM_SETS[name]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as e:
        raise PonderError(f"The problem set {name} cannot be read from {path}: {e.strerror or e}") from e
    out = []
    for i, line in enumerate(x for x in lines if x.strip()):
        try:
            out.append(_parse(name, i, json.loads(line)))
        except (ValueError, KeyError) as e:
            raise PonderError(f"{path}, line {i + 1}: not a {name} problem ({e})") from e
    return tuple(out)


def get_problem(name: str, index: int) -> Problem:
    problems = load_problem_set(name)
    if not 0 <= index < len(problems):
        raise InvalidRequestError(f"{name} has problems 0 to {len(problems) - 1}; there is no #{index}.")
    return problems[index]
