"""Processes as the tests see them from outside: alive or not, whose children they have, and what
they show on a pseudo-terminal."""

from __future__ import annotations

import os
import select
import subprocess
import time
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Running: some thread of it not a zombie (the main thread shows Z while the others are still
    being torn down, and a container's PID 1 may never reap it)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return False
    for task in tasks:
        try:
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            return True
    return False


def children_of(pid: int) -> list[int]:
    """The pids of a process's children, from every thread of it."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(x) for x in (task / "children").read_text().split()]
    return out


def read_pty(fd: int, proc: subprocess.Popen, timeout: float) -> list[tuple[float, str]]:
    """(time, text) of every chunk the pseudo-terminal shows until the process ends."""
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if ready:
            try:
                data = os.read(fd, 65536)
            except OSError:  # the other end closed
                break
            if not data:
                break
            chunks.append((time.monotonic(), data.decode("utf-8", "replace")))
        elif proc.poll() is not None:
            break
    return chunks


def run_on_pty(
    cmd: list[str], timeout: float, env: dict[str, str] | None = None
) -> tuple[int, bytes, list[tuple[float, str]]]:
    """Run ``cmd`` (a child of this process, ended with it) with stderr on a pseudo-terminal and
    stdout on a pipe, as ``ponder … | jq`` runs it: (exit status, stdout, what the terminal showed
    as :func:`read_pty` gives it)."""
    import pty

    from engine import children

    master, slave = pty.openpty()
    os.set_blocking(master, False)
    proc = children.start(cmd, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env)
    os.close(slave)
    try:
        chunks = read_pty(master, proc, timeout=timeout)
        out, _ = proc.communicate(timeout=30)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out, chunks
