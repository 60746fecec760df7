"""Opening the session database: its file checked before SQLAlchemy touches it, the SQLite
pragmas every connection gets (each with its reason), and SQLite's errors said in the user's terms.

Nothing here knows the tables beyond ``schema_version``; :mod:`engine.store.migrations` brings a
database to this Ponder's version and :class:`engine.store.store.Store` reads and writes it.
"""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DatabaseError, OperationalError

from engine.errors import PonderError

DB_ENV = "PONDER_DB"


class StoreError(PonderError):
    """The session database cannot be used (damaged, newer, unwritable, missing session ...)."""


def default_db_path() -> Path:
    """``$PONDER_DB``, else ``sessions.db`` in the user's data directory."""
    env = os.environ.get(DB_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir("ponder", appauthor=False)) / "sessions.db"


def on_connect(dbapi_conn: Any, _record: Any) -> None:
    """The pragmas of every connection, reading or writing."""
    cur = dbapi_conn.cursor()
    # Wait up to 5 s for another writer (the app and a CLI sweep may share a file) instead of
    # failing at once with "database is locked".
    cur.execute("PRAGMA busy_timeout = 5000")
    # Deleting a session must take its runs, events and nodes with it (ON DELETE CASCADE), and no
    # event may point at a missing run: SQLite enforces foreign keys only when asked, per connection.
    cur.execute("PRAGMA foreign_keys = ON")
    cur.close()


def on_connect_rw(dbapi_conn: Any, record: Any) -> None:
    """The pragmas of a connection that may write: those of :func:`on_connect`, and durability."""
    on_connect(dbapi_conn, record)
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


def open_engine(path: Path, readonly: bool) -> Engine:
    """An SQLAlchemy engine on ``path`` whose connections get the pragmas above; a read-only one
    opens the file with SQLite's ``mode=ro`` (it never writes, not even a journal)."""
    if readonly:
        engine = create_engine(f"sqlite:///file:{path}?mode=ro&uri=true", future=True)
        event.listen(engine, "connect", on_connect)
    else:
        engine = create_engine(f"sqlite:///{path}", future=True)
        event.listen(engine, "connect", on_connect_rw)
    return engine


# What a damaged row raises when it is read: text that is not UTF-8, JSON that does not parse, an
# event payload of the wrong shape.
DECODE_ERRORS = (UnicodeDecodeError, ValueError, TypeError, KeyError, AttributeError, IndexError)


class _OnFile(Protocol):
    path: Path


S = TypeVar("S", bound=_OnFile)  # the Store
P = ParamSpec("P")
R = TypeVar("R")


def reads(fn: Callable[Concatenate[S, P], R]) -> Callable[Concatenate[S, P], R]:
    """A Store reader whose database may be damaged: SQLite's errors and rows that cannot be decoded
    become one StoreError that says so (nothing is written)."""

    @functools.wraps(fn)
    def wrapper(self: S, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return fn(self, *args, **kwargs)
        except PonderError:
            raise
        except (OperationalError, DatabaseError) as e:
            raise StoreError(f"Cannot read {self.path}: {sqlite_error_text(e)}.") from None
        except DECODE_ERRORS as e:
            raise StoreError(
                f"The session database {self.path} is damaged: a stored value cannot be read "
                f"({type(e).__name__}: {str(e)[:160]}). It was left untouched; other sessions may still "
                "open, or restore a copy."
            ) from None

    return wrapper


def sqlite_error_text(e: BaseException) -> str:
    orig = getattr(e, "orig", None)
    return short(orig if orig is not None else e)


def short(e: object, limit: int = 200) -> str:
    """SQLite's message on one line and short: for a damaged schema it quotes whole CREATE TABLEs."""
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + "…"


def check_file(path: Path) -> None:
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


def check_writable(path: Path, exists: bool) -> None:
    """The folder of a new database is made; a file or folder that cannot be written is refused
    before anything is changed."""
    if not exists:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(
                f"Cannot create the folder for the session database {path.parent}: {e.strerror or e}."
            ) from None
    if (exists and not os.access(path, os.W_OK)) or not os.access(path.parent, os.W_OK):
        raise StoreError(
            f"The session database {path} is in a read-only location; nothing was changed. Choose a "
            "writable file with --db."
        )


def read_version(path: Path) -> int | None:
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
            f"The session database {path} is damaged ({short(e)}). It was left untouched; move it aside "
            "(Ponder then starts a new one) or restore a copy."
        ) from None
    finally:
        con.close()


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def pid_alive(pid: int) -> bool:
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
