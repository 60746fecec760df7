"""PRMs read off a server: one short request per step prefix, the verdict from the first token's
top logprobs.

llama-server cannot return logprobs of prompt tokens, so a step is scored by asking for one token
after the prefix that ends with that step and reading P(good) / (P(good) + P(bad)) among its top
logprobs; the server's prefix cache makes each request cost only its new tokens.

The prompt of each prefix is the PRM kind's :class:`~engine.prm.formats.VerdictFormat` (the judge's
conversation, a token PRM's step tags or chat: ``engine/prm/kinds/``), rendered here with the
server's tokenizer and chat template; the verdict tokens are every single-token spelling of the
format's words.

Verdicts are cached by (question, steps so far), so beam search's rounds judge each step once.

:class:`ServerHeadPRM` is the other kind: a PRM with a classification head (Qwen2.5-Math-PRM),
served by vLLM's pooling API. A candidate goes as one chat formatted as its model card says (the
PRM's system prompt, the question, the steps joined and ended by its step tag); ``/pooling`` returns
a class distribution at every step tag, and a step's score is its positive class's probability.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from engine.backends.server.client import ServerClient
from engine.backends.server.pool import ServerPool, gather_all
from engine.backends.server.wire import CompletionRequest
from engine.errors import PonderError
from engine.executor import PRM, PRMMode
from engine.prm import NEUTRAL, HeadFormat, VerdictFormat, check_candidates
from engine.prm.formats import Chat, Prompt, Tag, Text

# Top logprobs asked for at a verdict: llama-server gives as many as asked (a partial sort), OpenAI
# and vLLM cap them at 20 by default. A verdict token outside them counts as probability 0.
# How many, each dialect says (its verdict_top).


class ServerVerdictPRM:
    """A PRM on a :class:`ServerPool` (the policy's servers or a PRM server of its own)."""

    mode: PRMMode = "async"

    def __init__(
        self, pool: ServerPool, fmt: VerdictFormat, name: str | None = None, n_params: int = 0
    ) -> None:
        self.pool = pool
        self.format = fmt
        self.name = name or fmt.name
        self.n_params = n_params  # the PRM's model's parameters, for its FLOPs
        self.tokens_used = 0
        self.model_record: dict[str, Any] | None = pool.record()
        self._cache: dict[tuple[str, tuple[str, ...]], float] = {}
        self._good: list[int] = []
        self._bad: list[int] = []
        self._words: tuple[set[str], set[str]] = (set(), set())
        self._tag: list[int] = []

    async def _prepare(self) -> None:
        if self._good:
            return
        fmt = self.format
        self._good = await self._variants(fmt.good)
        self._bad = await self._variants(fmt.bad)
        self._words = ({w.lower() for w in fmt.good}, {w.lower() for w in fmt.bad})
        if not self._good or not self._bad:
            raise PonderError(
                f"{self.pool.info.model} cannot be a {fmt.name} PRM: its vocabulary has no single token for "
                f"{fmt.verdicts()}."
            )
        if fmt.step_tag is not None:
            tag = await self.pool.tokenize(fmt.step_tag, add_special=False, parse_special=True)
            if len(tag) != 1:
                tag = await self.pool.tokenize(" " + fmt.step_tag, add_special=False, parse_special=True)
            if len(tag) != 1:
                raise PonderError(
                    f"{self.pool.info.model} has no single token for the step tag {fmt.step_tag!r}."
                )
            self._tag = tag

    async def _variants(self, words: Sequence[str]) -> list[int]:
        ids: list[int] = []
        forms = []
        for w in words:
            forms += self.format.forms(w)
        for form in dict.fromkeys(forms):
            toks = await self.pool.tokenize(form, add_special=False, parse_special=self.format.special)
            if len(toks) == 1 and toks[0] not in ids:
                ids.append(toks[0])
        return ids

    async def _prompt(self, question: str, steps: Sequence[str]) -> list[int]:
        """The format's prefix for ``steps`` as the server's token ids."""
        return await self._render(self.format.prefix(question, steps))

    async def _render(self, prompt: Prompt) -> list[int]:
        toks: list[int] = []
        for seg in prompt:
            if isinstance(seg, Tag):
                toks = toks + self._tag
            elif isinstance(seg, Text):
                toks = toks + await self.pool.tokenize(
                    seg.text, add_special=seg.add_special, parse_special=seg.parse_special
                )
            elif isinstance(seg, Chat):
                toks = toks + await self.pool.chat_tokens(seg.messages)
        return toks

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
            top = self.pool.dialect.verdict_top
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

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        raise PonderError("A server PRM scores through its executor (score_async), not synchronously.")


class ServerHeadPRM:
    """A classification-head PRM on vLLM (``--prm qwen-prm --prm-server URL``, or any PRM server that
    answers only the pooling API): one ``/pooling`` request per candidate, all candidates at once,
    each step's score its tag's positive-class probability."""

    mode: PRMMode = "async"

    def __init__(self, pool: ServerPool, fmt: HeadFormat, name: str | None = None, n_params: int = 0) -> None:
        self.pool = pool
        self.format = fmt
        self.name = name or f"{fmt.name}: {pool.info.model}"
        self.n_params = n_params  # the PRM's model's parameters, for its FLOPs
        self.step_tag = fmt.step_tag
        self.tokens_used = 0
        self.model_record: dict[str, Any] | None = pool.record()
        self._cache: dict[tuple[str, tuple[str, ...]], list[float]] = {}

    def messages(self, question: str, steps: Sequence[str]) -> list[dict[str, str]]:
        """A candidate as the PRM reads it (its format's chat)."""
        return self.format.messages(question, steps)

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

            async def ask(c: ServerClient) -> tuple[list[Any], int]:
                return await c.pooling(self.messages(question, steps))

            rows, used = await self.pool._on_any(ask)
            if len(rows) != len(steps):
                raise PonderError(
                    f"{self.pool.info.url}: the PRM scored {len(rows)} step tags for {len(steps)} steps "
                    f"(is it a {self.format.name} PRM, started with --pooler-config "
                    f"'{{\"step_tag_id\": ID}}' for {self.step_tag!r}?)"
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

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        raise PonderError("A server PRM scores through its executor (score_async), not synchronously.")


class ServerPRMHost:
    """What a server executor offers a PRM kind (:class:`engine.prm.ServerHost`): the PRM runs on
    the PRM server when one was given, else on the policy's servers."""

    def __init__(self, pool: ServerPool, prm_pool: ServerPool | None, n_params_override: int | None) -> None:
        self.pool = prm_pool or pool
        # The PRM's parameters for its FLOPs: what its server says, or the policy's override when it
        # is the policy's own server.
        self.n_params = self.pool.info.n_params or (n_params_override if prm_pool is None else None) or 0

    @property
    def prm_model(self) -> Path:
        info = self.pool.info
        return Path(info.model_path or info.model)

    def verdict_prm(self, fmt: VerdictFormat, name: str) -> PRM:
        return ServerVerdictPRM(self.pool, fmt, name=name, n_params=self.n_params)

    def head_prm(self, fmt: HeadFormat, name: str | None = None) -> PRM:
        return ServerHeadPRM(self.pool, fmt, name=name, n_params=self.n_params)
