"""A compare recorded into the store, and ``rerun``: the same session run again and checked.

``recorded_compare`` is what ``ponder compare`` (and the app) call: it saves the settings a rerun
needs, records every event as it happens, and returns the session id with the runs.

``rerun`` runs a saved session again with its model, parameters, seed and batch layout, and says run
by run whether texts and answers match; when they do not, it lists the conditions that differ
(model file, llama.cpp build, threads, n_gpu_layers, side by side or not). Texts reproduce exactly
when all of those are the same: llama.cpp's float sums depend on them (see README,
"Reproducibility").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import PonderError
from engine.events import Event, NodeAdded, Selected
from engine.store import Store, StoreError


def build_snapshot() -> dict[str, Any]:
    from engine.llama_lib import build_info

    b = build_info()
    return {
        "llama_cpp_python": b.llama_cpp_python,
        "system_info": b.system_info,
        "gpu_offload": b.gpu_offload,
        "devices": [dataclasses.asdict(d) for d in b.devices],
    }


def config_dict(config: Any) -> dict[str, Any]:
    return {
        "n_ctx": config.n_ctx,
        "n_seq_max": config.n_seq_max,
        "n_batch": config.n_batch,
        "n_ubatch": config.n_ubatch,
        "n_gpu_layers": config.n_gpu_layers,
        "threads": config.threads,
        "flash_attn": config.flash_attn,
    }


def create_session(
    executor: Any,
    store: Store,
    problem: str,
    reference: str | None,
    strategies: Sequence[str],
    budget: int,
    prm: str,
    seed: int,
    seeds: str,
    max_tokens: int,
    concurrent: bool,
    overrides: dict[str, dict[str, Any]] | None = None,
    budget_tokens: int | None = None,
    solution_tokens: int | None = None,
    title: str = "",
    tags: Sequence[str] = (),
    rerun_of: str | None = None,
    **extra: Any,
) -> str:
    """A session with the settings a rerun needs (``extra``: more of them, such as a sweep cell's
    batch); returns its id."""
    settings = {
        "strategies": list(strategies),
        "budget": budget,
        "prm": prm,
        "seed": seed,
        "seeds": seeds,
        **({"budget_tokens": budget_tokens, "solution_tokens": solution_tokens} if budget_tokens else {}),
        "max_tokens": max_tokens,
        "concurrent": concurrent,
        "overrides": overrides or {},
        **extra,
        **executor.session_settings(),
    }
    return store.create_session(
        problem.strip(),
        reference,
        title=title,
        tags=list(tags),
        settings=settings,
        build=build_snapshot(),
        rerun_of=rerun_of,
    )


def recorded_compare(
    backend: Any,
    store: Store,
    problem: str,
    strategies: Sequence[str],
    budget: int = 8,
    prm: str = "judge",
    reference: str | None = None,
    seed: int = 0,
    max_tokens: int = 2048,
    concurrent: bool = True,
    overrides: dict[str, dict[str, Any]] | None = None,
    on_event: Callable[[Any, Event], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    stream_text: bool = False,
    title: str = "",
    tags: Sequence[str] = (),
    rerun_of: str | None = None,
    on_session: Callable[[str], None] | None = None,
    seeds: str = "independent",
    budget_tokens: int | None = None,
    solution_tokens: int | None = None,
    temperature: float | None = None,
) -> tuple[str, list[Any], str | None]:
    """Run :func:`engine.compare.compare` with every event saved; returns (session id, runs, the
    recording error if the disk refused writes midway, else None). Runs on the backend's thread.
    ``on_session`` gets the session id as soon as the session exists (a sweep links its cell to it
    then, so a kill mid-run leaves no session outside the sweep)."""
    from engine.backends.base import as_executor
    from engine.compare import check_compare, compare
    from engine.problems import clean_text

    problem, title, tags = clean_text(problem), clean_text(title), [clean_text(t) for t in tags]
    reference = clean_text(reference) if reference is not None else None
    executor = as_executor(backend)
    # What cannot run is refused before a session is saved for it.
    check_compare(
        executor,
        problem,
        strategies,
        budget,
        prm,
        max_tokens,
        concurrent,
        overrides,
        budget_tokens,
        solution_tokens,
    )
    sid = create_session(
        executor, store, problem, reference, strategies, budget, prm, seed, seeds, max_tokens, concurrent,
        overrides, budget_tokens, solution_tokens, title, tags, rerun_of,
        **({} if temperature is None else {"temperature": temperature}),
    )  # fmt: skip
    if on_session is not None:
        on_session(sid)
    rec = store.recorder(sid)

    def both(run: Any, ev: Event) -> None:
        rec.record(ev)
        if on_event is not None:
            on_event(run, ev)

    ok = False
    try:
        runs = compare(
            executor,
            problem,
            strategies,
            budget=budget,
            prm=prm,
            reference=reference,
            seed=seed,
            max_tokens=max_tokens,
            concurrent=concurrent,
            on_event=both,
            cancel=cancel,
            overrides=overrides,
            stream_text=stream_text,
            seeds=seeds,
            budget_tokens=budget_tokens,
            solution_tokens=solution_tokens,
            temperature=temperature,
        )
        ok = True
    finally:
        rec.close()
        if not ok and store.session(sid).runs == []:
            store.delete_session(sid)  # nothing started (a bad request): no empty session
    return sid, runs, rec.error


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


def rerun_plan(store: Store, session_id: str) -> tuple[Any, dict[str, Any]]:
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


def _conditions(old: Any, new: Any) -> list[str]:
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
    oc, nc = old.settings.get("config", {}), new.settings.get("config", {})
    for k in ("threads", "n_batch", "n_ubatch", "n_ctx", "n_seq_max", "flash_attn"):
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
    on_event: Callable[[Any, Event], None] | None = None,
    executor: Any = None,
) -> RerunReport:
    """Run the session again in a fresh backend (same model, config, strategies, seed) and
    compare. The new session is saved with ``rerun_of`` pointing at the old one. A session that
    ran on servers runs again on ``executor`` (servers the caller connected to, by default the
    recorded ones); one that ran in process, in a fresh llama.cpp context."""
    from engine.backends.llama_cpp import BackendConfig
    from engine.worker import BackendWorker

    s, st = rerun_plan(store, session_id)
    kind = backend_kind(st)
    if (executor is not None) != (kind == "server"):
        raise PonderError(
            f"Session {s.id} ran on servers; rerun it with servers (the recorded ones are used by default)."
            if kind == "server"
            else f"Session {s.id} ran in process; rerun it without --server (a rerun keeps the backend kind)."
        )

    def again(backend: Any) -> str:
        sid, _runs, err = recorded_compare(
            backend,
            store,
            s.problem,
            st["strategies"],
            budget=st["budget"],
            prm=st["prm"],
            reference=s.reference,
            seed=st["seed"],
            seeds=st.get("seeds") or "common",  # saved before seed streams per strategy: common
            budget_tokens=st.get("budget_tokens"),
            solution_tokens=st.get("solution_tokens"),
            max_tokens=st["max_tokens"],
            temperature=st.get("temperature"),
            concurrent=st["concurrent"],
            overrides=st.get("overrides") or None,
            cancel=cancel,
            on_event=on_event,
            title=s.title,
            tags=[*s.tags, "rerun"],
            rerun_of=s.id,
        )
        if err:
            raise PonderError(err)
        return sid

    if executor is not None:
        return compare_sessions(store, s.id, again(executor))
    cfg = dict(st.get("config", {}))
    recorded_threads = cfg.pop("threads", None)
    threads = threads or recorded_threads
    if n_gpu_layers is not None:
        cfg["n_gpu_layers"] = n_gpu_layers
    config = BackendConfig(n_threads=threads, **{k: v for k, v in cfg.items() if v is not None})
    worker = BackendWorker(st["model_path"], config)
    try:
        worker.wait_loaded()
        new_id = worker.submit(again).result()
    finally:
        worker.close()
    return compare_sessions(store, s.id, new_id)
