"""Processes Ponder starts end with it (engine.children): a parent killed hard takes its children
along, and a child started from a thread that has ended lives on while its parent does."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from processes import pid_alive

from engine import children

PARENT = textwrap.dedent(
    """
    import subprocess, sys, threading, time
    from engine import children

    out = []
    # started from a worker thread that then ends: the child must not end with the thread
    t = threading.Thread(target=lambda: out.append(children.start(["sleep", "300"])))
    t.start()
    t.join()
    print(out[0].pid, flush=True)
    time.sleep(300)
    """
)


@pytest.mark.skipif(not children.dies_with_parent(), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_dies_with_its_parent_killed_hard_and_not_with_the_thread_that_started_it():
    root = str(Path(__file__).resolve().parents[2])
    parent = subprocess.Popen(  # the parent itself is the test's own, killed below
        [sys.executable, "-c", PARENT],
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=root),
    )
    try:
        child = int(parent.stdout.readline())
        time.sleep(0.5)
        assert pid_alive(child), "the child ended with the thread that started it"
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 5
        while pid_alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not pid_alive(child), "the child outlived its parent's SIGKILL"
    finally:
        if parent.poll() is None:
            parent.kill()


def test_a_child_that_cannot_start_is_an_os_error_in_the_caller():
    with pytest.raises(OSError):
        children.start(["/nonexistent/ponder-no-such-binary"])


def test_the_callers_own_preexec_fn_still_runs(tmp_path):
    mark = tmp_path / "ran"
    p = children.start(["true"], preexec_fn=lambda: mark.write_text("yes"))
    assert p.wait(10) == 0
    assert mark.read_text() == "yes"
