"""The SGLang Model Gateway (``smg``, sglang-router), or any OpenAI-compatible endpoint that refuses
a prompt of token ids (the gateway: HTTP 422, "prompt: data did not match any variant of untagged
enum StringOrArray"). It has no ``/tokenize`` or ``/props`` and lists its model as ``unknown``;
its answers name the model it routes to. Ponder holds the model's own tokenizer and sends prompts
as text with their special tokens written out; requests and answers otherwise as
:mod:`~engine.backends.server.dialects.openai`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from engine.backends.server.dialects.base import Dialect, Probe, register
from engine.backends.server.dialects.openai import OpenAI


@dataclass(frozen=True)
class Gateway(OpenAI):
    key: ClassVar[str] = "gateway"
    order: ClassVar[int] = 30

    token_prompts: bool = False
    tokenizes: bool = False

    @classmethod
    async def recognise(cls, probe: Probe) -> Dialect | None:
        tokenizes = await probe.tokenizes()
        if await probe.takes_token_ids() or await probe.pools():
            return None
        return cls(tokenizes=tokenizes)


register(Gateway)
