"""PRMs read off a server: one short request per step prefix, the verdict from the first token's
top logprobs.

llama-server cannot return logprobs of prompt tokens, so a step is scored by asking for one token
after the prefix that ends with that step and reading P(good) / (P(good) + P(bad)) among its top
logprobs; the server's prefix cache makes each request cost only its new tokens.

* judge: the solver's conversation (system prompt, problem, the solution so far as the assistant's
  turn) and then :data:`engine.prm.JUDGE_QUESTION`; good = yes, bad = no, in every single-token
  spelling the vocabulary has;
* ``math-shepherd``: ``question + " " + steps``, each step followed by the step tag, read at the tag;
* ``rlhflow``: a chat, one user turn per step, each assistant turn the good token, read where the
  assistant answers.

Verdicts are cached by (question, steps so far), so beam search's rounds judge each step once.

:class:`ServerHeadPRM` is the other kind: a PRM with a classification head (Qwen2.5-Math-PRM),
served by vLLM's pooling API. A candidate goes as one chat formatted as its model card says (the
PRM's system prompt, the question, the steps joined and ended by its step tag); ``/pooling`` returns
a class distribution at every step tag, and a step's score is its positive class's probability.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

from engine.backends.server.pool import ServerPool, gather_all
from engine.backends.server.wire import CompletionRequest
from engine.errors import PonderError
from engine.executor import PRMMode
from engine.prm import HEAD_PRM_FORMATS, JUDGE_QUESTION, NEUTRAL, PRM_FORMATS, check_candidates
from engine.protocol import SYSTEM_PROMPT

# Top logprobs asked for at a verdict: llama-server gives as many as asked (a partial sort), OpenAI
# and vLLM cap them at 20 by default. A verdict token outside them counts as probability 0.
TOP = {"llama-server": 100, "openai": 20}


class ServerVerdictPRM:
    """A PRM on a :class:`ServerPool` (the policy's servers or a PRM server of its own)."""

    mode: PRMMode = "async"
    n_params: int = 0  # set by the executor that makes it

    def __init__(
        self,
        pool: ServerPool,
        kind: str = "judge",
        name: str | None = None,
        system_prompt: str | None = None,
        step_tag: str = "ки",
        good_token: str = "+",
        bad_token: str = "-",
    ) -> None:
        if kind != "judge" and kind not in PRM_FORMATS:
            raise PonderError(f"Unknown PRM kind {kind!r}")
        self.pool = pool
        self.kind = kind
        self.name = name or kind
        self.system_prompt = SYSTEM_PROMPT if system_prompt is None else system_prompt
        self.step_tag, self.good_token, self.bad_token = step_tag, good_token, bad_token
        self.tokens_used = 0
        self.model_record = pool.record()
        self._cache: dict[tuple[str, tuple[str, ...]], float] = {}
        self._good: list[int] = []
        self._bad: list[int] = []
        self._words: tuple[set[str], set[str]] = (set(), set())
        self._tag: list[int] = []

    async def _prepare(self) -> None:
        if self._good:
            return
        if self.kind == "judge":
            good_words, bad_words = ["yes"], ["no"]
        else:
            good_words, bad_words = [self.good_token], [self.bad_token]
        self._good = await self._variants(good_words)
        self._bad = await self._variants(bad_words)
        self._words = ({w.lower() for w in good_words}, {w.lower() for w in bad_words})
        if not self._good or not self._bad:
            raise PonderError(
                f"{self.pool.info.model} cannot be a {self.kind} PRM: its vocabulary has no single token for "
                f"{'yes/no' if self.kind == 'judge' else repr(self.good_token) + '/' + repr(self.bad_token)}."
            )
        if self.kind == "math-shepherd":
            tag = await self.pool.tokenize(self.step_tag, add_special=False, parse_special=True)
            if len(tag) != 1:
                tag = await self.pool.tokenize(" " + self.step_tag, add_special=False, parse_special=True)
            if len(tag) != 1:
                raise PonderError(
                    f"{self.pool.info.model} has no single token for the step tag {self.step_tag!r}."
                )
            self._tag = tag

    async def _variants(self, words: Sequence[str]) -> list[int]:
        ids: list[int] = []
        forms = []
        for w in words:
            forms += (
                [w, w.capitalize(), " " + w, " " + w.capitalize(), w.upper()]
                if self.kind == "judge"
                else [w, " " + w]
            )
        for form in dict.fromkeys(forms):
            toks = await self.pool.tokenize(form, add_special=False, parse_special=self.kind != "judge")
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(toks[0])
        return ids

    async def _prompt(self, question: str, steps: Sequence[str]) -> list[int]:
        if self.kind == "judge":
            msgs = (
                ("system", self.system_prompt),
                ("user", question),
                ("assistant", "".join(steps)),
                ("user", JUDGE_QUESTION),
            )
            return await self.pool.chat_tokens(msgs)
        if self.kind == "math-shepherd":
            toks = await self.pool.tokenize(question + " ", add_special=True, parse_special=False)
            for s in steps:
                toks = toks + await self.pool.tokenize(s.strip(), add_special=False, parse_special=False)
                toks = toks + self._tag
            return toks
        msgs_l: list[tuple[str, str]] = []
        for i, s in enumerate(steps):
            if i:
                msgs_l.append(("assistant", self.good_token))
            msgs_l.append(("user", (question + " " + s.strip()) if i == 0 else s.strip()))
        return await self.pool.chat_tokens(tuple(msgs_l))

    def _share(self, top: list[tuple[int | None, str, float]]) -> float:
        good = bad = 0.0
        for tid, text, lp in top:
            p = math.exp(lp) if lp > -1e29 else 0.0
            word = text.strip().lower()
            if tid is not None:
                if tid in self._good:
                    good += p
                elif tid in self._bad:
                    bad += p
            elif word in self._words[0]:
                good += p
            elif word in self._words[1]:
                bad += p
        return good / (good + bad) if good + bad > 0 else NEUTRAL

    async def score_async(
        self, question: str, candidates: Sequence[Sequence[str]], finished: Sequence[bool] | None = None
    ) -> tuple[list[list[float]], int]:
        """Step scores of every candidate, and the PRM tokens spent (prompt tokens the servers
        evaluated plus the verdict tokens)."""
        check_candidates(candidates)
        await self._prepare()
        out = [[0.0] * len(c) for c in candidates]
        todo: dict[tuple[str, tuple[str, ...]], list[tuple[int, int]]] = {}
        for i, c in enumerate(candidates):
            for k in range(len(c)):
                key = (question, tuple(c[: k + 1]))
                if key in self._cache:
                    out[i][k] = self._cache[key]
                else:
                    todo.setdefault(key, []).append((i, k))

        async def judge(key: tuple[str, tuple[str, ...]]) -> tuple[float, int]:
            prompt = await self._prompt(question, key[1])
            top = TOP.get(self.pool.info.dialect, 20)
            req = CompletionRequest(tuple(prompt), max_tokens=1, temperature=0.0, n_probs=top)
            done, _server = await self.pool.complete(req)
            return self._share(done.top), done.prompt_n + len(done.ids)

        # A candidate's steps are judged in order, one request after the other: each prompt extends
        # the one before, so the server's prefix cache (the same slot: prefix affinity) holds all
        # but the new step. Candidates go in parallel; a prefix two candidates share is judged once.
        verdicts: dict[tuple[str, tuple[str, ...]], asyncio.Future] = {}
        loop = asyncio.get_running_loop()
        used = 0

        async def walk(i: int) -> None:
            nonlocal used
            c = candidates[i]
            for k in range(len(c)):
                key = (question, tuple(c[: k + 1]))
                if key not in todo:
                    continue
                fut = verdicts.get(key)
                if fut is None:
                    fut = verdicts[key] = loop.create_future()
                    try:
                        score, n = await judge(key)
                    except BaseException as e:
                        fut.set_exception(e)
                        fut.exception()  # retrieved: the walk that raised reports it
                        raise
                    used += n
                    self._cache[key] = score
                    fut.set_result(score)
                out[i][k] = await fut

        await gather_all(*(walk(i) for i in range(len(candidates))))
        self.tokens_used += used
        return out, used

    def score(self, *_: Any, **__: Any) -> Any:
        raise PonderError("A server PRM scores through its executor (score_async), not synchronously.")


class ServerHeadPRM:
    """A classification-head PRM on vLLM (``--prm qwen-prm --prm-server URL``, or any PRM server that
    answers only the pooling API): one ``/pooling`` request per candidate, all candidates at once,
    each step's score its tag's positive-class probability."""

    mode: PRMMode = "async"
    n_params: int = 0  # set by the executor that makes it

    def __init__(self, pool: ServerPool, fmt: str = "qwen-prm", name: str | None = None) -> None:
        if fmt not in HEAD_PRM_FORMATS:
            raise PonderError(f"Unknown head-PRM format {fmt!r}; use one of {', '.join(HEAD_PRM_FORMATS)}")
        self.pool = pool
        self.kind = fmt
        self.name = name or f"{fmt}: {pool.info.model}"
        self.system_prompt, self.step_tag = HEAD_PRM_FORMATS[fmt]
        self.tokens_used = 0
        self.model_record = pool.record()
        self._cache: dict[tuple[str, tuple[str, ...]], list[float]] = {}

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        """A candidate as the PRM reads it: each step stripped, the tag after every one."""
        tag = self.step_tag
        body = "".join(s.replace(tag, "").strip() + tag for s in steps)
        return [
            {"role": "system", "content": self.system_prompt},
            {"role": "user", "content": question},
            {"role": "assistant", "content": body},
        ]

    async def score_async(
        self, question: str, candidates: Sequence[Sequence[str]], finished: Sequence[bool] | None = None
    ) -> tuple[list[list[float]], int]:
        check_candidates(candidates)
        out: list[list[float]] = [[] for _ in candidates]
        todo: dict[tuple[str, tuple[str, ...]], list[int]] = {}
        for i, c in enumerate(candidates):
            key = (question, tuple(c))
            if key in self._cache:
                out[i] = list(self._cache[key])
            elif c:
                todo.setdefault(key, []).append(i)

        async def pool_one(key: tuple[str, tuple[str, ...]]) -> tuple[list[float], int]:
            steps = key[1]

            async def ask(c: Any) -> tuple[list[Any], int]:
                return await c.pooling(self.messages(question, steps))

            rows, used = await self.pool._on_any(ask)
            if len(rows) != len(steps):
                raise PonderError(
                    f"{self.pool.info.url}: the PRM scored {len(rows)} step tags for {len(steps)} steps "
                    f"(is it a {self.kind} PRM, started with --pooler-config '{{\"step_tag_id\": ID}}' for "
                    f"{self.step_tag!r}?)"
                )
            scores = []
            for row in rows:
                if not isinstance(row, list) or len(row) < 2:
                    raise PonderError(
                        f"{self.pool.info.url}: a step's scores are not class probabilities: {row!r}"
                    )
                scores.append(float(row[1]))  # P(positive)
            return scores, used

        keys = list(todo)
        answers = await gather_all(*(pool_one(k) for k in keys))
        used = 0
        for key, (scores, n) in zip(keys, answers, strict=True):
            self._cache[key] = scores
            used += n
            for i in todo[key]:
                out[i] = list(scores)
        self.tokens_used += used
        return out, used

    def score(self, *_: Any, **__: Any) -> Any:
        raise PonderError("A server PRM scores through its executor (score_async), not synchronously.")
