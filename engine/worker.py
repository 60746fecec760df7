"""One thread owns the llama.cpp context; everyone else sends it work.

Like llama.cpp's server loop: a queue of tasks, one loop that owns the model. The GUI (through a thin
QObject) and the CLI submit callables that receive the :class:`~engine.backends.llama_cpp.Backend` and get a
``concurrent.futures.Future`` back. Cancellation is a :class:`CancelToken` that long work polls
between tokens.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from engine.backends.llama_cpp import Backend, BackendConfig
from engine.errors import PonderError

T = TypeVar("T")


class CancelToken:
    """A flag work checks between tokens. Calling the token returns whether it was cancelled."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __call__(self) -> bool:
        return self._event.is_set()


class WorkerClosedError(PonderError):
    pass


_STOP = object()


class BackendWorker:
    """Loads a model in its own thread and runs submitted work there, one task at a time.

    ``factory`` makes what the work receives instead of a llama.cpp backend (the app and the CLI
    pass one that connects to inference servers: a ``ServerExecutor``); it runs in the worker's
    thread, and what it makes is closed there too."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        config: BackendConfig | None = None,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        if factory is None:
            if model_path is None:
                raise ValueError("BackendWorker needs a model path or a factory")
            path = str(model_path)

            def factory() -> Any:
                return Backend(path, config)

        self._q: queue.Queue[Any] = queue.Queue()
        self._loaded: Future[Any] = Future()
        self._closed = False
        self._thread = threading.Thread(target=self._run, args=(factory,), name="ponder-backend", daemon=True)
        self._thread.start()

    def _run(self, factory: Callable[[], Any]) -> None:
        backend: Any = None
        try:
            backend = factory()
        except BaseException as e:  # reported through every future; the loop still drains the queue
            self._loaded.set_exception(e)
        else:
            self._loaded.set_result(backend)
        try:
            while True:
                item = self._q.get()
                if item is _STOP:
                    break
                fut, fn, args, kwargs = item
                if not fut.set_running_or_notify_cancel():
                    continue
                if backend is None:
                    fut.set_exception(self._loaded.exception())
                    continue
                try:
                    fut.set_result(fn(backend, *args, **kwargs))
                except BaseException as e:
                    fut.set_exception(e)
        finally:
            if backend is not None:
                backend.close()
            # Fail whatever is still queued rather than leaving callers waiting forever.
            while True:
                try:
                    item = self._q.get_nowait()
                except queue.Empty:
                    break
                if item is not _STOP:
                    item[0].set_exception(WorkerClosedError("The model was unloaded."))

    def wait_loaded(self, timeout: float | None = None) -> Any:
        """Block until the model is loaded; raises the load error (a typed ModelLoadError) if any.
        The returned backend may only be *read* from here (info, config), not used."""
        return self._loaded.result(timeout)

    @property
    def load_failed(self) -> bool:
        return self._loaded.done() and self._loaded.exception() is not None

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Future[T]:
        if self._closed:
            raise WorkerClosedError("The model was unloaded.")
        fut: Future[T] = Future()
        self._q.put((fut, fn, args, kwargs))
        return fut

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return self.submit(fn, *args, **kwargs).result()

    def close(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        self._closed = True
        self._q.put(_STOP)
        if threading.current_thread() is not self._thread:  # a done-callback may close it too
            self._thread.join(timeout)

    def __enter__(self) -> BackendWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
