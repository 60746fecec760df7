"""A session out of the store and back in: JSON (one document) or JSONL (a header line, then one
line per event in the order they happened), each carrying the schema version it was written with.

An import is checked whole before anything is written (the session's fields and types, every run's
events folding into a trace) and is all or nothing. The HTML page is not made here: see
:func:`engine.run.export.export_session`, which dispatches every format.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import DatabaseError

from engine.errors import PonderError
from engine.events import Event, event_from_dict, fold
from engine.problems import clean_text
from engine.store.db import StoreError
from engine.store.migrations import SCHEMA_VERSION
from engine.store.rows import RunRow, SessionRow
from engine.store.store import SessionOrigin, Store

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
        origin=SessionOrigin(
            sid, sess.get("created"), sess.get("ponder_version", ""), sess.get("llama_cpp_version", "")
        ),
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


EXPORT_FORMATS = ("json", "jsonl")  # the store's own; engine.run.export.export_session adds html


def export_text(store: Store, session_id: str, fmt: str) -> str:
    """A session as JSON or JSONL."""
    if fmt not in EXPORT_FORMATS:
        raise StoreError(f"Export format must be one of {', '.join(EXPORT_FORMATS)}; got {fmt!r}.")
    s = store.session(session_id)
    if fmt == "json":
        return json.dumps(export_dict(store, s.id), ensure_ascii=False, indent=1)
    return "\n".join(export_jsonl_lines(store, s.id))


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
