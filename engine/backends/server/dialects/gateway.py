"""Any OpenAI-compatible endpoint that takes text prompts only: the SGLang Model Gateway (``smg``,
sglang-router: HTTP 422, "prompt: data did not match any variant of untagged enum StringOrArray"),
and the servers that validate ``prompt`` as a string, as pydantic ones do (FastAPI's 422, or a 400 or
500 whose body says ``{'type': 'string_type', 'loc': ('body', 'prompt', 'str')}``). What it takes is
learned at connect time from its refusal of a token-id prompt (``Probe.takes_token_ids``), not
assumed. The gateway has no ``/tokenize`` or ``/props`` and lists its model as ``unknown``; its
answers name the model it routes to. Ponder holds the model's own tokenizer and sends each prompt as
the text of its tokens, special tokens written out (``LocalTokenizer.prompt_text``), which the
server's tokenizer reads back; requests and answers otherwise as
:mod:`~engine.backends.server.dialects.openai`. Recorded as ``openai`` with ``prompts: text``."""

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
