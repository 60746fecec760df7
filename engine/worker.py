"""One thread owns the llama.cpp context; everyone else sends it work.

Like llama.cpp's server loop: a queue of tasks, one loop that owns the model. The worker's
``factory`` makes what it owns, in its thread (:mod:`engine.run.opening` opens an executor, in
process or on servers); the GUI (through a thin QObject) and the CLI submit callables that receive
it and get a ``concurrent.futures.Future`` back. Cancellation is a :class:`CancelToken` that long
work polls between tokens. This module knows no backend.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

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
    """Makes what it owns with ``factory`` in its own thread (loads a model, connects to servers)
    and runs submitted work there, one task at a time; what it made is closed there too."""

    def __init__(self, factory: Callable[[], Any]) -> None:
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
