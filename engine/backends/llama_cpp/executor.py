"""The in-process :class:`~engine.executor.Executor`: requests of many runs as branches of one
llama.cpp context.

Like llama.cpp's server loop: Generate items become branches (a chat prompt is decoded once and
forked, so every run shares the question's KV cells), and every live branch of every run advances in
the same ``llama_decode`` per :meth:`poll` (continuous batching: a run whose request finishes gets its
results and may add branches while the others keep generating). A judge PRM scores incrementally:
its decodes ride in the same batches as generation. Release frees branches at once.
"""

from __future__ import annotations

import codecs
import time
from collections import deque
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.backends.llama_cpp.backend import Backend
from engine.backends.llama_cpp.branch import Branch, TokenEvent
from engine.backends.llama_cpp.config import config_dict
from engine.errors import InvalidRequestError, KVCacheFullError, PonderError
from engine.executor import (
    PRM,
    Delta,
    Executor,
    GenDone,
    Outcome,
    ScoreAsk,
    ScoreDone,
    pooled,
    split_scores,
    stepped,
)
from engine.prm.formats import VerdictFormat
from engine.protocol import Generated, GenItem

if TYPE_CHECKING:
    from engine.prm import JudgePRM

JUDGE_SEQUENCES = 3  # a judge in the same context reads with a chain and a verdict branch at least
MARGIN_CELLS = 16  # KV cells kept free beyond what admitted branches may still fill

MODEL_FIELDS = (
    "path",
    "name",
    "n_params",
    "file_size",
    "sha256_1mb",
    "quantization",
    "n_gpu_layers_requested",
    "n_layers_offloaded",
    "accelerator",
)


def _chat_key(item: GenItem) -> tuple:
    """The key of the chat prompt an item starts from; asked only of an item with ``messages``."""
    key = item.prompt_key
    assert key is not None, "an item without messages has no chat prompt"
    return key


@dataclass
class _RunState:
    nodes: dict[int, Branch] = field(default_factory=dict)
    request: tuple[GenItem, ...] | None = None  # the Generate request being served
    flight: dict[int, Branch] = field(default_factory=dict)  # item index -> its branch (started)
    keep: set[tuple] = field(default_factory=set)  # prompts kept while this run lives (its question)
    counted: set[tuple] = field(default_factory=set)  # chat prompts already counted for this run
    prompt_tokens: int = 0
    cached_tokens: int = 0
    chats: dict[int, tuple[str, str]] = field(default_factory=dict)  # node -> (its chat prompt, its text)


@dataclass
class _ScoreJob:
    """One PRM pass over the candidates of the runs that asked together (same question)."""

    asks: list[ScoreAsk]
    cands: list[tuple[str, ...]]
    tokens_before: int
    t0: float
    prm: PRM
    # a stepped PRM's scoring (None for one that answers at once): it yields the branches to decode
    gen: Generator[list[Branch], None, list[list[float]]] | None = None
    need: list[Branch] = field(default_factory=list)
    usage: list[int] | None = None  # the job's own PRM tokens (jobs of several runs interleave)


class LlamaCppExecutor(Executor):
    kind = "llama.cpp"

    def __init__(self, backend: Backend, owns_backend: bool = False) -> None:
        """``owns_backend``: :meth:`close` closes the backend too (an executor a worker opened)."""
        self.backend = backend
        self.owns_backend = owns_backend
        self._runs: dict[str, _RunState] = {}
        self._roots: dict[tuple, Branch] = {}
        self._queue: deque[tuple[str, int]] = deque()  # (run, item index) waiting to start
        self._tokens: dict[tuple, list[int]] = {}  # a chat prompt's tokens, while its items wait
        self.reserve = 0  # sequences left free for a judge's checks (set when a judge is made)
        self._judge: JudgePRM[Branch] | None = None
        self._jobs: list[_ScoreJob] = []
        self._waiting_jobs: list[_ScoreJob] = []  # a scorer's later jobs, waiting for its current one
        self._ready: list[Outcome] = []
        self._prm_backends: dict[int, list[Backend]] = {}
        self._rendered: dict[tuple, str] = {}

    # --- records ------------------------------------------------------------------------------------

    def model_record(self) -> dict[str, Any]:
        info = self.backend.info.as_dict()
        return {"backend": self.kind, **{k: v for k, v in info.items() if k in MODEL_FIELDS}}

    def describe(self) -> dict[str, Any]:
        return self.backend.info.as_dict()

    def session_settings(self) -> dict[str, Any]:
        return {
            "backend": {"kind": self.kind},
            "model_path": str(self.backend.info.path),
            "config": config_dict(self.backend.config),
        }

    # --- PRMs ---------------------------------------------------------------------------------------

    def make_prm(self, spec: str, reference: str | None) -> PRM:
        """The PRM ``spec`` names, built by its kind (``engine/prm/kinds/``) from what this
        executor offers: the policy as judge, or a PRM GGUF in a backend of its own."""
        from engine.prm import registry

        return registry.check(spec).build_in_process(self, spec, reference)

    def judge(self) -> PRM:
        """The policy model as judge; it keeps :data:`JUDGE_SEQUENCES` sequences free for its checks."""
        from engine.prm import JudgePRM

        self.reserve = JUDGE_SEQUENCES
        # The policy model reads as judge: its parameters count the judge's FLOPs.
        self._judge = JudgePRM(self.backend, n_params=self.backend.info.n_params)
        return self._judge

    def token_prm(self, path: Path, fmt: VerdictFormat, name: str) -> PRM:
        """A PRM GGUF in a backend of its own (the policy's configuration), read at ``fmt``'s
        verdict tokens; closed with the PRM."""
        from engine.prm import TokenPRM

        prm_backend = Backend(path, self.backend.config)
        try:
            prm = TokenPRM(
                prm_backend,
                fmt,
                name=name,
                n_params=prm_backend.info.n_params,
                model_record=prm_backend.info.as_dict(),
            )
        except BaseException:
            prm_backend.close()
            raise
        self._prm_backends[id(prm)] = [prm_backend]
        return prm

    def close(self) -> None:
        if self.owns_backend:
            self.backend.close()

    def close_prm(self, prm: PRM) -> None:
        if prm is self._judge:
            self._judge, self.reserve = None, 0
        super().close_prm(prm)
        for b in self._prm_backends.pop(id(prm), []):
            b.close()

    # --- requests -----------------------------------------------------------------------------------

    def thinking(self) -> bool:
        return "</think>" in (self.backend.chat_template or "")

    def prompt_fit(self, messages: tuple[tuple[str, str], ...]) -> tuple[int, int] | None:
        # Rendered and tokenized once: the runs' first generations start from these same tokens.
        key = tuple(messages)
        return len(self._chat_tokens(key, key)), self.backend.n_ctx

    def _state(self, run_id: str) -> _RunState:
        st = self._runs.get(run_id)
        if st is None:
            st = self._runs[run_id] = _RunState()
        return st

    def generate(self, run_id: str, items: Sequence[GenItem], keep_prompt: tuple | None = None) -> None:
        st = self._state(run_id)
        if keep_prompt is not None:
            st.keep.add(keep_prompt)
        if st.request is not None:
            raise InvalidRequestError(f"run {run_id} asked for a generation while one is in flight")
        st.request, st.flight = tuple(items), {}
        self._queue.extend((run_id, i) for i in range(len(items)))

    def release(self, run_id: str, node_ids: Sequence[int]) -> None:
        st = self._state(run_id)
        for nid in node_ids:
            st.chats.pop(nid, None)
            b = st.nodes.pop(nid, None)
            if b is not None and not b.freed:
                self.backend.free(b)

    def end_run(self, run_id: str) -> None:
        st = self._runs.pop(run_id, None)
        if st is None:
            return
        for b in [*st.nodes.values(), *st.flight.values()]:
            if not b.freed:
                self.backend.free(b)
        st.chats.clear()
        self._queue = deque(q for q in self._queue if q[0] != run_id)
        self._ready = [o for o in self._ready if getattr(o, "run_id", None) != run_id]
        if self._runs:
            # Other runs go on (a sweep's cells): a prompt none of them asks for is freed now, so
            # its cells do not widen every later decode's attention. (Alone, the next run of a
            # one-after-another compare may still want it; it is freed when room is needed.)
            kept = {k for other in self._runs.values() for k in other.keep}
            for key in [k for k in st.keep if k not in kept and k in self._roots]:
                self._drop_root(key)

    def _drop_root(self, key: tuple) -> None:
        """Free a chat prompt's root (and forget its tokens)."""
        root = self._roots.pop(key)
        self._tokens.pop(key, None)
        if not root.freed:
            self.backend.free(root)

    def score(self, prm: PRM, question: str, asks: Sequence[ScoreAsk]) -> ScoreDone | None:
        cands, finished = pooled(asks)
        job = _ScoreJob(list(asks), cands, getattr(prm, "tokens_used", 0), time.perf_counter(), prm)
        if stepped(prm):
            job.usage = [0]
            job.gen = prm.score_gen(question, cands, finished, cancel=self.cancel, usage=job.usage)
            if any(j.prm is prm for j in self._jobs):
                # One job per scorer at a time: each sizes its groups by the sequences free when it
                # starts them, and two at once would count the same free sequences.
                self._waiting_jobs.append(job)
                return None
            self._jobs.append(job)
            self._resume_job(job)
            return None
        return self._complete_job(job, prm.score(question, cands, finished, cancel=self.cancel))

    def _resume_job(self, job: _ScoreJob) -> None:
        assert job.gen is not None  # only a stepped PRM's jobs are resumed
        try:
            job.need = job.gen.send(None)
        except StopIteration as stop:
            self._jobs.remove(job)
            self._ready.append(self._complete_job(job, stop.value))
            nxt = next((j for j in self._waiting_jobs if j.prm is job.prm), None)
            if nxt is not None:
                self._waiting_jobs.remove(nxt)
                self._jobs.append(nxt)
                self._resume_job(nxt)

    @staticmethod
    def _complete_job(job: _ScoreJob, scores: list[list[float]]) -> ScoreDone:
        used = (
            job.usage[0] if job.usage is not None else getattr(job.prm, "tokens_used", 0) - job.tokens_before
        )
        return split_scores(job.asks, job.cands, scores, used, time.perf_counter() - job.t0)

    def busy(self) -> bool:
        return bool(
            self._ready
            or self._jobs
            or self._waiting_jobs
            or any(st.request is not None for st in self._runs.values())
        )

    # --- progress -----------------------------------------------------------------------------------

    def poll(self) -> list[Outcome]:
        if self._ready:
            out, self._ready = self._ready, []
            return out
        self._start_generations()
        out = self._step()
        out += self._ready
        self._ready = []
        return out

    # --- admission: items start as sequences and KV cells allow (continuous batching) ------------

    def _prompt_tokens_of(self, item: GenItem) -> list[int]:
        return self._chat_tokens(_chat_key(item), item.messages or (), item.template)

    def _chat_tokens(self, key: tuple, messages: tuple, template: tuple = ()) -> list[int]:
        """A chat prompt's tokens, cached by its key while its items wait."""
        toks = self._tokens.get(key)
        if toks is None:
            toks = self._tokens[key] = self.backend.prompt_tokens(self._render_chat(key, messages, template))
        return toks

    def _needs(self, st: _RunState, item: GenItem) -> tuple[int, int]:
        """(sequences, KV cells) an item takes when it starts: its own sequence and up to max_tokens
        cells, plus a root for a chat prompt not yet held, plus a parked parent's tokens again."""
        cells = item.params.max_tokens + len(item.prefix) // 2 + 1
        grows = self._continuation(st, item)
        if grows is not None:
            parent, rest = grows
            cells += len(rest or "") // 2 + (len(parent.tokens) if parent.parked else 0)
            return 1, cells
        if item.messages is None:
            return 1, cells  # a parent it does not hold: refused when it starts
        root = self._roots.get(_chat_key(item))
        if root is not None and not root.freed:
            return 1, cells
        return 2, cells + len(self._prompt_tokens_of(item))

    def _demand(self) -> int:
        """Cells in use, plus what the started branches may still add."""
        b = self.backend
        need = b.cells_used() + sum(x.pending for x in b.branches)
        for st in self._runs.values():
            for x in st.flight.values():
                if not x.finished and not x.freed:
                    need += max(0, x.params.max_tokens - x.n_generated)
        return need

    def _fits(self, seqs: int, cells: int) -> bool:
        b = self.backend
        return b.free_slots - seqs >= self.reserve and self._demand() + cells + MARGIN_CELLS <= b.n_ctx

    def _idle(self, pinned: set[int]) -> list[Branch]:
        """Finished branches that hold a sequence but are not growing: answers waiting for their
        siblings first, then nodes the runs hold (oldest first)."""
        done = [x for st in self._runs.values() for x in st.flight.values() if x.finished]
        held = [x for st in self._runs.values() for x in st.nodes.values()]
        return [x for x in (*done, *held) if not x.freed and not x.parked and id(x) not in pinned]

    def _make_room(self, seqs: int, cells: int, pinned: set[int]) -> None:
        """Free the prompts no live run asks for any more (a finished problem's question; kept until
        room is needed, so a run that comes next reuses them), then park idle branches."""
        kept = {k for st in self._runs.values() for k in st.keep}
        for key in [k for k, r in self._roots.items() if k not in kept and id(r) not in pinned]:
            self._drop_root(key)
            if self._fits(seqs, cells):
                return
        if self._judge is not None:
            self._judge.trim()
            if self._fits(seqs, cells):
                return
        for x in self._idle(pinned):
            self.backend.park(x)
            if self._fits(seqs, cells):
                return

    def _growing(self) -> bool:
        return any(not x.finished for st in self._runs.values() for x in st.flight.values())

    def _admit(self) -> list[tuple[str, _RunState, int, GenItem]]:
        """Take waiting items in order while a sequence and their KV cells are free, parking idle
        branches to make room; an item that cannot start waits for running ones to finish."""
        admitted: list[tuple[str, _RunState, int, GenItem]] = []
        pinned: set[int] = set()
        taken = [0, 0]  # sequences and cells of the admitted children, forked after the loop
        while self._queue:
            rid, i = self._queue[0]
            st = self._runs.get(rid)
            if st is None or st.request is None:
                self._queue.popleft()
                continue
            item = st.request[i]
            seqs, cells = self._needs(st, item)
            if not self._fits(seqs + taken[0], cells + taken[1]):
                self._make_room(seqs + taken[0], cells + taken[1], pinned)
            if not self._fits(seqs + taken[0], cells + taken[1]):
                if admitted or self._growing() or self._jobs:
                    break  # waits for a running branch to finish
                if self.backend.free_slots < seqs + taken[0]:
                    raise PonderError(
                        f"One generation needs {seqs} free sequences and the context has "
                        f"{self.backend.free_slots}; raise --parallel."
                    )
                # Alone it may still finish within the cells left (most solutions end early).
            self._queue.popleft()
            admitted.append((rid, st, i, item))
            taken[0] += 1
            taken[1] += item.params.max_tokens
            grows = self._continuation(st, item)
            if grows is not None:
                pinned.add(id(grows[0]))
            elif item.messages is not None:
                pinned.add(id(self._root_for(st, item)))
        return admitted

    def _continuation(self, st: _RunState, item: GenItem) -> tuple[Branch, str | None] | None:
        """(the node it grows from, the rest of its chat or None) when an item continues a node the
        run holds; None when it starts from a chat prompt's root."""
        parent = st.nodes.get(item.parent) if item.parent is not None else None
        if parent is None:
            return None
        if item.messages is None:
            return parent, None
        rest = self._chat_rest(st, item)
        return (parent, rest) if rest is not None else None

    def _root_for(self, st: _RunState, item: GenItem) -> Branch:
        key = _chat_key(item)
        root = self._roots.get(key)
        fresh = root is None or root.freed
        if root is None or root.freed:
            tokens = self._prompt_tokens_of(item)
            root = self.backend.root(tokens)
            self._roots[key] = root
        if key not in st.counted:  # each run counts a prompt it uses once, shared or not
            st.counted.add(key)
            st.prompt_tokens += len(root.tokens)
            if not fresh:
                st.cached_tokens += len(root.tokens)  # its cells were there already
        return root

    def _render(self, item: GenItem) -> str:
        return self._render_chat(_chat_key(item), item.messages or (), item.template)

    def _render_chat(self, key: tuple, messages: tuple, template: tuple = ()) -> str:
        """A chat prompt rendered with the model's template, cached by its key."""
        text = self._rendered.get(key)
        if text is None:
            msgs = [{"role": r, "content": t} for r, t in messages]
            text = self.backend.render_chat(msgs, **dict(template))
            if len(self._rendered) > 256:
                self._rendered.clear()
            self._rendered[key] = text
        return text

    def _chat_rest(self, st: _RunState, item: GenItem) -> str | None:
        """The text a chat adds to its parent's chat (prompt and answer), when it begins with it."""
        chat = st.chats.get(item.parent) if item.parent is not None else None
        if chat is None or item.parent not in st.nodes:
            return None
        prompt, text = chat
        after = self._render(item)
        n = len(prompt) + len(text)
        if len(after) > n and after.startswith(prompt) and after.startswith(text, len(prompt)):
            return after[n:]
        return None

    def _continue(
        self, st: _RunState, item: GenItem, parent: Branch, child: Branch, rest: str | None
    ) -> None:
        """Make a forked child continue as ``item`` asks: drop the end-of-generation token that ended
        the parent, cut text from its end, then decode the forced text (a prefix, or the rest of a
        chat)."""
        b = self.backend
        if child.tokens and child.pending >= 1 and b.is_eog(child.tokens[-1]):
            b.rewind(child, 1)
        forced = item.prefix if rest is None else rest
        if item.cut:
            cut = item.cut.encode("utf-8")
            own = len(child.tokens) - parent.gen_start
            popped, k = b"", 0
            while k < own and len(popped) < len(cut):
                k += 1
                popped = b.piece(child.tokens[-k]) + popped
            if popped.endswith(cut):
                b.rewind(child, k)
                forced = popped[: len(popped) - len(cut)].decode("utf-8", errors="replace") + forced
        kept = len(child.tokens)
        if forced:
            b.extend(child, forced)
        elif child.pending == 0:  # nothing left to decode: decode the last token again, for its logits
            last = child.tokens[-1]
            b.rewind(child, 1)
            b.extend(child, [last])
            kept -= 1
        added = len(child.tokens) - kept
        # A revision's chat is a prompt of its own (all of it counts); a forced prefix continues the
        # run's own text (only the prefix counts). Either way the parent's cells are reused.
        st.prompt_tokens += kept + added if rest is not None else added
        st.cached_tokens += 0 if parent.parked else kept

    def _start_generations(self) -> None:
        admitted = self._admit()
        if not admitted:
            return
        roots = [
            self._roots[item.prompt_key] for _, st, _, item in admitted if item.prompt_key in self._roots
        ]
        # Decode every new prompt in one batch before forking from them.
        self.backend.prefill(
            [x for x in dict.fromkeys(roots) if not x.freed and x.pending > 0], cancel=self.cancel
        )
        for rid, st, i, item in admitted:
            try:
                if item.parent is not None and item.messages is None and item.parent not in st.nodes:
                    raise PonderError(f"run {rid} continued node {item.parent}, which it does not hold")
                grows = self._continuation(st, item)
                parent, rest = grows if grows is not None else (self._roots[_chat_key(item)], None)
                (child,) = self.backend.fork(parent, 1, item.params)
                st.flight[i] = child
                if item.prefix or item.cut or rest is not None:
                    self._continue(st, item, parent, child, rest)
            except BaseException:
                # No sequence may outlive a request that could not start (the runs after it
                # would find them taken).
                for x in st.flight.values():
                    if not x.freed:
                        self.backend.free(x)
                st.flight, st.request = {}, None
                self._queue = deque(q for q in self._queue if q[0] != rid)
                raise
        # Prompts used once (revision chats) are not kept: their children hold the cells.
        kept = {k for st in self._runs.values() for k in st.keep}
        for key in [k for k in self._roots if k not in kept]:
            self._drop_root(key)

    def _step(self) -> list[Outcome]:
        flying = [(rid, st) for rid, st in self._runs.items() if st.flight]
        probes = [b for job in self._jobs for b in job.need if b.pending > 0]
        branches = [b for _, st in flying for b in st.flight.values() if not b.finished]
        if not branches and not probes:
            for job in list(self._jobs):  # everything they asked for is decoded already
                self._resume_job(job)
            events: list[TokenEvent] = []
        else:
            try:
                events = self.backend.step(branches, probes=probes)
            except KVCacheFullError:
                idle = self._idle(set())
                if not idle:
                    raise
                for x in idle:  # room for the growing ones: idle branches are decoded again later
                    self.backend.park(x)
                return []
        out: list[Outcome] = []
        if self.stream_text:
            out += self._deltas(flying, events)
        # Jobs read their rows now, before the next decode overwrites them.
        for job in list(self._jobs):
            if all(b.pending == 0 for b in job.need):
                self._resume_job(job)
        for rid, st in flying:
            req = st.request or ()
            if len(st.flight) < len(req) or not all(b.finished for b in st.flight.values()):
                continue
            results = []
            for i, item in enumerate(req):
                b = st.flight[i]
                st.nodes[item.node_id] = b
                if item.messages is not None:
                    st.chats[item.node_id] = (self._render(item), b.text)
                results.append(
                    Generated(
                        item.node_id,
                        b.text,
                        b.n_generated,
                        tuple(b.logprobs),
                        b.finish_reason or "length",
                        self._pieces(b.generated),
                    )
                )
            st.request, st.flight = None, {}
            out.append(GenDone(rid, results, prompt_tokens=st.prompt_tokens, cached_tokens=st.cached_tokens))
            st.prompt_tokens = st.cached_tokens = 0
        return out

    def _deltas(self, flying: list[tuple[str, _RunState]], events: list[TokenEvent]) -> list[Outcome]:
        owner = {
            id(b): (rid, (st.request or ())[i].node_id) for rid, st in flying for i, b in st.flight.items()
        }
        out: list[Outcome] = []
        for ev in events:
            hit = owner.get(id(ev.branch))
            if hit is not None and ev.piece:
                out.append(Delta(hit[0], hit[1], ev.piece))
        return out

    def _pieces(self, tokens: list[int]) -> tuple[str, ...]:
        dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return tuple(dec.decode(self.backend.piece(t)) for t in tokens)

    def finish(self) -> None:
        for job in [*self._jobs, *self._waiting_jobs]:
            if job.gen is not None:  # (every job here is a stepped PRM's)
                job.gen.close()  # frees the job's branches
        self._jobs.clear()
        self._waiting_jobs.clear()
        for rid in list(self._runs):
            self.end_run(rid)
        for root in self._roots.values():
            if not root.freed:
                self.backend.free(root)
        self._roots.clear()
        self._rendered.clear()
        self._queue.clear()
        self._tokens.clear()
        self._ready.clear()
