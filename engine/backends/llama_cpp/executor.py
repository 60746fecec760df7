"""The in-process :class:`~engine.backends.base.Executor`: requests of many runs as branches of one
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
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backends.base import (
    Delta,
    Executor,
    GenDone,
    Outcome,
    ScoreAsk,
    ScoreDone,
    pooled,
    split_scores,
)
from engine.backends.llama_cpp.backend import Backend
from engine.backends.llama_cpp.branch import Branch, TokenEvent
from engine.errors import InvalidRequestError, PonderError
from engine.search.protocol import Generated, GenItem

MODEL_FIELDS = (
    "path",
    "name",
    "file_size",
    "sha256_1mb",
    "quantization",
    "n_gpu_layers_requested",
    "n_layers_offloaded",
    "accelerator",
)


@dataclass
class _RunState:
    nodes: dict[int, Branch] = field(default_factory=dict)
    in_flight: list[tuple[GenItem, Branch]] | None = None
    starting: tuple[GenItem, ...] | None = None  # submitted, branches not made yet
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
    prm: Any
    gen: Any = None
    need: list[Branch] = field(default_factory=list)


class LlamaCppExecutor(Executor):
    kind = "llama.cpp"

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._runs: dict[str, _RunState] = {}
        self._roots: dict[tuple, Branch] = {}
        self._shared_keys: set[tuple] = set()
        self._jobs: list[_ScoreJob] = []
        self._ready: list[Outcome] = []
        self._prm_backends: dict[int, list[Backend]] = {}
        self._rendered: dict[tuple, str] = {}

    # --- records ------------------------------------------------------------------------------------

    def model_record(self) -> dict[str, Any]:
        info = self.backend.info.as_dict()
        return {"backend": self.kind, **{k: v for k, v in info.items() if k in MODEL_FIELDS}}

    def session_settings(self) -> dict[str, Any]:
        from engine.sessions import config_dict

        return {
            "backend": {"kind": self.kind},
            "model_path": str(self.backend.info.path),
            "config": config_dict(self.backend.config),
        }

    # --- PRMs ---------------------------------------------------------------------------------------

    def make_prm(self, spec: str, reference: str | None) -> Any:
        """``judge`` (the policy model as judge), ``arithmetic``, ``reference`` or a PRM GGUF path
        whose format ``models/catalog.toml`` names (loaded in a backend of its own)."""
        from engine.models import load_catalog
        from engine.prm import JudgePRM, TokenPRM, check_prm_spec, model_free_prm, token_prm_settings

        check_prm_spec(spec)
        if spec == "judge":
            return JudgePRM(self.backend)
        prm = model_free_prm(spec, reference)
        if prm is not None:
            return prm
        path = Path(spec).expanduser()
        entry = next((c for c in load_catalog() if c.matches(path)), None)
        if entry is None or not entry.prm_format:
            raise PonderError(
                f"{path.name} is not a PRM that models/catalog.toml knows: add an entry with its "
                "prm_format (math-shepherd or rlhflow) and tokens."
            )
        prm_backend = Backend(path, self.backend.config)
        prm = TokenPRM(prm_backend, entry.prm_format, name=entry.id, **token_prm_settings(entry))
        prm.model_record = prm_backend.info.as_dict()
        self._prm_backends[id(prm)] = [prm_backend]
        return prm

    def close_prm(self, prm: Any) -> None:
        super().close_prm(prm)
        for b in self._prm_backends.pop(id(prm), []):
            b.close()

    # --- requests -----------------------------------------------------------------------------------

    def thinking(self) -> bool:
        return "</think>" in (self.backend.chat_template or "")

    def sequence_limit(self) -> int | None:
        return self.backend.config.n_seq_max

    def prompt_fit(self, messages: tuple[tuple[str, str], ...]) -> tuple[int, int] | None:
        tokens = self.backend.chat_tokens([{"role": role, "content": text} for role, text in messages])
        return len(tokens), self.backend.n_ctx

    def _state(self, run_id: str) -> _RunState:
        st = self._runs.get(run_id)
        if st is None:
            st = self._runs[run_id] = _RunState()
        return st

    def generate(self, run_id: str, items: Sequence[GenItem], keep_prompt: tuple | None = None) -> None:
        st = self._state(run_id)
        if keep_prompt is not None:
            self._shared_keys.add(keep_prompt)
        if st.in_flight is not None or st.starting is not None:
            raise InvalidRequestError(f"run {run_id} asked for a generation while one is in flight")
        st.starting = tuple(items)

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
        for b in list(st.nodes.values()):
            if not b.freed:
                self.backend.free(b)
        st.chats.clear()
        for _, b in st.in_flight or ():
            if not b.freed:
                self.backend.free(b)
        self._ready = [o for o in self._ready if getattr(o, "run_id", None) != run_id]

    def score(self, prm: Any, question: str, asks: Sequence[ScoreAsk]) -> ScoreDone | None:
        cands, finished = pooled(asks)
        job = _ScoreJob(list(asks), cands, getattr(prm, "tokens_used", 0), time.perf_counter(), prm)
        if hasattr(prm, "score_gen"):
            job.gen = prm.score_gen(question, cands, finished, cancel=self.cancel)
            self._jobs.append(job)
            self._resume_job(job)
            return None
        return self._complete_job(job, prm.score(question, cands, finished, cancel=self.cancel))

    def _resume_job(self, job: _ScoreJob) -> None:
        try:
            job.need = job.gen.send(None)
        except StopIteration as stop:
            self._jobs.remove(job)
            self._ready.append(self._complete_job(job, stop.value))

    @staticmethod
    def _complete_job(job: _ScoreJob, scores: list[list[float]]) -> ScoreDone:
        used = getattr(job.prm, "tokens_used", 0) - job.tokens_before
        return split_scores(job.asks, job.cands, scores, used, time.perf_counter() - job.t0)

    def busy(self) -> bool:
        return bool(
            self._ready
            or self._jobs
            or any(st.in_flight is not None or st.starting is not None for st in self._runs.values())
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

    def _root_for(self, st: _RunState, item: GenItem) -> Branch:
        key = item.prompt_key
        root = self._roots.get(key)  # type: ignore[arg-type]
        if root is None or root.freed:
            tokens = self.backend.prompt_tokens(self._render(item))
            root = self.backend.root(tokens)
            self._roots[key] = root  # type: ignore[index]
            st.prompt_tokens += len(tokens)
        return root

    def _render(self, item: GenItem) -> str:
        key = item.prompt_key
        text = self._rendered.get(key)  # type: ignore[arg-type]
        if text is None:
            msgs = [{"role": r, "content": t} for r, t in item.messages or ()]
            text = self.backend.render_chat(msgs, **dict(item.template))
            if len(self._rendered) > 256:
                self._rendered.clear()
            self._rendered[key] = text  # type: ignore[index]
        return text

    def _chat_rest(self, st: _RunState, item: GenItem) -> str | None:
        """The text a chat adds to its parent's chat (prompt and answer), when it begins with it."""
        chat = st.chats.get(item.parent)  # type: ignore[arg-type]
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
        chat). Counts the reused cells as cached and the forced tokens as prompt."""
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
        if forced:
            b.extend(child, forced)
        elif child.pending == 0:  # nothing left to decode: decode the last token again, for its logits
            last = child.tokens[-1]
            b.rewind(child, 1)
            b.extend(child, [last])
        st.cached_tokens += child.n_past  # cells shared with the parent
        st.prompt_tokens += child.pending  # decoded for this continuation

    def _start_generations(self) -> None:
        new = [(rid, st) for rid, st in self._runs.items() if st.starting is not None]
        if not new:
            return
        # Decode every new prompt in one batch before forking from them.
        roots = []
        reuse: dict[tuple[str, int], str] = {}  # (run, node): the rest of a chat that continues a node
        for rid, st in new:
            for item in st.starting or ():
                if item.parent is not None and item.messages is not None:
                    rest = self._chat_rest(st, item)
                    if rest is not None:
                        reuse[(rid, item.node_id)] = rest
                        continue
                if item.messages is not None:
                    roots.append(self._root_for(st, item))
        self.backend.prefill([x for x in dict.fromkeys(roots) if x.pending > 0], cancel=self.cancel)
        for rid, st in new:
            flight = []
            try:
                for item in st.starting or ():
                    rest = reuse.get((rid, item.node_id))
                    if item.parent is not None and (item.messages is None or rest is not None):
                        parent = st.nodes.get(item.parent)
                        if parent is None:
                            raise PonderError(
                                f"run {rid} continued node {item.parent}, which it does not hold"
                            )
                    else:
                        parent = self._roots[item.prompt_key]  # type: ignore[index]
                    (child,) = self.backend.fork(parent, 1, item.params)
                    flight.append((item, child))
                    if item.prefix or item.cut or rest is not None:
                        self._continue(st, item, parent, child, rest)
            except BaseException:
                # No sequence may outlive a request that could not start (the runs after it
                # would find them taken).
                for _, b in flight:
                    self.backend.free(b)
                st.starting = None
                raise
            st.in_flight, st.starting = flight, None
        # Prompts used once (revision chats) are not kept: their children hold the cells.
        for key in [k for k in self._roots if k not in self._shared_keys]:
            self.backend.free(self._roots.pop(key))

    def _step(self) -> list[Outcome]:
        flying = [(rid, st) for rid, st in self._runs.items() if st.in_flight is not None]
        probes = [b for job in self._jobs for b in job.need if b.pending > 0]
        if not flying and not probes:
            for job in list(self._jobs):  # everything they asked for is decoded already
                self._resume_job(job)
            return []
        branches = [b for _, st in flying for _, b in st.in_flight or () if not b.finished]
        events = self.backend.step(branches, probes=probes)
        out: list[Outcome] = []
        if self.stream_text:
            out += self._deltas(flying, events)
        # Jobs read their rows now, before the next decode overwrites them.
        for job in list(self._jobs):
            if all(b.pending == 0 for b in job.need):
                self._resume_job(job)
        for rid, st in flying:
            flight = st.in_flight or []
            if all(b.finished for _, b in flight):
                results = []
                for item, b in flight:
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
                st.in_flight = None
                out.append(
                    GenDone(rid, results, prompt_tokens=st.prompt_tokens, cached_tokens=st.cached_tokens)
                )
                st.prompt_tokens = st.cached_tokens = 0
        return out

    def _deltas(self, flying: list[tuple[str, _RunState]], events: list[TokenEvent]) -> list[Outcome]:
        owner = {id(b): (rid, item.node_id) for rid, st in flying for item, b in st.in_flight or ()}
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
        for job in self._jobs:
            job.gen.close()  # frees the job's branches
        self._jobs.clear()
        for rid in list(self._runs):
            self.end_run(rid)
        for root in self._roots.values():
            if not root.freed:
                self.backend.free(root)
        self._roots.clear()
        self._rendered.clear()
        self._shared_keys.clear()
        self._ready.clear()
