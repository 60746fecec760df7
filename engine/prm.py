"""Process reward models: one interface that scores every step of every candidate, batched.

``prm.score(question, candidates, finished)`` takes each candidate as its list of steps (a step
ends at the delimiter, ``"\\n\\n"`` by default, which stays in its text) and returns one score in
[0, 1] per step. Step scores become one number per candidate by :func:`aggregate`
(last / min / prod / mean; the paper found "last" best).

Implementations:

* :class:`JudgePRM` — any instruct GGUF (by default the policy model itself) asked, after each step,
  whether the last step is correct; the score is P(yes) / (P(yes) + P(no)) at the verdict token.
  The question is decoded once and shared by every candidate; all candidates' step k are judged
  in one batch.
* :class:`TokenPRM` — PRM GGUFs in Math-Shepherd format (a step tag after each step, P(good) vs
  P(bad) at the tag) or RLHFlow's chat format (P(+) vs P(-) as the assistant's answer to each step).
* :class:`ArithmeticPRM` — re-computes every ``a op b = c`` claim of a step (and GSM8K's
  ``<<a*b=c>>``) exactly, with fractions and a small parser (never ``eval``); a step without a claim
  is neutral (0.5).
* :class:`ReferencePRM` — the final answer against the known answer: the pass@N oracle.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import numpy as np

from engine.answers import extract_answer, is_correct
from engine.errors import InvalidRequestError, PonderError

AGGREGATIONS = ("last", "min", "prod", "mean")
NEUTRAL = 0.5
BUILTIN_PRMS = ("judge", "arithmetic", "reference")
PRM_FORMATS = ("math-shepherd", "rlhflow")


def check_prm_spec(
    spec: str, servers: bool = False, prm_server: bool = False, must_exist: bool = False
) -> None:
    """A PRM is a built-in scorer, a token-PRM format on a PRM server (``prm_server``), or a PRM
    GGUF file (in process only: with ``servers`` the PRM runs on a server too). ``must_exist``:
    the file must be there already (the CLI checks before anything loads)."""
    from pathlib import Path

    if spec in BUILTIN_PRMS:
        return
    if spec in PRM_FORMATS:
        if not prm_server:
            raise InvalidRequestError(
                f"--prm {spec} is a token PRM on a server: give --prm-server URL (ponder serve PRM.gguf "
                "starts one), or in process the PRM's GGUF file."
            )
        return
    if servers:
        raise InvalidRequestError(
            f"With --server the PRM runs on a server too: serve {spec} (ponder serve {spec} --port 8081) "
            "and give --prm-server http://127.0.0.1:8081 --prm math-shepherd|rlhflow (or --prm judge)."
        )
    path = Path(spec).expanduser()
    if must_exist and not path.exists():
        raise InvalidRequestError(
            f"--prm must be judge, arithmetic, reference or an existing GGUF file; got {spec!r}."
        )
    if path.suffix.lower() != ".gguf" and not path.exists():
        raise InvalidRequestError(
            f"--prm must be one of {', '.join(BUILTIN_PRMS)}, a token-PRM format served with "
            f"--prm-server ({', '.join(PRM_FORMATS)}) or a PRM GGUF file; got {spec!r}."
        )


def model_free_prm(spec: str, reference: str | None) -> Any:
    """The PRMs that need no model (arithmetic, reference), the same on every backend; else None."""
    if spec == "arithmetic":
        return ArithmeticPRM()
    if spec == "reference":
        return ReferencePRM(reference)
    return None


def token_prm_settings(entry: Any) -> dict[str, str]:
    """A token PRM's step tag and verdict tokens from its catalog entry (None: the defaults)."""
    settings = entry.settings if entry is not None else {}
    return {
        "step_tag": settings.get("step_tag", "ки"),
        "good_token": settings.get("good_token", "+"),
        "bad_token": settings.get("bad_token", "-"),
    }


def split_steps(text: str, delimiter: str = "\n\n") -> list[str]:
    """A solution's steps, each keeping its delimiter (so ``"".join(steps) == text``); empty or
    whitespace-only pieces are merged into the step before them."""
    if not text:
        return []
    parts = text.split(delimiter)
    steps: list[str] = []
    for i, part in enumerate(parts):
        piece = part + (delimiter if i < len(parts) - 1 else "")
        if not piece:
            continue
        if steps and not part.strip():
            steps[-1] += piece
        else:
            steps.append(piece)
    return steps


def aggregate(step_scores: Sequence[float], how: str = "last") -> float:
    if how not in AGGREGATIONS:
        raise InvalidRequestError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
    if not step_scores:
        return 0.0
    if how == "last":
        return float(step_scores[-1])
    if how == "min":
        return float(min(step_scores))
    if how == "prod":
        return float(math.prod(step_scores))
    return float(sum(step_scores) / len(step_scores))


class PRM(Protocol):
    name: str
    tokens_used: int

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]: ...


def _check_candidates(candidates: Sequence[Sequence[str]]) -> None:
    for c in candidates:
        if isinstance(c, str):
            raise InvalidRequestError("each candidate is a list of steps, not a string (use split_steps)")


# --- arithmetic ------------------------------------------------------------------------------------

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

    def score_step(self, step: str) -> float:
        claims = arithmetic_claims(step)
        if not claims:
            return self.neutral
        return sum(ok for _, _, ok in claims) / len(claims)

    def score(self, question, candidates, finished=None, cancel=None) -> list[list[float]]:
        _check_candidates(candidates)
        return [[self.score_step(s) for s in steps] for steps in candidates]


@dataclass
class ReferencePRM:
    """The oracle: 1 when a finished candidate's final answer equals the reference, 0 when not;
    steps before the end, and unfinished candidates, are neutral."""

    reference: str | None
    name: str = "reference"
    tokens_used: int = 0

    def __post_init__(self) -> None:
        if self.reference is None or not str(self.reference).strip():
            raise InvalidRequestError("The reference PRM needs a reference answer (give --reference).")

    def score(self, question, candidates, finished=None, cancel=None) -> list[list[float]]:
        _check_candidates(candidates)
        out = []
        for i, steps in enumerate(candidates):
            scores = [NEUTRAL] * len(steps)
            done = True if finished is None else finished[i]
            if steps and done:
                ok = is_correct(extract_answer("".join(steps)), self.reference)
                scores[-1] = 1.0 if ok else 0.0
            out.append(scores)
        return out


# --- judges on a llama.cpp backend -----------------------------------------------------------------

# The judge reads the solution as the reply to the solver's own prompt (the policy's system prompt
# and the problem, exactly as the strategies send them) and is then asked about its last step. When
# the judge is the policy model, the backend shares the KV cells the policy already computed for
# that prompt and those steps (``Backend._adopt``), so a verdict costs only JUDGE_QUESTION's turn.
JUDGE_QUESTION = "Is the last step correct? Answer yes or no."
_SOLUTION_MARK = "\u2063PONDER_SOLUTION\u2063"


def verdict_share(logprobs: Any, n_good: int) -> list[float]:
    """Per row of logprobs over [good tokens..., bad tokens...]: P(good) / (P(good) + P(bad))."""
    p = np.exp(np.asarray(logprobs, dtype=np.float64))
    good, bad = p[:, :n_good].sum(axis=1), p[:, n_good:].sum(axis=1)
    return [float(g / (g + b)) if g + b > 0 else NEUTRAL for g, b in zip(good, bad, strict=True)]


def _variant_ids(backend: Any, words: Sequence[str]) -> list[int]:
    """Single-token spellings of a verdict word (yes, Yes, ' yes', ...) in this vocabulary."""
    ids: list[int] = []
    for w in words:
        for form in (w, w.capitalize(), " " + w, " " + w.capitalize(), w.upper()):
            toks = backend.tokenize(form, add_special=False, parse_special=False)
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(toks[0])
    return ids


class JudgePRM:
    """An instruct model as a step verifier. The prompt is a conversation: the solver's system
    prompt (``system_prompt``, the strategies' own) and the problem as the user turn, the solution so
    far as the assistant turn, then :data:`JUDGE_QUESTION` as a user turn; the score is P(yes) /
    (P(yes) + P(no)) at the first token of the reply.

    Runs on a :class:`~engine.backends.llama_cpp.Backend` in its owning thread. The head (system + problem) is
    decoded once; each candidate forks from it and grows step by step (sharing the policy's cells
    where the policy holds them); after each step a short-lived verdict branch appends the tail (the
    end of the turn, the question, the assistant header) and the verdict is read from its
    next-token logits. All candidates' k-th steps are judged in one batch."""

    def __init__(
        self, backend: Any, name: str = "judge", keep_chains: int = 12, system_prompt: str | None = None
    ) -> None:
        from engine.search.protocol import SYSTEM_PROMPT

        self.backend = backend
        self.name = name
        self.system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.tokens_used = 0
        # Verdicts by (question, steps so far): beam search re-scores every prefix each round; a
        # verdict already given is reused, so each step is judged once.
        self._cache: dict[tuple[str, tuple[str, ...]], float] = {}
        self._chains: OrderedDict[tuple[str, tuple[str, ...]], Any] = OrderedDict()
        self.keep_chains = keep_chains
        self.yes_ids = _variant_ids(backend, ["yes"])
        self.no_ids = _variant_ids(backend, ["no"])
        if not self.yes_ids or not self.no_ids:
            raise PonderError("This model's vocabulary has no single token for 'yes'/'no'; it cannot judge.")

    def _head_tail(self, question: str) -> tuple[list[int], list[int]]:
        b = self.backend
        ask = [{"role": "system", "content": self.system_prompt}, {"role": "user", "content": question}]
        head = b.chat_tokens(ask)  # the very tokens the strategies' prompts start with
        text = b.render_chat(
            [
                *ask,
                {"role": "assistant", "content": _SOLUTION_MARK},
                {"role": "user", "content": JUDGE_QUESTION},
            ]
        )
        tail = text.partition(_SOLUTION_MARK)[2]
        return head, b.tokenize(tail, add_special=False)

    def score(self, question, candidates, finished=None, cancel=None) -> list[list[float]]:
        """Synchronous scoring: :meth:`score_gen` with each decode done at once."""
        return drive(self.backend, self.score_gen(question, candidates, finished, cancel), cancel)

    def score_gen(self, question, candidates, finished=None, cancel=None, usage=None):
        """Scoring as a generator: it yields lists of branches whose pending tokens must be decoded
        (the scheduler puts them into the same decodes as generation) and is resumed right after;
        it returns the step scores.

        Verdicts are cached by (question, steps so far), and the judge keeps the KV state of the
        last candidates it read (up to ``keep_chains``): beam search's next round extends them, so
        each step's tokens are decoded once, not once per round. ``usage`` (a one-item list) counts
        this call's tokens, apart from other calls running at the same time."""

        from engine.errors import Cancelled

        _check_candidates(candidates)
        b = self.backend
        ids = self.yes_ids + self.no_ids
        n_yes = len(self.yes_ids)
        out: list[list[float]] = [[0.0] * len(c) for c in candidates]
        first_new: list[int] = []  # per candidate: the first step without a cached verdict
        for i, c in enumerate(candidates):
            k = 0
            while k < len(c) and (question, tuple(c[: k + 1])) in self._cache:
                out[i][k] = self._cache[(question, tuple(c[: k + 1]))]
                k += 1
            first_new.append(k)
        order = [i for i, c in enumerate(candidates) if first_new[i] < len(c)]
        if not order:
            return out
        head, tail = self._head_tail(question)
        root = self._chain_for(question, ())
        if root is None:
            root = self._keep(question, (), b.root(head))
            self._used(root.pending, usage)
            yield [root]
        rest = list(order)
        while rest:
            # As many candidates as the free sequences allow, each with room for its verdict branch
            # (asked again each group: generations running beside this job take sequences too).
            group = max(1, (b.free_slots - 1) // 2)
            idx, rest = rest[:group], rest[group:]
            # Each candidate continues the longest prefix the judge still holds.
            chains, start = [], {}
            for i in idx:
                steps = tuple(candidates[i])
                k0 = max(
                    k for k in range(0, first_new[i] + 1) if k == 0 or self._chain_for(question, steps[:k])
                )
                parent = self._chain_for(question, steps[:k0]) if k0 else root
                if parent is None:  # evicted meanwhile
                    parent, k0 = root, 0
                self._room(1, {id(parent), id(root), *map(id, chains)})
                chains.append(b.fork(parent, 1)[0])
                start[i] = k0
            keep_ok = False
            try:
                for k in range(min(start.values()), max(len(candidates[i]) for i in idx)):
                    if cancel is not None and cancel():
                        raise Cancelled()
                    live = [
                        (i, ch)
                        for i, ch in zip(idx, chains, strict=True)
                        if start[i] <= k < len(candidates[i])
                    ]
                    for i, ch in live:
                        b.extend(ch, b.tokenize(candidates[i][k], add_special=False, parse_special=False))
                        self._used(ch.pending, usage)
                    # Each distinct prefix is judged once, even when several candidates share it.
                    judged, same, judging = [], [], set()
                    for i, ch in live:
                        if k < first_new[i]:
                            continue
                        key = (question, tuple(candidates[i][: k + 1]))
                        if key in self._cache or key in judging:
                            same.append((i, key))
                        else:
                            judging.add(key)
                            judged.append((i, ch, key))
                    if not judged:
                        for i, key in same:
                            out[i][k] = self._cache[key]
                        continue  # verdicts known: extend only (decoded with the next round)
                    yield [ch for _, ch in live]
                    todo = list(judged)
                    while todo:  # verdicts in as many parts as the free sequences need
                        self._room(len(todo), {id(root), *map(id, chains)})
                        part, todo = todo[: max(1, b.free_slots)], todo[max(1, b.free_slots) :]
                        verdicts = [b.fork(ch, 1)[0] for _, ch, _ in part]
                        try:
                            for v in verdicts:
                                b.extend(v, tail)
                                self._used(v.pending, usage)
                            yield verdicts
                            lp = b.logprobs_now(verdicts, ids)
                        finally:
                            for v in verdicts:
                                b.free(v)
                        for (i, _, key), score in zip(part, verdict_share(lp, n_yes), strict=True):
                            out[i][k] = self._cache[key] = score
                    for i, key in same:
                        out[i][k] = self._cache[key]
                keep_ok = True
            finally:
                for i, ch in zip(idx, chains, strict=True):
                    # A finished candidate is never extended: its cells go back at once (fewer cells
                    # in use make every later decode's attention cheaper).
                    if keep_ok and ch.pending == 0 and not (finished is not None and finished[i]):
                        self._keep(question, tuple(candidates[i]), ch)
                    elif not ch.freed:
                        b.free(ch)
        return out

    def _used(self, n: int, usage: list[int] | None) -> None:
        self.tokens_used += n
        if usage is not None:
            usage[0] += n

    def _chain_for(self, question: str, steps: tuple[str, ...]) -> Any:
        key = (question, steps)
        ch = self._chains.get(key)
        if ch is None:
            return None
        if ch.freed:  # freed by someone else (a backend reset)
            del self._chains[key]
            return None
        self._chains.move_to_end(key)
        return ch

    def _keep(self, question: str, steps: tuple[str, ...], branch: Any) -> Any:
        key = (question, steps)
        old = self._chains.pop(key, None)
        if old is not None and old is not branch and not old.freed:
            self.backend.free(old)
        self._chains[key] = branch
        while len(self._chains) > self.keep_chains:
            k, victim = next(iter(self._chains.items()))
            if k[1] == () and len(self._chains) > 1:  # keep the question's head longest
                self._chains.move_to_end(k)
                k, victim = next(iter(self._chains.items()))
            del self._chains[k]
            if not victim.freed:
                self.backend.free(victim)
        return branch

    def _room(self, n: int, busy: set[int]) -> None:
        """Free kept chains (oldest first, none in ``busy``) until ``n`` sequences are free or
        none is left to give: generations running beside the judge may hold the rest."""
        b = self.backend
        for key in list(self._chains):
            if b.free_slots >= n:
                return
            ch = self._chains[key]
            if id(ch) in busy or key[1] == ():
                continue
            del self._chains[key]
            if not ch.freed:
                b.free(ch)

    def trim(self) -> None:
        """Give back the candidates' KV state it keeps (not the question's head): a context short of
        sequences or cells needs them more; their steps are read again if asked."""
        for key in [k for k in self._chains if k[1] != ()]:
            ch = self._chains.pop(key)
            if not ch.freed:
                self.backend.free(ch)

    def close(self) -> None:
        """Free the KV state the judge keeps between calls."""
        for ch in self._chains.values():
            if not ch.freed:
                self.backend.free(ch)
        self._chains.clear()


def drive(backend: Any, gen: Any, cancel: Callable[[], bool] | None = None) -> Any:
    """Run a scoring generator on its own: decode what it asks for, resume, return its result."""
    try:
        need = next(gen)
        while True:
            backend.prefill(need, cancel=cancel)
            need = gen.send(None)
    except StopIteration as stop:
        return stop.value


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for k in range(n):
        t = first[k]
        if any(s[k] != t for s in seqs[1:]):
            return k
    return n


class TokenPRM:
    """A PRM GGUF read at its verdict tokens.

    * ``math-shepherd``: input ``question + " " + steps``, every step followed by the step tag
      (default ``" ки"``); the step's score is P(good) over {good, bad} read at the tag.
    * ``rlhflow``: a chat whose first user turn is ``question + " " + step1``, each later user turn
      one step, each assistant turn the good token; the score is P(good) over {good, bad} where the
      assistant's token is predicted.

    The tags and tokens come from ``models/catalog.toml``; a vocabulary that cannot spell them as
    single tokens is refused with a clear message."""

    def __init__(
        self,
        backend: Any,
        prm_format: str,
        step_tag: str = "ки",
        good_token: str = "+",
        bad_token: str = "-",
        name: str = "token-prm",
    ) -> None:
        if prm_format not in PRM_FORMATS:
            raise InvalidRequestError(
                f"Unknown PRM format {prm_format!r}; use one of {', '.join(PRM_FORMATS)}."
            )
        self.backend = backend
        self.format = prm_format
        self.name = name
        self.tokens_used = 0
        self.step_tag = step_tag
        model = backend.info.name
        self.good_id = self._single(good_token, "good token", model)
        self.bad_id = self._single(bad_token, "bad token", model)
        self.tag_id = self._single(step_tag, "step tag", model) if prm_format == "math-shepherd" else None

    def _single(self, text: str, what: str, model: str) -> int:
        for form in (text, " " + text):
            toks = self.backend.tokenize(form, add_special=False, parse_special=True)
            if len(toks) == 1:
                return toks[0]
        raise PonderError(
            f"{model} cannot be used as a token PRM: its vocabulary has no single token for the "
            f"{what} {text!r} (it splits into {len(self.backend.tokenize(text, add_special=False))} "
            "tokens). Check the PRM format and tokens in models/catalog.toml."
        )

    def _sequences(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """(tokens, positions to read) for one candidate."""
        b = self.backend
        toks: list[int] = []
        reads: list[int] = []
        if self.format == "math-shepherd":
            toks = b.tokenize(question + " ", add_special=True, parse_special=False)
            for s in steps:
                toks += b.tokenize(s.strip(), add_special=False, parse_special=False)
                toks.append(self.tag_id)
                reads.append(len(toks) - 1)
            return toks, reads
        msgs: list[dict[str, str]] = []
        for i, s in enumerate(steps):
            msgs.append({"role": "user", "content": (question + " " + s.strip()) if i == 0 else s.strip()})
            text = b.render_chat(msgs, add_generation_prompt=True)
            prefix = b.tokenize(text, add_special=False, parse_special=True)
            toks = prefix
            reads.append(len(toks) - 1)
            msgs.append({"role": "assistant", "content": b.detokenize([self.good_id]).strip()})
        return toks, reads

    def score(self, question, candidates, finished=None, cancel=None) -> list[list[float]]:

        _check_candidates(candidates)
        b = self.backend
        before = b.stats.tokens_decoded
        seqs = [self._sequences(question, steps) if steps else ([], []) for steps in candidates]
        group = max(1, b.free_slots - 1)
        results: dict[int, list[float]] = {}
        todo = [i for i, (toks, _) in enumerate(seqs) if toks]
        try:
            for g in range(0, len(todo), group):
                idx = todo[g : g + group]
                # The longest prefix every candidate shares (the question, at least) is decoded
                # once and forked; each read position must stay after it.
                shared = _common_prefix([seqs[i][0] for i in idx])
                shared = min(
                    shared,
                    min(min(seqs[i][1], default=shared) for i in idx),
                    *(len(seqs[i][0]) - 1 for i in idx),
                )
                if shared > 0:
                    root = b.root(seqs[idx[0]][0][:shared])
                    try:
                        b.prefill([root], cancel=cancel)
                        branches = b.fork(root, len(idx))
                    finally:
                        b.free(root)
                else:
                    branches = [b.root(seqs[i][0][:1]) for i in idx]
                try:
                    for i, br in zip(idx, branches, strict=True):
                        b.extend(br, seqs[i][0][len(br.tokens) :])
                    lps = b.read_positions(
                        branches, [seqs[i][1] for i in idx], [self.good_id, self.bad_id], cancel
                    )
                finally:
                    for br in branches:
                        b.free(br)
                for i, lp in zip(idx, lps, strict=True):
                    results[i] = verdict_share(lp, 1)
        finally:
            self.tokens_used += b.stats.tokens_decoded - before
        out: list[list[float]] = []
        for i in range(len(candidates)):
            out.append(results.get(i, []))
        return out
