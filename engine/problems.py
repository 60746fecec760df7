"""Problem sets: GSM8K test and MATH-500 (shipped in assets/problems/), the generated arithmetic
ladder (``arith``), and the user's own JSONL files.

A problem-set spec is ``gsm8k``, ``math500``, ``arith`` (or ``arith:SEED`` for another ladder) or
the path of a ``.jsonl`` file, one problem per line::

    {"question": "What is 2 + 3?", "answer": "5"}

``question`` (or ``problem``) and ``answer`` are required; the answer is the final answer only
(GSM8K's ``#### N`` form is read too). ``id`` and ``level`` are optional and kept with the problem.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from engine.answers import extract_answer
from engine.errors import InvalidRequestError, PonderError

PROBLEMS_DIR = Path(__file__).resolve().parent.parent / "assets" / "problems"
PROBLEM_SETS = {"gsm8k": "gsm8k_test.jsonl", "math500": "math500_test.jsonl"}
ARITH_SEED = 2024  # the ladder ``arith`` names; ``arith:SEED`` draws another
ARITH_SIZE = 1000
ARITH_LEVELS = 5


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


def clean_text(text: str) -> str:
    """Text as Ponder keeps it: valid Unicode. Lone surrogates (bytes of a command line that were not
    UTF-8, or a broken paste) become U+FFFD; everything else, control characters included, is kept
    as given."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:  # undecodable bytes smuggled in by surrogateescape (sys.argv, os.environ)
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


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


# --- the arithmetic ladder ---------------------------------------------------------------------------


def _evaluate(nums: list[int], ops: list[str]) -> int:
    """The value with * before + and -."""
    terms = [nums[0]]
    signs = [1]
    for op, n in zip(ops, nums[1:], strict=True):
        if op == "*":
            terms[-1] *= n
        else:
            terms.append(n)
            signs.append(1 if op == "+" else -1)
    return sum(s * t for s, t in zip(signs, terms, strict=True))


def arith_problem(index: int, seed: int = ARITH_SEED) -> Problem:
    """Problem ``index`` of the ladder: level ``index % 5 + 1`` has that many operations (+, -, *)
    on small whole numbers; the answer is a whole number >= 0 (usual precedence). The same
    (seed, index) always gives the same problem, whatever else is drawn."""
    level = index % ARITH_LEVELS + 1
    rng = random.Random(f"ponder-arith-{seed}-{index}")
    while True:
        nums = [rng.randint(2, 20)]
        ops = []
        for _ in range(level):
            op = rng.choice("+-*")
            ops.append(op)
            nums.append(rng.randint(2, 9) if op == "*" else rng.randint(2, 20))
        expr = " ".join([str(nums[0])] + [f"{o} {n}" for o, n in zip(ops, nums[1:], strict=True)])
        value = _evaluate(nums, ops)
        if 0 <= value <= 999:
            break
    question = f"Calculate {expr}. Give the result as a whole number."
    return Problem(
        f"arith:{seed}" if seed != ARITH_SEED else "arith",
        index,
        question,
        str(value),
        "",
        {"level": level, "expression": expr},
    )


# --- any set by its spec -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ProblemSet:
    spec: str  # what the user named: gsm8k, math500, arith, arith:7 or a file path
    name: str  # a short label
    problems: tuple[Problem, ...]
    digest: str  # changes when the problems do; a sweep's results are kept per digest

    def __len__(self) -> int:
        return len(self.problems)


def _digest(problems: tuple[Problem, ...]) -> str:
    h = hashlib.sha256()
    for p in problems:
        h.update(p.question.encode())
        h.update(b"\0")
        h.update(p.reference.encode())
        h.update(b"\1")
    return h.hexdigest()[:16]


def load_problem_file(path: str | Path) -> tuple[Problem, ...]:
    """A user's JSONL problem set (format in the module docstring); a clear error for each fault."""
    p = Path(path).expanduser()
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InvalidRequestError(f"There is no problem file {p}.") from None
    except UnicodeDecodeError:
        raise InvalidRequestError(
            f"{p} is not UTF-8 text; a problem set is JSONL, one problem a line."
        ) from None
    except OSError as e:
        raise InvalidRequestError(f"Cannot read {p}: {e.strerror or e}.") from None
    name = p.stem
    out: list[Problem] = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise InvalidRequestError(f"{p}, line {n}: not JSON ({e.msg}).") from None
        if not isinstance(row, dict):
            raise InvalidRequestError(f"{p}, line {n}: expected an object with question and answer.")
        q = row.get("question", row.get("problem"))
        a = row.get("answer")
        if not isinstance(q, str) or not q.strip():
            raise InvalidRequestError(f'{p}, line {n}: no "question" (or "problem") text.')
        if a is None or (isinstance(a, str) and not a.strip()):
            raise InvalidRequestError(f'{p}, line {n}: no "answer".')
        a = str(a)
        ref = extract_answer(a) if "####" in a else a.strip()
        meta = {k: row[k] for k in ("id", "level") if k in row}
        out.append(Problem(name, len(out), q.strip(), ref or a.strip(), "", meta))
    if not out:
        raise InvalidRequestError(f"{p} holds no problems.")
    return tuple(out)


def resolve_problem_set(spec: str) -> ProblemSet:
    """``gsm8k``, ``math500``, ``arith`` / ``arith:SEED`` or a ``.jsonl`` path."""
    spec = spec.strip()
    if spec in PROBLEM_SETS:
        probs = load_problem_set(spec)
        name = spec
    elif spec == "arith" or spec.startswith("arith:"):
        seed = ARITH_SEED
        if ":" in spec:
            try:
                seed = int(spec.split(":", 1)[1])
            except ValueError:
                raise InvalidRequestError(f"arith:SEED needs a whole number, not {spec!r}.") from None
        probs = tuple(arith_problem(i, seed) for i in range(ARITH_SIZE))
        name = probs[0].set_name
    elif spec.endswith(".jsonl") or Path(spec).expanduser().exists():
        probs = load_problem_file(spec)
        name = probs[0].set_name
    else:
        raise InvalidRequestError(
            f"Unknown problem set {spec!r}: give gsm8k, math500, arith or the path of a .jsonl file."
        )
    return ProblemSet(spec, name, probs, _digest(probs))
