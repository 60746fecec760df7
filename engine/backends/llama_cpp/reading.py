"""Reading the model instead of sampling it: next-token logprobs of chosen tokens (judge verdicts),
logprobs at given positions of a pending run (token PRMs' step tags), teacher-forced scoring. A mixin
of :class:`~engine.backends.llama_cpp.backend.Backend`."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import llama_cpp
import numpy as np

from engine.backends.llama_cpp.branch import Branch
from engine.backends.llama_cpp.core import BackendCore
from engine.errors import Cancelled, InvalidRequestError, PromptTooLongError
from engine.fastsample import logsumexp_rows
from engine.sampling import SamplingParams


class ReadMixin(BackendCore):
    def next_token_logprobs(self, branch: Branch, token_ids: Sequence[int]) -> np.ndarray:
        """Logprobs of ``token_ids`` as the next token after everything ``branch`` holds (its
        pending tokens are decoded first). For verdict tokens of judges and PRMs."""
        self._check_live(branch)
        return self.logprobs_now([branch], token_ids)[0]

    def _rows_logprobs(self, branches: Sequence[Branch], token_ids: Sequence[int]) -> np.ndarray:
        at = [self._logits_row(b, "read") for b in branches]
        n_out = max(r[2] for r in at) + 1
        rows = np.ctypeslib.as_array(llama_cpp.llama_get_logits(self._ctx), shape=(n_out, self.n_vocab))
        sub = rows[[r[2] for r in at]].astype(np.float64)
        lse = logsumexp_rows(sub)
        return sub[:, list(token_ids)] - lse[:, None]

    def read_positions(
        self,
        branches: Sequence[Branch],
        positions: Sequence[Sequence[int]],
        token_ids: Sequence[int],
        cancel: Callable[[], bool] | None = None,
    ) -> list[np.ndarray]:
        """Decode every pending token of ``branches`` (packed into shared batches) and return, per
        branch, the log-softmax over ``token_ids`` of the logits *at* each absolute position in
        ``positions`` (each must be pending: >= n_past). For token PRMs that read a verdict at every
        step tag in one pass."""
        self._check_thread()
        for b, wanted in zip(branches, positions, strict=True):
            self._check_live(b)
            bad = [p for p in wanted if not b.n_past <= p < len(b.tokens)]
            if bad:
                raise InvalidRequestError(f"position {bad[0]} of branch {b.id} is not pending")
        out = [np.empty((len(p), len(token_ids))) for p in positions]
        want = [dict((p, j) for j, p in enumerate(pos)) for pos in positions]
        cap = self.config.n_batch
        batch = self._batch
        assert batch is not None  # None only once closed (_check_thread refuses that)
        ids = list(token_ids)
        todo = [i for i, b in enumerate(branches) if b.pending > 0]
        while todo:
            if cancel is not None and cancel():
                raise Cancelled()
            n = 0
            reads: list[tuple[int, int, int]] = []  # (branch index, position, batch idx) per output row
            plan: list[tuple[int, int]] = []
            for i in todo:
                b = branches[i]
                take = min(b.pending, cap - n)
                if take <= 0:
                    break
                for k in range(take):
                    pos = b.n_past + k
                    batch.token[n] = b.tokens[pos]
                    batch.pos[n] = pos
                    batch.n_seq_id[n] = 1
                    batch.seq_id[n][0] = b.seq
                    last = k == take - 1 and take == b.pending
                    out_here = pos in want[i] or last
                    batch.logits[n] = 1 if out_here else 0
                    if out_here:
                        reads.append((i, pos, n))
                    n += 1
                plan.append((i, take))
            self._decode(n, len(todo))
            rows = np.ctypeslib.as_array(
                llama_cpp.llama_get_logits(self._ctx), shape=(len(reads), self.n_vocab)
            )
            for r, (i, pos, idx) in enumerate(reads):
                if pos in want[i]:
                    row = rows[r : r + 1].astype(np.float64)
                    out[i][want[i][pos]] = row[0, ids] - logsumexp_rows(row)[0]
                if pos == len(branches[i].tokens) - 1:
                    branches[i]._logits = (self._epoch, idx, r)
            for i, take in plan:
                branches[i].n_past += take
            todo = [i for i in todo if branches[i].pending > 0]
        return out

    def logprobs_now(self, branches: Sequence[Branch], token_ids: Sequence[int]) -> np.ndarray:
        """Next-token logprobs of ``branches``, read from the current output rows; a branch without
        one (pending tokens, or a row overwritten by a later decode) is decoded for it."""
        self._check_thread()
        current = [i for i, b in enumerate(branches) if self._has_row(b)]
        if len(current) == len(branches):
            return self._rows_logprobs(branches, token_ids)
        out = np.empty((len(branches), len(token_ids)))
        if current:  # read before the decode below overwrites them
            out[current] = self._rows_logprobs([branches[i] for i in current], token_ids)
        rest = [i for i in range(len(branches)) if i not in set(current)]
        out[rest] = self.batch_next_token_logprobs([branches[i] for i in rest], token_ids)
        return out

    def batch_next_token_logprobs(self, branches: Sequence[Branch], token_ids: Sequence[int]) -> np.ndarray:
        """:meth:`next_token_logprobs` for many branches, packed into as few decodes as fit the batch
        (rows follow ``branches``)."""
        self._check_thread()
        for b in branches:
            self._check_live(b)
            if b.pending == 0:  # its row would not survive the group's decode: re-decode its last token
                self._rewind_one(b)
        out = np.empty((len(branches), len(token_ids)), dtype=np.float64)
        cap = self.config.n_batch
        i = 0
        while i < len(branches):
            group: list[Branch] = []
            used = 0
            while i < len(branches) and (not group or used + branches[i].pending <= cap):
                group.append(branches[i])
                used += branches[i].pending
                i += 1
            self.prefill(group)  # one decode when the group fits, several for one long branch
            out[i - len(group) : i] = self._rows_logprobs(group, token_ids)
        return out

    def score_tokens(
        self, tokens: Sequence[int], start: int, cancel: Callable[[], bool] | None = None
    ) -> np.ndarray:
        """Teacher forcing: the logprob of each of ``tokens[start:]`` given everything before it,
        in one pass (chunked by n_batch) over a temporary sequence. ``start`` must be >= 1."""
        self._check_thread()
        tokens = [int(t) for t in tokens]
        if not 1 <= start <= len(tokens):
            raise InvalidRequestError("score_tokens needs 1 <= start <= len(tokens)")
        if len(tokens) >= self.n_ctx_seq:
            raise PromptTooLongError(len(tokens), self.n_ctx_seq)
        if start == len(tokens):
            return np.empty(0, dtype=np.float64)
        tmp = self.root(tokens, SamplingParams(temperature=0.0))
        out = np.empty(len(tokens) - start, dtype=np.float64)
        batch = self._batch
        assert batch is not None  # None only once closed (_check_thread refuses that)
        try:
            pos = 0
            while pos < len(tokens) - 1:
                if cancel is not None and cancel():
                    raise Cancelled()
                n = min(self.config.n_batch, len(tokens) - 1 - pos)
                reads = []
                for i in range(n):
                    p = pos + i
                    batch.token[i] = tokens[p]
                    batch.pos[i] = p
                    batch.n_seq_id[i] = 1
                    batch.seq_id[i][0] = tmp.seq
                    want = p >= start - 1
                    batch.logits[i] = 1 if want else 0
                    if want:
                        reads.append(p)
                self._decode(n, 1)
                tmp.n_past = pos + n
                if reads:
                    ptr = llama_cpp.llama_get_logits(self._ctx)
                    rows = np.ctypeslib.as_array(ptr, shape=(len(reads), self.n_vocab)).astype(np.float64)
                    lse = logsumexp_rows(rows)
                    for j, p in enumerate(reads):
                        out[p + 1 - start] = rows[j, tokens[p + 1]] - lse[j]
                pos += n
        finally:
            self.free(tmp)
        return out
