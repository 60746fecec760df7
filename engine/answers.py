"""Final answers: extract them from a solution's text and decide when two are the same.

Extraction, in order (as search-and-learn and the MATH/GSM8K graders do):

1. the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched, so ``\\boxed{\\frac{1}{2}}`` works;
2. "final answer is $X$" / "final answer is X";
3. "the answer is X";
4. GSM8K's ``#### X``;
5. the last number in the text.

Every phrase is matched at word boundaries ("the answer isn't 654" says no answer), and numbers
only where they stand alone ("x2" and "H2O" hold none). Where the problem's reference is a number
(GSM8K, the arithmetic ladder: :func:`is_numeric`), extraction is ``numeric``: a rule whose answer
holds no number gives way to the next one ("the answer is: answer", ``\\boxed{answer}``), and the
phrase rules give the number they name ("the answer is therefore 1,250 dollars" -> 1250).

Equivalence: identical after light normalisation, else equal as numbers, else ``math-verify``
(parses LaTeX and plain forms and compares symbolically). math-verify's own timeouts use
``signal.alarm``, which only works on the main thread; elsewhere it runs without them.
"""

from __future__ import annotations

import logging
import re
import threading
from fractions import Fraction
from functools import lru_cache

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
# Phrases at word boundaries: "is" must end a word, so "the answer isn't" is no answer.
_FINAL_IS = re.compile(r"\bfinal answer is\b[:\s]*\$(?P<a>[^$]+)\$", re.IGNORECASE)
_FINAL_IS_PLAIN = re.compile(r"\bfinal answer is\b[:\s]*(?P<a>[^\n]+)", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\banswer is\b[:\s]*(?P<a>[^\n]+)", re.IGNORECASE)
_GSM8K = re.compile(r"####\s*(?P<a>[^\n]+)")
# A number stands alone: not the tail of a word or of another number ("x2", "H2O", "v1.5" hold none).
_NUMBER = re.compile(r"(?<![\w.])(?:-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+)")
_LEAD = re.compile(r"\$?\s*(-?(?:\d[\d,]*(?:\.\d+)?|\.\d+)(?:/\d+)?)(?![\w^])")
_THOUSANDS = re.compile(r"-?\d{1,3}(,\d{3})+(\.\d+)?")


def last_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{}`` with matched braces, or None."""
    starts = [m.end() for m in _BOX.finditer(text)]
    for start in reversed(starts):
        depth = 1
        i = start
        while i < len(text):
            c = text[i]
            if c == "\\" and i + 1 < len(text):
                i += 2  # \{ and \} do not count
                continue
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
                if depth == 0:
                    return text[start:i].strip()
            i += 1
    return None


def _clean_tail(ans: str) -> str:
    ans = ans.strip()
    ans = re.sub(r"^\$+|\$+$", "", ans).strip()
    ans = ans.rstrip(".").strip()
    ans = re.sub(r"^\\\(|\\\)$", "", ans).strip()
    return ans


def _plain_number(s: str) -> str:
    """A number as written, without its thousands separators ("1,250" -> "1250"; "1,2,3" stays)."""
    s = s.rstrip(",")
    return s.replace(",", "") if _THOUSANDS.fullmatch(s) or "," not in s else s


def _from_phrase(tail: str, numeric: bool) -> str | None:
    """The answer a phrase rule ("the answer is ...") names, from the text after the phrase."""
    ans = _clean_tail(tail)
    inner = last_boxed(ans)
    if inner:
        return inner if not numeric or _has_digit(inner) else None
    lead = _LEAD.match(ans)
    if lead:  # "the answer is 38 apples" -> 38
        return _plain_number(lead.group(1))
    first = ans.split(". ")[0].strip()
    if numeric:  # "the answer is therefore 42" -> 42; "the answer is: answer" -> the next rule
        nums = _NUMBER.findall(first)
        return _plain_number(nums[0]) if nums else None
    return first or None


def _has_digit(s: str) -> bool:
    return any(c.isdigit() for c in s)


def extract_answer(text: str | None, numeric: bool = False) -> str | None:
    """The final answer a solution gives, or None when it gives none. ``numeric``: the answer is
    known to be a number, so a rule that yields none gives way to the next (module docstring)."""
    if not text:
        return None
    boxed = last_boxed(text)
    if boxed and (not numeric or _has_digit(boxed)):
        return boxed
    for pat in (_FINAL_IS, _FINAL_IS_PLAIN, _ANSWER_IS, _GSM8K):
        found = list(pat.finditer(text))
        if found:
            ans = _from_phrase(found[-1].group("a"), numeric)
            if ans:
                return ans
    nums = _NUMBER.findall(text)
    if nums:
        return nums[-1].replace(",", "")
    return None


@lru_cache(maxsize=1024)
def is_numeric(reference: str | None) -> bool:
    """Whether a reference answer is a plain number (GSM8K's, the arithmetic ladder's): then the
    answers to its problem are read with ``extract_answer(..., numeric=True)``."""
    if reference is None or not reference.strip():
        return False
    ref = extract_answer(reference) if "####" in reference or "\\boxed" in reference else reference
    return ref is not None and _as_number(ref) is not None


def normalize(ans: str) -> str:
    """Light, safe normalisation: spacing, ``$``, ``\\text{}``, ``\\left/\\right``, ``\\dfrac``,
    thousands separators, a trailing period, degrees and percent signs."""
    s = ans.strip()
    s = re.sub(r"\\text\{\s*([^}]*)\}", r"\1", s)
    s = re.sub(r"\\(?:mbox|mathrm)\{\s*([^}]*)\}", r"\1", s)
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = s.replace("^\\circ", "").replace("^{\\circ}", "").replace("\\%", "").replace("%", "")
    s = s.replace("$", "").strip().rstrip(".")
    if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", s):
        s = s.replace(",", "")
    return re.sub(r"\s+", "", s)


def _as_number(s: str) -> Fraction | None:
    s = normalize(s)
    m = re.fullmatch(r"\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    if m:
        s = f"{m.group(1)}/{m.group(2)}"
    if re.fullmatch(r"-?\d+(\.\d+)?(/-?\d+)?|-?\.\d+", s):
        try:
            return Fraction(s)
        except (ValueError, ZeroDivisionError):
            return None
    return None


@lru_cache(maxsize=4096)
def _math_verify(a: str, b: str) -> bool:
    try:
        from math_verify import parse, verify
    except ImportError:  # pragma: no cover - a declared dependency
        return False
    main = threading.current_thread() is threading.main_thread()
    if not main:  # it warns once that it has no timeout off the main thread; we know (docstring)
        logging.getLogger("math_verify").setLevel(logging.ERROR)
    kw = {} if main else {"parsing_timeout": None}
    try:
        ga = parse(f"${a}$", **kw)
        gb = parse(f"${b}$", **kw)
        if not ga or not gb:
            return False
        return bool(verify(ga, gb, **({} if main else {"timeout_seconds": None})))
    except Exception:  # math-verify raises many kinds on odd input: treat as "not shown equal"
        return False


def answers_equal(a: str | None, b: str | None) -> bool:
    """Whether two extracted answers mean the same thing."""
    if a is None or b is None:
        return False
    na, nb = normalize(a), normalize(b)
    if na == nb:
        return True
    fa, fb = _as_number(a), _as_number(b)
    if fa is not None and fb is not None:
        return fa == fb
    return _math_verify(a, b)


def is_correct(answer: str | None, reference: str | None) -> bool | None:
    """True/False against a reference answer; None when there is no reference (None or blank).
    The one verdict: the store's recorded ``correct`` and the compare summary both come from here."""
    if reference is None or not str(reference).strip():
        return None
    ref = extract_answer(reference) if "####" in reference or "\\boxed" in reference else reference
    return answers_equal(answer, ref)


def group_answers(answers: list[str | None]) -> list[int | None]:
    """For each answer, the index of the first equivalent answer (its group); None for no answer.
    Used by weighted and majority selection."""
    reps: list[int] = []
    out: list[int | None] = []
    for i, a in enumerate(answers):
        if a is None:
            out.append(None)
            continue
        for r in reps:
            if answers_equal(answers[r], a):
                out.append(r)
                break
        else:
            reps.append(i)
            out.append(i)
    return out
