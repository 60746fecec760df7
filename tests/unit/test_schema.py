"""Schema migrations cannot drift: every past version's own DDL, migrated, gives today's schema.

A database is described table by table (columns with type, NOT NULL, default and primary-key
position; foreign keys; indexes with their columns and uniqueness), read from SQLite itself.
"""

from __future__ import annotations

import hashlib
import sqlite3

import pytest
from sqlalchemy import create_engine

from engine.store import SCHEMA_VERSION, Store, schema
from engine.store.rows import Base

# The digest of each version's DDL as it shipped. A new version adds its line; an existing line
# never changes (a shipped database was made by that text).
SHIPPED = {
    1: "d002a4bd8b69a3ed38c794a77708ffbf5a0bc56a750cdb42dd270c98cf91ba12",
    2: "2211e7e0b7e869da0e0a87c2ab54fec0a511f598eca8f433c942545cb0775066",
    3: "b12b87ee68aedfc145eb3781bcd05064b760183241f2ed7769ceed6e2daf68f2",
}


def describe(path) -> dict:
    con = sqlite3.connect(path)
    try:
        out = {}
        tables = [
            r[0]
            for r in con.execute(
                "SELECT name FROM sqlite_master WHERE type='table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        for t in sorted(tables):
            cols = [tuple(r[1:]) for r in con.execute(f'PRAGMA table_info("{t}")')]
            fks = sorted(tuple(r[2:]) for r in con.execute(f'PRAGMA foreign_key_list("{t}")'))
            idx = {}
            for r in con.execute(f'PRAGMA index_list("{t}")'):
                name, unique, origin = r[1], r[2], r[3]
                key = name if origin == "c" else f"<{origin}>"  # automatic indexes have made-up names
                idx[key] = (unique, tuple(c[2] for c in con.execute(f'PRAGMA index_info("{name}")')))
            out[t] = {"columns": cols, "foreign_keys": fks, "indexes": idx}
        return out
    finally:
        con.close()


def test_every_shipped_version_is_frozen():
    assert sorted(schema.DDL) == list(range(1, SCHEMA_VERSION + 1)), "one DDL entry per version"
    digests = {v: hashlib.sha256(schema.DDL[v].encode()).hexdigest() for v in schema.DDL}
    assert digests == SHIPPED, "a shipped version's DDL changed: add a new version instead"


@pytest.mark.parametrize("version", range(1, SCHEMA_VERSION + 1))
def test_a_database_made_by_each_past_version_migrates_to_exactly_a_new_ones_schema(tmp_path, version):
    old = tmp_path / f"v{version}.db"
    con = sqlite3.connect(old)
    for v in range(1, version + 1):  # what that Ponder wrote: its own DDL, one version at a time
        con.executescript(schema.DDL[v])
        con.execute(
            "INSERT INTO schema_version (version, applied) VALUES (?, '2026-11-25T00:00:00+00:00')", (v,)
        )
    con.execute(
        "INSERT INTO sessions (id, created, title, problem, tags, settings, ponder_version, "
        "llama_cpp_version, build) VALUES ('s1', '2026-11-25', 't', 'What is 2+3?', '[]', '{}', '0.1.0', "
        "'0.3.36', '{}')"
    )
    con.commit()
    con.close()

    with Store.open(old) as s:  # migrates the rest of the way
        assert [x.problem for x in s.list_sessions()] == ["What is 2+3?"]
    with Store.open(tmp_path / "new.db"):
        pass
    assert describe(old) == describe(tmp_path / "new.db")
    con = sqlite3.connect(old)
    assert [r[0] for r in con.execute("SELECT version FROM schema_version ORDER BY version")] == list(
        range(1, SCHEMA_VERSION + 1)
    )
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()


def test_the_orm_models_describe_what_the_migrations_build(tmp_path):
    """A column added to a model without a migration (or the reverse) fails here, not in a user's
    database."""
    with Store.open(tmp_path / "migrated.db"):
        pass
    engine = create_engine(f"sqlite:///{tmp_path / 'orm.db'}")
    Base.metadata.create_all(engine)
    engine.dispose()
    assert describe(tmp_path / "migrated.db") == describe(tmp_path / "orm.db")


def test_describe_sees_a_column_an_index_and_a_default(tmp_path):
    """The comparison above would notice drift: each kind of difference changes the description."""
    base = tmp_path / "a.db"
    with Store.open(base):
        pass
    ref = describe(base)
    for i, ddl in enumerate(
        [
            "ALTER TABLE runs ADD COLUMN flops FLOAT",
            "CREATE INDEX ix_runs_seed ON runs (seed)",
            "DROP INDEX ix_runs_model_name",
        ]
    ):
        p = tmp_path / f"b{i}.db"
        p.write_bytes(base.read_bytes())
        con = sqlite3.connect(p)
        con.execute(ddl)
        con.commit()
        con.close()
        assert describe(p) != ref, ddl
