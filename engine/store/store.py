"""Sessions in SQLite: every run recorded as it happens, reopened, replayed, exported.

A *session* is one problem put to one or more strategies (one ``ponder compare``); a *run* is one
strategy's run; its *events* are the stream the strategy produced (see :mod:`engine.events`), kept
in order as JSON, so loading a run gives back exactly the live stream and every consumer (the
window, the HTML export, replay) draws it the same way. *Nodes* are the events folded into rows for
queries (every step with its text, scores and answer; see :mod:`engine.store.recorder`).

A run still marked ``running`` whose process is gone is shown as ``interrupted``. A database written
by a newer Ponder is refused and left untouched (:mod:`engine.store.migrations`). The engine never
imports Qt.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, Text, cast, delete, func, insert, literal_column, select, update
from sqlalchemy.exc import DatabaseError, OperationalError

from engine.events import Event, event_from_dict
from engine.store.db import (
    StoreError,
    check_file,
    check_writable,
    default_db_path,
    now,
    open_engine,
    pid_alive,
    read_version,
    reads,
    sqlite_error_text,
)
from engine.store.info import RunInfo, SessionInfo, SweepInfo, run_info, session_info, sweep_info
from engine.store.migrations import SCHEMA_VERSION, migrate
from engine.store.recorder import COMMIT_EVERY_S, Recorder
from engine.store.rows import EventRow, NodeRow, RunRow, SessionRow, SweepCellRow, SweepRow


@dataclass(frozen=True)
class SessionOrigin:
    """Where a session was first recorded, kept when it is imported: its id, when, and the
    versions of Ponder and llama.cpp that recorded it (None: this process's)."""

    session_id: str | None = None
    created: str | None = None
    ponder_version: str | None = None
    llama_cpp_version: str | None = None


class Store:
    """One session database. ``Store.open(path)`` checks, creates or migrates it; a store opened
    ``readonly`` never writes (listing, showing, exporting work on a read-only file)."""

    def __init__(self, path: Path, engine: Engine, readonly: bool) -> None:
        self.path = path
        self.engine = engine
        self.readonly = readonly
        self.version = SCHEMA_VERSION  # a read-only store keeps the version it found (no migration)
        self.host = socket.gethostname()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, readonly: bool = False) -> Store:
        p = Path(path).expanduser() if path else default_db_path()
        check_file(p)
        exists = p.exists() and p.stat().st_size > 0
        version = read_version(p) if exists else None
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"{p} was written by a newer Ponder (schema version {version}; this one reads up to "
                f"{SCHEMA_VERSION}). It was left untouched: update Ponder to open it."
            )
        if readonly:
            if not exists:
                raise StoreError(f"There is no session database at {p} yet: run `ponder compare` first.")
            store = cls(p, open_engine(p, readonly=True), True)
            store.version = version or 0
            return store
        check_writable(p, exists)
        engine = open_engine(p, readonly=False)
        try:
            migrate(engine, version or 0)
        except (OperationalError, DatabaseError) as e:
            engine.dispose()
            raise StoreError(f"Cannot write the session database {p}: {sqlite_error_text(e)}.") from None
        return cls(p, engine, False)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _guard(self) -> None:
        if self.readonly:
            raise StoreError(f"{self.path} was opened read-only.")

    # --- writing ------------------------------------------------------------------------------------

    def create_session(
        self,
        problem: str,
        reference: str | None = None,
        title: str = "",
        tags: Sequence[str] = (),
        settings: dict[str, Any] | None = None,
        build: dict[str, Any] | None = None,
        rerun_of: str | None = None,
        origin: SessionOrigin | None = None,
    ) -> str:
        """A new session (no runs yet); returns its id. ``origin``: the id, time and versions an
        imported session keeps (a new one gets a fresh id, now, and this process's versions)."""
        self._guard()
        o = origin or SessionOrigin()
        sid = o.session_id or uuid.uuid4().hex[:12]
        with self.engine.begin() as conn:
            conn.execute(
                insert(SessionRow).values(
                    id=sid,
                    created=o.created or now(),
                    title=title or problem.strip().splitlines()[0][:80],
                    problem=problem,
                    reference=reference,
                    tags=list(tags),
                    settings=settings or {},
                    ponder_version=o.ponder_version if o.ponder_version is not None else _ponder_version(),
                    llama_cpp_version=o.llama_cpp_version
                    if o.llama_cpp_version is not None
                    else _llama_version(),
                    build=build or {},
                    rerun_of=rerun_of,
                )
            )
        return sid

    def recorder(
        self, session_id: str, commit_every_s: float = COMMIT_EVERY_S, share: Recorder | None = None
    ) -> Recorder:
        """A recorder for a session; ``share``: another live recorder whose connection it writes
        through (sessions recording at once)."""
        self._guard()
        return Recorder(self, session_id, commit_every_s, share)

    def delete_session(self, session_id: str) -> None:
        self._guard()
        with self.engine.begin() as conn:
            n = conn.execute(delete(SessionRow).where(SessionRow.id == session_id)).rowcount
        if not n:
            raise StoreError(f"No session {session_id} in {self.path}.")

    def repair_interrupted(self) -> int:
        """Mark runs left ``running`` by a process that is gone as ``interrupted``; returns how many."""
        if self.readonly:
            return 0
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(RunRow.id, RunRow.pid, RunRow.host).where(RunRow.status == "running")
            ).all()
            dead = [r.id for r in rows if r.host != self.host or not pid_alive(r.pid)]
            if dead:
                conn.execute(
                    update(RunRow)
                    .where(RunRow.id.in_(dead))
                    .values(
                        status="interrupted", message="The process recording this run ended before it did."
                    )
                )
        return len(dead)

    # --- reading ------------------------------------------------------------------------------------

    def _resolve(self, conn: Connection, session_id: str) -> str:
        """A full id from a unique prefix (as `git` takes short hashes)."""
        if conn.execute(select(SessionRow.id).where(SessionRow.id == session_id)).first():
            return session_id
        like = session_id.replace("%", "").replace("_", "")
        ids = [
            r[0] for r in conn.execute(select(SessionRow.id).where(SessionRow.id.like(like + "%")).limit(2))
        ]
        if len(ids) == 1 and like:
            return ids[0]
        if len(ids) > 1:
            raise StoreError(f"Session id {session_id!r} is ambiguous; give more characters.")
        raise StoreError(f"No session {session_id} in {self.path}.")

    @reads
    def list_sessions(
        self,
        search: str | None = None,
        model: str | None = None,
        correct: bool | None = None,
        since: str | None = None,
        limit: int | None = None,
        sweeps: bool = True,
    ) -> list[SessionInfo]:
        """Sessions, newest first, with their runs (no events). ``search`` matches problem or title,
        ``model`` a model name, ``correct`` keeps sessions with a run that is (not) correct,
        ``since`` an ISO date; ``sweeps=False`` leaves out the sessions sweeps ran."""
        try:
            with self.engine.connect() as conn:
                q = select(SessionRow).order_by(SessionRow.created.desc(), SessionRow.id)
                if search:
                    pat = f"%{search}%"
                    q = q.where(SessionRow.problem.like(pat) | SessionRow.title.like(pat))
                if since:
                    q = q.where(SessionRow.created >= since)
                if model:
                    q = q.where(
                        SessionRow.id.in_(
                            select(RunRow.session_id).where(RunRow.model_name.like(f"%{model}%"))
                        )
                    )
                if correct is not None:
                    q = q.where(SessionRow.id.in_(select(RunRow.session_id).where(RunRow.correct == correct)))
                if not sweeps:  # a sweep tags its sessions "sweep:ID" from the start (JSON text)
                    q = q.where(~cast(SessionRow.tags, Text).like('%"sweep:%'))
                if limit:
                    q = q.limit(limit)
                sessions = conn.execute(q).all()
                ids = [s.id for s in sessions]
                runs: dict[str, list[RunInfo]] = {i: [] for i in ids}
                for chunk in range(0, len(ids), 500):
                    part = ids[chunk : chunk + 500]
                    for r in conn.execute(
                        select(*self._run_columns())
                        .where(RunRow.session_id.in_(part))
                        .order_by(RunRow.position)
                    ).all():
                        runs[r.session_id].append(run_info(r, self.host))
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {sqlite_error_text(e)}.") from None
        return [session_info(s, runs[s.id]) for s in sessions]

    @reads
    def recorded_rates(self, model_name: str, n_gpu_layers: int, limit: int = 40) -> list[dict[str, Any]]:
        """The latest ``limit`` finished sessions of ``model_name`` on this machine (as
        :mod:`engine.run.cost` reads them): each a dict of its settings and its runs' strategy,
        generated tokens and wall seconds. Bounded: one indexed query of at most ``limit`` sessions."""
        with self.engine.connect() as conn:
            picked = (
                select(RunRow.session_id)
                .where(
                    RunRow.model_name == model_name,
                    RunRow.host == self.host,
                    RunRow.n_gpu_layers == n_gpu_layers,
                    RunRow.status == "done",
                    RunRow.generated_tokens > 0,
                )
                .distinct()
                .subquery()
            )
            sessions = conn.execute(
                select(SessionRow.id, SessionRow.settings)
                .where(SessionRow.id.in_(select(picked.c.session_id)))
                .order_by(SessionRow.created.desc())
                .limit(limit)
            ).all()
            out: dict[str, dict[str, Any]] = {
                s.id: {"settings": dict(s.settings or {}), "runs": []} for s in sessions
            }
            if out:
                for r in conn.execute(
                    select(
                        RunRow.session_id,
                        RunRow.strategy,
                        RunRow.generated_tokens,
                        RunRow.wall_s,
                        RunRow.status,
                    ).where(RunRow.session_id.in_(list(out)))
                ).all():
                    out[r.session_id]["runs"].append(
                        {
                            "strategy": r.strategy,
                            "tokens": r.generated_tokens,
                            "wall_s": r.wall_s,
                            "status": r.status,
                        }
                    )
        return list(out.values())

    @reads
    def footprint(self, runs: int = 20) -> tuple[int, int]:
        """(bytes, generated tokens) of the latest ``runs`` finished runs, events and nodes: what the
        store grows by per token here. Bounded: it reads those runs only, however big the store."""
        with self.engine.connect() as conn:
            latest = (
                select(RunRow.id, RunRow.generated_tokens)
                .where(RunRow.status == "done", RunRow.generated_tokens > 0)
                .order_by(literal_column("runs.rowid").desc())  # the latest written
                .limit(runs)
                .subquery()
            )
            tokens = conn.execute(select(func.coalesce(func.sum(latest.c.generated_tokens), 0))).scalar_one()
            ids = select(latest.c.id)
            events = conn.execute(
                select(func.coalesce(func.sum(func.length(cast(EventRow.payload, Text))), 0)).where(
                    EventRow.run_id.in_(ids)
                )
            ).scalar_one()
            nodes = conn.execute(
                select(func.coalesce(func.sum(func.length(NodeRow.text)), 0)).where(NodeRow.run_id.in_(ids))
            ).scalar_one()
        return int(events) + int(nodes), int(tokens)

    def _run_columns(self) -> list[Any]:
        """The runs table's columns this database has (a read-only store of an older version is not
        migrated: it lacks the later columns)."""
        cols = list(RunRow.__table__.c)
        if self.version >= SCHEMA_VERSION:
            return cols
        if getattr(self, "_old_run_cols", None) is None:
            with self.engine.connect() as conn:
                have = {r[1] for r in conn.exec_driver_sql("PRAGMA table_info(runs)")}
            self._old_run_cols = [c for c in cols if c.name in have]
        return self._old_run_cols

    @reads
    def session(self, session_id: str) -> SessionInfo:
        try:
            with self.engine.connect() as conn:
                sid = self._resolve(conn, session_id)
                s = conn.execute(select(SessionRow).where(SessionRow.id == sid)).one()
                runs = [
                    run_info(r, self.host)
                    for r in conn.execute(
                        select(*self._run_columns()).where(RunRow.session_id == sid).order_by(RunRow.position)
                    ).all()
                ]
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {sqlite_error_text(e)}.") from None
        return session_info(s, runs)

    @reads
    def events(self, run_id: str) -> list[Event]:
        """The run's events in the order they were recorded: the live stream, again."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(EventRow.payload).where(EventRow.run_id == run_id).order_by(EventRow.seq)
                ).all()
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {sqlite_error_text(e)}.") from None
        return [event_from_dict(r[0]) for r in rows]

    @reads
    def session_events(self, session_id: str) -> dict[str, list[Event]]:
        s = self.session(session_id)
        return {r.id: self.events(r.id) for r in s.runs}

    @reads
    def replay(self, session_id: str) -> Iterator[tuple[str, Event]]:
        """The session's events in the order they happened across runs (runs side by side
        interleave as they did live): (run id, event)."""
        sid = self.session(session_id).id
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(EventRow.run_id, EventRow.payload)
                .join(RunRow, RunRow.id == EventRow.run_id)
                .where(RunRow.session_id == sid)
                .order_by(EventRow.id)
            ).all()
        return iter([(run_id, event_from_dict(payload)) for run_id, payload in rows])

    @reads
    def nodes(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(NodeRow).where(NodeRow.run_id == run_id).order_by(NodeRow.node_id)
            ).all()
        return [
            {
                c: getattr(r, c)
                for c in (
                    "node_id",
                    "parent_id",
                    "role",
                    "text",
                    "n_tokens",
                    "logprob_sum",
                    "score",
                    "step_scores",
                    "answer",
                    "finish_reason",
                    "pruned_at",
                )
            }
            for r in rows
        ]

    # --- sweeps -------------------------------------------------------------------------------------

    def open_sweep(self, key: str, name: str, settings: dict[str, Any]) -> str:
        """The sweep with this key (see :class:`SweepRow`), created if there is none; its id."""
        self._guard()
        with self.engine.begin() as conn:
            sid = conn.execute(select(SweepRow.id).where(SweepRow.key == key)).scalar()
            if sid is None:
                sid = uuid.uuid4().hex[:12]
                conn.execute(
                    insert(SweepRow).values(id=sid, created=now(), name=name, key=key, settings=settings)
                )
        return sid

    def update_sweep(self, sweep_id: str, **settings: Any) -> None:
        """Merge ``settings`` into the sweep's settings (the last spec it ran with, say)."""
        self._guard()
        with self.engine.begin() as conn:
            old = conn.execute(select(SweepRow.settings).where(SweepRow.id == sweep_id)).scalar()
            if old is None:
                raise StoreError(f"No sweep {sweep_id!r} in {self.path}.")
            conn.execute(update(SweepRow).where(SweepRow.id == sweep_id).values(settings={**old, **settings}))

    @reads
    def list_sweeps(self) -> list[SweepInfo]:
        if self.version < 2:  # a version-1 file opened read-only: no sweeps table yet
            return []
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(select(SweepRow).order_by(SweepRow.created.desc())).all()
                counts = dict(
                    conn.execute(
                        select(SweepCellRow.sweep_id, func.count()).group_by(SweepCellRow.sweep_id)
                    ).all()
                )
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {sqlite_error_text(e)}.") from None
        return [sweep_info(r, counts.get(r.id, 0)) for r in rows]

    def sweep(self, sweep_id: str) -> SweepInfo:
        found = [w for w in self.list_sweeps() if w.id.startswith(sweep_id)] if sweep_id else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise StoreError(f"Sweep id {sweep_id!r} is ambiguous; give more characters.")
        raise StoreError(f"No sweep {sweep_id!r} in {self.path}.")

    @reads
    def sweep_cells(self, sweep_id: str) -> dict[tuple[int, str, int], RunInfo | None]:
        """Every cell the sweep has started: (problem index, strategy, budget) -> its run (None when
        its session was deleted)."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(
                        SweepCellRow.problem_index.label("cell_index"),
                        SweepCellRow.strategy.label("cell_strategy"),
                        SweepCellRow.budget.label("cell_budget"),
                        *self._run_columns(),
                    )
                    .outerjoin(RunRow, RunRow.session_id == SweepCellRow.session_id)
                    .where(SweepCellRow.sweep_id == sweep_id)
                ).all()
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {sqlite_error_text(e)}.") from None
        return {
            (r.cell_index, r.cell_strategy, r.cell_budget): (
                run_info(r, self.host) if r.id is not None else None
            )
            for r in rows
        }

    def drop_orphan_sweep_sessions(self, sweep_id: str) -> int:
        """Delete the sessions a sweep made that no cell points at: a run killed between saving its
        session and linking it to its cell (two transactions) left one behind. Called when the
        sweep starts or resumes, before any cell runs; returns how many were deleted."""
        self._guard()
        linked = select(SweepCellRow.session_id).where(
            (SweepCellRow.sweep_id == sweep_id) & SweepCellRow.session_id.is_not(None)
        )
        with self.engine.begin() as conn:
            gone = conn.execute(
                delete(SessionRow).where(
                    cast(SessionRow.tags, Text).like(f'%"sweep:{sweep_id}"%') & SessionRow.id.not_in(linked)
                )
            )
            return int(gone.rowcount or 0)

    def set_sweep_cell(self, sweep_id: str, index: int, strategy: str, budget: int, session_id: str) -> None:
        """Point a cell at the session that ran it; the session it pointed at before (a cancelled or
        interrupted attempt) is deleted, so a cell has one result."""
        self._guard()
        with self.engine.begin() as conn:
            where = (
                (SweepCellRow.sweep_id == sweep_id)
                & (SweepCellRow.problem_index == index)
                & (SweepCellRow.strategy == strategy)
                & (SweepCellRow.budget == budget)
            )
            old = conn.execute(select(SweepCellRow.session_id).where(where)).first()
            if old is None:
                conn.execute(
                    insert(SweepCellRow).values(
                        sweep_id=sweep_id,
                        problem_index=index,
                        strategy=strategy,
                        budget=budget,
                        session_id=session_id,
                    )
                )
                return
            conn.execute(update(SweepCellRow).where(where).values(session_id=session_id))
            if old[0] and old[0] != session_id:
                conn.execute(delete(SessionRow).where(SessionRow.id == old[0]))

    def delete_sweep(self, sweep_id: str) -> int:
        """Delete a sweep and the sessions it ran; returns how many sessions went."""
        self._guard()
        sid = self.sweep(sweep_id).id
        with self.engine.begin() as conn:
            sessions = [
                r[0]
                for r in conn.execute(
                    select(SweepCellRow.session_id).where(
                        (SweepCellRow.sweep_id == sid) & SweepCellRow.session_id.is_not(None)
                    )
                ).all()
            ]
            conn.execute(delete(SweepRow).where(SweepRow.id == sid))
            for chunk in range(0, len(sessions), 500):
                conn.execute(delete(SessionRow).where(SessionRow.id.in_(sessions[chunk : chunk + 500])))
        return len(sessions)


def _ponder_version() -> str:
    try:
        from importlib.metadata import version

        return version("ponder")
    except Exception:  # noqa: BLE001 - not installed as a package
        return "0+unknown"


def _llama_version() -> str:
    try:
        import llama_cpp

        return str(llama_cpp.__version__)
    except Exception:  # noqa: BLE001
        return ""
