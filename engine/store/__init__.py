"""The session database (SQLite through SQLAlchemy 2), in parts:

- :mod:`~engine.store.schema`: the DDL of each schema version, frozen as it shipped;
- :mod:`~engine.store.rows`: the tables as typed models;
- :mod:`~engine.store.migrations`: the version this Ponder writes and the steps to it;
- :mod:`~engine.store.db`: opening a file (its checks, each connection's pragmas), errors;
- :mod:`~engine.store.info`: what readers get (sessions, runs, sweeps);
- :mod:`~engine.store.store`: :class:`Store`, the reads and writes;
- :mod:`~engine.store.recorder`: recording a run's events as they happen;
- :mod:`~engine.store.transfer`: JSON / JSONL export and import.

The names callers use are here; the HTML export is :mod:`engine.run.export`, above the store.
"""

from engine.store.db import DB_ENV, StoreError, default_db_path
from engine.store.info import RunInfo, SessionInfo, SweepInfo
from engine.store.migrations import MIGRATIONS, SCHEMA_VERSION
from engine.store.recorder import COMMIT_EVERY_S, Recorder
from engine.store.rows import Base, EventRow, NodeRow, RunRow, SessionRow, SweepCellRow, SweepRow
from engine.store.store import SessionOrigin, Store
from engine.store.transfer import (
    EXPORT_FORMAT,
    EXPORT_FORMATS,
    export_dict,
    export_jsonl_lines,
    export_text,
    import_session,
    read_export,
    write_export,
)

__all__ = [
    "COMMIT_EVERY_S",
    "DB_ENV",
    "EXPORT_FORMAT",
    "EXPORT_FORMATS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Base",
    "EventRow",
    "NodeRow",
    "Recorder",
    "RunInfo",
    "RunRow",
    "SessionInfo",
    "SessionOrigin",
    "SessionRow",
    "Store",
    "StoreError",
    "SweepCellRow",
    "SweepInfo",
    "SweepRow",
    "default_db_path",
    "export_dict",
    "export_jsonl_lines",
    "export_text",
    "import_session",
    "read_export",
    "write_export",
]
