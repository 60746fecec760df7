"""``rerun``: a saved session run again and checked.

``rerun`` runs a saved session again with its model, parameters, seed and batch layout (the same
:class:`~engine.run.request.CompareRequest`, rebuilt from its settings), and says run by run whether
texts and answers match; when they do not, it lists the conditions that differ (model file,
llama.cpp build, threads, n_gpu_layers, side by side or not). Texts reproduce exactly when all of
those are the same: llama.cpp's float sums depend on them (see README, "Reproducibility").
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.backends.llama_cpp import BackendConfig
from engine.errors import PonderError
from engine.events import Event, NodeAdded, Selected
from engine.executor import Executor
from engine.run.compare import run_compare
from engine.run.opening import open_worker
from engine.run.request import CompareRequest
from engine.run.scheduler import EventSink
from engine.store import SessionInfo, Store, StoreError

# --- rerun -------------------------------------------------------------------------------------------


@dataclass
class RunDiff:
    strategy: str
    old_run: str
    new_run: str
    texts_match: bool
    answers_match: bool
    old_answer: str | None
    new_answer: str | None
    n_nodes: tuple[int, int]
    first_difference: str = ""
    status: str = "done"  # the new run's: a rerun that failed says so (and `sessions rerun` exits 3)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RerunReport:
    session_id: str
    new_session_id: str
    runs: list[RunDiff]
    conditions: list[str] = field(default_factory=list)  # what differs between the two runs' setups

    @property
    def reproduced(self) -> bool:
        return all(r.texts_match and r.answers_match for r in self.runs)

    def as_dict(self) -> dict[str, Any]:
        return {
            "session_id": self.session_id,
            "new_session_id": self.new_session_id,
            "reproduced": self.reproduced,
            "runs": [r.as_dict() for r in self.runs],
            "conditions": self.conditions,
        }


def backend_kind(settings: dict[str, Any]) -> str:
    """ "server" or "llama.cpp" (sessions saved before servers existed ran in process)."""
    return str((settings.get("backend") or {}).get("kind") or "llama.cpp")


def rerun_plan(store: Store, session_id: str) -> tuple[SessionInfo, dict[str, Any]]:
    """(the session, its settings), checked: the model file must still be there (in process)."""
    s = store.session(session_id)
    st = s.settings
    if not st.get("strategies"):
        raise StoreError(
            f"Session {s.id} has no recorded settings (imported from an older export?); it cannot be rerun."
        )
    if backend_kind(st) == "server":
        return s, st
    path = st.get("model_path") or (s.runs[0].model_path if s.runs else "")
    if not path or not Path(path).exists():
        raise StoreError(f"The model of session {s.id} is gone: {path or '(none recorded)'}.")
    return s, st


def _nodes_of(events: list[Event]) -> list[NodeAdded]:
    return [e for e in events if isinstance(e, NodeAdded)]


def _answer_of(events: list[Event]) -> str | None:
    sel = next((e for e in reversed(events) if isinstance(e, Selected)), None)
    return sel.answer if sel else None


def compare_sessions(store: Store, old_id: str, new_id: str) -> RerunReport:
    old, new = store.session(old_id), store.session(new_id)
    diffs = []
    for o, n in zip(old.runs, new.runs, strict=False):
        oe, ne = store.events(o.id), store.events(n.id)
        on, nn = _nodes_of(oe), _nodes_of(ne)
        first = ""
        for a, b in zip(on, nn, strict=False):
            if (a.node_id, a.parent_id, a.text) != (b.node_id, b.parent_id, b.text):
                first = f"node {a.node_id}: {a.text[:60]!r} vs {b.text[:60]!r}"
                break
        if not first and len(on) != len(nn):
            first = f"{len(on)} nodes vs {len(nn)}"
        diffs.append(
            RunDiff(
                o.strategy,
                o.id,
                n.id,
                texts_match=not first,
                answers_match=_answer_of(oe) == _answer_of(ne),
                old_answer=_answer_of(oe),
                new_answer=_answer_of(ne),
                n_nodes=(len(on), len(nn)),
                first_difference=first,
                status=n.status,
            )
        )
    return RerunReport(old.id, new.id, diffs, _conditions(old, new))


def _conditions(old: SessionInfo, new: SessionInfo) -> list[str]:
    out = []
    if old.runs and new.runs:
        a, b = old.runs[0], new.runs[0]
        if (a.model_sha256, a.model_size) != (b.model_sha256, b.model_size):
            out.append(
                f"model file: {a.model_name} {a.model_size} B {a.model_sha256[:12]} "
                f"vs {b.model_size} B {b.model_sha256[:12]}"
            )
        if a.n_gpu_layers != b.n_gpu_layers:
            out.append(f"n_gpu_layers: {a.n_gpu_layers} vs {b.n_gpu_layers}")
    if old.llama_cpp_version != new.llama_cpp_version:
        out.append(f"llama-cpp-python: {old.llama_cpp_version} vs {new.llama_cpp_version}")
    if old.build.get("system_info") != new.build.get("system_info"):
        out.append("llama.cpp build / CPU features (system_info) differ")
    ob, nb = old.settings.get("backend") or {}, new.settings.get("backend") or {}
    if backend_kind(old.settings) == "server" or backend_kind(new.settings) == "server":
        for k, label in (
            ("kind", "backend"),
            ("servers", "servers"),
            ("model", "server model"),
            ("build", "server build"),
            ("dialect", "server API"),
            ("slots", "server slots"),
        ):
            if ob.get(k) != nb.get(k):
                out.append(f"{label}: {ob.get(k)} vs {nb.get(k)}")
        if ob.get("kind") == nb.get("kind") == "server":
            # Batching on a server depends on what else it serves: texts may differ run to run.
            out.append("server runs share the server's batches with whatever else it serves")
    before = {"kv_layout": "unified"}  # sessions saved before the choice ran a unified cache
    oc = {**before, **old.settings.get("config", {})}
    nc = {**before, **new.settings.get("config", {})}
    for k in ("threads", "n_batch", "n_ubatch", "n_ctx", "n_seq_max", "flash_attn", "kv_layout"):
        if oc.get(k) != nc.get(k):
            out.append(f"{k}: {oc.get(k)} vs {nc.get(k)}")
    if old.settings.get("concurrent") != new.settings.get("concurrent"):
        out.append("side by side vs one after another (batch shapes)")
    if old.settings.get("batch") != new.settings.get("batch"):
        # a sweep cell that shared its batches with other cells (ponder sweep --batch N > 1)
        out.append(
            f"batches: {old.settings.get('batch') or 'its own'} vs {new.settings.get('batch') or 'its own'}"
        )
    return out


def rerun(
    store: Store,
    session_id: str,
    threads: int | None = None,
    n_gpu_layers: int | None = None,
    cancel: Callable[[], bool] | None = None,
    sink: EventSink | None = None,
    executor: Executor | None = None,
) -> RerunReport:
    """Run the session again in a fresh backend (same model, config, strategies, seed) and
    compare. The new session is saved with ``rerun_of`` pointing at the old one. A session that
    ran on servers runs again on ``executor`` (servers the caller connected to, by default the
    recorded ones); one that ran in process, in a fresh llama.cpp context."""
    s, st = rerun_plan(store, session_id)
    kind = backend_kind(st)
    if (executor is not None) != (kind == "server"):
        raise PonderError(
            f"Session {s.id} ran on servers; rerun it with servers (the recorded ones are used by default)."
            if kind == "server"
            else f"Session {s.id} ran in process; rerun it without --server (a rerun keeps the backend kind)."
        )
    request = CompareRequest.from_session(s, tags=(*s.tags, "rerun"), rerun_of=s.id)

    def again(ex: Executor) -> str:
        result = run_compare(ex, request, sink, cancel, store)
        if result.error:
            raise PonderError(result.error)
        return str(result.session_id)

    if executor is not None:
        return compare_sessions(store, s.id, again(executor))
    cfg = dict(st.get("config", {}))
    cfg["kv_unified"] = cfg.pop("kv_layout", "unified") != "streams"  # sessions before it: unified
    recorded_threads = cfg.pop("threads", None)
    threads = threads or recorded_threads
    if n_gpu_layers is not None:
        cfg["n_gpu_layers"] = n_gpu_layers
    config = BackendConfig(n_threads=threads, **{k: v for k, v in cfg.items() if v is not None})
    worker = open_worker(st["model_path"], config)
    try:
        worker.wait_loaded()
        new_id = worker.submit(again).result()
    finally:
        worker.close()
    return compare_sessions(store, s.id, new_id)
