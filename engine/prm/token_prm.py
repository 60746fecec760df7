"""Token PRMs: PRM GGUFs in Math-Shepherd format (a step tag after each step, P(good) vs P(bad) at the
tag) or RLHFlow's chat format (P(+) vs P(-) as the assistant's answer to each step)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from engine.errors import InvalidRequestError, PonderError
from engine.executor import PRMMode
from engine.prm.specs import PRM_FORMATS
from engine.prm.steps import check_candidates, verdict_share


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    n = min(len(s) for s in seqs)
    first = seqs[0]
    for k in range(n):
        t = first[k]
        if any(s[k] != t for s in seqs[1:]):
            return k
    return n


class TokenPRM:
    """A PRM GGUF read at its verdict tokens.

    * ``math-shepherd``: input ``question + " " + steps``, every step followed by the step tag
      (default ``" ки"``); the step's score is P(good) over {good, bad} read at the tag.
    * ``rlhflow``: a chat whose first user turn is ``question + " " + step1``, each later user turn
      one step, each assistant turn the good token; the score is P(good) over {good, bad} where the
      assistant's token is predicted.

    The tags and tokens come from ``models/catalog.toml``; a vocabulary that cannot spell them as
    single tokens is refused with a clear message."""

    mode: PRMMode = "direct"
    n_params: int = 0
    model_record: dict[str, Any] | None = None

    def __init__(
        self,
        backend: Any,
        prm_format: str,
        step_tag: str = "ки",
        good_token: str = "+",
        bad_token: str = "-",
        name: str = "token-prm",
    ) -> None:
        if prm_format not in PRM_FORMATS:
            raise InvalidRequestError(
                f"Unknown PRM format {prm_format!r}; use one of {', '.join(PRM_FORMATS)}."
            )
        self.backend = backend
        self.format = prm_format
        self.name = name
        self.tokens_used = 0
        self.step_tag = step_tag
        model = backend.info.name
        self.good_id = self._single(good_token, "good token", model)
        self.bad_id = self._single(bad_token, "bad token", model)
        self.tag_id = self._single(step_tag, "step tag", model) if prm_format == "math-shepherd" else None

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
        """(tokens, positions to read) for one candidate."""
        b = self.backend
        toks: list[int] = []
        reads: list[int] = []
        if self.format == "math-shepherd":
            toks = b.tokenize(question + " ", add_special=True, parse_special=False)
            for s in steps:
                toks += b.tokenize(s.strip(), add_special=False, parse_special=False)
                toks.append(self.tag_id)
                reads.append(len(toks) - 1)
            return toks, reads
        msgs: list[dict[str, str]] = []
        for i, s in enumerate(steps):
            msgs.append({"role": "user", "content": (question + " " + s.strip()) if i == 0 else s.strip()})
            text = b.render_chat(msgs, add_generation_prompt=True)
            prefix = b.tokenize(text, add_special=False, parse_special=True)
            toks = prefix
            reads.append(len(toks) - 1)
            msgs.append({"role": "assistant", "content": b.detokenize([self.good_id]).strip()})
        return toks, reads

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
