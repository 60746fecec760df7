"""A thin QObject over engine.worker.BackendWorker: engine callbacks become Qt signals.

The engine runs in its own thread (it owns the llama.cpp context); signals emitted from there reach
the GUI through queued connections, so the window never blocks. Events are delivered in batches
(at most ~20 a second, streamed text coalesced) so a 16-branch run does not flood the event loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from PySide6.QtCore import QObject, Signal

from engine.backends.llama_cpp import BackendConfig
from engine.errors import PonderError
from engine.events import Event, TextDelta
from engine.executor import Executor
from engine.run.compare import run_compare
from engine.run.cost import CostRefused, estimate, facts_of_executor, gate, sweep_estimate
from engine.run.opening import ServerTarget, open_worker
from engine.run.request import CompareRequest
from engine.run.scheduler import EventSink, Run
from engine.store import Store
from engine.sweeps import Summary, SweepProgress, SweepResult, SweepSpec, analyse, pending_requests, run_sweep
from engine.worker import BackendWorker, CancelToken


class EngineBridge(QObject):
    loaded = Signal(dict)  # ModelInfo as a dict
    failed = Signal(str)
    # compare: batches of (run id, strategy name, event) as they happen; then (session id, summaries)
    events = Signal(list)
    compared = Signal(str, list)
    # sweep: each SweepProgress; then (SweepResult, summary dict)
    sweep_progress = Signal(object)
    swept = Signal(object, object)
    # a compare or sweep refused by its cost estimate (over an hour, or more than the disk holds):
    # the estimate's words; the window asks, and runs it again with yes=True
    costly = Signal(str)

    def __init__(
        self, model_path: str, config: BackendConfig | None = None, server: dict[str, Any] | None = None
    ) -> None:
        """``server``: run on inference servers instead ({"urls": [...], "model": id, "api_key": ...});
        ``model_path`` is then only a label."""
        super().__init__()
        self.model_path = model_path
        self.config = config or BackendConfig(n_ctx=4096, n_seq_max=32)
        self.server = server
        self._worker: BackendWorker | None = None
        self._cancel: CancelToken | None = None
        self.busy = False

    def _ensure_worker(self) -> BackendWorker:
        if self._worker is None:
            if self.server is not None:
                srv = self.server
                target = ServerTarget(
                    tuple(srv["urls"]),
                    srv.get("api_key"),
                    model=srv.get("model"),
                    tokenizer=srv.get("tokenizer"),
                    prm_urls=tuple(srv.get("prm_urls") or ()),
                )
                self._worker = open_worker(servers=target)
            else:
                self._worker = open_worker(self.model_path, self.config)
            self._worker.submit(_describe).add_done_callback(self._on_loaded)
        return self._worker

    def _on_loaded(self, fut: Any) -> None:
        # A load error reaches the user through the run that triggered the load (one dialog, not
        # two); that run's end drops the worker, and the next run tries to load again.
        if fut.exception() is None:
            self.loaded.emit(fut.result())

    def compare(self, store_path: str | None, request: CompareRequest, yes: bool = False) -> None:
        """Run the request's strategies side by side, recorded into the session store; events reach
        the window in batches (at most ~20 a second; streamed text is coalesced to the latest)."""
        if self.busy:
            return
        self.busy = True
        self._cancel = cancel = CancelToken()
        pending: list[tuple[str, str, Any]] = []
        last = [0.0]

        def flush() -> None:
            if pending:
                self.events.emit(list(pending))
                pending.clear()
            last[0] = time.monotonic()

        def sink(run: Run, ev: Event) -> None:
            if isinstance(ev, TextDelta) and pending and isinstance(pending[-1][2], TextDelta):
                if pending[-1][2].node_id == ev.node_id and pending[-1][0] == run.run_id:
                    prev = pending.pop()[2]
                    ev = TextDelta(ev.run_id, ev.node_id, prev.text + ev.text)
            pending.append((run.run_id, run.spec.name, ev))
            if time.monotonic() - last[0] >= 0.05:
                flush()

        self._submit(
            _recorded, lambda r: self.compared.emit(*r), store_path, request, sink, cancel, flush, yes
        )

    def sweep(
        self, store_path: str | None, spec: SweepSpec, difficulty: str = "pass1", yes: bool = False
    ) -> None:
        """Run (or resume) a sweep on the loaded model; ``sweep_progress`` carries each
        ``SweepProgress``, ``swept`` the result and the summary of what the store then holds."""
        if self.busy:
            return
        self.busy = True
        self._cancel = cancel = CancelToken()

        self._submit(
            _swept,
            lambda r: self.swept.emit(*r),
            store_path,
            spec,
            self.sweep_progress.emit,
            cancel,
            difficulty,
            yes,
        )

    def _submit(self, work: Any, on_result: Any, *args: Any) -> None:
        """Run ``work(executor, *args)`` on the worker thread; its result goes to ``on_result``, an
        error to ``failed``. A model that failed to load is dropped, so the next call tries again."""
        try:
            worker = self._ensure_worker()
            fut = worker.submit(work, *args)
        except PonderError as e:
            self.busy = False
            self.failed.emit(str(e))
            return

        def done(f: Any) -> None:
            if worker.load_failed and self._worker is worker:
                self._worker = None
                worker.close()
            self.busy = False
            err = f.exception()
            if isinstance(err, CostRefused) and err.estimate is not None and not err.estimate.over_ceiling:
                self.costly.emit(str(err))
            elif err is not None:
                self.failed.emit(_message(err))
            else:
                on_result(f.result())

        fut.add_done_callback(done)

    def cancel(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def shutdown(self) -> None:
        self.cancel()
        if self._worker is not None:
            self._worker.close()
            self._worker = None


def _describe(executor: Executor) -> dict[str, Any]:
    """What the status bar says once the model is ready."""
    return executor.describe()


def _recorded(
    executor: Executor,
    store_path: str | None,
    request: CompareRequest,
    sink: EventSink,
    cancel: CancelToken,
    flush: Callable[[], None],
    yes: bool = False,
) -> tuple[str, list[dict[str, Any]]]:
    """On the worker thread: the cost checked (unless ``yes``), then the compare recorded into the
    store at ``store_path``."""
    store = Store.open(store_path)
    try:
        gate(estimate([request], facts_of_executor(executor), store), yes)
        result = run_compare(executor, request, sink, cancel, store)
    finally:
        store.close()
    flush()
    if result.error:
        raise PonderError(result.error)
    return str(result.session_id), [s.as_dict() for s in result.summaries]


def _swept(
    executor: Executor,
    store_path: str | None,
    spec: SweepSpec,
    on_progress: Callable[[SweepProgress], None],
    cancel: CancelToken,
    difficulty: str,
    yes: bool = False,
) -> tuple[SweepResult, Summary]:
    """On the worker thread: the cost of the cells still to run checked (unless ``yes``), the sweep
    run (or resumed), then its analysis."""
    store = Store.open(store_path)
    try:
        pending = pending_requests(store, spec, executor.model_record())
        if pending:
            gate(sweep_estimate(pending, facts_of_executor(executor), store), yes)
        result = run_sweep(executor, store, spec, on_progress=on_progress, cancel=cancel)
        return result, analyse(store, result.sweep_id, spec, difficulty=difficulty)
    finally:
        store.close()


def _message(err: BaseException) -> str:
    if isinstance(err, PonderError):
        return str(err)
    return f"Unexpected error: {type(err).__name__}: {err}"


def make_bridge(choice: dict[str, Any]) -> EngineBridge:
    """The engine for a model bar's choice: a server model, or a GGUF with its layers and context."""
    if "server" in choice:
        return EngineBridge(choice["label"], server=choice["server"])
    config = BackendConfig(n_ctx=choice["n_ctx"], n_seq_max=64, n_gpu_layers=choice["n_gpu_layers"])
    return EngineBridge(choice["path"], config)


def same_backend(bridge: EngineBridge, choice: dict[str, Any]) -> bool:
    if "server" in choice:
        return bridge.server == choice["server"]
    return (
        bridge.server is None
        and bridge.model_path == choice["path"]
        and bridge.config.n_gpu_layers == choice["n_gpu_layers"]
        and bridge.config.n_ctx == choice["n_ctx"]
    )
