"""The detail pane's text for one node: its steps tinted by their PRM scores, its counts, a
revision's changes from the attempt before it, and its tokens shaded by the model's probability."""

from __future__ import annotations

import html
import math

from PySide6.QtGui import QColor

from engine.events import Trace
from engine.run.export import scored_steps
from engine.search import registry
from gui.theme import ON_TINT
from gui.trace_view import score_qcolor


def node_html(trace: Trace, strategy: str, nid: int) -> str:
    n = trace.nodes.get(nid)
    if n is None:
        return ""
    body = "".join(
        f"<div style='background:{score_qcolor(sc).name()};color:{ON_TINT};padding:3px;margin:2px 0;"
        "white-space:pre-wrap'>"
        f"{_html(st)}<br><small>step score {sc:.2f}</small></div>"
        if sc is not None
        else f"<div style='background:#ececec;color:{ON_TINT};padding:3px;white-space:pre-wrap'>"
        f"{_html(st)}</div>"
        for st, sc in scored_steps(n.text, n.path_step_scores)
    )
    meta = [
        f"node #{nid}",
        n.role,
        f"{n.n_tokens} tokens",
        f"mean logprob {n.logprob_sum / max(n.n_tokens, 1):.2f}",
    ]
    if n.score is not None:
        meta.append(f"score {n.score:.2f}")
    for scorer, s in n.scores.items():
        meta.append(f"{scorer}: {s:.2f}")
    if n.answer is not None:
        meta.append(f"answer {n.answer}")
    if n.weight is not None:  # particle filtering's resampling
        fate = "died" if not n.copies else f"copied to {n.copies} particle{'s' * (n.copies != 1)}"
        meta.append(f"weight {n.weight:.3f}, {fate}")
    if n.pruned_at is not None:
        meta.append(f"pruned at round {n.pruned_at}")
    tokens = ""
    if n.token_texts and len(n.token_texts) == len(n.token_logprobs):
        tokens = "<p><b>Tokens</b>, shaded by the model's probability (white 1, red 0):</p>" + "".join(
            f"<span style='background:{prob_colour(lp)};color:{ON_TINT}' title='p = {math.exp(lp):.3f}'>"
            f"{_html(t)}</span>"
            for t, lp in zip(n.token_texts, n.token_logprobs, strict=True)
        )
        tokens = f"<div style='white-space:pre-wrap;font-family:monospace'>{tokens}</div>"
    diff = revision_diff(trace, nid)
    return f"<p><b>{registry.label(strategy)}</b> · {' · '.join(meta)}</p>{body}{diff}{tokens}"


def revision_diff(trace: Trace, nid: int) -> str:
    """For a revision: its words against the attempt before it (added green, removed struck)."""
    n = trace.nodes[nid]
    if n.role != "revision" or n.parent_id is None or n.parent_id not in trace.nodes:
        return ""
    import difflib

    old, new = trace.nodes[n.parent_id].text.split(), n.text.split()
    out = []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
        if op in ("delete", "replace"):
            out.append(f"<s style='color:#a11;background:#fbe3e3'>{_html(' '.join(old[a0:a1]))}</s>")
        if op in ("insert", "replace"):
            out.append(
                f"<span style='background:#d9f2d9;color:{ON_TINT}'>{_html(' '.join(new[b0:b1]))}</span>"
            )
        if op == "equal":
            out.append(_html(" ".join(new[b0:b1])))
    return f"<p><b>Changes from attempt #{n.parent_id}</b>:</p><p>{' '.join(out)}</p>"


def prob_colour(logprob: float) -> str:
    p = min(1.0, max(0.0, math.exp(logprob)))
    return QColor.fromHslF(0.0, 0.75, 1.0 - 0.35 * (1.0 - p)).name()


def _html(text: str) -> str:
    return html.escape(text)
