"""Token PRMs in process: a PRM GGUF read at its verdict tokens, in its kind's format (Math-Shepherd's
step tag, RLHFlow's chat: ``engine/prm/kinds/``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic

from engine.errors import PonderError
from engine.executor import PRMMode
from engine.prm.formats import Segment, VerdictFormat, render
from engine.prm.reader import B, TokenModel
from engine.prm.steps import check_candidates, verdict_share


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for k in range(n):
        t = first[k]
        if any(s[k] != t for s in seqs[1:]):
            return k
    return n


class TokenPRM(Generic[B]):
    """A PRM GGUF read at its verdict tokens, in the format its kind gives
    (``engine/prm/kinds/``): every step's prefix is rendered with the GGUF's own vocabulary and chat
    template, the candidate decoded once, and each step's score is P(good) over {good, bad} read
    where its prefix ends.

    The tags and tokens come from ``models/catalog.toml``; a vocabulary that cannot spell them as
    single tokens is refused with a clear message."""

    mode: PRMMode = "direct"

    def __init__(
        self,
        backend: TokenModel[B],
        fmt: VerdictFormat,
        name: str = "token-prm",
        n_params: int = 0,
        model_record: dict[str, Any] | None = None,
    ) -> None:
        self.backend = backend
        self.format = fmt
        self.name = name
        self.n_params = n_params
        self.model_record = model_record
        self.tokens_used = 0
        model = backend.info.name
        self.good_id = self._single(fmt.good[0], "good token", model)
        self.bad_id = self._single(fmt.bad[0], "bad token", model)
        self.tag_id = self._single(fmt.step_tag, "step tag", model) if fmt.step_tag is not None else None

    def _single(self, text: str, what: str, model: str) -> int:
        for form in (text, " " + text):
            toks = self.backend.tokenize(form, add_special=False, parse_special=True)
            if len(toks) == 1:
                return toks[0]
        raise PonderError(
            f"{model} cannot be used as a token PRM: its vocabulary has no single token for the "
            f"{what} {text!r} (it splits into {len(self.backend.tokenize(text, add_special=False))} "
            "tokens). Check the PRM format and tokens in models/catalog.toml."
        )

    def _sequences(self, question: str, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """(tokens, positions to read) for one candidate: each step's prefix extends the one before,
        so the last is the whole sequence and each verdict is read where its prefix ends."""
        memo: dict[Segment, list[int]] = {}
        prefixes = [
            render(self.format.prefix(question, steps[: k + 1]), self.backend, self.tag_id, memo)
            for k in range(len(steps))
        ]
        return prefixes[-1], [len(p) - 1 for p in prefixes]

    def score(
        self,
        question: str,
        candidates: Sequence[Sequence[str]],
        finished: Sequence[bool] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[list[float]]:
        check_candidates(candidates)
        b = self.backend
        before = b.stats.tokens_decoded
        seqs = [self._sequences(question, steps) if steps else ([], []) for steps in candidates]
        group = max(1, b.free_slots - 1)
        results: dict[int, list[float]] = {}
        todo = [i for i, (toks, _) in enumerate(seqs) if toks]
        try:
            for g in range(0, len(todo), group):
                idx = todo[g : g + group]
                # The longest prefix every candidate shares (the question, at least) is decoded
                # once and forked; each read position must stay after it.
                shared = _common_prefix([seqs[i][0] for i in idx])
                shared = min(
                    shared,
                    min(min(seqs[i][1], default=shared) for i in idx),
                    *(len(seqs[i][0]) - 1 for i in idx),
                )
                if shared > 0:
                    root = b.root(seqs[idx[0]][0][:shared])
                    try:
                        b.prefill([root], cancel=cancel)
                        branches = b.fork(root, len(idx))
                    finally:
                        b.free(root)
                else:
                    branches = [b.root(seqs[i][0][:1]) for i in idx]
                try:
                    for i, br in zip(idx, branches, strict=True):
                        b.extend(br, seqs[i][0][len(br.tokens) :])
                    lps = b.read_positions(
                        branches, [seqs[i][1] for i in idx], [self.good_id, self.bad_id], cancel
                    )
                finally:
                    for br in branches:
                        b.free(br)
                for i, lp in zip(idx, lps, strict=True):
                    results[i] = verdict_share(lp, 1)
        finally:
            self.tokens_used += b.stats.tokens_decoded - before
        out: list[list[float]] = []
        for i in range(len(candidates)):
            out.append(results.get(i, []))
        return out
