"""What travels between Ponder and an inference server: addresses, what a server is, a completion
asked and a completion answered, and the error a server's failure becomes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from engine.errors import PonderError


class ServerError(PonderError):
    """A server refused, failed or answered nonsense. ``dead``: it cannot be reached at all.
    ``status`` and ``body``: the HTTP status and the (JSON, else text) body of a refusal, where
    there was one (what probing reads to learn what the endpoint takes)."""

    def __init__(
        self,
        server: str,
        message: str,
        *,
        dead: bool = False,
        transient: bool = False,
        status: int | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(f"{server}: {message}")
        self.server = server
        self.dead = dead
        self.transient = transient
        self.status = status
        self.body = body


def split_url(url: str) -> tuple[str, str | None]:
    """(the URL without credentials, query or trailing slash; the password it carried, if any)."""
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise PonderError(f"{url!r} is not a server address: use http://HOST:PORT or https://HOST")
    host = parts.hostname
    if ":" in host:  # IPv6
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    path = parts.path.rstrip("/")
    if path.endswith("/v1"):
        path = path[:-3]
    return urlunsplit((parts.scheme, netloc, path, "", "")), parts.password or None


@dataclass
class ServerInfo:
    url: str  # without credentials
    dialect: str  # the recorded name of the dialect it speaks: "llama-server" | "openai" (dialects/)
    model: str  # the model id requests name
    models: list[str]
    slots: int
    n_ctx: int | None = None
    n_params: int | None = None
    n_vocab: int | None = None
    build: str = ""  # llama-server build_info, or what the server says of its version
    model_path: str = ""  # llama-server: the GGUF it serves (a path on the server's machine)
    chat_template: str | None = None
    bos_token: str = ""
    eos_token: str = ""
    owned_by: str = ""
    server_slots: int | None = None  # what the server itself has (llama-server's total_slots)
    # What its dialect found it can do, recorded (the client holds the dialect: ServerClient.dialect):
    tokenizes: bool = True  # it answers /tokenize (a gateway or an OpenAI-only proxy does not)
    text_prompts: bool = False  # it takes prompts as text only, not token ids (a gateway)
    refused_ids: str = ""  # how it refused a token-id prompt, in a few words ("HTTP 422: 'prompt' ...")
    served_as: str = ""  # the model its answers name, where its model list says less (a gateway: "unknown")
    tokenizer: str = ""  # the local tokenizer Ponder uses for it (a GGUF or a tokenizer.json folder)
    pooling: bool = False  # a reward model on vLLM's pooling API (/pooling), no completions


@dataclass(frozen=True)
class CompletionRequest:
    prompt: tuple[int, ...]
    max_tokens: int
    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 0
    min_p: float = 0.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    n_probs: int = 1  # top logprobs per generated token (1: the sampled token's own logprob)
    n: int = 1  # completions of this prompt (llama-server: decoded once, copied to n slots; seeds seed+i)


@dataclass
class Completion:
    ids: list[int]
    text: str
    pieces: list[str]
    logprobs: list[float]
    finish: str  # eos | stop | length
    prompt_n: int = 0  # prompt tokens the server evaluated
    cached_n: int = 0  # prompt tokens its cache already held
    top: list[tuple[int | None, str, float]] = field(default_factory=list)  # first position's top logprobs
    # Each token's text, where the server gave texts instead of ids (``logprobs`` then theirs):
    token_texts: list[str] = field(default_factory=list)


def to_int(v: Any) -> int | None:
    """A number a server sent, as an int (None: absent or not a number)."""
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def to_float(v: Any) -> float | None:
    """A number a server sent, as a float (None: absent or not a number)."""
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None
