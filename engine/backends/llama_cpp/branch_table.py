"""The branch table: sequences of the unified KV cache handed out as branches, forked (cells shared
with ``llama_memory_seq_cp``), extended, freed, and pending tokens adopted from another branch that
already holds them. A mixin of :class:`~engine.backends.llama_cpp.backend.Backend`."""

from __future__ import annotations

import codecs
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

from engine.backends.llama_cpp.branch import Branch, plain_chain
from engine.backends.llama_cpp.core import BackendCore
from engine.backends.prefix import common_prefix
from engine.errors import InvalidRequestError, PromptTooLongError, TooManyBranchesError
from engine.sampling import SamplingParams


class BranchTable(BackendCore):
    @property
    def branches(self) -> list[Branch]:
        """The branches not yet freed."""
        return list(self._branches.values())

    @property
    def free_slots(self) -> int:
        return len(self._free_seqs)

    def cells_used(self) -> int:
        """KV cells the live branches hold, each shared cell counted once (an upper bound where a
        branch adopted cells from another: those count for both)."""
        return sum(b.n_past - b.base for b in self._branches.values() if b.n_past > b.base)

    def _hand_down(self, b: Branch) -> None:
        """``b`` leaves the cache: the cells it shares with its children stay (llama.cpp keeps a cell
        while any sequence holds it), so the child that shares the most of them takes them over, and
        the other children that shared them become its children."""
        kids = [c for c in self._branches.values() if c.parent == b.id and c is not b]
        heir = max((c for c in kids if c.base > b.base), key=lambda c: c.base, default=None)
        for c in kids:
            if heir is not None and c is not heir and c.base > b.base:
                c.parent = heir.id
            elif c is not heir:
                c.parent = b.parent
        if heir is not None:
            heir.base = b.base
            heir.parent = b.parent

    def _take_seqs(self, n: int) -> list[int]:
        """The ``n`` lowest free sequence ids. With a stream per sequence llama.cpp decodes in one
        pass only a run of consecutive ids in increasing order (its sequential split: each run is a
        graph of its own), so live branches are kept on the lowest ids, filling the gaps freed
        branches leave; in a unified cache the ids only name the cells."""
        if n > len(self._free_seqs):
            raise TooManyBranchesError(self.config.n_seq_max)
        return sorted(self._free_seqs)[:n]

    def _new_branch(
        self,
        params: SamplingParams,
        tokens: list[int],
        n_past: int,
        parent: int | None,
        seq: int | None = None,
    ) -> Branch:
        if seq is None:
            (seq,) = self._take_seqs(1)
        self._free_seqs.remove(seq)
        if not 0 <= seq < self.config.n_seq_max:  # llama.cpp aborts on an out-of-range seq id
            raise InvalidRequestError(f"sequence id {seq} out of range")
        b = Branch(
            id=self._next_id,
            seq=seq,
            params=params,
            tokens=tokens,
            n_past=n_past,
            gen_start=len(tokens),
            parent=parent,
        )
        self._next_id += 1
        b._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if plain_chain(params):
            b._rng = np.random.Generator(np.random.PCG64(params.seed))
        else:
            b._sampler = self._make_sampler(params)
        self._branches[b.id] = b
        return b

    def _make_sampler(self, p: SamplingParams) -> Any:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if p.ignore_eos:
            eog = self.eog_tokens()
            bias = (llama_cpp.llama_logit_bias * len(eog))()
            for i, t in enumerate(eog):
                bias[i].token = t  # type: ignore[assignment]  # llama-cpp-python annotates the field as c_int32; ctypes stores an int
                bias[i].bias = float("-inf")
            add(chain, llama_cpp.llama_sampler_init_logit_bias(self.n_vocab, len(eog), bias))
        if p.greedy:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if p.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(p.top_k))
        if p.top_p < 1.0:
            add(chain, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
        if p.min_p > 0.0:
            add(chain, llama_cpp.llama_sampler_init_min_p(p.min_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(p.temperature))
        add(chain, llama_cpp.llama_sampler_init_dist(p.llama_seed))
        return chain

    def root(self, prompt: str | Sequence[int], params: SamplingParams | None = None) -> Branch:
        """A new branch holding ``prompt`` (text is tokenized with BOS as the model wants). Nothing is
        decoded until the next :meth:`step` or :meth:`fork`."""
        self._check_thread()
        tokens = self.tokenize(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        if not tokens:
            raise InvalidRequestError("The prompt is empty.")
        if len(tokens) >= self.n_ctx_seq:
            raise PromptTooLongError(len(tokens), self.n_ctx_seq)
        bad = [t for t in tokens if not 0 <= t < self.n_vocab]
        if bad:
            raise InvalidRequestError(f"token id {bad[0]} is outside the vocabulary (0..{self.n_vocab - 1})")
        return self._new_branch(params or SamplingParams(), tokens, 0, None)

    def extend(self, branch: Branch, text: str | Sequence[int]) -> None:
        """Append text (or tokens) to a branch, e.g. a forced step. Decoded with the next step; the
        branch becomes live again, and its generation (text, logprobs, max_tokens) restarts after it."""
        self._check_thread()
        self._check_live(branch)
        toks = self.tokenize(text, add_special=False) if isinstance(text, str) else [int(t) for t in text]
        if len(branch.tokens) + len(toks) >= self.n_ctx_seq:
            raise PromptTooLongError(len(branch.tokens) + len(toks), self.n_ctx_seq)
        branch.tokens.extend(toks)
        branch._logits = None
        self._restart_generation(branch)

    def rewind(self, branch: Branch, n: int) -> None:
        """Drop the last ``n`` tokens of a branch (and their KV cells, if decoded)."""
        self._check_thread()
        self._check_live(branch)
        keep = max(0, len(branch.tokens) - n)
        if keep < branch.n_past:
            llama_cpp.llama_memory_seq_rm(self._mem, branch.seq, keep, -1)
            branch.n_past = keep
        del branch.tokens[keep:]
        branch.base = min(branch.base, branch.n_past)
        branch._logits = None

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._vocab, int(token)))

    def _restart_generation(self, b: Branch) -> None:
        b.gen_start = len(b.tokens)
        b.finish_reason = None
        b.logprobs = []
        b._text_parts = []
        b._text_len = 0
        b._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def _check_live(self, b: Branch) -> None:
        if b.freed or self._branches.get(b.id) is not b:
            raise InvalidRequestError(f"branch {b.id} was freed or belongs to another backend")

    def fork(
        self, parent: Branch, n: int = 1, params: SamplingParams | Sequence[SamplingParams] | None = None
    ) -> list[Branch]:
        """``n`` children continuing from everything ``parent`` holds (prompt and generated text).

        ``params`` is one SamplingParams for all (then child ``i`` gets ``seed + i``) or one per
        child. The parent's KV cells are shared, not copied. A parent whose prompt was never decoded
        is decoded first, once, so the children never decode it again."""
        self._check_thread()
        if not parent.parked:
            self._check_live(parent)
        if n < 1:
            raise InvalidRequestError("fork needs n >= 1")
        if params is None:
            params = parent.params
        if isinstance(params, SamplingParams):
            plist = [params.with_seed(params.seed + i) for i in range(n)]
        else:
            plist = list(params)
            if len(plist) != n:
                raise InvalidRequestError(f"fork got {len(plist)} sampling params for {n} children")
        if n > len(self._free_seqs):
            raise TooManyBranchesError(self.config.n_seq_max)
        if parent.parked:
            return self._fork_parked(parent, plist)
        if parent.pending > 1:
            self.prefill([parent])
        # Children reuse the parent's logits row if it is still the current one; otherwise they
        # re-decode from the last token the parent has in the cache.
        share_logits = self._has_row(parent)
        n_copy = parent.n_past if (share_logits or parent.pending == 1) else max(parent.n_past - 1, 0)
        children = []
        for p, seq in zip(plist, self._take_seqs(n), strict=True):
            child = self._new_branch(p, list(parent.tokens), n_copy, parent.id, seq)
            llama_cpp.llama_memory_seq_rm(self._mem, child.seq, -1, -1)
            if n_copy > 0:
                self._copy_cells(parent, child, n_copy)
            child.base = n_copy
            if share_logits:
                child._logits = parent._logits
            children.append(child)
        return children

    def _copy_cells(self, src: Branch, dst: Branch, n: int) -> None:
        """``dst`` (holding nothing) takes ``src``'s cells of positions [0, n). In a unified cache the
        cells are tagged, not copied. With a stream per sequence llama.cpp copies only whole streams
        (the data at the next decode, which runs before anything can overwrite the source): the
        whole of ``src`` is copied and ``dst`` rewound to ``n`` within its own stream."""
        if self.config.kv_unified:
            llama_cpp.llama_memory_seq_cp(self._mem, src.seq, dst.seq, 0, n)
            return
        llama_cpp.llama_memory_seq_cp(self._mem, src.seq, dst.seq, -1, -1)
        if n < src.n_past:
            llama_cpp.llama_memory_seq_rm(self._mem, dst.seq, n, -1)
        self.stats.streams_copied += 1

    def _fork_parked(self, parent: Branch, plist: list[SamplingParams]) -> list[Branch]:
        """Children of a parked branch: its tokens again, decoded with the next step (sharing the
        cells of any live branch that holds the same start, such as the question's prompt)."""
        if self._parked.get(parent.id) is not parent:
            raise InvalidRequestError(f"branch {parent.id} was freed or belongs to another backend")
        children = []
        for p, seq in zip(plist, self._take_seqs(len(plist)), strict=True):
            child = self._new_branch(p, list(parent.tokens), 0, parent.id, seq)
            llama_cpp.llama_memory_seq_rm(self._mem, child.seq, -1, -1)
            children.append(child)
        return children

    def park(self, branch: Branch) -> None:
        """Set a finished branch aside: its sequence and cells go back (for other work) but its
        tokens, text and logprobs stay, so it can still be read and continued (:meth:`fork` decodes
        its tokens again). How a run holds more nodes than the context has sequences or cells."""
        self._check_thread()
        self._check_live(branch)
        self._release_seq(branch)
        branch.seq, branch.n_past, branch.base, branch._logits = -1, 0, 0, None
        branch.parked = True
        self._parked[branch.id] = branch
        self.stats.parked += 1
        self._clear_if_empty()

    def _release_seq(self, branch: Branch) -> None:
        """The branch's sequence leaves the cache (its shared cells pass to a child) and its id and
        sampler are free again."""
        self._hand_down(branch)
        llama_cpp.llama_memory_seq_rm(self._mem, branch.seq, -1, -1)
        if branch._sampler:
            llama_cpp.llama_sampler_free(branch._sampler)
            branch._sampler = None
        del self._branches[branch.id]
        self._free_seqs.append(branch.seq)

    def _clear_if_empty(self) -> None:
        if not self._branches:
            # An empty cache starts over at cell 0, so a re-run lays out its cells exactly as the
            # first run did (same batch shapes, same float sums: reproducible texts).
            llama_cpp.llama_memory_clear(self._mem, True)

    def free(self, branch: Branch) -> None:
        """Drop a branch: its sequence leaves the cache (cells no one else uses are released) and its
        sequence id is reused."""
        self._check_thread()
        if branch.freed:
            return
        if branch.parked:
            if self._parked.pop(branch.id, None) is not branch:
                raise InvalidRequestError(f"branch {branch.id} was freed or belongs to another backend")
            branch.freed = True
            return
        self._check_live(branch)
        self._release_seq(branch)
        branch.freed = True
        self._clear_if_empty()

    def free_all(self) -> None:
        for b in [*self._branches.values(), *self._parked.values()]:
            self.free(b)

    def seq_positions(self, branch: Branch) -> tuple[int, int]:
        """(min, max) position the cache holds for a branch; (-1, -1) when empty."""
        self._check_thread()
        return (
            int(llama_cpp.llama_memory_seq_pos_min(self._mem, branch.seq)),
            int(llama_cpp.llama_memory_seq_pos_max(self._mem, branch.seq)),
        )

    ADOPT_MIN = 4  # shorter runs of shared pending tokens are simply decoded

    def _adopt(self, b: Branch) -> None:
        """Share, instead of decoding, the KV cells of pending tokens that another live branch
        already holds: same tokens from position 0 (so the same cells in every layer), as llama.cpp's
        server reuses a cached prompt. A judge reading a candidate the policy just wrote then
        decodes only its own question. The last token is always decoded, for its logits."""
        want = len(b.tokens) - 1
        if want - b.n_past < self.ADOPT_MIN:
            return
        toks, base = b.tokens, b.n_past
        best, best_k = None, base
        for o in self._branches.values():
            limit = min(o.n_past, want)
            if o is b or limit - base < self.ADOPT_MIN or limit <= best_k:
                continue
            k = common_prefix(toks, o.tokens, limit)
            if k > best_k:
                best, best_k = o, k
        if best is None or best_k - base < self.ADOPT_MIN:
            return
        if not self.config.kv_unified:
            if base > 0:  # a stream takes another's cells whole or not at all: decode them instead
                return
            self._copy_cells(best, b, best_k)
        else:
            llama_cpp.llama_memory_seq_rm(self._mem, b.seq, base, -1)
            llama_cpp.llama_memory_seq_cp(self._mem, best.seq, b.seq, base, best_k)
        b.n_past = best_k
        b._logits = None
        self.stats.tokens_adopted += best_k - base
