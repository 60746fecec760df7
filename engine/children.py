"""Processes Ponder starts end when the Ponder process that started them ends, however it ends.

``ponder serve``'s llama-server, the tests' servers and the benches' engines are started through
:func:`start`. Killed hard (SIGKILL, the out-of-memory killer), a parent runs no clean-up code, so
the child must be told by the kernel:

- **Linux**: the child asks for ``PR_SET_PDEATHSIG`` (SIGKILL) between fork and exec, so the kernel
  kills it the moment its parent goes. The signal is tied to the *thread* that forked the child, not
  the process: a server started from a worker thread would die with that thread. So every child is
  forked by one spawner thread that lives as long as the process. A parent that died between the
  fork and the ``prctl`` is caught by comparing the parent's pid afterwards.
- **elsewhere** (macOS, Windows): no such signal; the child gets its own process group and is
  ended at interpreter exit (``atexit``), which covers every end but a hard kill.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

_PR_SET_PDEATHSIG = 1
_LINUX = sys.platform.startswith("linux")
_libc: Any = None
if _LINUX:
    try:
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.prctl  # noqa: B018 - resolved now, in the parent, not between fork and exec
    except (OSError, AttributeError):  # pragma: no cover - a libc without prctl
        _libc = None

_jobs: queue.SimpleQueue[tuple[Callable[[], subprocess.Popen[Any]], Future[subprocess.Popen[Any]]]] = (
    queue.SimpleQueue()
)
_spawner: threading.Thread | None = None
_spawner_lock = threading.Lock()
_living: weakref.WeakSet[subprocess.Popen[Any]] = weakref.WeakSet()


def dies_with_parent() -> bool:
    """Whether children end with Ponder even when it is killed hard (Linux)."""
    return _libc is not None


def start(cmd: Sequence[str], **popen_kw: Any) -> subprocess.Popen[Any]:
    """``subprocess.Popen(cmd, **popen_kw)`` for a child that ends when this process ends."""
    if _libc is None:
        popen_kw.setdefault("start_new_session", True)
        proc = subprocess.Popen(list(cmd), **popen_kw)  # noqa: S603 - commands Ponder builds
        _living.add(proc)
        return proc
    parent = os.getpid()

    def arm() -> None:  # in the child, between fork and exec: only async-signal-safe work
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: nobody will signal us
            os._exit(1)
        user = popen_kw.get("preexec_fn")
        if user is not None:
            user()

    kw = dict(popen_kw, preexec_fn=arm)
    fut: Future[subprocess.Popen[Any]] = Future()
    _jobs.put((lambda: subprocess.Popen(list(cmd), **kw), fut))  # noqa: S603
    _ensure_spawner()
    return fut.result()


def _ensure_spawner() -> None:
    global _spawner
    with _spawner_lock:
        if _spawner is None or not _spawner.is_alive():
            _spawner = threading.Thread(target=_spawn_forever, name="ponder-children", daemon=True)
            _spawner.start()


def _spawn_forever() -> None:
    while True:
        make, fut = _jobs.get()
        if not fut.set_running_or_notify_cancel():
            continue
        try:
            fut.set_result(make())
        except BaseException as e:  # noqa: BLE001 - handed to the caller, who raises it
            fut.set_exception(e)


@atexit.register
def _end_children() -> None:  # where the kernel will not (not Linux): at least a clean exit ends them
    for proc in list(_living):
        if proc.poll() is None:
            try:
                proc.kill()
            except OSError:
                pass
