"""Recording a session as it runs: every event stored in order, and the rows for queries (the run,
its nodes) written from the run's trace — the one fold of :mod:`engine.events` says what an event
means, the recorder only stores what the trace then holds.

Durability: events are committed in small transactions while the run goes on (at most
``commit_every_s`` apart, and at once for a run's start, selection and end), so a crash, a kill or a
power cut keeps every committed event.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, insert, select, update
from sqlalchemy.exc import DatabaseError, OperationalError

from engine.answers import is_correct
from engine.errors import InvalidRequestError
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
    Trace,
    TraceNode,
)
from engine.store.db import StoreError, sqlite_error_text
from engine.store.rows import EventRow, NodeRow, RunRow, SessionRow

COMMIT_EVERY_S = 0.25  # the most a kill can lose of a running run's events


class RecordingStore(Protocol):
    """What a recorder needs of its store (:class:`engine.store.store.Store`)."""

    engine: Engine
    host: str


class Recorder:
    """Writes a session's events as they happen: pass it as (or call it from) the ``on_event`` of
    :func:`engine.run.compare.compare`. Text deltas are live-only and not stored."""

    def __init__(
        self, store: RecordingStore, session_id: str, commit_every_s: float, share: Recorder | None = None
    ) -> None:
        self.store = store
        self.session_id = session_id
        self.commit_every_s = commit_every_s
        # Read once (before any write of this connection): every run's Selected is checked against it.
        with store.engine.connect() as conn:
            self._reference = conn.execute(
                select(SessionRow.reference).where(SessionRow.id == session_id)
            ).scalar()
        self._link: _Link
        if share is not None and not share._link.closed:
            # Recorders of sessions that run at once (a sweep's cells) write through one connection
            # and one transaction: SQLite has one writer, and two open write transactions would
            # fail each other ("database is locked").
            self._link = share._link
            self._link.users += 1
        else:
            self._link = _Link(store.engine.connect())
        self._traces: dict[str, Trace] = {}  # each run's fold of the events recorded so far
        self._positions = 0
        self.pid = os.getpid()
        self.error: str | None = None

    def __call__(self, run: object, ev: Event) -> None:  # an EventSink (engine.run.scheduler)
        self.record(ev)

    def record(self, ev: Event) -> None:
        if isinstance(ev, TextDelta) or self.error is not None:
            return
        try:
            self._write(ev)
            urgent = isinstance(ev, RunStarted | Selected | RunFinished)
            if urgent or time.monotonic() - self._link.last_commit >= self.commit_every_s:
                self.commit()
        except (OperationalError, DatabaseError) as e:
            # The run goes on; the caller reports that recording stopped (disk full, file removed).
            self.error = f"Recording stopped: {sqlite_error_text(e)}"
            try:
                self._link.tx.rollback()
                self._link.tx = self._link.conn.begin()
            except Exception:  # noqa: BLE001
                pass

    def _fold(self, ev: Event) -> Trace | None:
        """The run's trace with ``ev`` applied; None (and recording stops) when the fold refuses it."""
        trace = self._traces.get(ev.run_id)
        if trace is None:
            if not isinstance(ev, RunStarted):
                raise StoreError(f"event for run {ev.run_id} before its RunStarted")
            trace = self._traces[ev.run_id] = Trace()
        try:
            trace.apply(ev)
        except InvalidRequestError as e:
            # What the window and the export could not draw is not stored either; the run goes on.
            self.error = f"Recording stopped: {e}"
            return None
        return trace

    def _write(self, ev: Event) -> None:
        trace = self._fold(ev)
        if trace is None:
            return
        c, rid = self._link.conn, ev.run_id
        if isinstance(ev, RunStarted):
            c.execute(insert(RunRow).values(**self._run_row(ev)))  # the trace's started
            self._positions += 1
        seq = trace.n_events - 1
        c.execute(insert(EventRow).values(run_id=rid, seq=seq, kind=ev.kind, payload=ev.to_dict()))
        values: dict[str, Any] = {"n_events": trace.n_events}
        if isinstance(ev, NodeAdded):
            c.execute(insert(NodeRow).values(run_id=rid, **_node_row(trace.nodes[ev.node_id])))
            values["n_nodes"] = len(trace.nodes)
        elif isinstance(ev, NodeScored | NodePruned | NodeFinished):
            where = (NodeRow.run_id == rid) & (NodeRow.node_id == ev.node_id)
            c.execute(update(NodeRow).where(where).values(**_node_change(trace.nodes[ev.node_id], ev)))
        elif isinstance(ev, Selected):
            answer = ev.answer  # the trace's selected
            values.update(answer=answer, correct=is_correct(answer, self._reference))
        elif isinstance(ev, RunFinished):
            values.update(_finished_row(ev))  # the trace's finished
        c.execute(update(RunRow).where(RunRow.id == rid).values(**values))

    def _run_row(self, ev: RunStarted) -> dict[str, Any]:
        m = ev.model
        return {
            "id": ev.run_id,
            "session_id": self.session_id,
            "position": self._positions,
            "strategy": ev.strategy,
            "params": ev.params,
            "model_path": str(m.get("path", "")),
            "model_name": str(m.get("name", "")),
            "model_size": int(m.get("file_size", 0) or 0),
            "model_sha256": str(m.get("sha256_1mb", "")),
            "n_gpu_layers": int(m.get("n_gpu_layers_requested", 0) or 0),
            "prm": ev.prm,
            "seed": ev.seed,
            "status": "running",
            "pid": self.pid,
            "host": self.store.host,
        }

    @property
    def _conn(self) -> Connection:
        return self._link.conn

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
            self.error = f"Recording stopped: {sqlite_error_text(e)}"
        finally:
            self._traces.clear()
            self._link.release()


def _node_row(node: TraceNode) -> dict[str, Any]:
    """A new node's row: what it was added with."""
    return {
        "node_id": node.id,
        "parent_id": node.parent_id,
        "role": node.role,
        "text": node.text,
        "n_tokens": node.n_tokens,
        "logprob_sum": node.logprob_sum,
    }


def _node_change(node: TraceNode, ev: NodeScored | NodePruned | NodeFinished) -> dict[str, Any]:
    """The columns of a node's row that ``ev`` changed, as the trace now has them (a column no
    event has set stays NULL)."""
    if isinstance(ev, NodeScored):  # the scores of the scorer that just scored it
        return {"score": node.scores[ev.scorer], "step_scores": node.step_scores[ev.scorer]}
    if isinstance(ev, NodePruned):
        return {"pruned_at": node.pruned_at}
    return {"answer": node.answer, "finish_reason": node.finish_reason}


def _finished_row(ev: RunFinished) -> dict[str, Any]:
    return {
        "status": ev.status,
        "message": ev.message,
        "generated_tokens": ev.generated_tokens,
        "prompt_tokens": ev.prompt_tokens,
        "prm_tokens": ev.prm_tokens,
        "wall_s": ev.wall_s,
        "cached_tokens": ev.cached_tokens,
        "policy_flops": ev.policy_flops,
        "prm_flops": ev.prm_flops,
    }


class _Link:
    """A recording connection and its open transaction, shared by the recorders that use it."""

    def __init__(self, conn: Connection) -> None:
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
