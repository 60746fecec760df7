"""One inference server spoken to over HTTP: llama-server, or any OpenAI-compatible engine (vLLM,
SGLang, ...).

Two dialects, found by asking the server (``/props`` answers only on llama-server):

* ``llama-server``: its own ``/completion`` endpoint (the llama.cpp server README) with
  ``cache_prompt``, ``return_tokens`` and ``n_probs``: prompts and continuations travel as token
  ids, so a beam's child continues from exactly the tokens its parent produced, and every generated
  token comes back with its id;
* ``openai``: ``/v1/completions`` with the prompt as token ids and ``logprobs``; token ids come from
  vLLM's ``return_tokens_as_token_ids`` or llama-server's ``logprobs.content[].id``, else from
  ``/tokenize``.

Every call has a timeout; connection failures, timeouts, HTTP 429 and 5xx are retried with
exponential backoff (honouring ``Retry-After``), then reported as a :class:`ServerError` that names
the server. The API key goes only into the ``Authorization`` header: it is never part of a URL,
message or record this module makes.
"""

from __future__ import annotations

import asyncio
import codecs
import email.utils
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from engine.errors import PonderError

TRANSIENT_STATUS = (408, 429, 500, 502, 503, 504)
DEFAULT_SLOTS = 16  # an OpenAI-compatible server that does not say (vLLM batches far more)


class ServerError(PonderError):
    """A server refused, failed or answered nonsense. ``dead``: it cannot be reached at all."""

    def __init__(self, server: str, message: str, *, dead: bool = False, transient: bool = False) -> None:
        super().__init__(f"{server}: {message}")
        self.server = server
        self.dead = dead
        self.transient = transient


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
    dialect: str  # "llama-server" | "openai"
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


def _error_text(resp: httpx.Response) -> str:
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
    ) -> None:
        self.url, key_in_url = split_url(url)
        self._api_key = api_key or key_in_url
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.backoff = backoff
        self.parallel = parallel
        self.info: ServerInfo | None = None
        self.alive = True
        self.outstanding = 0  # requests sent or waiting for a slot
        self._sem: Slots | None = None
        self._http: httpx.AsyncClient | None = None
        self._pieces: dict[int, bytes] = {}
        self._tok_cache: dict[tuple[str, bool, bool], list[int]] = {}

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
                )
            if resp.status_code in (401, 403):
                what = (
                    "refused the API key"
                    if self._api_key
                    else "needs an API key (--api-key or PONDER_API_KEY)"
                )
                raise ServerError(self.url, f"{what} (HTTP {resp.status_code}: {_error_text(resp)})")
            if resp.status_code >= 400:
                raise ServerError(self.url, f"HTTP {resp.status_code} on {path}: {_error_text(resp)}")
            try:
                return resp.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise ServerError(
                    self.url, f"answered {path} with something that is not JSON: {resp.text[:120]!r}"
                ) from None

    # --- what the server is -------------------------------------------------------------------------

    async def probe(self, model: str | None = None) -> ServerInfo:
        """Ask the server what it serves; pick ``model`` among its models (the only one if None)."""
        props = None
        try:
            props = await self.call("GET", "/props", retries=1, timeout=30)
        except ServerError as e:
            if e.dead or "API key" in str(e):
                raise
        models_body = await self.call("GET", "/v1/models", retries=1, timeout=30)
        data = models_body.get("data") if isinstance(models_body, dict) else None
        if not isinstance(data, list):
            raise ServerError(self.url, "answered /v1/models without a model list")
        entries = [m for m in data if isinstance(m, dict) and m.get("id")]
        ids = [str(m["id"]) for m in entries]
        if not ids:
            raise ServerError(self.url, "serves no model")
        aliases: dict[str, str] = {}
        for m in entries:
            for a in m.get("aliases") or []:
                aliases[str(a)] = str(m["id"])
        if model is None:
            if len(ids) > 1:
                raise ServerError(
                    self.url, f"serves several models; choose one with --model: {', '.join(ids)}"
                )
            chosen = ids[0]
        elif model in ids:
            chosen = model
        elif model in aliases:
            chosen = aliases[model]
        else:
            raise ServerError(self.url, f"has no model {model!r}; it serves: {', '.join(ids)}")
        entry = next(m for m in entries if str(m["id"]) == chosen)
        meta = entry.get("meta") if isinstance(entry.get("meta"), dict) else {}
        is_llama = isinstance(props, dict) and ("total_slots" in props or "build_info" in props)
        if is_llama:
            assert isinstance(props, dict)
            gen = props.get("default_generation_settings") or {}
            info = ServerInfo(
                url=self.url,
                dialect="llama-server",
                model=chosen,
                models=ids,
                slots=self.parallel or int(props.get("total_slots") or 1),
                n_ctx=_int(gen.get("n_ctx")) or _int(meta.get("n_ctx")),
                n_params=_int(meta.get("n_params")),
                n_vocab=_int(meta.get("n_vocab")),
                build=str(props.get("build_info") or ""),
                model_path=str(props.get("model_path") or ""),
                chat_template=props.get("chat_template") or None,
                bos_token=str(props.get("bos_token") or ""),
                eos_token=str(props.get("eos_token") or ""),
                owned_by=str(entry.get("owned_by") or "llamacpp"),
                server_slots=_int(props.get("total_slots")),
            )
        else:
            version = ""
            try:
                v = await self.call("GET", "/version", retries=0, timeout=10)
                version = str(v.get("version", "")) if isinstance(v, dict) else ""
            except ServerError:
                pass
            info = ServerInfo(
                url=self.url,
                dialect="openai",
                model=chosen,
                models=ids,
                slots=self.parallel or DEFAULT_SLOTS,
                n_ctx=_int(entry.get("max_model_len")),
                build=(f"{entry.get('owned_by', '')} {version}").strip(),
                owned_by=str(entry.get("owned_by") or ""),
            )
        self.info = info
        self._sem = None
        return info

    async def health(self) -> bool:
        try:
            await self.call(
                "GET", "/health" if self.dialect == "llama-server" else "/v1/models", retries=0, timeout=5
            )
            return True
        except ServerError:
            return False

    @property
    def dialect(self) -> str:
        return self.info.dialect if self.info else "openai"

    # --- tokens -------------------------------------------------------------------------------------

    async def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        key = (text, add_special, parse_special)
        hit = self._tok_cache.get(key)
        if hit is not None:
            return list(hit)
        if self.dialect == "llama-server":
            body = await self.call(
                "POST",
                "/tokenize",
                {
                    "content": text,
                    "add_special": add_special,
                    "parse_special": parse_special,
                    "with_pieces": False,
                },
            )
        else:
            # vLLM and SGLang read "prompt"; llama-server (on its OpenAI-compatible face) "content".
            body = await self.call(
                "POST",
                "/tokenize",
                {
                    "model": self.info.model if self.info else "",
                    "prompt": text,
                    "add_special_tokens": add_special,
                    "content": text,
                    "add_special": add_special,
                    "parse_special": parse_special,
                },
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
        info = self.info
        if info is not None and (info.chat_template is not None or info.dialect == "llama-server"):
            from engine.chat import render_chat

            text, warning = render_chat(
                info.chat_template,
                messages,
                bos_token=info.bos_token,
                eos_token=info.eos_token,
                add_generation_prompt=True,
                **variables,
            )
            add_special = not (info.bos_token and text.startswith(info.bos_token))
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

    async def piece(self, token: int) -> bytes:
        p = self._pieces.get(token)
        if p is not None:
            return p
        try:
            if self.dialect == "llama-server":
                body = await self.call("POST", "/detokenize", {"tokens": [token]})
                text = body.get("content", "") if isinstance(body, dict) else ""
            else:
                body = await self.call(
                    "POST", "/detokenize", {"model": self.info.model if self.info else "", "tokens": [token]}
                )
                text = body.get("prompt", "") if isinstance(body, dict) else ""
        except ServerError:
            text = ""
        p = str(text).encode("utf-8")
        self._pieces[token] = p
        return p

    # --- completions --------------------------------------------------------------------------------

    async def complete(self, req: CompletionRequest) -> Completion:
        return (await self.complete_n(req))[0]

    async def complete_n(self, req: CompletionRequest) -> list[Completion]:
        """``req.n`` completions of one prompt (llama-server decodes the prompt once and copies it
        to ``n`` slots; completion ``i`` samples with seed ``seed + i``)."""
        if self.dialect == "llama-server":
            return await self._complete_llama(req)
        if req.n != 1:
            raise ServerError(self.url, "several completions per request are sent to llama-server only")
        return [await self._complete_openai(req)]

    def llama_body(self, req: CompletionRequest) -> dict[str, Any]:
        """The /completion request body: plain temperature sampling (every other sampler of
        llama-server's chain set to do nothing), token ids in and out, the prefix cache on."""
        body: dict[str, Any] = {
            "prompt": list(req.prompt),
            "n_predict": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "top_k": req.top_k,
            "min_p": req.min_p,
            "typical_p": 1.0,
            "repeat_penalty": 1.0,
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "dry_multiplier": 0.0,
            "xtc_probability": 0.0,
            "seed": req.seed,
            "stop": list(req.stop),
            "ignore_eos": req.ignore_eos,
            "n_probs": req.n_probs,
            "return_tokens": True,
            "cache_prompt": True,
            "stream": False,
        }
        if req.n > 1:
            body["n_cmpl"] = req.n
        if self.info and self.info.model:
            body["model"] = self.info.model
        return body

    async def _complete_llama(self, req: CompletionRequest) -> list[Completion]:
        body = self.llama_body(req)
        r = await self.call("POST", "/completion", body)
        results = r if isinstance(r, list) else [r]
        if len(results) != req.n or not all(isinstance(x, dict) for x in results):
            raise ServerError(self.url, f"answered {len(results)} completions for {req.n} asked")
        results = sorted(results, key=lambda x: _int(x.get("index")) or 0)
        return [await self._parse_llama(x) for x in results]

    async def _parse_llama(self, r: dict[str, Any]) -> Completion:
        try:
            ids = [int(t) for t in r["tokens"]]
            probs = r.get("completion_probabilities") or []
            stop_type = str(r.get("stop_type", ""))
            timings = r.get("timings") or {}
        except (KeyError, TypeError, ValueError):
            raise ServerError(self.url, f"answered /completion without tokens: {str(r)[:160]}") from None
        finish = {"eos": "eos", "word": "stop", "limit": "length"}.get(stop_type, "length")
        # Logprobs and bytes come per token, in order; the server leaves out the tokens of a stop
        # word (and a token ending inside a UTF-8 character): match them up by id.
        lps: list[float | None] = [None] * len(ids)
        first_top: list[tuple[int | None, str, float]] = []
        j = 0
        for entry in probs:
            if not isinstance(entry, dict):
                continue
            tid = entry.get("id")
            while j < len(ids) and ids[j] != tid:
                j += 1
            if j >= len(ids):
                break
            lps[j] = _float(entry.get("logprob"))
            raw = entry.get("bytes")
            if isinstance(raw, list) and ids[j] not in self._pieces:
                self._pieces[ids[j]] = bytes(int(b) & 0xFF for b in raw)
            if j == 0:
                top = entry.get("top_logprobs") or []
                first_top = [
                    (t.get("id"), str(t.get("token", "")), _float(t.get("logprob")) or -1e30)
                    for t in top
                    if isinstance(t, dict)
                ]
            j += 1
        text, pieces = await self._assemble(ids)
        prompt_n = _int(timings.get("prompt_n"))
        cached_n = _int(timings.get("cache_n"))
        if prompt_n is None:
            prompt_n = max(0, (_int(r.get("tokens_evaluated")) or 0) - (cached_n or 0))
        return Completion(
            ids=ids,
            text=text,
            pieces=pieces,
            logprobs=[0.0 if lp is None else lp for lp in lps],
            finish=finish,
            prompt_n=prompt_n,
            cached_n=cached_n or 0,
            top=first_top,
        )

    def openai_body(self, req: CompletionRequest) -> dict[str, Any]:
        """The /v1/completions request body, with the extensions vLLM and SGLang read to return
        token ids and keep the stop string (others ignore them)."""
        body: dict[str, Any] = {
            "model": self.info.model if self.info else "",
            "prompt": list(req.prompt),
            "max_tokens": req.max_tokens,
            "temperature": req.temperature,
            "top_p": req.top_p,
            "seed": req.seed,
            "stop": list(req.stop) or None,
            "logprobs": max(1, req.n_probs),
            "n": 1,
            "stream": False,
            "ignore_eos": req.ignore_eos,
            # vLLM: token ids in the logprobs, the stop string kept; SGLang: the stop string kept.
            "return_tokens_as_token_ids": True,
            "include_stop_str_in_output": True,
            "no_stop_trim": True,
            "skip_special_tokens": False,
            "min_p": req.min_p,
            "cache_prompt": True,
        }
        if req.top_k > 0:
            body["top_k"] = req.top_k
        return body

    def request(self, req: CompletionRequest) -> tuple[str, dict[str, Any]]:
        """(path, body) of a completion in this server's dialect (the bench's minimal client sends
        the very same)."""
        if self.dialect == "llama-server":
            return "/completion", self.llama_body(req)
        return "/v1/completions", self.openai_body(req)

    async def _complete_openai(self, req: CompletionRequest) -> Completion:
        body = self.openai_body(req)
        r = await self.call("POST", "/v1/completions", body)
        try:
            choice = r["choices"][0]
            text = str(choice.get("text") or "")
            reason = choice.get("finish_reason")
            usage = r.get("usage") or {}
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ServerError(
                self.url, f"answered /v1/completions without a choice: {str(r)[:160]}"
            ) from None
        lp = choice.get("logprobs") or {}
        ids: list[int] = []
        lps: list[float] = []
        top: list[tuple[int | None, str, float]] = []
        if isinstance(lp, dict) and isinstance(lp.get("content"), list):  # llama-server, newer OpenAI
            for k, e in enumerate(lp["content"]):
                if isinstance(e, dict) and isinstance(e.get("id"), int):
                    ids.append(int(e["id"]))
                    lps.append(_float(e.get("logprob")) or 0.0)
                    if k == 0:
                        top = [
                            (t.get("id"), str(t.get("token", "")), _float(t.get("logprob")) or -1e30)
                            for t in e.get("top_logprobs") or []
                            if isinstance(t, dict)
                        ]
        elif isinstance(lp, dict) and isinstance(lp.get("tokens"), list):  # vLLM, SGLang (legacy)
            for k, (tok, value) in enumerate(zip(lp["tokens"], lp.get("token_logprobs") or [], strict=False)):
                tid = _token_id(tok)
                if tid is None:
                    ids = []
                    break
                ids.append(tid)
                lps.append(_float(value) or 0.0)
                if k == 0 and lp.get("top_logprobs"):
                    first = lp["top_logprobs"][0] or {}
                    top = [(_token_id(t), str(t), _float(v) or -1e30) for t, v in first.items()]
        n_done = _int(usage.get("completion_tokens")) or len(ids)
        # Why it ended: vLLM says stop_reason (None: EOS; the stop string), SGLang matched_stop;
        # llama-server's OpenAI path says neither, and leaves the stop word out of text and logprobs.
        said = "stop_reason" in choice or "matched_stop" in choice
        stop_reason = choice.get("stop_reason", choice.get("matched_stop"))
        if reason != "stop":
            finish = "length"
        elif isinstance(stop_reason, str):
            finish = "stop"
        elif said:
            finish = "eos"
        elif req.stop and (n_done > len(ids) or any(text.endswith(x) for x in req.stop)):
            finish = "stop"
        else:
            finish = "eos"
        if finish == "stop" and req.stop and not any(text.endswith(x) for x in req.stop):
            text += stop_reason if isinstance(stop_reason, str) else req.stop[0]  # a step keeps its delimiter
        if not ids or len(ids) < (_int(usage.get("completion_tokens")) or 0):
            # Ids the server did not give: from the text (exact for what the model would read back).
            known = b"".join([await self.piece(t) for t in ids]).decode("utf-8", errors="replace")
            rest = text[len(known) :] if text.startswith(known) else text
            more = await self.tokenize(rest, add_special=False, parse_special=False) if rest else []
            if not text.startswith(known):
                ids, lps = more, [0.0] * len(more)
            else:
                ids, lps = ids + more, lps + [0.0] * len(more)
        if len(lps) < len(ids):
            lps += [0.0] * (len(ids) - len(lps))
        _text, pieces = await self._assemble(ids)
        if "".join(pieces) != text:  # keep the server's text; spread it over the pieces we have
            pieces = _spread(text, len(ids))
        details = usage.get("prompt_tokens_details") or {}
        cached = _int(details.get("cached_tokens")) or 0
        return Completion(
            ids=ids,
            text=text,
            pieces=pieces,
            logprobs=lps[: len(ids)],
            finish=finish,
            prompt_n=max(0, (_int(usage.get("prompt_tokens")) or len(req.prompt)) - cached),
            cached_n=cached,
            top=top,
        )

    async def _assemble(self, ids: list[int]) -> tuple[str, list[str]]:
        """Text and per-token pieces as the in-process path makes them: every token's bytes (special
        tokens render empty), a character split across tokens going to its last."""
        missing = [t for t in dict.fromkeys(ids) if t not in self._pieces]
        for t in missing:
            await self.piece(t)
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        pieces = [dec.decode(self._pieces.get(t, b"")) for t in ids]
        return "".join(pieces), pieces


def _spread(text: str, n: int) -> list[str]:
    if n <= 0:
        return []
    return [""] * (n - 1) + [text]


def _token_id(tok: Any) -> int | None:
    if isinstance(tok, int):
        return tok
    if isinstance(tok, str) and tok.startswith("token_id:"):
        try:
            return int(tok[9:])
        except ValueError:
            return None
    return None


def _int(v: Any) -> int | None:
    try:
        return int(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _float(v: Any) -> float | None:
    try:
        return float(v) if v is not None else None
    except (TypeError, ValueError):
        return None


def _short(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    return text.splitlines()[0][:160]
