"""Several servers of one model, and the event loop that talks to them.

:class:`LoopThread` runs one asyncio loop in a thread of its own; every HTTP request of every run is
a task there (no thread per request). :class:`ServerPool` chooses a server for each request:

* a continuation goes to the server that produced its parent (**prefix affinity**: the server's
  prefix cache holds the parent's tokens, so a beam's children cost only their new tokens);
* any other request goes to the server whose recent prompts share the longest prefix with it, unless
  that server's slots are all taken while another has a free one; otherwise to the least loaded;
* at most ``slots`` requests are in flight on a server (its ``/props`` ``total_slots``, or
  ``--parallel``); the rest wait for a slot;
* a server that cannot be reached is taken out and its requests go to the others; when none is
  left, the request fails with what the last server said. While requests are in flight a server's
  health is probed every few seconds, so one that stops answering without dropping its connections
  (llama-server given SIGTERM) is taken out in seconds too (``ServerClient.watched``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from engine.backends.prefix import common_prefix
from engine.backends.server.client import Completion, CompletionRequest, ServerClient, ServerError, ServerInfo
from engine.backends.server.dialects.base import Dialect
from engine.errors import PonderError
from engine.tokenizer import LocalTokenizer

T = TypeVar("T")
RECENT = 64  # prompts remembered per server for prefix affinity
MIN_AFFINITY = 8  # shorter shared prefixes do not pull a request to a server


async def gather_all(*aws: Awaitable[T]) -> list[T]:
    """``asyncio.gather`` that, when one awaitable fails, cancels the others and waits for them to end
    before raising (plain gather leaves them running, to be destroyed with the loop)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


def local_tokenizer(path: str | None, infos: Sequence[ServerInfo]) -> LocalTokenizer | None:
    """The tokenizer Ponder holds for these servers: the one given; else, where a server cannot
    tokenize or takes only text prompts, one found by the served model's name; else None (the
    servers tokenize). A tokenizer whose vocabulary is not the served model's is refused; the
    ``infos`` record the one chosen (and its model's parameters where the servers say none)."""
    from engine.tokenizer import TokenizerError, find_tokenizer, open_tokenizer

    needs = [i for i in infos if not i.pooling and (not i.tokenizes or i.text_prompts)]
    if path is None:
        if not needs:
            return None
        name = needs[0].served_as or needs[0].model
        found = find_tokenizer(name)
        if found is None:
            i = needs[0]
            cannot = ["cannot tokenize (no /tokenize)"] if not i.tokenizes else []
            if i.text_prompts:
                cannot.append("takes prompts as text only")
            raise PonderError(
                f"{i.url} {' and '.join(cannot)}, so Ponder tokenizes with the model's own tokenizer, "
                f"and found none for {name!r} among its models or the Hugging Face cache: give one "
                "(--tokenizer PATH, or Tokenizer in the app's Server… dialog): a GGUF of the model, or its "
                "folder with tokenizer.json."
            )
        path = str(found)
    try:
        tok = open_tokenizer(path)
    except TokenizerError as e:
        raise PonderError(f"--tokenizer: {e}") from None
    for i in infos:
        if i.n_vocab and tok.n_vocab and i.n_vocab != tok.n_vocab:
            raise PonderError(
                f"--tokenizer {tok.path} has {tok.n_vocab} tokens, but {i.url} serves a model with "
                f"{i.n_vocab}: give the served model's own tokenizer."
            )
    for i in infos:  # what the servers are now says which tokenizer Ponder holds, and its parameters
        i.tokenizer = tok.path
        i.n_params = i.n_params or tok.n_params
    return tok


def _params_by_name(infos: Sequence[ServerInfo]) -> None:
    """A server that does not say its model's parameters (vLLM, SGLang) gets them from the model's
    GGUF or Hugging Face folder found by its name, for FLOPs (``--model-params`` still wins)."""
    from engine.tokenizer import find_tokenizer, params_of

    known: dict[str, int | None] = {}  # several servers of one model: one look (it reads every GGUF header)
    for i in infos:
        if i.n_params is None:
            name = i.served_as or i.model
            if name not in known:
                found = find_tokenizer(name)
                known[name] = params_of(found) if found is not None else None
            i.n_params = known[name]


class LoopThread:
    """An asyncio event loop in a daemon thread; other threads hand it coroutines."""

    def __init__(self, name: str = "ponder-http") -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        fut = self.submit(coro)
        try:
            return fut.result(timeout)
        except BaseException:
            fut.cancel()
            raise

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def settle() -> None:  # tasks a failed run left behind end here, not at garbage collection
            me = asyncio.current_task()
            rest = [t for t in asyncio.all_tasks() if t is not me]
            for t in rest:
                t.cancel()
            await asyncio.gather(*rest, return_exceptions=True)

        if threading.current_thread() is not self._thread:  # (from the loop itself it would wait on itself)
            try:
                self.run(settle(), timeout=5)
            except Exception:  # noqa: BLE001 - closing: a task that will not end is left to the stop
                pass
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self.loop.close()


class ServerPool:
    """Servers serving the same model. Use :meth:`connect`; call its async methods in ``loop``."""

    def __init__(self, clients: list[ServerClient], loop: LoopThread, own_loop: bool = True) -> None:
        self.clients = clients
        self.loop = loop
        self._own_loop = own_loop
        self._recent: dict[int, deque[tuple[int, ...]]] = {id(c): deque(maxlen=RECENT) for c in clients}
        self._chat: dict[tuple, list[int]] = {}

    @classmethod
    def connect(
        cls,
        urls: Sequence[str],
        api_key: str | None = None,
        model: str | None = None,
        parallel: int | None = None,
        timeout: float = 600.0,
        retries: int = 4,
        loop: LoopThread | None = None,
        tokenizer: str | None = None,
    ) -> ServerPool:
        """Probe every server (health, model, slots) before anything runs; a server that cannot be
        reached, refuses the key or lacks the model is one clear error. ``tokenizer``: the model's own
        (a GGUF or a tokenizer.json folder), used for every server; without it, one is looked for by
        the served model's name where a server cannot tokenize or takes text prompts only."""
        if not urls:
            raise PonderError("No server given: --server URL (or PONDER_SERVER).")
        own = loop is None
        lt = loop or LoopThread()
        clients = [
            ServerClient(u, api_key, timeout=timeout, retries=retries, parallel=parallel) for u in urls
        ]
        seen = set()
        for c in clients:
            if c.url in seen:
                if own:
                    lt.close()
                raise PonderError(f"{c.url} is given twice.")
            seen.add(c.url)

        async def probe_all() -> list[ServerInfo]:
            return list(await asyncio.gather(*(c.probe(model) for c in clients)))

        async def close_all() -> None:
            await asyncio.gather(*(c.close() for c in clients))

        try:
            infos = lt.run(probe_all(), timeout=120)
        except BaseException:
            lt.run(close_all(), timeout=10)
            if own:
                lt.close()
            raise
        names = {i.model for i in infos}
        if len(names) > 1 and model is None:
            lt.run(close_all(), timeout=10)
            if own:
                lt.close()
            raise PonderError(
                "The servers serve different models ("
                + ", ".join(f"{i.url}: {i.model}" for i in infos)
                + "); give --model to choose one they all serve."
            )
        try:
            tok = local_tokenizer(tokenizer, infos)
        except BaseException:
            lt.run(close_all(), timeout=10)
            if own:
                lt.close()
            raise
        for c in clients:
            c.tokenizer = tok
            if c.info is not None and c.info.text_prompts and not c.info.pooling and tok is not None:
                c.note_once(
                    "token ids",
                    f"{c.url} takes no token-id prompts ({c.info.refused_ids or 'refused'}): each "
                    f"prompt goes as text, tokens counted by the tokenizer {tok.path}",
                )
        _params_by_name(infos)
        return cls(clients, lt, own_loop=own)

    # --- what it is ---------------------------------------------------------------------------------

    @property
    def infos(self) -> list[ServerInfo]:
        return [c.info for c in self.clients if c.info is not None]

    @property
    def info(self) -> ServerInfo:
        return self.infos[0]

    @property
    def dialect(self) -> Dialect:
        """What the first server (the one :attr:`info` describes) speaks and can do."""
        return next(c for c in self.clients if c.info is not None).dialect

    @property
    def alive(self) -> list[ServerClient]:
        return [c for c in self.clients if c.alive]

    @property
    def total_slots(self) -> int:
        return sum(c.slots for c in self.alive)

    def close(self) -> None:
        if self.loop.loop.is_closed():
            return

        async def close_all() -> None:
            await asyncio.gather(*(c.close() for c in self.clients))

        try:
            self.loop.run(close_all(), timeout=10)
        except Exception:  # noqa: BLE001 - closing: nothing to report to
            pass
        if self._own_loop:
            self.loop.close()

    # --- choosing a server --------------------------------------------------------------------------

    def _load(self, c: ServerClient) -> float:
        return c.outstanding / max(1, c.slots)

    def choose(self, prompt: Sequence[int], affinity: ServerClient | None = None) -> ServerClient:
        alive = self.alive
        if not alive:
            raise PonderError("Every server is down.")
        if affinity is not None and affinity.alive:
            return affinity
        free = [c for c in alive if c.outstanding < c.slots]
        prompt = tuple(prompt)
        best, best_k = None, MIN_AFFINITY - 1
        for c in alive:
            for p in self._recent[id(c)]:
                if len(p) > best_k and p[: best_k + 1] == prompt[: best_k + 1]:
                    k = common_prefix(p, prompt)
                    if k > best_k:
                        best, best_k = c, k
        if best is not None and (best.outstanding < best.slots or not free):
            return best
        pool = free or alive
        return min(pool, key=lambda c: (self._load(c), c.outstanding))

    def _remember(self, c: ServerClient, ids: Sequence[int]) -> None:
        self._recent[id(c)].append(tuple(ids))

    # --- requests (in the loop) ---------------------------------------------------------------------

    async def complete(
        self, req: CompletionRequest, affinity: ServerClient | None = None
    ) -> tuple[Completion, ServerClient]:
        """Run one completion on a chosen server; a server found dead is taken out and the request
        goes to another. Returns the completion and the server that made it."""
        outs, c = await self.complete_n(req, affinity)
        return outs[0], c

    @property
    def group_limit(self) -> int:
        """How many completions of one prompt may go in one request (all of them need a slot at
        once: no more than the smallest server has)."""
        alive = self.alive
        if not alive or not all(c.dialect.several_per_request for c in alive):
            return 1
        # The server's own slot count: a group larger than it would wait for ever (--parallel may
        # say more than the server has).
        return max(1, min(min(c.slots, (c.info.server_slots if c.info else None) or 1) for c in alive))

    async def complete_n(
        self, req: CompletionRequest, affinity: ServerClient | None = None
    ) -> tuple[list[Completion], ServerClient]:
        """:meth:`complete` for ``req.n`` completions of one prompt, on one server."""
        last: ServerError | None = None
        tried: set[int] = set()
        while True:
            try:
                c = self.choose(
                    req.prompt, affinity if affinity is not None and id(affinity) not in tried else None
                )
            except PonderError:
                if last is not None:
                    raise ServerError(
                        last.server, f"{str(last).split(': ', 1)[-1]}; no other server is left", dead=True
                    ) from None
                raise
            tried.add(id(c))
            c.outstanding += req.n
            try:
                await c.slots_free.acquire(req.n)
                try:
                    outs = await c.watched(c.complete_n(req))
                finally:
                    c.slots_free.release(req.n)
            except ServerError as e:
                if e.dead and not await c.health():
                    c.alive = False
                    last = e
                    continue  # its work moves to the servers left
                raise
            finally:
                c.outstanding -= req.n
            for out in outs:
                self._remember(c, (*req.prompt, *out.ids))
            return outs, c

    async def _on_any(self, call: Callable[[ServerClient], Awaitable[T]]) -> T:
        """``call(client)`` on the first server that answers; one that cannot be reached is taken out."""
        last: Exception | None = None
        for c in self.alive:
            try:
                return await call(c)
            except ServerError as e:
                if not e.dead:
                    raise
                c.alive = False
                last = e
        raise last or PonderError("Every server is down.")

    async def chat_tokens(self, messages: tuple[tuple[str, str], ...], template: tuple = ()) -> list[int]:
        key = (messages, template) if template else messages
        hit = self._chat.get(key)
        if hit is not None:
            return hit

        async def render(c: ServerClient) -> list[int]:
            msgs = [{"role": r, "content": t} for r, t in messages]
            toks, warning = await c.chat_tokens(msgs, **dict(template))
            if warning:
                c.note_once("template", f"{c.url}: {warning}")
            return toks

        toks = await self._on_any(render)
        if len(self._chat) > 512:
            self._chat.clear()
        self._chat[key] = toks
        return toks

    async def tokenize(self, text: str, add_special: bool = False, parse_special: bool = True) -> list[int]:
        return await self._on_any(lambda c: c.tokenize(text, add_special, parse_special))

    def record(self) -> dict[str, Any]:
        info = self.info
        return {
            "servers": [c.url for c in self.clients],
            "model": info.model,
            "dialect": info.dialect,
            "build": info.build,
            "model_path": info.model_path,
            "slots": [c.slots for c in self.clients],
            "n_ctx": info.n_ctx,
            "n_params": info.n_params,
            "served_as": info.served_as,
            "tokenizer": info.tokenizer,
            "prompts": "text" if any(i.text_prompts for i in self.infos) else "tokens",
            # Text prompts are read back by the server's tokenizer, which may split a continuation
            # otherwise where its text joins the prompt ("retokenized"; docs/servers.md).
            **({"seam": "retokenized"} if any(i.text_prompts for i in self.infos) else {}),
            **(
                {"token_ids_refused": next(i.refused_ids for i in self.infos if i.text_prompts)}
                if any(i.text_prompts and i.refused_ids for i in self.infos)
                else {}
            ),
            **({"pooling": True} if any(i.pooling for i in self.infos) else {}),
        }


def describe_server(
    url: str, api_key: str | None = None, timeout: float = 30.0, tokenizer: str | None = None
) -> list[ServerInfo]:
    """Every model a server serves, with its slots and build (for the app's model list), and the local
    tokenizer it needs (``tokenizer``, else found by name: see :func:`local_tokenizer`). Raises
    ServerError when it cannot be reached or refuses the key, PonderError when it needs a tokenizer
    and none is given or found."""
    lt = LoopThread("ponder-probe")

    async def go() -> list[ServerInfo]:
        client = ServerClient(url, api_key, timeout=timeout, retries=0)
        try:
            try:
                return [await client.probe(None)]
            except ServerError as e:
                if "several models" not in str(e):
                    raise
            body = await client.call("GET", "/v1/models", retries=0)
            ids = [str(m["id"]) for m in body.get("data", []) if isinstance(m, dict) and m.get("id")]
            return [await client.probe(i) for i in ids]
        finally:
            await client.close()

    try:
        infos = lt.run(go(), timeout=timeout + 10)
    finally:
        lt.close()
    local_tokenizer(tokenizer, infos)
    return infos
