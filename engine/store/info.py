"""What readers of the store get: plain dataclasses of a session, its runs and a sweep (no
SQLAlchemy rows escape the store)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.store.db import pid_alive


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


def run_info(r: Any, host: str) -> RunInfo:
    """A run row as readers get it: a run left ``running`` by a process that is gone (or on another
    host) reads as ``interrupted``."""
    status = r.status
    if status == "running" and (r.host != host or not pid_alive(r.pid)):
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


def session_info(s: Any, runs: list[RunInfo]) -> SessionInfo:
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


def sweep_info(r: Any, n_cells: int) -> SweepInfo:
    return SweepInfo(r.id, r.created, r.name, r.key, dict(r.settings or {}), n_cells)
