"""The schema version this Ponder writes and the steps that bring an older database to it.

``MIGRATIONS[v]`` takes a database at version v-1 to version v: the DDL of
:mod:`engine.store.schema`, frozen as each version shipped (the models of :mod:`engine.store.rows`
must describe the result; ``tests/unit/test_schema.py`` checks both). Each step runs in its own
transaction and leaves a row in ``schema_version``.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, insert

from engine.store.db import now
from engine.store.rows import SchemaVersion
from engine.store.schema import apply

SCHEMA_VERSION = 3


def _frozen(version: int) -> Callable[[Connection], None]:
    return lambda conn: apply(conn, version)


MIGRATIONS: dict[int, Callable[[Connection], None]] = {v: _frozen(v) for v in range(1, SCHEMA_VERSION + 1)}


def migrate(engine: Engine, current: int) -> None:
    """Bring a database at version ``current`` (0: empty) to :data:`SCHEMA_VERSION`, step by step."""
    for v in range(current + 1, SCHEMA_VERSION + 1):
        with engine.begin() as conn:  # each step in its own transaction
            MIGRATIONS[v](conn)
            conn.execute(insert(SchemaVersion).values(version=v, applied=now()))
