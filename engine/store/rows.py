"""The session database's tables as SQLAlchemy 2 typed models.

They describe what the frozen DDL of :mod:`engine.store.schema` builds, version by version
(``tests/unit/test_schema.py`` checks that a migrated database and these models agree column by
column); a change here needs a new schema version there.
"""

from __future__ import annotations

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


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
