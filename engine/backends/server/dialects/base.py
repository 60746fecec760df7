"""What a dialect is, what it may ask of the client and of the server while it is probed, and the
registry the dialect modules add themselves to (see the package's docstring).

A :class:`Dialect` instance is what one endpoint speaks and can do, found once at connect time: its
class says what every endpoint of the kind can do (``several_per_request``, ``verdict_top``, ...),
its fields what probing found of this one (``tokenizes``, ``token_prompts``, ``pooling``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

from engine.backends.server.wire import Completion, CompletionRequest, ServerError, ServerInfo
from engine.modules import import_all

Body = dict[str, Any]  # a JSON request body
DEFAULT_SLOTS = 16  # the slots of a server that does not say (vLLM batches far more)
LogprobShape = Literal["per-token", "choices"]  # llama-server's completion_probabilities | OpenAI's


class Caller(Protocol):
    """What probing asks of a client: its address, the slots it was told, one JSON call."""

    url: str
    parallel: int | None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Any: ...


class Endpoint(Caller, Protocol):
    """What a dialect's completion asks of the client (:class:`~engine.backends.server.client.
    ServerClient`): the server, token pieces and ids, and the text of a completion."""

    info: ServerInfo | None
    pieces: dict[int, bytes]  # token id -> bytes, as far as known

    async def piece(self, token: int) -> bytes: ...

    async def tokenize(
        self, text: str, add_special: bool = False, parse_special: bool = True
    ) -> list[int]: ...

    async def assemble(self, ids: list[int]) -> tuple[str, list[str]]: ...

    def ids_of_texts(self, texts: list[str], text: str) -> list[int] | None: ...

    def note_once(self, key: str, text: str) -> None: ...

    async def without_end_token(self, done: Completion) -> str: ...

    def prompt_text(self, ids: tuple[int, ...]) -> str | None: ...


class Probe:
    """One connect's questions to a server, each asked at most once (the dialects' ``recognise``
    ask them in turn): what it answered on ``/props`` and for its model in ``/v1/models``, and what
    an OpenAI-compatible endpoint can do beyond the API: tokenize (vLLM and SGLang have
    ``/tokenize``; a gateway or a proxy has none), take a prompt as token ids (the SGLang Model
    Gateway takes text only), generate at all (a reward model on vLLM only pools), and which model
    its answers name (a gateway lists ``unknown``)."""

    def __init__(
        self, client: Caller, model: str, models: list[str], entry: Body, props: Body | None
    ) -> None:
        self.client = client
        self.model = model  # the model chosen among ``models``
        self.models = models
        self.entry = entry  # its /v1/models entry
        self.props = props  # llama-server's /props (None: it has none)
        self._tokenizes: bool | None = None
        self._tiny: Any = None  # the answer to one tiny completion with a token-id prompt
        self._refusal = ""  # why the server refused it ("": it did not)
        self.refused_ids = ""  # that refusal in a few words, for the record ("HTTP 422: prompt ...")
        self._asked = False
        self._pools: bool | None = None
        self._served: str | None = None
        self._version: str | None = None

    @property
    def meta(self) -> Body:
        meta = self.entry.get("meta")
        return meta if isinstance(meta, dict) else {}

    async def tokenizes(self) -> bool:
        """Whether it answers ``/tokenize`` with a token list."""
        if self._tokenizes is None:
            try:
                body = await self.client.call(
                    "POST",
                    "/tokenize",
                    {"model": self.model, "prompt": "a", "content": "a", "add_special_tokens": False},
                    retries=0,
                    timeout=30,
                )
                self._tokenizes = isinstance(body, dict) and isinstance(body.get("tokens"), list)
            except ServerError as e:
                if e.dead or "API key" in str(e):
                    raise
                self._tokenizes = False
        return self._tokenizes

    async def takes_token_ids(self) -> bool:
        """Whether it answers a tiny completion whose prompt is token ids. Learned from its answer:
        any HTTP 4xx, or a refusal of any status (400, 422, even 500) whose body says the prompt's
        type is wrong (pydantic's ``{'type': 'string_type', 'loc': ('body', 'prompt', 'str')}``, the
        gateway's "untagged enum StringOrArray"), means it does not; any other failure (a 500 without
        such a body) is an error, said in one line."""
        if not self._asked:
            self._asked = True
            tiny = {"model": self.model, "prompt": [0], "max_tokens": 1, "temperature": 0.0}
            try:
                self._tiny = await self.client.call("POST", "/v1/completions", tiny, retries=1, timeout=60)
            except ServerError as e:
                if e.dead or "API key" in str(e):
                    raise
                why = prompt_type_refusal(e)
                if why is None and (e.status is None or not 400 <= e.status < 500):
                    said = str(e).split(": ", 1)[-1]
                    raise ServerError(
                        e.server,
                        f"failed a one-token completion (the connect-time probe, prompt [0]): {said}",
                        status=e.status,
                        body=e.body,
                    ) from None
                self._refusal = str(e)
                self.refused_ids = why or f"HTTP {e.status}"
        return not self._refusal

    async def pools(self) -> bool:
        """Whether it generates nothing (``/v1/completions`` is not there: HTTP 404) but answers
        vLLM's pooling API (``/pooling``), as a reward model does."""
        if self._pools is None:
            self._pools = False
            if not await self.takes_token_ids() and "HTTP 404" in self._refusal:
                try:
                    body = await self.client.call(
                        "POST", "/pooling", {"model": self.model, "input": [0]}, retries=0, timeout=60
                    )
                    self._pools = isinstance(body, dict) and isinstance(body.get("data"), list)
                except ServerError as e:
                    if e.dead:
                        raise
        return self._pools

    async def served_as(self) -> str:
        """The model its answers name where that is not the model it lists ("": the same, or no
        answer): the tiny completion's, else (token ids refused) one with a text prompt."""
        if self._served is None:
            r = self._tiny
            if not await self.takes_token_ids() and not await self.pools():
                tiny = {"model": self.model, "prompt": "Hi", "max_tokens": 1, "temperature": 0.0}
                try:
                    r = await self.client.call("POST", "/v1/completions", tiny, retries=1, timeout=60)
                except ServerError:
                    r = None
            named = r.get("model") if isinstance(r, dict) else None
            self._served = str(named) if named and str(named) != self.model else ""
        return self._served

    async def version(self) -> str:
        """What ``/version`` says ("": nothing)."""
        if self._version is None:
            self._version = ""
            try:
                v = await self.client.call("GET", "/version", retries=0, timeout=10)
                self._version = str(v.get("version", "")) if isinstance(v, dict) else ""
            except ServerError:
                pass
        return self._version


_TYPE_WORDS = ("type", "valid string", "string", "variant", "expected", "must be", "str")


def _validation_items(body: Any) -> list[Any]:
    """The validation errors a refusal's body lists (FastAPI's ``detail``, an ``error`` object's)."""
    if isinstance(body, dict):
        for key in ("detail", "error", "errors"):
            if key in body:
                inner = body[key]
                return inner if isinstance(inner, list) else [inner]
    return body if isinstance(body, list) else [body]


def prompt_type_refusal(e: ServerError) -> str | None:
    """What a refused completion says of its prompt's type, in a few words ("HTTP 422: 'prompt'
    string_type"), when it says that: a validation error located at ``prompt`` (pydantic's ``loc``,
    an OpenAI error's ``param``), or a message naming ``prompt`` with a type word ("Input should be
    a valid string", "did not match any variant"). None: the refusal says nothing of the prompt."""
    if e.status is None:
        return None
    for item in _validation_items(e.body):
        if isinstance(item, dict):
            loc = item.get("loc") or ([item["param"]] if item.get("param") else [])
            kind = str(item.get("type") or "")
            msg = str(item.get("msg") or item.get("message") or "")
            if isinstance(loc, list | tuple) and "prompt" in [str(x) for x in loc]:
                return f"HTTP {e.status}: 'prompt' {kind or msg[:60]}".strip()
            text = msg or str(item)
        else:
            text = str(item)
        low = text.lower()
        if "prompt" in low and any(w in low for w in _TYPE_WORDS):
            return f"HTTP {e.status}: {' '.join(text.split())[:80]}"
    return None


@dataclass(frozen=True)
class Dialect(ABC):
    """What one endpoint speaks and can do. The class variables hold for every endpoint of the kind;
    the fields are what probing found of this one."""

    key: ClassVar[str]  # the registry's name of the kind: "llama-server", "vllm", ...
    name: ClassVar[str]  # what sessions, ``ponder info`` and the app record: "llama-server" | "openai"
    order: ClassVar[int] = 100  # probe order: lower is asked first; the most general comes last
    several_per_request: ClassVar[bool] = False  # n > 1 completions of one prompt in one request
    logprobs: ClassVar[LogprobShape] = "choices"
    verdict_top: ClassVar[int] = 20  # the top logprobs a one-token verdict may ask for
    says_slots: ClassVar[bool] = False  # it says how many requests it serves at once
    metrics_path: ClassVar[str | None] = None  # its Prometheus metrics (None: none known)
    renders_chats: ClassVar[bool] = False  # it gives its chat template: Ponder renders chats itself
    health_path: ClassVar[str] = "/v1/models"  # a cheap GET that answers while it serves

    tokenizes: bool = True  # it answers /tokenize
    token_prompts: bool = True  # it takes prompts as token ids (False: text only)
    pooling: bool = False  # it only pools (a reward model): no completions

    @classmethod
    @abstractmethod
    async def recognise(cls, probe: Probe) -> Dialect | None:
        """This dialect with what the endpoint can do, if ``probe``'s server speaks it (None: not)."""

    @abstractmethod
    async def describe(self, probe: Probe) -> ServerInfo:
        """What the server recognised as speaking this dialect is (its ``dialect``: :attr:`name`)."""

    @abstractmethod
    def request(self, req: CompletionRequest, model: str, prompt_text: str | None = None) -> tuple[str, Body]:
        """(path, body) of a completion. ``prompt_text``: the prompt as text, for an endpoint that
        takes no token ids."""

    @abstractmethod
    async def complete(self, client: Endpoint, req: CompletionRequest) -> list[Completion]:
        """``req.n`` completions of ``req``, their ids, text, pieces and logprobs all filled in."""

    @abstractmethod
    def tokenize_body(self, text: str, add_special: bool, parse_special: bool, model: str) -> Body:
        """The ``/tokenize`` request body."""

    @abstractmethod
    def detokenize_body(self, token: int, model: str) -> Body:
        """The ``/detokenize`` request body for one token."""

    @abstractmethod
    def detokenized(self, body: Any) -> str:
        """The text of a ``/detokenize`` answer."""

    def capabilities(self) -> dict[str, object]:
        """Everything this endpoint can do, by name (for tests and messages)."""
        return {
            "tokenizes": self.tokenizes,
            "token_prompts": self.token_prompts,
            "several_per_request": self.several_per_request,
            "logprobs": self.logprobs,
            "verdict_top": self.verdict_top,
            "says_slots": self.says_slots,
            "metrics": self.metrics_path,
            "pooling": self.pooling,
        }


_REGISTRY: dict[str, type[Dialect]] = {}
_loaded = False


def register(dialect: type[Dialect]) -> type[Dialect]:
    """Add (or replace) a dialect. Called by the dialect's own module."""
    if not getattr(dialect, "key", "") or not getattr(dialect, "name", ""):
        raise ValueError(f"{dialect.__name__} needs a key and a recorded name")
    _REGISTRY[dialect.key] = dialect
    return dialect


def unregister(key: str) -> None:
    _REGISTRY.pop(key, None)


def load() -> None:
    """Import every dialect module of this package (each registers itself)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    import_all(Path(__file__).parent, str(__package__), skip=("base",))


def probe_order() -> list[type[Dialect]]:
    """Every registered dialect, in the order probing asks them."""
    load()
    return sorted(_REGISTRY.values(), key=lambda d: (d.order, d.key))


def get(key: str) -> type[Dialect]:
    load()
    try:
        return _REGISTRY[key]
    except KeyError:
        raise KeyError(f"no dialect {key!r}; known: {', '.join(sorted(_REGISTRY))}") from None


def recorded(info: ServerInfo | None) -> Dialect:
    """The dialect of a server known only by what was recorded of it: the most general of those
    recorded under ``info.dialect`` (the last in probe order), with ``info``'s capabilities; the
    most general of all without ``info``."""
    kinds = probe_order()
    if info is not None:
        kinds = [d for d in kinds if d.name == info.dialect] or kinds
        return kinds[-1](tokenizes=info.tokenizes, token_prompts=not info.text_prompts, pooling=info.pooling)
    return kinds[-1]()


def held(found: Dialect | None, info: ServerInfo | None) -> Dialect:
    """The dialect a client speaks: the one found at connect time; or, where its info's recorded
    name has been changed since (a test speaking to llama-server through its OpenAI face), that
    name's (see :func:`recorded`)."""
    if found is not None and (info is None or info.dialect == found.name):
        return found
    return recorded(info)
