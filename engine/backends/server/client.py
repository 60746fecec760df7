"""One inference server spoken to over HTTP: llama-server, or any OpenAI-compatible engine (vLLM,
SGLang, ...).

What the server speaks is found by probing it (``probing.py``) and held as a
:class:`~engine.backends.server.dialects.base.Dialect` (one module each in ``dialects/``:
llama-server's own ``/completion`` API, vLLM, the SGLang Model Gateway, any OpenAI-compatible
endpoint): its request bodies and the reading of its answers, its tokenize and detokenize bodies,
its health path and what it can do. This module asks it, and does the I/O.

Every call has a timeout; connection failures, timeouts, HTTP 429 and 5xx are retried with
exponential backoff (honouring ``Retry-After``), then reported as a :class:`ServerError` that names
the server. While completions are in flight the server's health is probed every
:data:`PROBE_EVERY` seconds (:meth:`ServerClient.watched`): a probe the server refuses ends them at
once as a dropped connection, so a server that stops answering (llama-server given SIGTERM closes its
port and never answers the requests it holds) is noticed in seconds, not at the request timeout.
The API key goes only into the ``Authorization`` header: it is never part of a URL,
message or record this module makes.

What travels (requests, answers, :class:`ServerError`) is in ``wire.py``.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import json
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import httpx

from engine.backends.server.dialects.base import Dialect, held
from engine.backends.server.probing import DEFAULT_SLOTS, probe_server
from engine.backends.server.wire import (
    Completion,
    CompletionRequest,
    ServerError,
    ServerInfo,
    split_url,
    to_int,
)
from engine.chat import chat_prompt
from engine.tokenizer import LocalTokenizer

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
# One-line notes for the user: what an endpoint lacks and what Ponder does instead (the CLI prints
# each once on stderr; see engine/cli/__init__.py).
NOTES = logging.getLogger("ponder.note")
T = TypeVar("T")
PROBE_EVERY = 3.0  # seconds between health probes while completions are in flight


def _error_text(resp: httpx.Response) -> str:
    """What a refusal says, on one line (a pydantic message spans several)."""
    return " ".join(_error_said(resp).split())


def _error_said(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        text = resp.text.strip().replace("\n", " ")
        return text[:300] or resp.reason_phrase
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            return str(err.get("message") or err.get("detail") or err)[:500]
        if isinstance(err, str):
            return err[:500]
        if "detail" in body:
            return str(body["detail"])[:500]
    return str(body)[:300]


def _body(resp: httpx.Response) -> Any:
    """A refusal's body: its JSON, else its text."""
    try:
        return resp.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return resp.text[:2000]


def _retry_after(resp: httpx.Response, fallback: float) -> float:
    value = resp.headers.get("retry-after")
    if not value:
        return fallback
    try:
        return max(0.0, min(30.0, float(value)))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
        return max(0.0, min(30.0, when - time.time()))
    except (TypeError, ValueError):
        return fallback


class Slots:
    """A counting semaphore whose acquire takes several units at once, or none: two waiters for
    several units each can never hold part of what the other needs."""

    def __init__(self, capacity: int) -> None:
        self.capacity = max(1, capacity)
        self.free = self.capacity
        self._cond = asyncio.Condition()

    async def acquire(self, n: int = 1) -> None:
        n = min(max(1, n), self.capacity)
        async with self._cond:
            await self._cond.wait_for(lambda: self.free >= n)
            self.free -= n

    def release(self, n: int = 1) -> None:
        n = min(max(1, n), self.capacity)

        async def give() -> None:
            async with self._cond:
                self.free += n
                self._cond.notify_all()

        asyncio.ensure_future(give())


class ServerClient:
    """One server. Create and use it inside the event loop that owns it (see ``pool.py``)."""

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        connect_timeout: float = 5.0,
        retries: int = 4,
        backoff: float = 0.5,
        parallel: int | None = None,
        tokenizer: LocalTokenizer | None = None,
    ) -> None:
        self.url, key_in_url = split_url(url)
        self.tokenizer = tokenizer  # the model's own, held here: tokens, chats and pieces without the server
        self._api_key = api_key or key_in_url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.parallel = parallel
        self.info: ServerInfo | None = None
        self._dialect: Dialect | None = None  # what it speaks and can do, found by probe()
        self.alive = True
        self.outstanding = 0  # requests sent or waiting for a slot
        self.in_flight = 0  # requests sent and not yet answered (what the health watch guards)
        self.probe_every = PROBE_EVERY
        self.probes = 0  # health probes made while requests were in flight
        self._watch: asyncio.Task[None] | None = None
        self._gone: asyncio.Event | None = None
        self._gone_why = ""
        self._sem: Slots | None = None
        self._http: httpx.AsyncClient | None = None
        self.pieces: dict[int, bytes] = {}  # token id -> bytes, as far as known
        self._end_texts: dict[int, str] = {}  # end-of-generation tokens the server writes out, by id
        self._tok_cache: dict[tuple[str, bool, bool], list[int]] = {}
        self.text_prompts = 0  # prompts sent as text (an endpoint that takes no token ids)
        self.seam_splits = 0  # of those, how many its tokenizer reads back as other tokens
        self._noted: set[str] = set()

    def __repr__(self) -> str:  # never shows the key
        return f"ServerClient({self.url!r})"

    # --- plumbing -----------------------------------------------------------------------------------

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
            limits = httpx.Limits(
                max_connections=max(4, (self.parallel or 64) + 8), max_keepalive_connections=64
            )
            self._http = httpx.AsyncClient(
                base_url=self.url,
                headers=headers,
                limits=limits,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
            )
        return self._http

    @property
    def slots(self) -> int:
        return self.info.slots if self.info else (self.parallel or DEFAULT_SLOTS)

    @property
    def slots_free(self) -> Slots:
        """The server's slots as a counter requests take from (a request for n completions takes n
        at once, or waits: never part of them, so two such requests cannot block each other)."""
        if self._sem is None:
            self._sem = Slots(self.slots)
        return self._sem

    async def close(self) -> None:
        if self._watch is not None and not self._watch.done():
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        retries: int | None = None,
        timeout: float | None = None,
    ) -> Any:
        """One JSON call with retries. Raises ServerError (``dead`` when unreachable)."""
        tries = self.retries if retries is None else retries
        delay = self.backoff
        attempt = 0
        while True:
            attempt += 1
            try:
                kw: dict[str, Any] = {}
                if timeout is not None:
                    kw["timeout"] = httpx.Timeout(timeout, connect=min(timeout, self.connect_timeout))
                resp = await self.http.request(method, path, json=body, **kw)
            except httpx.ConnectError as e:
                # Refused or no route: one quick retry (a server restarting), then it is down.
                if attempt <= min(1, tries):
                    await asyncio.sleep(min(delay, 0.5))
                    continue
                raise ServerError(self.url, f"cannot connect ({_short(e)})", dead=True) from None
            except (
                httpx.TimeoutException,
                httpx.RemoteProtocolError,
                httpx.ReadError,
                httpx.WriteError,
            ) as e:
                if attempt <= tries:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 8.0)
                    continue
                kind = "timed out" if isinstance(e, httpx.TimeoutException) else "dropped the connection"
                raise ServerError(
                    self.url,
                    f"{kind} ({_short(e)}) after {attempt} tries",
                    transient=True,
                    dead=isinstance(e, httpx.RemoteProtocolError | httpx.ReadError),
                ) from None
            except httpx.HTTPError as e:
                raise ServerError(self.url, f"HTTP error: {_short(e)}") from None
            if resp.status_code in TRANSIENT_STATUS:
                if attempt <= tries:
                    await asyncio.sleep(_retry_after(resp, delay))
                    delay = min(delay * 2, 8.0)
                    continue
                raise ServerError(
                    self.url,
                    f"HTTP {resp.status_code} after {attempt} tries: {_error_text(resp)}",
                    transient=True,
                    status=resp.status_code,
                    body=_body(resp),
                )
            if resp.status_code in (401, 403):
                what = (
                    "refused the API key"
                    if self._api_key
                    else "needs an API key (--api-key or PONDER_API_KEY)"
                )
                raise ServerError(self.url, f"{what} (HTTP {resp.status_code}: {_error_text(resp)})")
            if resp.status_code >= 400:
                raise ServerError(
                    self.url,
                    f"HTTP {resp.status_code} on {path}: {_error_text(resp)}",
                    status=resp.status_code,
                    body=_body(resp),
                )
            try:
                return resp.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ServerError(
                    self.url, f"answered {path} with something that is not JSON: {resp.text[:120]!r}"
                ) from None

    # --- what the server is -------------------------------------------------------------------------

    async def probe(self, model: str | None = None) -> ServerInfo:
        """Ask the server what it serves; pick ``model`` among its models (the only one if None);
        which dialect it speaks, and what it can do (``probing.py``)."""
        self.info, self._dialect = await probe_server(self, model)
        self._sem = None
        return self.info

    async def health(self) -> bool:
        try:
            await self.call("GET", self.dialect.health_path, retries=0, timeout=5)
            return True
        except ServerError:
            return False

    async def refuses(self) -> str | None:
        """Why the server cannot be reached now, or None: it answered, or is only slow (a busy server
        whose probe times out is not taken for gone)."""
        try:
            await self.call(
                "GET",
                self.dialect.health_path,
                retries=0,
                timeout=max(5.0, self.probe_every),
            )
        except ServerError as e:
            return str(e).split(": ", 1)[-1] if e.dead else None
        return None

    async def watched(self, coro: Awaitable[T]) -> T:
        """Await ``coro``, a request sent to this server, while its health is probed every
        :attr:`probe_every` seconds (one probe loop for all its requests in flight). A refused probe
        ends every request in flight on it with a :class:`ServerError` (``dead``), as a dropped
        connection would."""
        if self._gone is None:
            self._gone = asyncio.Event()
        task = asyncio.ensure_future(coro)
        if self._gone.is_set():
            task.cancel()
            raise ServerError(self.url, f"stopped answering ({self._gone_why})", dead=True)
        self.in_flight += 1
        if self._watch is None or self._watch.done():
            self._watch = asyncio.ensure_future(self._watch_health())
        gone = asyncio.ensure_future(self._gone.wait())
        try:
            await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            task.cancel()
            raise
        finally:
            gone.cancel()
            self.in_flight -= 1
        if task.done():
            return task.result()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        raise ServerError(
            self.url,
            f"stopped answering: {self._gone_why} while a request was in flight; its connection "
            "is taken as dropped",
            dead=True,
        )

    async def _watch_health(self) -> None:
        assert self._gone is not None
        while self.in_flight > 0:
            await asyncio.sleep(self.probe_every)
            if self.in_flight <= 0:
                return
            self.probes += 1
            why = await self.refuses()
            if why is not None:
                self._gone_why = f"its health probe was refused ({why})"
                self._gone.set()
                return

    @property
    def dialect(self) -> Dialect:
        """What the server speaks and can do: found when it was probed (see
        :func:`~engine.backends.server.dialects.base.held`)."""
        self._dialect = held(self._dialect, self.info)
        return self._dialect

    # --- tokens -------------------------------------------------------------------------------------

    async def pooling(self, messages: list[dict[str, str]]) -> tuple[list[Any], int]:
        """vLLM's ``/pooling`` of one chat (rendered by the server with the model's own template, no
        generation prompt): what the model's head gives for each position it pools (a process reward
        model: a class distribution per step tag), and the prompt tokens it read."""
        body = await self.call(
            "POST",
            "/pooling",
            {
                "model": self.info.model if self.info else "",
                "messages": messages,
                "add_generation_prompt": False,
            },
        )
        try:
            data = body["data"][0]["data"]
            used = to_int((body.get("usage") or {}).get("prompt_tokens")) or 0
        except (KeyError, IndexError, TypeError):
            raise ServerError(self.url, f"answered /pooling without data: {str(body)[:160]}") from None
        if not isinstance(data, list):
            raise ServerError(self.url, f"answered /pooling with {type(data).__name__}, not a list")
        return data, used

    async def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        if self.tokenizer is not None:
            return self.tokenizer.tokenize(text, add_special, parse_special)
        key = (text, add_special, parse_special)
        hit = self._tok_cache.get(key)
        if hit is not None:
            return list(hit)
        model = self.info.model if self.info else ""
        body = await self.call(
            "POST", "/tokenize", self.dialect.tokenize_body(text, add_special, parse_special, model)
        )
        toks = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(toks, list) or not all(isinstance(t, int) for t in toks):
            raise ServerError(self.url, "answered /tokenize without a token list")
        if len(self._tok_cache) > 4096:
            self._tok_cache.clear()
        self._tok_cache[key] = list(toks)
        return list(toks)

    async def chat_tokens(
        self, messages: list[dict[str, str]], **variables: object
    ) -> tuple[list[int], str | None]:
        """A chat prompt's tokens, rendered with the model's own template (the very renderer and
        BOS rule the in-process path uses, when the server gives its template); and a warning when
        the model has no template."""
        if self.tokenizer is not None:
            return self.tokenizer.chat_tokens(messages, **variables)
        info = self.info
        if info is not None and (info.chat_template is not None or self.dialect.renders_chats):
            text, add_special, warning = chat_prompt(
                info.chat_template, messages, info.bos_token, info.eos_token, **variables
            )
            return await self.tokenize(text, add_special=add_special, parse_special=True), warning
        body = await self.call(
            "POST",
            "/tokenize",
            {"model": info.model if info else "", "messages": messages, "add_generation_prompt": True},
        )
        toks = body.get("tokens") if isinstance(body, dict) else None
        if not isinstance(toks, list):
            raise ServerError(
                self.url, "cannot render a chat prompt (no chat template in /props, no /tokenize)"
            )
        return [int(t) for t in toks], None

    def note_once(self, key: str, text: str) -> None:
        """Tell the user, once per server and ``key``, what it lacks and what Ponder does instead."""
        if key not in self._noted:
            self._noted.add(key)
            NOTES.info(text)

    def ids_of_texts(self, texts: list[str], text: str) -> list[int] | None:
        """The tokens of texts a server gave instead of ids, spelling ``text``, by the local
        tokenizer (None: none held, or no such tokens)."""
        return self.tokenizer.ids_of_texts(texts, text) if self.tokenizer is not None else None

    async def piece(self, token: int) -> bytes:
        if self.tokenizer is not None:
            return self.tokenizer.piece(token)
        p = self.pieces.get(token)
        if p is not None:
            return p
        try:
            model = self.info.model if self.info else ""
            body = await self.call("POST", "/detokenize", self.dialect.detokenize_body(token, model))
            text = self.dialect.detokenized(body)
        except ServerError:
            text = ""
        p = str(text).encode("utf-8")
        self.pieces[token] = p
        return p

    # --- completions --------------------------------------------------------------------------------

    async def complete(self, req: CompletionRequest) -> Completion:
        return (await self.complete_n(req))[0]

    async def complete_n(self, req: CompletionRequest) -> list[Completion]:
        """``req.n`` completions of one prompt (on a dialect that takes several per request, the
        prompt is decoded once and copied to ``n`` slots; completion ``i`` samples with seed
        ``seed + i``)."""
        return await self.dialect.complete(self, req)

    def prompt_text(self, ids: tuple[int, ...]) -> str | None:
        """The prompt as text, for an endpoint that takes no token ids (None: it takes them)."""
        if not (self.info and self.info.text_prompts):
            return None
        if self.tokenizer is None:
            raise ServerError(self.url, "takes text prompts only, and no tokenizer was given (--tokenizer)")
        self.text_prompts += 1
        if not self.tokenizer.reads_back(ids):
            self.seam_splits += 1
            self.note_once(
                "seam",
                f"{self.url} takes text prompts only, and a prompt of {len(ids)} tokens reads back as "
                "other tokens where its text joins a continuation: the server continues from its own "
                "reading there (the session records prompts: text, seam: retokenized)",
            )
        return self.tokenizer.prompt_text(ids)

    def request(self, req: CompletionRequest) -> tuple[str, dict[str, Any]]:
        """(path, body) of a completion in this server's dialect (the bench's minimal client sends
        the very same)."""
        return self.dialect.request(req, self.info.model if self.info else "", self.prompt_text(req.prompt))

    async def without_end_token(self, done: Completion) -> str:
        """``done``'s text without the end-of-generation token it may end on: the EOS the server
        names, any special token of the local tokenizer, or (it ended on EOS) the text of its last
        token, which from then on renders empty as in process."""
        text = done.text
        ends = {self.info.eos_token if self.info else ""}
        if self.tokenizer is not None:
            ends |= {
                self.tokenizer.eos_text,
                *(self.tokenizer.special_text(t) for t in self.tokenizer.specials),
            }
        elif done.ids:  # (a sample that drew EOS as its last allowed token says "length")
            last = done.ids[-1]
            end = self._end_texts.get(last)
            if end is None:
                end = (await self.piece(last)).decode("utf-8", errors="replace")
                # (only a token written as a special one, <|im_end|> or </s>: an engine that leaves
                # the EOS out of its ids, llama-server's OpenAI face, has a plain last token)
                if len(end) > 2 and end[0] == "<" and end[-1] == ">" and text.endswith(end):
                    self._end_texts[last] = end
                    self.pieces[last] = b""
            ends.add(self._end_texts.get(last, ""))
        for end in sorted((e for e in ends if e), key=len, reverse=True):
            if text.endswith(end):
                return text[: -len(end)]
        return text

    async def assemble(self, ids: list[int]) -> tuple[str, list[str]]:
        """Text and per-token pieces as the in-process path makes them: every token's bytes (special
        tokens render empty), a character split across tokens going to its last."""
        missing = [t for t in dict.fromkeys(ids) if t not in self.pieces]
        for t in missing:
            await self.piece(t)
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = [dec.decode(self.pieces.get(t, b"")) for t in ids]
        return "".join(pieces), pieces


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:160]
