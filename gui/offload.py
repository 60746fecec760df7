"""Work that grows with the data runs here, not on the GUI thread: a plain Python callable goes to
a worker thread and its result (or the PonderError it raised) comes back to a callback on the GUI
thread, through a queued signal. ``latest`` drops the results of requests a newer one of the same
kind has replaced (search as you type)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from PySide6.QtCore import QObject, Signal


class Offload(QObject):
    _done = Signal(object, object)  # (callback, result)

    def __init__(self, parent: QObject | None = None, name: str = "ponder-offload", workers: int = 1) -> None:
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self._latest: dict[str, int] = {}
        self._done.connect(self._deliver)
        self.pending = 0
        self.closed = False

    def submit(self, fn: Callable[[], Any], callback: Callable[[Any], None]) -> Future | None:
        """Run ``fn()`` on the worker; ``callback(result)`` on the GUI thread. An exception reaches
        the callback as the result (the caller says what it means to the user). After
        ``shutdown`` (the window closed) nothing runs and None is returned."""
        if self.closed:
            return None
        self.pending += 1

        def done(fut: Future) -> None:
            try:
                result = fut.exception() or fut.result()
            except BaseException as e:  # noqa: BLE001 - cancelled: nothing to deliver
                result = e
            try:
                self._done.emit(callback, result)
            except RuntimeError:  # the window closed meanwhile
                pass

        fut = self._pool.submit(fn)
        fut.add_done_callback(done)
        return fut

    def latest(self, kind: str, fn: Callable[[], Any], callback: Callable[[Any], None]) -> None:
        """As ``submit``, but only the newest request of this ``kind`` is delivered."""
        n = self._latest.get(kind, 0) + 1
        self._latest[kind] = n

        def deliver(result: Any) -> None:
            if self._latest.get(kind) == n:
                callback(result)

        self.submit(fn, deliver)

    def _deliver(self, callback: Callable[[Any], None], result: Any) -> None:
        self.pending -= 1
        callback(result)

    def shutdown(self) -> None:
        self.closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
