"""The judge: any instruct GGUF (by default the policy model itself) asked, after each step, whether
the last step is correct; the score is P(yes) / (P(yes) + P(no)) at the verdict token.

The judge reads the solution as the reply to the solver's own prompt (the policy's system prompt
and the problem, exactly as the strategies send them) and is then asked about its last step. When
the judge is the policy model, the backend shares the KV cells the policy already computed for
that prompt and those steps (``Backend._adopt``), so a verdict costs only JUDGE_QUESTION's turn.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from engine.errors import Cancelled, PonderError
from engine.executor import PRMMode
from engine.prm.formats import Vocabulary
from engine.prm.reader import B, Decoder, JudgeModel
from engine.prm.steps import check_candidates, verdict_share
from engine.protocol import SYSTEM_PROMPT

JUDGE_QUESTION = "Is the last step correct? Answer yes or no."
_SOLUTION_MARK = "\u2063PONDER_SOLUTION\u2063"

_Key = tuple[str, tuple[str, ...]]  # (question, steps so far)
T = TypeVar("T")


def _variant_ids(backend: Vocabulary, words: Sequence[str]) -> list[int]:
    """Single-token spellings of a verdict word (yes, Yes, ' yes', ...) in this vocabulary."""
    ids: list[int] = []
    for w in words:
        for form in (w, w.capitalize(), " " + w, " " + w.capitalize(), w.upper()):
            toks = backend.tokenize(form, add_special=False, parse_special=False)
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(toks[0])
    return ids


@dataclass
class _Pass(Generic[B]):
    """One :meth:`JudgePRM.score_gen` call: what it was asked and what it has found so far."""

    question: str
    candidates: Sequence[Sequence[str]]
    finished: Sequence[bool] | None
    cancel: Callable[[], bool] | None
    usage: list[int] | None
    out: list[list[float]]  # the step scores, filled as verdicts come
    first_new: list[int]  # per candidate: the first step without a cached verdict
    tail: list[int]  # the tokens after the solution: end of turn, the question, assistant header
    root: B  # the question's head


class JudgePRM(Generic[B]):
    """An instruct model as a step verifier. The prompt is a conversation: the solver's system
    prompt (``system_prompt``, the strategies' own) and the problem as the user turn, the solution so
    far as the assistant turn, then :data:`JUDGE_QUESTION` as a user turn; the score is P(yes) /
    (P(yes) + P(no)) at the first token of the reply.

    Runs on a :class:`~engine.backends.llama_cpp.Backend` in its owning thread. The head (system + problem) is
    decoded once; each candidate forks from it and grows step by step (sharing the policy's cells
    where the policy holds them); after each step a short-lived verdict branch appends the tail (the
    end of the turn, the question, the assistant header) and the verdict is read from its
    next-token logits. All candidates' k-th steps are judged in one batch."""

    mode: PRMMode = "stepped"
    model_record: dict[str, Any] | None = None  # the policy's own: recorded with the run already

    def __init__(
        self,
        backend: JudgeModel[B],
        name: str = "judge",
        keep_chains: int = 12,
        system_prompt: str | None = None,
        n_params: int = 0,
    ) -> None:
        self.backend = backend
        self.name = name
        self.n_params = n_params  # the judge's model's parameters, for its FLOPs
        self.system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.tokens_used = 0
        # Verdicts by (question, steps so far): beam search re-scores every prefix each round; a
        # verdict already given is reused, so each step is judged once.
        self._cache: dict[_Key, float] = {}
        self._chains: OrderedDict[_Key, B] = OrderedDict()
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

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        """Synchronous scoring: :meth:`score_gen` with each decode done at once."""
        return drive(self.backend, self.score_gen(question, candidates, finished, cancel), cancel)

    def score_gen(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
        usage: list[int] | None = None,
    ) -> Generator[list[B], None, list[list[float]]]:
        """Scoring as a generator: it yields lists of branches whose pending tokens must be decoded
        (the scheduler puts them into the same decodes as generation) and is resumed right after;
        it returns the step scores.

        Verdicts are cached by (question, steps so far), and the judge keeps the KV state of the
        last candidates it read (up to ``keep_chains``): beam search's next round extends them, so
        each step's tokens are decoded once, not once per round. ``usage`` (a one-item list) counts
        this call's tokens, apart from other calls running at the same time."""
        check_candidates(candidates)
        b = self.backend
        out: list[list[float]] = [[0.0] * len(c) for c in candidates]
        first_new = self._from_cache(question, candidates, out)
        order = [i for i, c in enumerate(candidates) if first_new[i] < len(c)]
        if not order:
            return out
        head, tail = self._head_tail(question)
        root = self._chain_for(question, ())
        fresh = root is None
        if root is None:
            root = self._keep(question, (), b.root(head))
        p = _Pass(question, candidates, finished, cancel, usage, out, first_new, tail, root)
        if fresh:
            self._used(root.pending, usage)
            yield [root]
        rest = list(order)
        while rest:
            # As many candidates as the free sequences allow, each with room for its verdict branch
            # (asked again each group: generations running beside this job take sequences too).
            group = max(1, (b.free_slots - 1) // 2)
            idx, rest = rest[:group], rest[group:]
            yield from self._judge_group(p, idx)
        return out

    def _from_cache(
        self, question: str, candidates: Sequence[Sequence[str]], out: list[list[float]]
    ) -> list[int]:
        """Fill ``out`` with the cached verdicts of each candidate's first steps; per candidate, the
        first step without one."""
        first_new: list[int] = []
        for i, c in enumerate(candidates):
            k = 0
            while k < len(c) and (question, tuple(c[: k + 1])) in self._cache:
                out[i][k] = self._cache[(question, tuple(c[: k + 1]))]
                k += 1
            first_new.append(k)
        return first_new

    def _judge_group(self, p: _Pass[B], idx: list[int]) -> Generator[list[B], None, None]:
        """Judge the candidates ``idx`` step by step, all their k-th steps in one batch."""
        chains, start = self._fork_group(p, idx)
        keep_ok = False
        try:
            for k in range(min(start.values()), max(len(p.candidates[i]) for i in idx)):
                if p.cancel is not None and p.cancel():
                    raise Cancelled()
                yield from self._judge_step(p, k, idx, chains, start)
            keep_ok = True
        finally:
            self._settle_group(p, idx, chains, keep_ok)

    def _fork_group(self, p: _Pass[B], idx: list[int]) -> tuple[list[B], dict[int, int]]:
        """A chain per candidate, forked from the longest prefix the judge still holds, and the
        step each starts at."""
        chains: list[B] = []
        start: dict[int, int] = {}
        for i in idx:
            steps = tuple(p.candidates[i])
            k0 = max(
                k for k in range(0, p.first_new[i] + 1) if k == 0 or self._chain_for(p.question, steps[:k])
            )
            parent = self._chain_for(p.question, steps[:k0]) if k0 else p.root
            if parent is None:  # evicted meanwhile
                parent, k0 = p.root, 0
            self._room(1, {id(parent), id(p.root), *map(id, chains)})
            chains.append(self.backend.fork(parent, 1)[0])
            start[i] = k0
        return chains, start

    def _judge_step(
        self, p: _Pass[B], k: int, idx: list[int], chains: list[B], start: dict[int, int]
    ) -> Generator[list[B], None, None]:
        """Extend the live chains by their step ``k`` and judge each new prefix."""
        b = self.backend
        live = [(i, ch) for i, ch in zip(idx, chains, strict=True) if start[i] <= k < len(p.candidates[i])]
        for i, ch in live:
            b.extend(ch, b.tokenize(p.candidates[i][k], add_special=False, parse_special=False))
            self._used(ch.pending, p.usage)
        # Each distinct prefix is judged once, even when several candidates share it.
        judged, same, judging = [], [], set()
        for i, ch in live:
            if k < p.first_new[i]:
                continue
            key = (p.question, tuple(p.candidates[i][: k + 1]))
            if key in self._cache or key in judging:
                same.append((i, key))
            else:
                judging.add(key)
                judged.append((i, ch, key))
        if judged:
            yield [ch for _, ch in live]
            yield from self._verdicts(p, k, judged, chains)
        # else: verdicts known: extend only (decoded with the next round)
        for i, key in same:
            p.out[i][k] = self._cache[key]

    def _verdicts(
        self, p: _Pass[B], k: int, judged: list[tuple[int, B, _Key]], chains: list[B]
    ) -> Generator[list[B], None, None]:
        """Read the verdicts on ``judged`` (each a short-lived branch with the tail appended), in as
        many parts as the free sequences need."""
        b = self.backend
        ids = self.yes_ids + self.no_ids
        todo = list(judged)
        while todo:
            self._room(len(todo), {id(p.root), *map(id, chains)})
            part, todo = todo[: max(1, b.free_slots)], todo[max(1, b.free_slots) :]
            verdicts = [b.fork(ch, 1)[0] for _, ch, _ in part]
            try:
                for v in verdicts:
                    b.extend(v, p.tail)
                    self._used(v.pending, p.usage)
                yield verdicts
                lp = b.logprobs_now(verdicts, ids)
            finally:
                for v in verdicts:
                    b.free(v)
            for (i, _, key), score in zip(part, verdict_share(lp, len(self.yes_ids)), strict=True):
                p.out[i][k] = self._cache[key] = score

    def _settle_group(self, p: _Pass[B], idx: list[int], chains: list[B], keep_ok: bool) -> None:
        """Keep each chain that read its whole candidate, free the others."""
        for i, ch in zip(idx, chains, strict=True):
            # A finished candidate is never extended: its cells go back at once (fewer cells
            # in use make every later decode's attention cheaper).
            if keep_ok and ch.pending == 0 and not (p.finished is not None and p.finished[i]):
                self._keep(p.question, tuple(p.candidates[i]), ch)
            elif not ch.freed:
                self.backend.free(ch)

    def _used(self, n: int, usage: list[int] | None) -> None:
        self.tokens_used += n
        if usage is not None:
            usage[0] += n

    def _chain_for(self, question: str, steps: tuple[str, ...]) -> B | None:
        key = (question, steps)
        ch = self._chains.get(key)
        if ch is None:
            return None
        if ch.freed:  # freed by someone else (a backend reset)
            del self._chains[key]
            return None
        self._chains.move_to_end(key)
        return ch

    def _keep(self, question: str, steps: tuple[str, ...], branch: B) -> B:
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


def drive(
    backend: Decoder[B], gen: Generator[list[B], None, T], cancel: Callable[[], bool] | None = None
) -> T:
    """Run a scoring generator on its own: decode what it asks for, resume, return its result."""
    try:
        need = next(gen)
        while True:
            backend.prefill(need, cancel=cancel)
            need = gen.send(None)
    except StopIteration as stop:
        return stop.value
