"""Decoding: every live branch's pending tokens in one ``llama_decode``, then each branch sampled
with its own sampler (numpy for plain temperature sampling), logprobs from the same rows, stop
strings, EOS and max tokens. A mixin of :class:`~engine.backends.llama_cpp.backend.Backend`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import llama_cpp
import numpy as np

from engine.backends.llama_cpp.branch import Branch, TokenEvent
from engine.backends.llama_cpp.config import FINISH_CANCELLED, FINISH_EOS, FINISH_LENGTH, FINISH_STOP
from engine.backends.llama_cpp.core import BackendCore
from engine.errors import Cancelled, DecodeError, InvalidRequestError, KVCacheFullError
from engine.fastsample import logsumexp_rows, sample_rows
from engine.sampling import SamplingParams


class DecodeMixin(BackendCore):
    def _decode(self, n_tokens: int, n_live: int) -> None:
        batch = self._batch
        assert batch is not None  # None only once closed, and every caller checked _check_thread
        batch.n_tokens = n_tokens
        t0 = time.perf_counter()
        with self._turn():  # one Ponder process decodes on the CPU at a time (engine.cpu_share)
            ret = llama_cpp.llama_decode(self._ctx, batch)
        self.stats.decode_s += time.perf_counter() - t0
        self.stats.decode_calls += 1
        if ret == 0:
            self.stats.tokens_decoded += n_tokens
            self._epoch += 1
            return
        if ret == 1:
            raise KVCacheFullError(self.n_ctx, n_live, n_tokens)
        if ret == 2:
            raise Cancelled("Decoding was aborted.")
        raise DecodeError(f"llama_decode failed with code {ret}")

    def _fill(self, work: list[tuple[Branch, int, bool]]) -> list[tuple[Branch, int]]:
        """Write (branch, count, wants_logits) chunks into the batch; returns (branch, batch idx) for
        the rows that will carry logits."""
        batch = self._batch
        assert batch is not None  # None only once closed
        i = 0
        outs = []
        if not self.config.kv_unified:
            # llama.cpp splits a batch over streams into passes of consecutive sequence ids in
            # increasing order (each pass a graph of its own): in id order, consecutive ids share one
            work = sorted(work, key=lambda w: w[0].seq)
            seqs = [w[0].seq for w in work]
            self.stats.stream_passes += 1 + sum(b != a + 1 for a, b in zip(seqs, seqs[1:], strict=False))
        for b, count, wants in work:
            start = b.n_past
            for k in range(count):
                pos = start + k
                batch.token[i] = b.tokens[pos]
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = b.seq
                batch.logits[i] = 0
                i += 1
            if wants:
                batch.logits[i - 1] = 1
                outs.append((b, i - 1))
        return outs

    def _plan(self, branches: Sequence[Branch]) -> tuple[list[tuple[Branch, int, bool]], int]:
        """Pack pending tokens into one batch of at most n_batch tokens. A branch whose pending
        tokens do not all fit gets a chunk now (no logits) and the rest in a later decode."""
        return self._plan_capped(branches, self.config.n_batch)

    def _plan_capped(
        self, branches: Sequence[Branch], cap: int
    ) -> tuple[list[tuple[Branch, int, bool]], int]:
        work = []
        used = 0
        # Single-token branches first so that long prompts never starve generation.
        for b in sorted(branches, key=lambda b: b.pending):
            pend = b.pending
            if pend == 0 or used >= cap:
                continue
            take = min(pend, cap - used)
            work.append((b, take, take == pend))
            used += take
        return work, used

    def prefill(self, branches: Sequence[Branch], cancel: Callable[[], bool] | None = None) -> None:
        """Decode every pending token of ``branches`` (logits kept at each one's last token)."""
        self._check_thread()
        for b in branches:
            self._check_live(b)
            self._adopt(b)
        todo = [b for b in branches if b.pending > 0]
        while todo:
            if cancel is not None and cancel():
                raise Cancelled()
            work, n = self._plan(todo)
            outs = self._fill(work)
            self._decode(n, len(todo))
            for b, count, _ in work:
                b.n_past += count
            for j, (b, idx) in enumerate(outs):
                b._logits = (self._epoch, idx, j)
            todo = [b for b in todo if b.pending > 0]

    def step(
        self,
        branches: Sequence[Branch] | None = None,
        logprobs: bool = True,
        probes: Sequence[Branch] = (),
    ) -> list[TokenEvent]:
        """Advance every unfinished branch by one token in one shared decode.

        ``probes`` are branches to *decode but not sample* (a judge's verdict prompt, a step being
        scored): their pending tokens ride in the same batch, after the generating branches, and
        their logits row is kept until the next decode. Branches or probes with more pending
        tokens than fit the batch are decoded in part. Returns one event per sampled token."""
        self._check_thread()
        live = [b for b in (branches if branches is not None else self._branches.values()) if not b.finished]
        for b in (*live, *probes):
            self._check_live(b)
        ready = [b for b in live if self._has_row(b)]
        need = [b for b in live if b.pending > 0]
        stale = [b for b in live if b.pending == 0 and b not in ready]
        for b in stale:  # logits gone (another decode ran): re-decode the last token
            self._rewind_one(b)
            need.append(b)
        for b in (*need, *probes):
            self._adopt(b)
        probing = [p for p in probes if p.pending > 0]
        if not need and not probing:
            return self._sample(ready, logprobs)
        # Generating branches first (one token each), then probes fill the rest of the batch.
        work, n = self._plan(need)
        room = self.config.n_batch - n
        if probing and room > 0:
            more, m = self._plan_capped(probing, room)
            work += more
            n += m
        events = self._sample(ready, logprobs) if ready else []  # rows of the previous decode
        if n == 0:
            return events
        outs = self._fill(work)
        self._decode(n, len(live) + len(probing))
        for b, count, _ in work:
            b.n_past += count
        for j, (b, idx) in enumerate(outs):
            b._logits = (self._epoch, idx, j)
        probe_ids = {id(p) for p in probes}
        events.extend(self._sample([b for b, _ in outs if id(b) not in probe_ids], logprobs))
        return events

    def _has_row(self, b: Branch) -> bool:
        """Whether the branch's logits row (for its next token) is still in the context's output."""
        return b.pending == 0 and b._logits is not None and b._logits[0] == self._epoch

    def _logits_row(self, b: Branch, what: str) -> tuple[int, int, int]:
        """The branch's current logits row, (epoch, batch idx, out idx); refused (``what``: what
        was to be done with it) when it has none: llama.cpp asserts (kills the process) on a row
        without logits."""
        row = b._logits
        if row is None or not self._has_row(b):
            raise InvalidRequestError(f"branch {b.id} has no logits to {what}")
        return row

    def _rewind_one(self, b: Branch) -> None:
        llama_cpp.llama_memory_seq_rm(self._mem, b.seq, b.n_past - 1, -1)
        b.n_past -= 1
        b.base = min(b.base, b.n_past)
        b._logits = None

    def _sample(self, branches: list[Branch], want_logprobs: bool) -> list[TokenEvent]:
        if not branches:
            return []
        t0 = time.perf_counter()
        at = [self._logits_row(b, "sample from") for b in branches]
        # All output rows of the last decode, in batch order; valid until the next decode.
        n_out = max(r[2] for r in at) + 1
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_out, self.n_vocab))
        toks = [0] * len(branches)
        lps = [0.0] * len(branches)
        fast = [i for i, b in enumerate(branches) if b._rng is not None]
        if fast:
            sub = rows[[at[i][2] for i in fast]]  # a copy: sampling may ban tokens in it
            lse = logsumexp_rows(sub) if want_logprobs else None
            eog = np.asarray(self.eog_tokens()) if any(branches[i].params.ignore_eos for i in fast) else None
            drawn = sample_rows(
                sub,
                [branches[i].params.temperature for i in fast],
                [branches[i]._rng.random() for i in fast],
                [eog if branches[i].params.ignore_eos else None for i in fast],
            )
            for j, i in enumerate(fast):
                toks[i] = drawn[j]
                if lse is not None:  # the model's logprob (T=1, nothing banned), from the raw row
                    lps[i] = float(rows[at[i][2], drawn[j]] - lse[j])
        chain = [i for i, b in enumerate(branches) if b._rng is None]
        if chain:
            for i in chain:
                b = branches[i]
                toks[i] = int(llama_cpp.llama_sampler_sample(b._sampler, self._ctx, at[i][1]))
            if want_logprobs:
                sub = rows[[at[i][2] for i in chain]]
                lse = logsumexp_rows(sub)
                for j, i in enumerate(chain):
                    lps[i] = float(sub[j, toks[i]] - lse[j])
        events = []
        n_ctx = self.n_ctx_seq
        for b, tok, lp in zip(branches, toks, lps, strict=True):
            b._logits = None
            b.tokens.append(tok)
            b.logprobs.append(lp)
            if llama_cpp.llama_vocab_is_eog(self._vocab, tok):
                b.finish_reason = FINISH_EOS
                events.append(TokenEvent(b, tok, "", lp))
                continue
            piece = b._decoder.decode(self.piece(tok))
            if piece:
                b._text_parts.append(piece)
                b._text_len += len(piece)
            events.append(TokenEvent(b, tok, piece, lp))
            p = b.params
            if p.stop and piece and self._hit_stop(b, len(piece)):
                b.finish_reason = FINISH_STOP
            elif b.n_generated >= p.max_tokens or len(b.tokens) >= n_ctx:
                b.finish_reason = FINISH_LENGTH
        self.stats.tokens_sampled += len(branches)
        self.stats.sample_s += time.perf_counter() - t0
        return events

    def _hit_stop(self, b: Branch, n_new: int) -> bool:
        longest = max(len(s) for s in b.params.stop)
        text = b.text
        tail = text[max(0, len(text) - n_new - longest + 1) :]
        return any(s in tail for s in b.params.stop)

    def generate(
        self,
        branches: Sequence[Branch],
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[list[TokenEvent]], None] | None = None,
        logprobs: bool = True,
    ) -> list[Branch]:
        """Step until every branch is finished (EOS, a stop string, max_tokens, the context end) or
        ``cancel()`` returns true, in which case the unfinished ones end as 'cancelled'."""
        self._check_thread()
        todo = [b for b in branches if not b.finished]
        while todo:
            if cancel is not None and cancel():
                for b in todo:
                    b.finish_reason = FINISH_CANCELLED
                break
            events = self.step(todo, logprobs=logprobs)
            if on_step is not None and events:
                on_step(events)
            todo = [b for b in todo if not b.finished]
        return list(branches)

    def sample_n(
        self,
        prompt: str | Sequence[int],
        n: int,
        params: SamplingParams | Sequence[SamplingParams] | None = None,
        cancel: Callable[[], bool] | None = None,
        on_step: Callable[[list[TokenEvent]], None] | None = None,
        keep: bool = False,
        on_start: Callable[[list[Branch]], None] | None = None,
    ) -> list[Branch]:
        """The common case: decode ``prompt`` once, fork ``n`` branches, generate them together.
        ``on_start`` sees the branches before the first token. Branches are freed afterwards
        unless ``keep``; their text, tokens and logprobs stay readable."""
        self._check_thread()
        base = params if isinstance(params, SamplingParams) or params is None else params[0]
        root = self.root(prompt, base)
        try:
            self.prefill([root], cancel=cancel)
            children = self.fork(root, n, params)
        finally:
            self.free(root)
        try:
            if on_start is not None:
                on_start(children)
            self.generate(children, cancel=cancel, on_step=on_step)
        finally:
            if not keep:
                for c in children:
                    self.free(c)
        return children
