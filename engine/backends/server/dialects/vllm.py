"""vLLM (and SGLang, which answers alike): an OpenAI-compatible endpoint that tokenizes
(``/tokenize``) and takes prompts as token ids, giving the ids back as ``token_id:`` strings; or a
reward model behind vLLM's pooling API, which generates nothing (HTTP 404 on ``/v1/completions``)
and answers ``/pooling``. Requests and answers as :mod:`~engine.backends.server.dialects.openai`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.backends.server.dialects.base import Dialect, Probe, register
from engine.backends.server.dialects.openai import OpenAI


@dataclass(frozen=True)
class VLLM(OpenAI):
    key: ClassVar[str] = "vllm"
    order: ClassVar[int] = 20
    metrics_path: ClassVar[str | None] = "/metrics"

    @classmethod
    async def recognise(cls, probe: Probe) -> Dialect | None:
        tokenizes = await probe.tokenizes()
        if await probe.takes_token_ids():
            return cls() if tokenizes else None
        if await probe.pools():
            return cls(tokenizes=tokenizes, pooling=True)
        return None


register(VLLM)
