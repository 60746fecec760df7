"""Opening executors: the one module that names both backends.

Everything above the run layer (the CLI, sweeps, the app) asks here for what runs a request, in
process (one llama.cpp context, owned by one thread) or on inference servers (one or many, and PRM
servers of their own); each gets an :class:`~engine.executor.Executor` and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from engine.errors import InvalidRequestError
from engine.executor import Executor
from engine.worker import BackendWorker

if TYPE_CHECKING:  # the backends load when an executor is made: a command refused before that
    # (a budget over the ceiling, a bad option) answers without importing llama.cpp or httpx
    from engine.backends.llama_cpp import BackendConfig
    from engine.backends.llama_cpp.executor import LlamaCppExecutor
    from engine.backends.server.executor import ServerExecutor


@dataclass(frozen=True)
class ServerTarget:
    """Inference servers serving one model (and optionally PRM servers), as the user named them."""

    urls: tuple[str, ...]
    api_key: str | None = None
    model: str | None = None  # the served model's id; None: the one the servers serve
    parallel: int | None = None  # requests in flight per server; None: its slots
    timeout: float = 600.0  # seconds one request may take
    prm_urls: tuple[str, ...] = ()
    n_params: int | None = None  # the model's parameters where its server does not say
    tokenizer: str | None = None  # the model's own tokenizer (a GGUF or a tokenizer.json folder)

    def checked(self) -> ServerTarget:
        if self.parallel is not None and self.parallel < 1:
            raise InvalidRequestError("--parallel must be >= 1")
        if not self.timeout or self.timeout <= 0:
            raise InvalidRequestError("--timeout must be > 0 seconds")
        return self


def in_process(model_path: str | os.PathLike[str], config: BackendConfig | None = None) -> LlamaCppExecutor:
    """The model loaded in this thread, in an executor that owns it (closing it frees the model)."""
    from engine.backends.llama_cpp import Backend
    from engine.backends.llama_cpp.executor import LlamaCppExecutor

    return LlamaCppExecutor(Backend(str(model_path), config), owns_backend=True)


def on_servers(target: ServerTarget) -> ServerExecutor:
    """Connect to the servers (and PRM servers) and check them before anything runs: one clear
    error for an unreachable server, a refused key or a model it does not serve."""
    from engine.backends.server.executor import ServerExecutor
    from engine.backends.server.pool import ServerPool

    t = target.checked()
    pool = ServerPool.connect(
        list(t.urls), t.api_key, model=t.model, parallel=t.parallel, timeout=t.timeout, tokenizer=t.tokenizer
    )
    prm_pool = None
    if t.prm_urls:
        try:
            prm_pool = ServerPool.connect(
                list(t.prm_urls), t.api_key, parallel=t.parallel, timeout=t.timeout, loop=pool.loop
            )
        except BaseException:
            pool.close()
            raise
    executor = ServerExecutor(pool, prm_pool)
    executor.n_params_override = t.n_params
    return executor


def executor_factory(
    model_path: str | os.PathLike[str] | None = None,
    config: BackendConfig | None = None,
    servers: ServerTarget | None = None,
) -> Callable[[], Executor]:
    """What makes the executor, to be called in the thread that will own it."""
    if servers is not None:
        return lambda: on_servers(servers)
    if model_path is None:
        raise InvalidRequestError("No model: give a GGUF path or servers.")
    return lambda: in_process(model_path, config)


def open_worker(
    model_path: str | os.PathLike[str] | None = None,
    config: BackendConfig | None = None,
    servers: ServerTarget | None = None,
) -> BackendWorker:
    """A worker whose thread owns an executor: ``worker.submit(fn, *args)`` calls
    ``fn(executor, *args)`` there (``run_compare`` and ``run_sweep`` are such functions)."""
    return BackendWorker(executor_factory(model_path, config, servers))


def backend_worker(model_path: str | os.PathLike[str], config: BackendConfig | None = None) -> BackendWorker:
    """A worker whose thread owns a bare llama.cpp :class:`Backend` (``ponder generate``: raw
    decoding with no strategy)."""
    from engine.backends.llama_cpp import Backend

    path = str(model_path)
    return BackendWorker(lambda: Backend(path, config))
