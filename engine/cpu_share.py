"""Sharing the CPU with other Ponder processes on the same machine.

llama.cpp's CPU threads wait for each other at spin barriers inside every ``llama_decode``. Two
processes that decode at once on the same cores each need all their threads on a core at the same
moment, and each spins while the other's threads hold the cores: measured on 2 cores, a 4-token
decode went from ~40 ms to 3 s. The remedy, on by default:

* **One decode at a time, machine-wide.** :func:`cpu_turn` is a cross-process lock (``flock`` on a
  file in the user's cache folder) held for the length of one ``llama_decode``. A process waiting
  for its turn sleeps in the kernel instead of spinning, and turns alternate: a process that just
  decoded and finds another waiting lets it go first (see :class:`CpuTurn`). The kernel releases the
  lock of a process that dies, so a killed Ponder never blocks the others.

Measured with ``ponder bench --processes 2``: see the README. ``OMP_WAIT_POLICY=PASSIVE`` (threads
that sleep at every barrier) was measured too and is not used: it costs a single process 10-50%.

``PONDER_CPU_SHARE=0`` turns the lock off (for a benchmark baseline, or a machine where Ponder runs
alone and a process wants the last percent). Models fully offloaded to a GPU do not take the lock:
their decodes do not spin on the CPU. Never imports Qt.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

SHARE_ENV = "PONDER_CPU_SHARE"


def sharing_enabled() -> bool:
    return os.environ.get(SHARE_ENV, "1").strip().lower() not in ("0", "off", "no", "false")


def lock_dir() -> Path:
    from platformdirs import user_cache_dir

    return Path(os.environ.get("PONDER_CACHE_DIR") or user_cache_dir("ponder"))


class CpuTurn:
    """A machine-wide turn to decode on the CPU, shared by every Ponder process of this user.

    Two files: ``cpu.lock`` is the turn itself; ``cpu.wait`` is held (shared) by every process that
    is waiting for a turn. After its decode a process checks, without blocking, whether anyone holds
    ``cpu.wait``; if so it waits for the turn behind them (``flock`` alone would let the process that
    just released the lock take it again before the woken waiter runs, and one process could starve
    the other). Within a process, threads take turns through an ordinary lock first.
    """

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or lock_dir()
        self._local = threading.Lock()
        self._fd: int | None = None
        self._wait_fd: int | None = None
        self._failed = False
        self.waited_s = 0.0  # time spent waiting for other processes (for benches and the log)
        self.turns = 0

    def _open(self) -> bool:
        if self._fd is not None:
            return True
        if self._failed:
            return False
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.folder / "cpu.lock", os.O_RDWR | os.O_CREAT, 0o600)
            self._wait_fd = os.open(self.folder / "cpu.wait", os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            # A read-only home or an odd file system: decode without sharing rather than not at all.
            self._failed = True
            return False
        return True

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        import fcntl

        with self._local:
            if not self._open():
                yield
                return
            fd, wait_fd = self._fd, self._wait_fd
            assert fd is not None and wait_fd is not None
            t0 = time.perf_counter()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fcntl.flock(wait_fd, fcntl.LOCK_SH)  # "someone is waiting"
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                finally:
                    fcntl.flock(wait_fd, fcntl.LOCK_UN)
            self.waited_s += time.perf_counter() - t0
            self.turns += 1
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                self._yield_to_waiters(wait_fd)

    @staticmethod
    def _yield_to_waiters(wait_fd: int) -> None:
        """If another process waits, sleep until it has taken the turn (at most a few ms)."""
        import fcntl

        try:
            fcntl.flock(wait_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            # Someone waits: give it the moment it needs to wake and take the lock.
            deadline = time.perf_counter() + 0.005
            while time.perf_counter() < deadline:
                time.sleep(0.0005)
                try:
                    fcntl.flock(wait_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue
                fcntl.flock(wait_fd, fcntl.LOCK_UN)
                return
            return
        fcntl.flock(wait_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        for fd in (self._fd, self._wait_fd):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._wait_fd = None


_TURN: CpuTurn | None = None
_TURN_LOCK = threading.Lock()


def cpu_turn() -> CpuTurn:
    """The process's one :class:`CpuTurn` (every backend of a process shares it)."""
    global _TURN
    with _TURN_LOCK:
        if _TURN is None:
            _TURN = CpuTurn()
        return _TURN


@contextlib.contextmanager
def no_turn() -> Iterator[None]:
    yield
