"""The :class:`~engine.executor.Executor` for inference servers.

Every Generate item is one completion request; all requests of all runs are in flight at once (the
pool bounds each server to its slots and queues the rest), and :meth:`ServerExecutor.poll` returns
as soon as any run's request is answered. A node remembers its tokens (prompt and generated) and
the server that made it, so a continuation sends exactly those tokens back to that server, whose
prefix cache holds them. A request that keeps failing fails only its own run; the others go on.
"""

from __future__ import annotations

import concurrent.futures
import queue
import time
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any

from engine.backends.server.client import Completion, CompletionRequest, ServerClient
from engine.backends.server.pool import ServerPool, gather_all
from engine.backends.server.prm import ServerPRMHost
from engine.errors import Cancelled, InvalidRequestError, PonderError
from engine.executor import (
    PRM,
    Delta,
    Executor,
    GenDone,
    Outcome,
    RunFailed,
    ScoreAsk,
    ScoreDone,
    awaited,
    pooled,
    split_scores,
)
from engine.protocol import Generated, GenItem

POLL_S = 0.1  # how often a waiting poll looks at the cancel flag


@dataclass
class _Node:
    ids: tuple[int, ...]  # prompt and generated tokens: what a continuation sends
    server: ServerClient
    prompt_len: int = 0  # how many of ids are the prompt
    text: str = ""  # the generated text


@dataclass
class _RunState:
    nodes: dict[int, _Node] = field(default_factory=dict)
    futures: set[concurrent.futures.Future] = field(default_factory=set)


class ServerExecutor(Executor):
    kind = "server"

    def __init__(self, pool: ServerPool, prm_pool: ServerPool | None = None) -> None:
        self.pool = pool
        self.prm_pool = prm_pool
        self._runs: dict[str, _RunState] = {}
        self._shared: set[concurrent.futures.Future] = set()  # score passes several runs wait on
        self._q: queue.Queue[tuple[int, str, str, concurrent.futures.Future, Any]] = queue.Queue()
        self._pending = 0
        self._epoch = 0  # answers of an earlier compare (cancelled requests) are told apart by it

    # --- records ------------------------------------------------------------------------------------

    def model_record(self) -> dict[str, Any]:
        info = self.pool.info
        rec = self.pool.record()
        return {
            "backend": self.kind,
            "name": info.served_as or info.model,
            "path": info.model_path,
            "file_size": 0,
            "sha256_1mb": "",
            "quantization": "",
            "n_gpu_layers_requested": 0,
            "n_layers_offloaded": 0,
            "accelerator": "server",
            "n_params": info.n_params,
            "servers": rec["servers"],
            "server_build": info.build,
            "dialect": info.dialect,
            "slots": rec["slots"],
        }

    @property
    def slots(self) -> int:
        """Requests the servers serve at once (a sweep keeps about this many in flight)."""
        return self.pool.total_slots

    def session_settings(self) -> dict[str, Any]:
        backend = {"kind": self.kind, **self.pool.record()}
        if self.prm_pool is not None:
            backend["prm"] = self.prm_pool.record()
        return {"backend": backend, "model_path": "", "config": {}}

    # --- PRMs ---------------------------------------------------------------------------------------

    def make_prm(self, spec: str, reference: str | None) -> PRM:
        """The PRM ``spec`` names, built by its kind (``engine/prm/kinds/``) on the PRM server when
        one was given, else on the policy's servers. A PRM server that only pools (found by probing
        it) serves a classification head, whatever a model-reading ``--prm`` said."""
        from engine.prm import registry

        where = registry.Where(servers=True, prm_server=self.prm_pool is not None)
        pools_only = self.prm_pool is not None and self.prm_pool.info.pooling
        kind = registry.resolve(spec, where, pools_only=pools_only)
        host = ServerPRMHost(self.pool, self.prm_pool, self.n_params_override)
        return kind.build_on_server(host, spec, reference)

    # --- requests -----------------------------------------------------------------------------------

    def _state(self, run_id: str) -> _RunState:
        st = self._runs.get(run_id)
        if st is None:
            st = self._runs[run_id] = _RunState()
        return st

    def _submit(self, run_id: str, kind: str, coro: Coroutine[Any, Any, object], meta: Any) -> None:
        fut = self.pool.loop.submit(coro)
        if kind == "score":
            self._shared.add(fut)
        else:
            self._state(run_id).futures.add(fut)
        self._pending += 1
        epoch = self._epoch
        fut.add_done_callback(lambda f: self._q.put((epoch, run_id, kind, f, meta)))

    def generate(self, run_id: str, items: Sequence[GenItem], keep_prompt: tuple | None = None) -> None:
        st = self._state(run_id)
        plan: list[tuple[GenItem, Any, ServerClient | None]] = []
        for item in items:
            if item.parent is not None:
                parent = st.nodes.get(item.parent)
                if parent is None:
                    raise PonderError(f"run {run_id} continued node {item.parent}, which it does not hold")
                if item.messages is not None:  # a chat that begins with the parent's: the prefix cache
                    plan.append((item, None, parent.server))  # of the server that holds it reuses it
                elif item.prefix or item.cut:
                    plan.append((item, self._forced(parent, item), parent.server))
                else:
                    plan.append((item, parent.ids, parent.server))
            else:
                plan.append((item, None, None))
        self._submit(run_id, "gen", self._generate(plan), [p[0] for p in plan])

    async def _generate(
        self, plan: list[tuple[GenItem, Any, ServerClient | None]]
    ) -> list[tuple[Completion, ServerClient, tuple[int, ...]]]:
        """Every item's completion, all requested at once. Items that start from the same chat
        with the same settings (best-of-N's samples, beam search's first round) go to llama-server
        as one request for several completions: the prompt is decoded once and copied to the slots
        (sample ``i`` of a group is seeded with the group's first seed + ``i``)."""
        info = self.pool.info

        def request(item: GenItem, prompt: tuple[int, ...], n: int = 1) -> CompletionRequest:
            p = item.params
            max_tokens = p.max_tokens
            if info.n_ctx:  # a server that says its context: no request that cannot fit
                room = info.n_ctx - len(prompt)
                if room < 1:
                    raise InvalidRequestError(
                        f"The prompt is {len(prompt)} tokens, but the server's context holds "
                        f"{info.n_ctx}: shorten the problem or start the server with a larger -c."
                    )
                max_tokens = min(max_tokens, room)
            return CompletionRequest(
                prompt=prompt,
                max_tokens=max(1, max_tokens),
                temperature=p.temperature,
                top_p=p.top_p,
                top_k=p.top_k,
                min_p=p.min_p,
                seed=p.seed & 0x7FFFFFFF,
                stop=tuple(p.stop),
                ignore_eos=p.ignore_eos,
                n_probs=1,
                n=n,
            )

        async def one(item: GenItem, prompt: Any, server: ServerClient | None):
            if prompt is None:
                assert item.messages is not None
                prompt = tuple(await self.pool.chat_tokens(item.messages, item.template))
            elif callable(prompt):  # a continuation with forced text
                prompt = tuple(await prompt())
            done, srv = await self.pool.complete(request(item, prompt), affinity=server)
            return [(done, srv, prompt)]

        async def group(items: list[GenItem]):
            assert items[0].messages is not None
            prompt = tuple(await self.pool.chat_tokens(items[0].messages, items[0].template))
            outs, srv = await self.pool.complete_n(request(items[0], prompt, len(items)))
            for done in outs[1:]:  # the prompt was decoded once, for the first; the others got a copy
                done.cached_n += done.prompt_n
                done.prompt_n = 0
            return [(done, srv, prompt) for done in outs]

        limit = self.pool.group_limit
        if limit == 1:
            firsts = [item.messages for item, prompt, _ in plan if prompt is None]
            if len(firsts) > len(set(firsts)):
                for c in (c for c in self.pool.alive if not c.dialect.several_per_request):
                    c.note_once(
                        "n",
                        f"{c.url} gets one request per sample (several completions of one prompt "
                        "in one request go to llama-server only): samples of a prompt go side by side",
                    )
        work: list[tuple[Any, list[int]]] = []  # (coroutine, the plan indices it answers for)
        groups: dict[tuple, list[int]] = {}
        for k, (item, prompt, server) in enumerate(plan):
            if prompt is None and limit > 1:
                p = item.params
                key = (
                    item.messages,
                    item.template,
                    p.temperature,
                    p.top_p,
                    p.top_k,
                    p.min_p,
                    p.max_tokens,
                    p.stop,
                    p.ignore_eos,
                )
                groups.setdefault(key, []).append(k)
            else:
                work.append((one(item, prompt, server), [k]))
        for members in groups.values():
            for i in range(0, len(members), limit):
                ks = members[i : i + limit]
                job = group([plan[k][0] for k in ks]) if len(ks) > 1 else one(*plan[ks[0]])
                work.append((job, ks))
        results: list[Any] = [None] * len(plan)
        answers = await gather_all(*(job for job, _ in work))
        for (_, ks), outs in zip(work, answers, strict=True):
            for k, out in zip(ks, outs, strict=True):
                results[k] = out
        return results

    def _forced(self, parent: _Node, item: GenItem) -> Any:
        """The prompt of a continuation with forced text: the parent's prompt, then its text (less
        ``cut``) and the prefix, tokenized again (so an end-of-generation token that ended it is
        gone); the server's prefix cache still holds the shared start."""
        text = parent.text
        if item.cut and text.endswith(item.cut):
            text = text[: len(text) - len(item.cut)]

        async def make() -> list[int]:
            return [*parent.ids[: parent.prompt_len], *await self.pool.tokenize(text + item.prefix)]

        return make

    def thinking(self) -> bool:
        return "</think>" in (self.pool.info.chat_template or "")

    def score(self, prm: PRM, question: str, asks: Sequence[ScoreAsk]) -> ScoreDone | None:
        cands, finished = pooled(asks)
        t0 = time.perf_counter()
        if not awaited(prm):  # arithmetic, reference: no model needed
            scores = prm.score(question, cands, finished)
            return split_scores(asks, cands, scores, 0, time.perf_counter() - t0)
        meta = (list(asks), cands, t0)
        self._submit(asks[0].run_id, "score", prm.score_async(question, cands, finished), meta)
        return None

    def release(self, run_id: str, node_ids: Sequence[int]) -> None:
        st = self._runs.get(run_id)
        if st is not None:
            for nid in node_ids:
                st.nodes.pop(nid, None)

    def end_run(self, run_id: str) -> None:
        st = self._runs.pop(run_id, None)
        if st is None:
            return
        for f in st.futures:
            f.cancel()  # the task is cancelled in the loop: its HTTP request is closed

    def busy(self) -> bool:
        return self._pending > 0

    # --- progress -----------------------------------------------------------------------------------

    def poll(self) -> list[Outcome]:
        out: list[Outcome] = []
        while not out:
            if self.cancel is not None and self.cancel():
                self._cancel_all()
                raise Cancelled()
            if self._pending == 0:
                return out
            try:
                item = self._q.get(timeout=POLL_S)
            except queue.Empty:
                continue
            out += self._take(item)
            while True:  # whatever else is ready too
                try:
                    out += self._take(self._q.get_nowait())
                except queue.Empty:
                    break
        return out

    def _take(self, item: tuple[int, str, str, concurrent.futures.Future, Any]) -> list[Outcome]:
        epoch, run_id, kind, fut, meta = item
        if epoch != self._epoch:
            return []
        self._pending -= 1
        self._shared.discard(fut)
        st = self._runs.get(run_id)
        if st is not None:
            st.futures.discard(fut)
        if fut.cancelled():
            return []
        err = fut.exception()
        if err is not None:
            msg = str(err) if isinstance(err, PonderError) else f"{type(err).__name__}: {err}"
            runs = [run_id] if kind == "gen" else [a.run_id for a in meta[0]]
            return [RunFailed(r, msg) for r in runs]
        if kind == "score":
            asks, cands, t0 = meta
            scores, used = fut.result()
            return [split_scores(asks, cands, scores, used, time.perf_counter() - t0)]
        if st is None:  # the run ended meanwhile
            return []
        results = fut.result()
        gens: list[Generated] = []
        out: list[Outcome] = []
        prompt_n = cached_n = 0
        for item_, (done, srv, prompt) in zip(meta, results, strict=True):
            st.nodes[item_.node_id] = _Node((*prompt, *done.ids), srv, len(prompt), done.text)
            gens.append(
                Generated(
                    item_.node_id,
                    done.text,
                    len(done.ids),
                    tuple(done.logprobs),
                    done.finish,
                    tuple(done.pieces),
                )
            )
            prompt_n += done.prompt_n
            cached_n += done.cached_n
            if self.stream_text and done.text:
                out.append(Delta(run_id, item_.node_id, done.text))
        out.append(GenDone(run_id, gens, prompt_tokens=prompt_n, cached_tokens=cached_n))
        return out

    def _cancel_all(self) -> None:
        for st in self._runs.values():
            for f in st.futures:
                f.cancel()
        for f in self._shared:
            f.cancel()

    def finish(self) -> None:
        self._cancel_all()
        self._runs.clear()
        self._shared.clear()
        self._epoch += 1  # what the cancelled requests still report is ignored
        self._pending = 0

    def close(self) -> None:
        self.finish()
        self.pool.close()
        if self.prm_pool is not None:
            self.prm_pool.close()
