"""The arithmetic PRM: every ``a op b = c`` claim of a step (and GSM8K's ``<<a*b=c>>``) re-computed
exactly, with fractions and a small parser (never ``eval``); a step without a claim is neutral."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from engine.executor import PRMMode
from engine.prm.steps import NEUTRAL, check_candidates

_NUM = r"\d[\d,]*(?:\.\d+)?|\.\d+"
_CALC = re.compile(r"<<([^<>=]+)=([^<>]+)>>")
_RHS = re.compile(r"=\s*\$?\s*(-?(?:" + _NUM + r"))(?![\d.]*[a-zA-Z(])")
_LHS_CHARS = re.compile(r"[\d\s.,+\-*/×÷xX()$]+$")


class _Expr:
    """A recursive-descent parser for + - * / × ÷ x and parentheses over exact fractions."""

    def __init__(self, text: str) -> None:
        t = text.replace("$", "").replace(",", "").replace("×", "*").replace("÷", "/")
        t = re.sub(r"(?<=[\d)])\s*[xX]\s*(?=[\d(])", "*", t)
        self.toks = re.findall(r"\d+(?:\.\d+)?|\.\d+|[+\-*/()]|\S", t)
        self.i = 0
        self.ops = 0
        self.nums = 0

    def parse(self) -> Fraction:
        v = self.expr()
        if self.i != len(self.toks):
            raise ValueError("trailing input")
        return v

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.toks[self.i]
        self.i += 1
        return tok

    def expr(self) -> Fraction:
        v = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            self.ops += 1
            r = self.term()
            v = v + r if op == "+" else v - r
        return v

    def term(self) -> Fraction:
        v = self.factor()
        while self.peek() in ("*", "/"):
            op = self.take()
            self.ops += 1
            r = self.factor()
            if op == "/" and r == 0:
                raise ZeroDivisionError
            v = v * r if op == "*" else v / r
        return v

    def factor(self) -> Fraction:
        tok = self.peek()
        if tok == "-":
            self.take()
            return -self.factor()
        if tok == "(":
            self.take()
            v = self.expr()
            if self.peek() != ")":
                raise ValueError("unbalanced")
            self.take()
            return v
        if tok is not None and re.fullmatch(r"\d+(?:\.\d+)?|\.\d+", tok):
            self.take()
            self.nums += 1
            return Fraction(tok)
        raise ValueError(f"unexpected {tok!r}")


def _matches(value: Fraction, claimed: str) -> bool:
    c = Fraction(claimed.replace(",", ""))
    if value == c:
        return True
    decimals = len(claimed.split(".")[1]) if "." in claimed else 0
    # "10 / 3 = 3.33": the claim is right to the precision it states.
    return decimals > 0 and abs(value - c) <= Fraction(1, 2 * 10**decimals)


def arithmetic_claims(step: str) -> list[tuple[str, str, bool]]:
    """Every checkable claim in a step: (left side, claimed result, correct?)."""
    claims = []
    for m in _CALC.finditer(step):
        try:
            e = _Expr(m.group(1))
            v = e.parse()
            claims.append((m.group(1).strip(), m.group(2).strip(), _matches(v, m.group(2).strip())))
        except (ValueError, ZeroDivisionError, ArithmeticError):
            continue
    text = _CALC.sub(" ", step)
    for m in _RHS.finditer(text):
        lhs_m = _LHS_CHARS.search(text[: m.start()])
        if not lhs_m:
            continue
        lhs = lhs_m.group(0).strip().lstrip(")").strip()
        try:
            e = _Expr(lhs)
            v = e.parse()
        except (ValueError, ZeroDivisionError, ArithmeticError, IndexError):
            continue
        if e.ops == 0 or e.nums < 2:
            continue  # "x = 5" or "= 6 = 6": nothing computed
        claims.append((lhs, m.group(1), _matches(v, m.group(1))))
    return claims


@dataclass
class ArithmeticPRM:
    """Checks the arithmetic a step claims. Score = share of its claims that are right; a step with
    no claim is neutral."""

    name: str = "arithmetic"
    neutral: float = NEUTRAL
    tokens_used: int = 0
    mode: PRMMode = field(default="direct", init=False)
    n_params: int = field(default=0, init=False)
    model_record: dict[str, Any] | None = field(default=None, init=False)

    def score_step(self, step: str) -> float:
        claims = arithmetic_claims(step)
        if not claims:
            return self.neutral
        return sum(ok for _, _, ok in claims) / len(claims)

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        check_candidates(candidates)
        return [[self.score_step(s) for s in steps] for steps in candidates]
