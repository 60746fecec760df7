"""Sessions in SQLite: every run recorded as it happens, reopened, replayed, exported.

A *session* is one problem put to one or more strategies (one ``ponder compare``); a *run* is one
strategy's run; its *events* are the stream the strategy produced (see :mod:`engine.events`), kept
in order as JSON, so loading a run gives back exactly the live stream and every consumer (the
window, the HTML export, replay) draws it the same way. *Nodes* are the events folded into rows for
queries (every step with its text, scores and answer).

Durability: events are committed in small transactions while the run goes on (at most
:data:`COMMIT_EVERY_S` apart, and at once for a run's start, selection and end), so a crash, a kill
or a power cut keeps every committed event. A run still marked ``running`` whose process is gone is
shown as ``interrupted``.

The schema has a version (table ``schema_version``) and migrations (:data:`MIGRATIONS`, the DDL of
:mod:`engine.schema`, frozen as each version shipped); a database written by a newer Ponder is
refused and left untouched. SQLAlchemy 2 typed models; the engine never imports Qt.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import DatabaseError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from engine import schema
from engine.errors import PonderError
from engine.events import (
    Event,
    NodeAdded,
    NodeFinished,
    NodePruned,
    NodeScored,
    RunFinished,
    RunStarted,
    Selected,
    TextDelta,
    event_from_dict,
)

SCHEMA_VERSION = 3
COMMIT_EVERY_S = 0.25  # the most a kill can lose of a running run's events
DB_ENV = "PONDER_DB"


class StoreError(PonderError):
    """The session database cannot be used (damaged, newer, unwritable, missing session ...)."""


# --- schema ----------------------------------------------------------------------------------------


class Base(DeclarativeBase):
    pass


class SchemaVersion(Base):
    __tablename__ = "schema_version"
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    applied: Mapped[str] = mapped_column(String(32))


class SessionRow(Base):
    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[str] = mapped_column(String(32), index=True)  # ISO 8601, UTC
    title: Mapped[str] = mapped_column(Text, default="")
    problem: Mapped[str] = mapped_column(Text)
    reference: Mapped[str | None] = mapped_column(Text, nullable=True)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    # What ``rerun`` needs to run the same thing again: strategies, budget, PRM, seed, max tokens,
    # side by side or not, the backend config (context, batch, threads, flash attention).
    settings: Mapped[dict] = mapped_column(JSON, default=dict)
    ponder_version: Mapped[str] = mapped_column(String(32), default="")
    llama_cpp_version: Mapped[str] = mapped_column(String(32), default="")
    build: Mapped[dict] = mapped_column(JSON, default=dict)  # llama.cpp system info, devices
    rerun_of: Mapped[str | None] = mapped_column(String(32), nullable=True)


class RunRow(Base):
    __tablename__ = "runs"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # order within the session
    strategy: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    model_path: Mapped[str] = mapped_column(Text, default="")
    model_name: Mapped[str] = mapped_column(Text, default="", index=True)
    model_size: Mapped[int] = mapped_column(Integer, default=0)
    model_sha256: Mapped[str] = mapped_column(String(64), default="")  # of the first MiB
    n_gpu_layers: Mapped[int] = mapped_column(Integer, default=0)
    prm: Mapped[dict] = mapped_column(JSON, default=dict)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16), default="running")
    message: Mapped[str] = mapped_column(Text, default="")
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    correct: Mapped[bool | None] = mapped_column(nullable=True)
    generated_tokens: Mapped[int] = mapped_column(Integer, default=0)
    prompt_tokens: Mapped[int] = mapped_column(Integer, default=0)
    prm_tokens: Mapped[int] = mapped_column(Integer, default=0)
    wall_s: Mapped[float] = mapped_column(Float, default=0.0)
    n_events: Mapped[int] = mapped_column(Integer, default=0)
    n_nodes: Mapped[int] = mapped_column(Integer, default=0)
    pid: Mapped[int] = mapped_column(Integer, default=0)  # the recording process, to tell
    host: Mapped[str] = mapped_column(String(255), default="")  # ... a killed run from a live one
    # Version 3: of the prompt tokens, those served from KV already held; FLOPs (2 x parameters x
    # tokens) of the policy and of the PRM.
    cached_tokens: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))
    policy_flops: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))
    prm_flops: Mapped[float] = mapped_column(Float, default=0.0, server_default=text("0"))


class EventRow(Base):
    __tablename__ = "events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(32))
    payload: Mapped[dict] = mapped_column(JSON)
    __table_args__ = (Index("ix_events_run_seq", "run_id", "seq", unique=True),)


class NodeRow(Base):
    __tablename__ = "nodes"
    run_id: Mapped[str] = mapped_column(ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    node_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    parent_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    role: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    n_tokens: Mapped[int] = mapped_column(Integer)
    logprob_sum: Mapped[float] = mapped_column(Float)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    step_scores: Mapped[list | None] = mapped_column(JSON, nullable=True)
    answer: Mapped[str | None] = mapped_column(Text, nullable=True)
    finish_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    pruned_at: Mapped[int | None] = mapped_column(Integer, nullable=True)


class SweepRow(Base):
    """A sweep: problems x strategies x budgets under one setting (schema version 2)."""

    __tablename__ = "sweeps"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(Text, default="")
    # What makes two sweeps' cells interchangeable (problem set digest, model, PRM, seed, max
    # tokens): the same command run again finds its sweep by this key and does only what is missing.
    key: Mapped[str] = mapped_column(String(64), unique=True)
    settings: Mapped[dict] = mapped_column(JSON, default=dict)


class SweepCellRow(Base):
    """One (problem, strategy, budget) of a sweep and the session that ran it."""

    __tablename__ = "sweep_cells"
    sweep_id: Mapped[str] = mapped_column(ForeignKey("sweeps.id", ondelete="CASCADE"), primary_key=True)
    problem_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    strategy: Mapped[str] = mapped_column(String(32), primary_key=True)
    budget: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[str | None] = mapped_column(
        ForeignKey("sessions.id", ondelete="SET NULL"), nullable=True, index=True
    )


def _frozen(version: int) -> Callable[[Any], None]:
    return lambda conn: schema.apply(conn, version)


# MIGRATIONS[v] takes a database at version v-1 to version v: the DDL of engine.schema, frozen as each
# version shipped (the ORM classes above must describe the result; tests/test_schema.py checks both).
MIGRATIONS: dict[int, Callable[[Any], None]] = {v: _frozen(v) for v in range(1, SCHEMA_VERSION + 1)}


# --- opening ---------------------------------------------------------------------------------------


def default_db_path() -> Path:
    """``$PONDER_DB``, else ``sessions.db`` in the user's data directory."""
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("ponder", appauthor=False)) / "sessions.db"


def _on_connect(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    # Wait up to 5 s for another writer (the app and a CLI sweep may share a file) instead of
    # failing at once with "database is locked".
    cur.execute("PRAGMA busy_timeout = 5000")
    # Deleting a session must take its runs, events and nodes with it (ON DELETE CASCADE), and no
    # event may point at a missing run: SQLite enforces foreign keys only when asked, per connection.
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def _on_connect_rw(dbapi_conn: Any, record: Any) -> None:
    _on_connect(dbapi_conn, record)
    cur = dbapi_conn.cursor()
    # Write-ahead log: a committed transaction is in the log before the main file changes, so a
    # kill or crash mid-write leaves the last committed state; readers (the window, `sessions
    # list`) never block the recording writer.
    cur.execute("PRAGMA journal_mode = WAL")
    # FULL: every commit is fsynced, so a power cut also keeps every committed event (NORMAL
    # would be crash-safe but could lose the last transactions on power loss). Commits are a few
    # per second while a run records, so the cost is small.
    cur.execute("PRAGMA synchronous = FULL")
    cur.close()


# What a damaged row raises when it is read: text that is not UTF-8, JSON that does not parse, an
# event payload of the wrong shape.
_DECODE_ERRORS = (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError, IndexError)


def _reads(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A Store reader whose database may be damaged: SQLite's errors and rows that cannot be decoded
    become one StoreError that says so (nothing is written)."""

    @functools.wraps(fn)
    def wrapper(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except PonderError:
            raise
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {_sqlite_error_text(e)}.") from None
        except _DECODE_ERRORS as e:
            raise StoreError(
                f"The session database {self.path} is damaged: a stored value cannot be read "
                f"({type(e).__name__}: {str(e)[:160]}). It was left untouched; other sessions may still "
                "open, or restore a copy."
            ) from None

    return wrapper


def _sqlite_error_text(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return _short(orig if orig is not None else e)


def _short(e: object, limit: int = 200) -> str:
    """SQLite's message on one line and short: for a damaged schema it quotes whole CREATE TABLEs."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "…"


def _check_file(path: Path) -> None:
    """Refuse what is not an SQLite file before SQLAlchemy touches it."""
    if not path.exists():
        return
    if path.is_dir():
        raise StoreError(f"{path} is a folder, not a session database.")
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except OSError as e:
        raise StoreError(f"Cannot read the session database {path}: {e.strerror or e}.") from None
    if head and head != b"SQLite format 3\x00":
        raise StoreError(
            f"{path} is not a Ponder session database (not an SQLite file). It was left untouched; "
            "choose another file with --db."
        )


def _read_version(path: Path) -> int | None:
    """The schema version of an existing database, read without writing to it (None: empty file)."""
    wal = Path(f"{path}-wal")
    # immutable: no -shm/-wal files are created next to a file we may refuse; but committed
    # transactions still in a write-ahead log (a killed writer) need a normal read-only open.
    mode = "mode=ro" if wal.exists() and wal.stat().st_size > 0 else "mode=ro&immutable=1"
    try:
        con = sqlite3.connect(f"file:{path}?{mode}", uri=True)
    except sqlite3.Error as e:
        raise StoreError(f"Cannot open the session database {path}: {e}.") from None
    try:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if not tables:
            return None
        if "schema_version" not in tables:
            raise StoreError(
                f"{path} is an SQLite database but not a Ponder session database (no schema_version "
                "table). It was left untouched."
            )
        row = con.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0]) if row and row[0] is not None else None
    except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
        raise StoreError(
            f"The session database {path} is damaged ({_short(e)}). It was left untouched; move it aside "
            "(Ponder then starts a new one) or restore a copy."
        ) from None
    finally:
        con.close()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


# --- what readers get ------------------------------------------------------------------------------


@dataclass
class RunInfo:
    id: str
    session_id: str
    position: int
    strategy: str
    params: dict[str, Any]
    model_path: str
    model_name: str
    model_size: int
    model_sha256: str
    n_gpu_layers: int
    prm: dict[str, Any]
    seed: int
    status: str  # done | cancelled | failed | running | interrupted
    message: str
    answer: str | None
    correct: bool | None
    generated_tokens: int
    prompt_tokens: int
    prm_tokens: int
    wall_s: float
    n_events: int
    n_nodes: int
    cached_tokens: int = 0
    policy_flops: float = 0.0
    prm_flops: float = 0.0

    @property
    def flops(self) -> float:
        return self.policy_flops + self.prm_flops

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SessionInfo:
    id: str
    created: str
    title: str
    problem: str
    reference: str | None
    tags: list[str]
    settings: dict[str, Any]
    ponder_version: str
    llama_cpp_version: str
    build: dict[str, Any]
    rerun_of: str | None
    runs: list[RunInfo]

    def as_dict(self, with_build: bool = True) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["runs"] = [r.as_dict() for r in self.runs]
        if not with_build:
            d.pop("build")
        return d


def _run_info(r: Any, host: str) -> RunInfo:
    status = r.status
    if status == "running" and (r.host != host or not _pid_alive(r.pid)):
        status = "interrupted"
    return RunInfo(
        r.id,
        r.session_id,
        r.position,
        r.strategy,
        r.params or {},
        r.model_path,
        r.model_name,
        r.model_size,
        r.model_sha256,
        r.n_gpu_layers,
        r.prm or {},
        r.seed,
        status,
        r.message,
        r.answer,
        r.correct,
        r.generated_tokens,
        r.prompt_tokens,
        r.prm_tokens,
        r.wall_s,
        r.n_events,
        r.n_nodes,
        getattr(r, "cached_tokens", 0) or 0,  # (a read-only database of version 2 or older lacks them)
        getattr(r, "policy_flops", 0.0) or 0.0,
        getattr(r, "prm_flops", 0.0) or 0.0,
    )


# --- the store -------------------------------------------------------------------------------------


class Store:
    """One session database. ``Store.open(path)`` checks, creates or migrates it; a store opened
    ``readonly`` never writes (listing, showing, exporting work on a read-only file)."""

    def __init__(self, path: Path, engine: Any, readonly: bool) -> None:
        self.path = path
        self.engine = engine
        self.readonly = readonly
        self.version = SCHEMA_VERSION  # a read-only store keeps the version it found (no migration)
        self.host = socket.gethostname()

    @classmethod
    def open(cls, path: str | os.PathLike[str] | None = None, readonly: bool = False) -> Store:
        p = Path(path).expanduser() if path else default_db_path()
        _check_file(p)
        exists = p.exists() and p.stat().st_size > 0
        version = _read_version(p) if exists else None
        if version is not None and version > SCHEMA_VERSION:
            raise StoreError(
                f"{p} was written by a newer Ponder (schema version {version}; this one reads up to "
                f"{SCHEMA_VERSION}). It was left untouched: update Ponder to open it."
            )
        if readonly:
            if not exists:
                raise StoreError(f"There is no session database at {p} yet: run `ponder compare` first.")
            engine = create_engine(f"sqlite:///file:{p}?mode=ro&uri=true", future=True)
            event.listen(engine, "connect", _on_connect)
            store = cls(p, engine, True)
            store.version = version or 0
            return store
        if not exists:
            try:
                p.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(
                    f"Cannot create the folder for the session database {p.parent}: {e.strerror or e}."
                ) from None
        if (exists and not os.access(p, os.W_OK)) or not os.access(p.parent, os.W_OK):
            raise StoreError(
                f"The session database {p} is in a read-only location; nothing was changed. Choose a "
                "writable file with --db."
            )
        engine = create_engine(f"sqlite:///{p}", future=True)
        event.listen(engine, "connect", _on_connect_rw)
        store = cls(p, engine, False)
        try:
            store._migrate(version or 0)
        except (OperationalError, DatabaseError) as e:
            engine.dispose()
            raise StoreError(f"Cannot write the session database {p}: {_sqlite_error_text(e)}.") from None
        return store

    def _migrate(self, current: int) -> None:
        for v in range(current + 1, SCHEMA_VERSION + 1):
            with self.engine.begin() as conn:  # each step in its own transaction
                MIGRATIONS[v](conn)
                conn.execute(insert(SchemaVersion).values(version=v, applied=_now()))

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
        session_id: str | None = None,
        created: str | None = None,
        ponder_version: str | None = None,
        llama_cpp_version: str | None = None,
    ) -> str:
        self._guard()
        sid = session_id or uuid.uuid4().hex[:12]
        with self.engine.begin() as conn:
            conn.execute(
                insert(SessionRow).values(
                    id=sid,
                    created=created or _now(),
                    title=title or problem.strip().splitlines()[0][:80],
                    problem=problem,
                    reference=reference,
                    tags=list(tags),
                    settings=settings or {},
                    ponder_version=ponder_version if ponder_version is not None else _ponder_version(),
                    llama_cpp_version=llama_cpp_version
                    if llama_cpp_version is not None
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
            dead = [r.id for r in rows if r.host != self.host or not _pid_alive(r.pid)]
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

    def _resolve(self, conn: Any, session_id: str) -> str:
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

    @_reads
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
                        runs[r.session_id].append(_run_info(r, self.host))
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {_sqlite_error_text(e)}.") from None
        return [self._session_info(s, runs[s.id]) for s in sessions]

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

    @staticmethod
    def _session_info(s: Any, runs: list[RunInfo]) -> SessionInfo:
        return SessionInfo(
            s.id,
            s.created,
            s.title,
            s.problem,
            s.reference,
            list(s.tags or []),
            dict(s.settings or {}),
            s.ponder_version,
            s.llama_cpp_version,
            dict(s.build or {}),
            s.rerun_of,
            runs,
        )

    @_reads
    def session(self, session_id: str) -> SessionInfo:
        try:
            with self.engine.connect() as conn:
                sid = self._resolve(conn, session_id)
                s = conn.execute(select(SessionRow).where(SessionRow.id == sid)).one()
                runs = [
                    _run_info(r, self.host)
                    for r in conn.execute(
                        select(*self._run_columns()).where(RunRow.session_id == sid).order_by(RunRow.position)
                    ).all()
                ]
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {_sqlite_error_text(e)}.") from None
        return self._session_info(s, runs)

    @_reads
    def events(self, run_id: str) -> list[Event]:
        """The run's events in the order they were recorded: the live stream, again."""
        try:
            with self.engine.connect() as conn:
                rows = conn.execute(
                    select(EventRow.payload).where(EventRow.run_id == run_id).order_by(EventRow.seq)
                ).all()
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {_sqlite_error_text(e)}.") from None
        return [event_from_dict(r[0]) for r in rows]

    @_reads
    def session_events(self, session_id: str) -> dict[str, list[Event]]:
        s = self.session(session_id)
        return {r.id: self.events(r.id) for r in s.runs}

    @_reads
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

    @_reads
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
                    insert(SweepRow).values(id=sid, created=_now(), name=name, key=key, settings=settings)
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

    @_reads
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
            raise StoreError(f"Cannot read {self.path}: {_sqlite_error_text(e)}.") from None
        return [
            SweepInfo(r.id, r.created, r.name, r.key, dict(r.settings or {}), counts.get(r.id, 0))
            for r in rows
        ]

    def sweep(self, sweep_id: str) -> SweepInfo:
        found = [w for w in self.list_sweeps() if w.id.startswith(sweep_id)] if sweep_id else []
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise StoreError(f"Sweep id {sweep_id!r} is ambiguous; give more characters.")
        raise StoreError(f"No sweep {sweep_id!r} in {self.path}.")

    @_reads
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
            raise StoreError(f"Cannot read {self.path}: {_sqlite_error_text(e)}.") from None
        return {
            (r.cell_index, r.cell_strategy, r.cell_budget): (
                _run_info(r, self.host) if r.id is not None else None
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


@dataclass
class SweepInfo:
    id: str
    created: str
    name: str
    key: str
    settings: dict[str, Any]
    n_cells: int

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


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


# --- recording -------------------------------------------------------------------------------------


class Recorder:
    """Writes a session's events as they happen: pass it as (or call it from) the ``on_event`` of
    :func:`engine.compare.compare`. Text deltas are live-only and not stored."""

    def __init__(
        self, store: Store, session_id: str, commit_every_s: float, share: Recorder | None = None
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.commit_every_s = commit_every_s
        # Read once (before any write of this connection): every run's Selected is checked against it.
        with store.engine.connect() as conn:
            self._reference = conn.execute(
                select(SessionRow.reference).where(SessionRow.id == session_id)
            ).scalar()
        if share is not None and not share._link.closed:
            # Recorders of sessions that run at once (a sweep's cells) write through one connection
            # and one transaction: SQLite has one writer, and two open write transactions would
            # fail each other ("database is locked").
            self._link = share._link
            self._link.users += 1
        else:
            self._link = _Link(store.engine.connect())
        self._seq: dict[str, int] = {}
        self._positions = 0
        self.pid = os.getpid()
        self.error: str | None = None

    def __call__(self, run: Any, ev: Event) -> None:
        self.record(ev)

    def record(self, ev: Event) -> None:
        if isinstance(ev, TextDelta) or self.error is not None:
            return
        try:
            self._write(ev)
            urgent = isinstance(ev, RunStarted | Selected | RunFinished)
            if urgent or time.monotonic() - self._last_commit >= self.commit_every_s:
                self.commit()
        except (OperationalError, DatabaseError) as e:
            # The run goes on; the caller reports that recording stopped (disk full, file removed).
            self.error = f"Recording stopped: {_sqlite_error_text(e)}"
            try:
                self._link.tx.rollback()
                self._link.tx = self._link.conn.begin()
            except Exception:  # noqa: BLE001
                pass

    def _write(self, ev: Event) -> None:
        c = self._conn
        rid = ev.run_id
        if isinstance(ev, RunStarted):
            m = ev.model
            c.execute(
                insert(RunRow).values(
                    id=rid,
                    session_id=self.session_id,
                    position=self._positions,
                    strategy=ev.strategy,
                    params=ev.params,
                    model_path=str(m.get("path", "")),
                    model_name=str(m.get("name", "")),
                    model_size=int(m.get("file_size", 0) or 0),
                    model_sha256=str(m.get("sha256_1mb", "")),
                    n_gpu_layers=int(m.get("n_gpu_layers_requested", 0) or 0),
                    prm=ev.prm,
                    seed=ev.seed,
                    status="running",
                    pid=self.pid,
                    host=self.store.host,
                )
            )
            self._positions += 1
            self._seq[rid] = 0
        seq = self._seq.get(rid)
        if seq is None:
            raise StoreError(f"event for run {rid} before its RunStarted")
        c.execute(insert(EventRow).values(run_id=rid, seq=seq, kind=ev.kind, payload=ev.to_dict()))
        self._seq[rid] = seq + 1
        values: dict[str, Any] = {"n_events": seq + 1}
        if isinstance(ev, NodeAdded):
            c.execute(
                insert(NodeRow).values(
                    run_id=rid,
                    node_id=ev.node_id,
                    parent_id=ev.parent_id,
                    role=ev.role,
                    text=ev.text,
                    n_tokens=ev.n_tokens,
                    logprob_sum=ev.logprob_sum,
                )
            )
            values["n_nodes"] = RunRow.n_nodes + 1
        elif isinstance(ev, NodeScored | NodePruned | NodeFinished):
            node_values: dict[str, Any]
            if isinstance(ev, NodeScored):
                node_values = {"score": ev.score, "step_scores": list(ev.step_scores)}
            elif isinstance(ev, NodePruned):
                node_values = {"pruned_at": ev.iteration}
            else:
                node_values = {"answer": ev.answer, "finish_reason": ev.finish_reason}
            c.execute(
                update(NodeRow)
                .where(NodeRow.run_id == rid, NodeRow.node_id == ev.node_id)
                .values(**node_values)
            )
        elif isinstance(ev, Selected):
            values["answer"] = ev.answer
            if self._reference:
                from engine.answers import is_correct

                values["correct"] = bool(is_correct(ev.answer, self._reference))
        elif isinstance(ev, RunFinished):
            values.update(
                status=ev.status,
                message=ev.message,
                generated_tokens=ev.generated_tokens,
                prompt_tokens=ev.prompt_tokens,
                prm_tokens=ev.prm_tokens,
                wall_s=ev.wall_s,
                cached_tokens=ev.cached_tokens,
                policy_flops=ev.policy_flops,
                prm_flops=ev.prm_flops,
            )
        c.execute(update(RunRow).where(RunRow.id == rid).values(**values))

    @property
    def _conn(self) -> Any:
        return self._link.conn

    @property
    def _tx(self) -> Any:
        return self._link.tx

    @property
    def _last_commit(self) -> float:
        return self._link.last_commit

    def commit(self) -> None:
        if self.error is not None:
            return
        self._link.commit()

    def close(self) -> None:
        """Commit what is left; runs that never finished (the caller stopped) become interrupted."""
        try:
            if self.error is None:
                self._conn.execute(
                    update(RunRow)
                    .where(RunRow.session_id == self.session_id, RunRow.status == "running")
                    .values(status="interrupted", message="Recording ended before the run did.")
                )
                self._link.commit()
        except (OperationalError, DatabaseError) as e:
            self.error = f"Recording stopped: {_sqlite_error_text(e)}"
        finally:
            self._link.release()


class _Link:
    """A recording connection and its open transaction, shared by the recorders that use it."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.tx = conn.begin()
        self.last_commit = time.monotonic()
        self.users = 1
        self.closed = False

    def commit(self) -> None:
        self.tx.commit()
        self.tx = self.conn.begin()
        self.last_commit = time.monotonic()

    def release(self) -> None:
        self.users -= 1
        if self.users <= 0 and not self.closed:
            self.closed = True
            try:
                self.tx.commit()
            finally:
                self.conn.close()


# --- export and import -------------------------------------------------------------------------------

EXPORT_FORMAT = "ponder-session"


def export_dict(store: Store, session_id: str) -> dict[str, Any]:
    s = store.session(session_id)
    return {
        "format": EXPORT_FORMAT,
        "schema_version": SCHEMA_VERSION,
        "session": s.as_dict(),
        "events": {r.id: [e.to_dict() for e in store.events(r.id)] for r in s.runs},
    }


def export_jsonl_lines(store: Store, session_id: str) -> Iterator[str]:
    """A header line (the session) and then one line per event, in the order they happened."""
    s = store.session(session_id)
    yield json.dumps(
        {"format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "session": s.as_dict()},
        ensure_ascii=False,
    )
    for _rid, ev in store.replay(s.id):
        yield json.dumps(ev.to_dict(), ensure_ascii=False)


def _clean_strings(x: Any) -> Any:
    """Every string of a parsed export as valid Unicode (JSON escapes can spell lone surrogates)."""
    from engine.problems import clean_text

    if isinstance(x, str):
        return clean_text(x)
    if isinstance(x, list):
        return [_clean_strings(v) for v in x]
    if isinstance(x, dict):
        return {clean_text(k) if isinstance(k, str) else k: _clean_strings(v) for k, v in x.items()}
    return x


def _check_session_dict(sess: Any) -> dict[str, Any]:
    """The session part of an export has the fields and types a session needs."""
    if not isinstance(sess, dict):
        raise ValueError("its session is not an object")
    for key, kinds, required in (
        ("id", (str,), True),
        ("problem", (str,), True),
        ("reference", (str, type(None)), False),
        ("title", (str,), False),
        ("created", (str, type(None)), False),
        ("tags", (list,), False),
        ("settings", (dict,), False),
        ("build", (dict,), False),
        ("runs", (list,), False),
        ("rerun_of", (str, type(None)), False),
        ("ponder_version", (str,), False),
        ("llama_cpp_version", (str,), False),
    ):
        if key not in sess:
            if required:
                raise ValueError(f"its session has no {key!r}")
            continue
        if not isinstance(sess[key], kinds):
            raise ValueError(f"its session's {key!r} is a {type(sess[key]).__name__}")
    if not sess["id"].strip() or len(sess["id"]) > 32:
        raise ValueError("its session id is empty or too long")
    if not all(isinstance(t, str) for t in sess.get("tags", [])):
        raise ValueError("its tags are not all text")
    for r in sess.get("runs", []):
        ok = isinstance(r, dict) and isinstance(r.get("id"), str) and isinstance(r.get("status", ""), str)
        if not ok:
            raise ValueError("a run of its session has no id or status")
    return sess


def _check_events(evs: dict[str, list[Event]]) -> None:
    """Every run's events fold into a trace (what showing and exporting it will do) and every number
    fits SQLite's 64-bit integers."""
    from engine.events import fold

    for rid, events in evs.items():
        if not isinstance(rid, str) or not rid or len(rid) > 64:
            raise ValueError("a run id is empty or too long")
        for ev in events:
            for v in ev.__dict__.values():
                if isinstance(v, int) and not isinstance(v, bool) and not -(2**63) <= v < 2**63:
                    raise ValueError(f"an event of run {rid} holds the number {v}, too large")
        try:
            fold(events)
        except (PonderError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"the events of run {rid} do not make a trace ({e})") from None


def read_export(path: Path) -> tuple[dict[str, Any], dict[str, list[Event]]]:
    """Parse a JSON or JSONL export: (session dict, events by run id). Raises StoreError; checks the
    session's fields and that every run's events fold, so an import either works whole or not at
    all."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StoreError(f"No file {path}.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise StoreError(f"Cannot read {path}: {e}.") from None
    try:
        try:
            doc = json.loads(text)
            lines = None
        except json.JSONDecodeError:
            doc, lines = None, text.splitlines()
        if isinstance(doc, dict) and "events" in doc:
            doc = _clean_strings(doc)
            if not isinstance(doc["events"], dict):
                raise ValueError("its events are not an object of runs")
            head, evs = doc, {}
            for rid, es in doc["events"].items():
                if not isinstance(es, list):
                    raise ValueError(f"the events of run {rid} are not a list")
                evs[rid] = [event_from_dict(_as_dict(e)) for e in es]
        else:
            rows = [
                _clean_strings(json.loads(line))
                for line in (lines if lines is not None else text.splitlines())
                if line.strip()
            ]
            if not rows:
                raise ValueError("empty file")
            head, evs = _as_dict(rows[0]), {}
            for d in rows[1:]:
                ev = event_from_dict(_as_dict(d))
                evs.setdefault(ev.run_id, []).append(ev)
        if head.get("format") != EXPORT_FORMAT:
            raise ValueError("not a Ponder session export")
        version = head.get("schema_version", 0)
        if not isinstance(version, int):
            raise ValueError(f"its schema version is {version!r}")
        if version > SCHEMA_VERSION:
            raise StoreError(f"{path} was exported by a newer Ponder (schema {version}).")
        sess = _check_session_dict(head.get("session"))
        _check_events(evs)
        return sess, evs
    except StoreError:
        raise
    except RecursionError:
        raise StoreError(f"{path} is not a Ponder session export: it is nested too deeply.") from None
    except (ValueError, KeyError, TypeError, AttributeError, PonderError) as e:
        raise StoreError(f"{path} is not a Ponder session export (JSON or JSONL): {e}") from None


def _as_dict(d: Any) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ValueError(f"an entry is a {type(d).__name__}, not an object")
    return d


def import_session(store: Store, path: Path) -> str:
    """Add an exported session (keeping its id); returns the id. All or nothing: a session that
    cannot be written whole is removed again."""
    sess, evs = read_export(path)
    sid = sess["id"]
    with store.engine.connect() as conn:
        if conn.execute(select(SessionRow.id).where(SessionRow.id == sid)).first():
            raise StoreError(f"Session {sid} is already in {store.path}; nothing was imported.")
    store.create_session(
        sess["problem"],
        sess.get("reference"),
        title=sess.get("title", ""),
        tags=sess.get("tags", []),
        settings=sess.get("settings", {}),
        build=sess.get("build", {}),
        rerun_of=sess.get("rerun_of"),
        session_id=sid,
        created=sess.get("created"),
        ponder_version=sess.get("ponder_version", ""),
        llama_cpp_version=sess.get("llama_cpp_version", ""),
    )
    rec = store.recorder(sid)
    failed: str | None = None
    try:
        order = [r["id"] for r in sess.get("runs", [])] or list(evs)
        for rid in order:
            for ev in evs.get(rid, []):
                rec.record(ev)
        # Imported runs keep the status they had when exported (an interrupted run stays so).
        statuses = {r["id"]: (r["status"], r.get("message", "")) for r in sess.get("runs", [])}
        for rid, (status, msg) in statuses.items():
            if status in ("interrupted", "running"):
                rec._conn.execute(
                    update(RunRow).where(RunRow.id == rid).values(status="interrupted", message=str(msg))
                )
    except (PonderError, ValueError, TypeError, KeyError, OverflowError, DatabaseError) as e:
        failed = str(e)
    finally:
        rec.close()
    failed = failed or rec.error
    if failed:
        store.delete_session(sid)
        raise StoreError(f"{path} could not be imported ({failed}); nothing was kept.")
    return sid


EXPORT_FORMATS = ("json", "jsonl", "html")


def export_text(store: Store, session_id: str, fmt: str) -> str:
    """A session as JSON, JSONL or a self-contained HTML page."""
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"Export format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}.")
    s = store.session(session_id)
    if fmt == "json":
        return json.dumps(export_dict(store, s.id), ensure_ascii=False, indent=1)
    if fmt == "jsonl":
        return "\n".join(export_jsonl_lines(store, s.id))
    from engine.report import session_html

    return session_html(s, store.session_events(s.id))


def write_export(path: str | os.PathLike[str], text: str) -> Path:
    """Write through a temporary file, so an existing file is replaced whole or not at all; a
    missing folder or an unwritable place is a StoreError and nothing is written."""
    out = Path(path).expanduser()
    if not out.parent.is_dir():
        raise StoreError(f"The folder {out.parent} does not exist; nothing was written.")
    tmp = out.with_name(out.name + ".part")
    try:
        tmp.write_text(text + "\n", encoding="utf-8")
        os.replace(tmp, out)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StoreError(f"Cannot write {out}: {e.strerror or e}.") from None
    return out
