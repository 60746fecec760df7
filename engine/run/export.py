"""A session exported: :func:`export_session` in any format (HTML here, JSON and JSONL by the store).

The HTML is one self-contained file: the runs side by side, every step tinted by its PRM score on
the one colour scale of :mod:`engine.present` (with a legend), pruned branches faded, the chosen
path and answers marked. No scripts, fonts or images from the network: it opens anywhere and can be
mailed."""

from __future__ import annotations

import html

from engine.events import Event, Trace, fold
from engine.present import human_flops, score_colour
from engine.prm import split_steps
from engine.search.registry import answer_is_path, drawn_as
from engine.store import RunInfo, SessionInfo, Store, StoreError, export_text

EXPORT_FORMATS = ("json", "jsonl", "html")


def export_session(store: Store, session_id: str, fmt: str) -> str:
    """A session as JSON, JSONL or a self-contained HTML page (a missing session is a StoreError
    before anything is written)."""
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"Export format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}.")
    if fmt != "html":
        return export_text(store, session_id, fmt)
    s = store.session(session_id)
    return session_html(s, store.session_events(s.id))


def scored_steps(text: str, path_step_scores: list[float] | None) -> list[tuple[str, float | None]]:
    """A node's steps, each with its own PRM score. A beam node's step scores cover its whole path;
    its own steps are the last ones (earlier steps without a score get None)."""
    steps = split_steps(text) or [text]
    own = list(path_step_scores or [])[-len(steps) :]
    scores: list[float | None] = [None] * (len(steps) - len(own))
    scores += own
    return list(zip(steps, scores, strict=True))


def _steps_html(text: str, step_scores: list[float] | None) -> str:
    """The node's text with each step on the background of its own PRM score."""
    return "".join(
        f'<span class="step" style="background:{score_colour(sc)}"'
        + (f' title="step score {sc:.2f}"' if sc is not None else "")
        + f">{_esc(st)}</span>"
        for st, sc in scored_steps(text, step_scores)
    )


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _node_html(t: Trace, nid: int, chosen: set[int]) -> str:
    n = t.nodes[nid]
    score, steps = n.score, n.path_step_scores
    classes = ["node", n.role]
    if n.pruned_at is not None:
        classes.append("pruned")
    if nid in chosen:
        classes.append("chosen")
    meta = [f"#{nid}", n.role, f"{n.n_tokens} tok"]
    if score is not None:
        meta.append(f"score {score:.2f}")
    if steps and len(steps) > 1:
        meta.append("steps " + " ".join(f"{x:.2f}" for x in steps))
    if n.answer is not None:
        meta.append(f"answer {n.answer}")
    if n.pruned_at is not None:
        meta.append(f"pruned at round {n.pruned_at}")
    body = (
        f'<div class="{" ".join(classes)}" style="border-left-color:{score_colour(score, strong=True)}" '
        f'title="{_esc(" | ".join(meta))}">'
        f'<div class="meta">{_esc(" · ".join(meta))}</div><pre>{_steps_html(n.text, steps)}</pre></div>'
    )
    kids = "".join(_node_html(t, c, chosen) for c in n.children)
    return body + (f'<div class="kids">{kids}</div>' if kids else "")


_SHOWN_PARAMS = ("n", "beam_width", "lookahead", "chains", "length", "selection")


def _run_html(info: RunInfo, events: list[Event]) -> str:
    t = fold(events)
    sel = t.selected
    chosen = t.chosen(answer_is_path(info.strategy))
    answer = str(sel.answer) if sel and sel.answer is not None else "-"
    verdict = {True: "correct", False: "wrong", None: ""}[info.correct]
    tally = ", ".join(
        f"{_esc(str(a))}: {v:.2f}"
        for a, v in sorted((sel.tally if sel else {}).items(), key=lambda kv: -kv[1])
    )
    params = ", ".join(f"{k}={v}" for k, v in info.params.items() if k in _SHOWN_PARAMS)
    head = (
        f'<div class="runhead"><h2>{_esc(info.strategy)}</h2>'
        f'<div class="params">{_esc(params)}</div>'
        f'<div class="answer {verdict}">answer: <b>{_esc(answer)}</b> {verdict}</div>'
        f'<div class="stats">{info.status} · {info.generated_tokens} generated · '
        f"{info.prompt_tokens} prompt ({info.cached_tokens} reused) · {info.prm_tokens} PRM tokens · "
        f"{_esc(human_flops(info.flops))} · {info.wall_s:.1f} s</div>"
        + (f'<div class="tally">tally: {tally}</div>' if tally else "")
        + "</div>"
    )
    roots = t.roots
    if drawn_as(info.strategy) == "column":  # ranked by score, as the app's cards
        roots = sorted(roots, key=lambda i: -(t.nodes[i].score or 0.0))
    body = "".join(_node_html(t, r, chosen) for r in roots)
    return f'<section class="run">{head}<div class="trace">{body}</div></section>'


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:18px;margin:0 0 4px} .problem{white-space:pre-wrap;margin:4px 0 8px;max-width:100em}
.sub{color:#666;font-size:12px;margin-bottom:8px}
.legend{display:flex;align-items:center;gap:6px;font-size:12px;margin:8px 0 12px}
.legend .bar{width:220px;height:12px;border-radius:3px;
 background:linear-gradient(90deg,hsl(0,70%,82%),hsl(60,70%,82%),hsl(120,70%,82%))}
.runs{display:grid;grid-template-columns:repeat(auto-fit,minmax(340px,1fr));gap:12px;align-items:start}
.run{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px;overflow:hidden}
.runhead h2{font-size:15px;margin:0} .params,.stats,.tally{font-size:12px;color:#555}
.answer{margin:4px 0} .answer.correct b{color:#16702e} .answer.wrong b{color:#a11}
.node{border:1px solid rgba(0,0,0,.12);border-left:5px solid #ccc;border-radius:4px;margin:4px 0;
 padding:3px 6px;background:#fff}
.step{border-radius:2px}
.node pre{white-space:pre-wrap;word-wrap:break-word;margin:2px 0;
 font:12px/1.35 ui-monospace,Menlo,Consolas,monospace}
.node .meta{font-size:11px;color:#444}
.node.pruned{opacity:.45} .node.chosen{outline:2px solid #1f5fbf}
.kids{margin-left:14px;border-left:2px solid #e2e2e2;padding-left:6px}
"""


def session_html(session: SessionInfo, events: dict[str, list[Event]]) -> str:
    runs = "".join(_run_html(r, events.get(r.id, [])) for r in session.runs)
    ref = f" · reference answer: <b>{_esc(session.reference)}</b>" if session.reference else ""
    model = session.runs[0].model_name if session.runs else ""
    backend = session.settings.get("backend") or {}
    if backend.get("kind") == "server":
        where = f"on {', '.join(backend.get('servers') or [])} ({backend.get('dialect', 'server')}"
        where += f", build {backend['build']})" if backend.get("build") else ")"
        model = f"{model} {where}"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>Ponder session {_esc(session.id)}</title><style>{CSS}</style></head><body>"
        f"<h1>Ponder session {_esc(session.id)}</h1>"
        f'<div class="problem">{_esc(session.problem)}</div>'
        f'<div class="sub">{_esc(session.created)} · {_esc(model)} · Ponder {_esc(session.ponder_version)}, '
        f"llama-cpp-python {_esc(session.llama_cpp_version)}{ref}</div>"
        '<div class="legend">PRM score <span>0</span><span class="bar"></span><span>1</span>'
        '<span style="margin-left:12px;background:#ececec;padding:0 6px;border-radius:3px">unscored</span>'
        '<span style="margin-left:12px;outline:2px solid #1f5fbf;padding:0 6px">chosen</span>'
        '<span style="margin-left:12px;opacity:.45">pruned</span></div>'
        f'<div class="runs">{runs}</div></body></html>'
    )
