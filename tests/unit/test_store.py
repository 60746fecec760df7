"""The session store: schema, durability, replay, export/import, and its failure messages."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from engine.events import (
    NodeAdded,
    NodeFinished,
    NodePruned,
    NodeScored,
    RunFinished,
    RunStarted,
    Selected,
    TextDelta,
    fold,
)
from engine.run.export import export_session, session_html
from engine.store import (
    SCHEMA_VERSION,
    Store,
    StoreError,
    export_dict,
    export_jsonl_lines,
    export_text,
    import_session,
)

PROBLEM = "What is 2 + 3?"


def beam_events(run_id: str = "r1", answer: str = "5") -> list:
    """A small beam-search-shaped stream: two roots, one pruned, one child chosen."""
    return [
        RunStarted(
            run_id,
            "beam_search",
            {"n": 2},
            {"name": "tiny", "path": "/m.gguf"},
            {"name": "judge"},
            7,
            PROBLEM,
            "5",
        ),
        NodeAdded(run_id, 0, None, "step", "2 + 3\n\n", 4, -1.5, [-0.5, -0.5, -0.25, -0.25]),
        NodeAdded(run_id, 1, None, "step", "2 * 3\n\n", 4, -2.0, [-0.5] * 4),
        TextDelta(run_id, 2, "= "),  # live only
        NodeScored(run_id, 0, [0.9], 0.9, "judge"),
        NodeScored(run_id, 1, [0.2], 0.2, "judge"),
        NodePruned(run_id, 1, 0),
        NodeAdded(run_id, 2, 0, "step", "= \\boxed{5}", 5, -1.0, [-0.2] * 5),
        NodeScored(run_id, 2, [0.9, 0.8], 0.8, "judge"),
        NodeFinished(run_id, 2, answer, "eos"),
        Selected(run_id, answer, 2, "weighted", {answer: 0.8}),
        RunFinished(run_id, "done", "", 9, 30, 40, 1.25),
    ]


def record(store: Store, events: list, reference: str | None = "5") -> str:
    sid = store.create_session(PROBLEM, reference, settings={"strategies": ["beam_search"]})
    rec = store.recorder(sid)
    for ev in events:
        rec.record(ev)
    rec.close()
    assert rec.error is None
    return sid


@pytest.fixture
def store(tmp_path):
    s = Store.open(tmp_path / "s.db")
    yield s
    s.close()


def test_a_new_database_has_the_schema_version_and_its_pragmas(tmp_path):
    path = tmp_path / "new" / "sessions.db"  # the folder is created
    with Store.open(path) as s:
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 5000
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
            assert conn.exec_driver_sql("SELECT MAX(version) FROM schema_version").scalar() == SCHEMA_VERSION
    with Store.open(path) as s:  # opening again migrates nothing: one row per version step
        with s.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT COUNT(*) FROM schema_version").scalar() == SCHEMA_VERSION


def test_recorded_events_come_back_as_the_same_stream(store):
    evs = beam_events()
    sid = record(store, evs)
    stored = store.events("r1")
    live = [e for e in evs if not isinstance(e, TextDelta)]
    assert stored == live
    assert fold(stored).nodes.keys() == fold(live).nodes.keys()
    s = store.session(sid)
    (run,) = s.runs
    assert (run.status, run.answer, run.correct) == ("done", "5", True)
    assert (run.generated_tokens, run.prompt_tokens, run.prm_tokens, run.n_nodes) == (9, 30, 40, 3)
    nodes = {n["node_id"]: n for n in store.nodes("r1")}
    assert nodes[1]["pruned_at"] == 0 and nodes[1]["score"] == 0.2
    assert nodes[2]["answer"] == "5" and nodes[2]["step_scores"] == [0.9, 0.8] and nodes[2]["parent_id"] == 0


def test_list_filters_and_short_ids(store):
    a = record(store, beam_events("r1", "5"))
    b = record(store, beam_events("r2", "6"))  # wrong answer
    assert {s.id for s in store.list_sessions()} == {a, b}
    assert [s.id for s in store.list_sessions(correct=False)] == [b]
    assert [s.id for s in store.list_sessions(correct=True)] == [a]
    assert store.list_sessions(search="no such problem") == []
    assert {s.id for s in store.list_sessions(model="tiny")} == {a, b}
    assert store.session(a[:6]).id == a
    with pytest.raises(StoreError, match="No session"):
        store.session("zzzz")


def test_delete_takes_runs_events_and_nodes(store):
    sid = record(store, beam_events())
    store.delete_session(sid)
    with store.engine.connect() as conn:
        for table in ("runs", "events", "nodes"):
            assert conn.exec_driver_sql(f"SELECT COUNT(*) FROM {table}").scalar() == 0
    with pytest.raises(StoreError, match="No session"):
        store.delete_session(sid)


def test_a_run_whose_recorder_stopped_is_interrupted(store):
    sid = store.create_session(PROBLEM)
    rec = store.recorder(sid)
    for ev in beam_events()[:5]:
        rec.record(ev)
    rec.commit()
    assert store.session(sid).runs[0].status == "running"  # this process is alive and recording
    rec.close()
    assert store.session(sid).runs[0].status == "interrupted"
    assert len(store.events("r1")) == 4  # everything recorded is kept


def test_json_and_jsonl_exports_import_back_identical(store, tmp_path):
    sid = record(store, beam_events())
    (tmp_path / "s.json").write_text(json.dumps(export_dict(store, sid)))
    (tmp_path / "s.jsonl").write_text("\n".join(export_jsonl_lines(store, sid)))
    for name in ("s.json", "s.jsonl"):
        with Store.open(tmp_path / f"other-{name}.db") as other:
            assert import_session(other, tmp_path / name) == sid
            assert other.events("r1") == store.events("r1")
            assert other.session(sid).runs[0].answer == "5"
            with pytest.raises(StoreError, match="already in"):
                import_session(other, tmp_path / name)
    (tmp_path / "bad.json").write_text('{"hello": 1}')
    with pytest.raises(StoreError, match="not a Ponder session export"):
        import_session(store, tmp_path / "bad.json")
    with pytest.raises(StoreError, match="No file"):
        import_session(store, tmp_path / "missing.json")


def test_html_export_is_self_contained_and_tinted(store):
    sid = record(store, beam_events())
    page = session_html(store.session(sid), store.session_events(sid))
    assert page.startswith("<!DOCTYPE html>")
    assert "http://" not in page and "https://" not in page and "<script" not in page
    assert "beam_search" in page and "\\boxed{5}" in page
    assert "hsl(108, 70%, 82%)" in page  # node 0, score 0.9
    assert "hsl(24, 70%, 82%)" in page  # node 1, score 0.2
    assert 'class="node step pruned"' in page
    assert 'class="node step chosen"' in page
    assert "PRM score" in page  # the legend


def test_every_export_format_comes_from_one_call_and_the_store_makes_no_html(store):
    sid = record(store, beam_events())
    assert export_session(store, sid[:6], "html").startswith("<!DOCTYPE html>")
    assert json.loads(export_session(store, sid, "json"))["session"]["id"] == sid
    assert len(export_session(store, sid, "jsonl").splitlines()) == 1 + len(store.events("r1"))
    with pytest.raises(StoreError, match="Export format"):
        export_session(store, sid, "pdf")
    with pytest.raises(StoreError, match="Export format"):
        export_text(store, sid, "html")  # the store's own formats are the data ones
    with pytest.raises(StoreError, match="No session"):
        export_session(store, "zzzz", "html")


def test_the_recorder_stores_what_the_fold_makes_of_the_events(store):
    """Rows come from the run's trace: a stream the fold refuses stops the recording (the run is not
    failed by it) and keeps what came before."""
    sid = store.create_session(PROBLEM, "5")
    rec = store.recorder(sid)
    evs = beam_events()
    for ev in evs[:3]:
        rec.record(ev)
    rec.record(NodeScored("r1", 42, [0.5], 0.5, "judge"))  # no node 42: not a run the window could draw
    assert rec.error and "unknown node 42" in rec.error
    rec.record(evs[3])  # ignored from now on
    rec.close()
    assert len(store.events("r1")) == 3
    other = store.recorder(sid)
    with pytest.raises(StoreError, match="before its RunStarted"):
        other.record(evs[1])
    other.close()


def test_a_blank_reference_judges_nothing_as_the_summary_does(store):
    from engine.answers import is_correct

    sid = record(store, beam_events(), reference="   ")
    assert store.session(sid).runs[0].correct is None is is_correct("5", "   ")


def _tree(path: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name)}


def test_a_newer_database_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "newer.db"
    with Store.open(path) as s:
        record(s, beam_events())
        with s.engine.begin() as conn:
            conn.exec_driver_sql("INSERT INTO schema_version VALUES (99, 'future')")
    before = _tree(path)
    with pytest.raises(StoreError, match="newer Ponder.*left untouched"):
        Store.open(path)
    with pytest.raises(StoreError, match="newer Ponder"):
        Store.open(path, readonly=True)
    assert _tree(path) == before


def test_a_damaged_or_foreign_file_is_refused_and_left_untouched(tmp_path):
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(StoreError, match="not a Ponder session database"):
        Store.open(junk)
    assert junk.read_bytes() == b"this is not a database at all" * 100

    damaged = tmp_path / "damaged.db"
    with Store.open(damaged) as s:
        record(s, beam_events())
    data = bytearray(damaged.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)  # the schema page is garbage now
    damaged.write_bytes(bytes(data))
    with pytest.raises(StoreError, match="damaged|not a Ponder"):
        Store.open(damaged)
    assert damaged.read_bytes() == bytes(data)

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.commit()
    with pytest.raises(StoreError, match="not a Ponder session database"):
        Store.open(other)


def test_a_read_only_location_is_refused_clearly(tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits; /proc/self takes no new files
        where = Path("/proc/self")
    else:
        where = tmp_path / "ro"
        where.mkdir()
        where.chmod(0o555)
    with pytest.raises(StoreError, match="read-only location|Cannot"):
        Store.open(where / "sessions.db")
    assert not (where / "sessions.db").exists()


def test_a_missing_database_is_no_error_for_readers_who_ask(tmp_path):
    with pytest.raises(StoreError, match="no session database"):
        Store.open(tmp_path / "none.db", readonly=True)
    assert not (tmp_path / "none.db").exists()


def test_an_older_database_is_migrated_step_by_step_keeping_its_sessions(tmp_path, monkeypatch):
    import engine.store.migrations as st

    path = tmp_path / "old.db"
    with Store.open(path) as s:
        sid = record(s, beam_events())

    def to_next(conn):
        conn.exec_driver_sql("ALTER TABLE sessions ADD COLUMN note TEXT DEFAULT ''")

    monkeypatch.setattr(st, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setitem(st.MIGRATIONS, SCHEMA_VERSION + 1, to_next)
    with Store.open(path) as s:
        with s.engine.connect() as conn:
            assert [
                r[0] for r in conn.exec_driver_sql("SELECT version FROM schema_version ORDER BY version")
            ] == list(range(1, SCHEMA_VERSION + 2))
            assert conn.exec_driver_sql("SELECT note FROM sessions").scalar() == ""
        assert s.events("r1") == [e for e in beam_events() if not isinstance(e, TextDelta)]
        assert s.session(sid).runs[0].answer == "5"


def test_a_version_1_database_gains_the_sweep_tables_and_keeps_its_sessions(tmp_path):
    import sqlite3

    from engine.store import schema

    path = tmp_path / "v1.db"
    # A database as version 1 wrote it: its DDL and a session with one finished run, by hand.
    con = sqlite3.connect(path)
    for stmt in schema.statements(schema.DDL[1]):
        con.execute(stmt)
    con.execute("INSERT INTO schema_version VALUES (1, '2026-01-01')")
    sid = "s1"
    con.execute(
        "INSERT INTO sessions VALUES "
        "(?, '2026-01-01T00:00:00', '', ?, '5', '[]', '{}', '0.1.0', '0.3', '{}', NULL)",
        (sid, PROBLEM),
    )
    con.execute(
        "INSERT INTO runs VALUES ('r1', ?, 0, 'beam_search', '{}', '/m.gguf', 'tiny', 0, '', 0, '{}', 7, "
        "'done', '', '5', 1, 9, 30, 40, 1.25, 12, 3, 1, 'host')",
        (sid,),
    )
    con.commit()
    con.close()
    with sqlite3.connect(path) as con:
        tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert "sweeps" not in tables  # version 1 as it shipped
    with Store.open(path, readonly=True) as s:  # read-only: nothing migrates, and it still reads
        assert [x.id for x in s.list_sessions(sweeps=False)] == [sid]
        assert s.list_sweeps() == []
    with Store.open(path) as s:
        run = s.session(sid).runs[0]
        assert run.answer == "5" and run.generated_tokens == 9 and run.cached_tokens == 0 and run.flops == 0
        w = s.open_sweep("k", "a sweep", {"prm": "judge"})
        s.set_sweep_cell(w, 0, "beam_search", 2, sid)
        assert s.sweep_cells(w)[(0, "beam_search", 2)].id == "r1"


def test_a_sweep_cell_run_again_replaces_its_old_session_and_deleting_the_sweep_deletes_its_sessions(store):
    w = store.open_sweep("key", "arith", {})
    assert store.open_sweep("key", "other name", {}) == w  # found again by its key
    first = record(store, beam_events("r1"))
    store.set_sweep_cell(w, 3, "beam_search", 4, first)
    second = record(store, beam_events("r2"))
    store.set_sweep_cell(w, 3, "beam_search", 4, second)
    assert store.sweep_cells(w) == {(3, "beam_search", 4): store.session(second).runs[0]}
    with pytest.raises(StoreError):
        store.session(first)  # the superseded attempt is gone: one result per cell
    keep = record(store, beam_events("r3"))  # a session outside the sweep
    assert store.delete_sweep(w[:6]) == 1
    assert store.list_sweeps() == []
    assert [s.id for s in store.list_sessions()] == [keep]


def test_a_sweep_session_no_cell_points_at_is_dropped_when_the_sweep_resumes(store):
    """A sweep killed between saving a cell's session and linking it to the cell (two transactions)
    left the session behind; reopening the sweep drops it, and nothing else."""
    w = store.open_sweep("key", "arith", {})
    other = store.open_sweep("key2", "arith", {})
    linked = store.create_session(PROBLEM, "5", tags=("sweep", f"sweep:{w}"))
    store.set_sweep_cell(w, 0, "beam_search", 2, linked)
    orphan = store.create_session(PROBLEM, "5", tags=("sweep", f"sweep:{w}"))  # killed before its link
    elsewhere = store.create_session(PROBLEM, "5", tags=("sweep", f"sweep:{other}"))
    mine = record(store, beam_events("r9"))  # a session outside any sweep
    assert store.drop_orphan_sweep_sessions(w) == 1
    ids = {s.id for s in store.list_sessions(sweeps=True)}
    assert orphan not in ids and {linked, elsewhere, mine} <= ids
    assert store.drop_orphan_sweep_sessions(w) == 0


def test_the_default_database_is_in_the_user_data_folder(monkeypatch, tmp_path):
    from engine.store import default_db_path

    monkeypatch.delenv("PONDER_DB")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert default_db_path() == tmp_path / "xdg" / "ponder" / "sessions.db"
    monkeypatch.setenv("PONDER_DB", str(tmp_path / "mine.db"))
    assert default_db_path() == tmp_path / "mine.db"
