"""tests/unit is the inner loop (``make test-fast``, under a minute on 2 cores): a test here loads no
model, starts no process and builds no window. This holds it to that: a test that opens a llama.cpp
model (a Backend, a vocabulary, llama-cpp-python's Llama), starts a process (subprocess, fork,
posix_spawn, multiprocessing, os.system) or asks for pytest-qt's ``qtbot``/``qapp`` fails with where
it belongs instead: tests/integration (the embedded model in process, the CLI and other processes),
tests/servers (real engines), tests/gui (windows)."""

from __future__ import annotations

import multiprocessing.util
import os
import subprocess

import pytest

ELSEWHERE = (
    "tests/unit loads no model, starts no process and builds no window (make test-fast): move the "
    "test to tests/integration (the embedded model, processes), tests/servers or tests/gui"
)
MODEL_LOADS = ("llama_model_load_from_file", "llama_load_model_from_file", "llama_model_load_from_splits")
PROCESS_STARTS = ("fork", "forkpty", "posix_spawn", "posix_spawnp", "system")
QT_FIXTURES = ("qtbot", "qapp")

# Tests another file's owner is moving out of tests/unit; until then they may start a process.
STARTS_A_PROCESS_FOR_NOW: set[str] = set()  # "file.py::test_name" of a test that may, until it moves


class Refused:
    """What a unit test tried that it may not; the test fails at the attempt and, should the attempt
    have been on another thread or its error swallowed, at teardown."""

    def __init__(self) -> None:
        self.tries: list[str] = []

    def refuse(self, what: str):
        def refused(*a, **k):
            said = f"{what}({', '.join(repr(x) for x in a[:2])})" if a else what
            self.tries.append(said)
            pytest.fail(f"{ELSEWHERE}; it tried {said}", pytrace=False)

        return refused


@pytest.fixture(autouse=True)
def _inner_loop_only(request, monkeypatch):
    asked = [name for name in QT_FIXTURES if name in request.fixturenames]
    if asked:
        pytest.fail(f"{ELSEWHERE}; it asks for {', '.join(asked)}", pytrace=False)
    refused = Refused()
    import llama_cpp
    import llama_cpp.llama_cpp as llama_c

    for mod in (llama_cpp, llama_c):
        for name in MODEL_LOADS:
            if hasattr(mod, name):
                monkeypatch.setattr(mod, name, refused.refuse(f"llama_cpp.{name}"))
    if f"{request.node.path.name}::{request.node.originalname}" not in STARTS_A_PROCESS_FOR_NOW:
        monkeypatch.setattr(subprocess.Popen, "_execute_child", _refuse_popen(refused))
        for name in PROCESS_STARTS:
            if hasattr(os, name):
                monkeypatch.setattr(os, name, refused.refuse(f"os.{name}"))
        monkeypatch.setattr(multiprocessing.util, "spawnv_passfds", refused.refuse("multiprocessing spawn"))
    yield refused
    if refused.tries and not getattr(request.node, "_failed_at_call", False):  # swallowed, or on a thread
        pytest.fail(f"{ELSEWHERE}; it tried {'; '.join(refused.tries)}", pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if call.when == "call" and outcome.get_result().failed:
        item._failed_at_call = True


def _refuse_popen(refused: Refused):
    refuse = refused.refuse("subprocess.Popen")

    def _execute_child(self, args, *a, **k):
        refuse(args)

    return _execute_child
