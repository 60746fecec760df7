"""The session database's schema, version by version, frozen as each version shipped.

``DDL[v]`` is the SQL that takes a database at version v-1 to version v. Once a version has shipped
its text never changes (``tests/unit/test_schema.py`` holds a digest of each), so a database made by
any past Ponder and migrated step by step ends up with exactly the tables, columns and indexes of a
new one — the test builds one from every past version's own DDL and compares them column by column,
index by index, and compares a new database with the ORM models in :mod:`engine.store.rows`.

To change the schema: add ``DDL[n + 1]`` (``ALTER TABLE ... ADD COLUMN``, ``CREATE TABLE``, ``CREATE
INDEX``, or SQLite's copy-and-rename for anything else), change the model in
:mod:`engine.store.rows` to match, raise :data:`engine.store.migrations.SCHEMA_VERSION`, and add the
new digest to the test. Never edit a shipped entry.
"""

from __future__ import annotations

from sqlalchemy import Connection

# Version 1 (sessions, runs, events, nodes): Ponder 0.1.0, issue 4.
V1 = """
CREATE TABLE schema_version (
    version INTEGER NOT NULL,
    applied VARCHAR(32) NOT NULL,
    PRIMARY KEY (version)
);
CREATE TABLE sessions (
    id VARCHAR(32) NOT NULL,
    created VARCHAR(32) NOT NULL,
    title TEXT NOT NULL,
    problem TEXT NOT NULL,
    reference TEXT,
    tags JSON NOT NULL,
    settings JSON NOT NULL,
    ponder_version VARCHAR(32) NOT NULL,
    llama_cpp_version VARCHAR(32) NOT NULL,
    build JSON NOT NULL,
    rerun_of VARCHAR(32),
    PRIMARY KEY (id)
);
CREATE INDEX ix_sessions_created ON sessions (created);
CREATE TABLE runs (
    id VARCHAR(64) NOT NULL,
    session_id VARCHAR(32) NOT NULL,
    position INTEGER NOT NULL,
    strategy VARCHAR(32) NOT NULL,
    params JSON NOT NULL,
    model_path TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_size INTEGER NOT NULL,
    model_sha256 VARCHAR(64) NOT NULL,
    n_gpu_layers INTEGER NOT NULL,
    prm JSON NOT NULL,
    seed INTEGER NOT NULL,
    status VARCHAR(16) NOT NULL,
    message TEXT NOT NULL,
    answer TEXT,
    correct BOOLEAN,
    generated_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    prm_tokens INTEGER NOT NULL,
    wall_s FLOAT NOT NULL,
    n_events INTEGER NOT NULL,
    n_nodes INTEGER NOT NULL,
    pid INTEGER NOT NULL,
    host VARCHAR(255) NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE CASCADE
);
CREATE INDEX ix_runs_model_name ON runs (model_name);
CREATE INDEX ix_runs_session_id ON runs (session_id);
CREATE TABLE events (
    id INTEGER NOT NULL,
    run_id VARCHAR(64) NOT NULL,
    seq INTEGER NOT NULL,
    kind VARCHAR(32) NOT NULL,
    payload JSON NOT NULL,
    PRIMARY KEY (id),
    FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX ix_events_run_seq ON events (run_id, seq);
CREATE TABLE nodes (
    run_id VARCHAR(64) NOT NULL,
    node_id INTEGER NOT NULL,
    parent_id INTEGER,
    role VARCHAR(16) NOT NULL,
    text TEXT NOT NULL,
    n_tokens INTEGER NOT NULL,
    logprob_sum FLOAT NOT NULL,
    score FLOAT,
    step_scores JSON,
    answer TEXT,
    finish_reason VARCHAR(16),
    pruned_at INTEGER,
    PRIMARY KEY (run_id, node_id),
    FOREIGN KEY(run_id) REFERENCES runs (id) ON DELETE CASCADE
);
"""

# Version 2 (sweeps and their cells): issue 8.
V2 = """
CREATE TABLE sweeps (
    id VARCHAR(32) NOT NULL,
    created VARCHAR(32) NOT NULL,
    name TEXT NOT NULL,
    "key" VARCHAR(64) NOT NULL,
    settings JSON NOT NULL,
    PRIMARY KEY (id),
    UNIQUE ("key")
);
CREATE TABLE sweep_cells (
    sweep_id VARCHAR(32) NOT NULL,
    problem_index INTEGER NOT NULL,
    strategy VARCHAR(32) NOT NULL,
    budget INTEGER NOT NULL,
    session_id VARCHAR(32),
    PRIMARY KEY (sweep_id, problem_index, strategy, budget),
    FOREIGN KEY(sweep_id) REFERENCES sweeps (id) ON DELETE CASCADE,
    FOREIGN KEY(session_id) REFERENCES sessions (id) ON DELETE SET NULL
);
CREATE INDEX ix_sweep_cells_session_id ON sweep_cells (session_id);
"""

# Version 3 (per-run accounting: reused prompt tokens and FLOPs): the sweeps-at-scale issue.
V3 = """
ALTER TABLE runs ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN policy_flops FLOAT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN prm_flops FLOAT NOT NULL DEFAULT 0
"""

DDL: dict[int, str] = {1: V1, 2: V2, 3: V3}


def statements(sql: str) -> list[str]:
    """The statements of one version's DDL (none of them contains a semicolon)."""
    return [s.strip() for s in sql.split(";") if s.strip()]


def apply(conn: Connection, version: int) -> None:
    """Run version ``version``'s DDL on an SQLAlchemy connection (inside the caller's transaction)."""
    for stmt in statements(DDL[version]):
        conn.exec_driver_sql(stmt)
