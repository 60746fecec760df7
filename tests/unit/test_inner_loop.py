"""The inner loop stays one: tests/unit/conftest.py fails a unit test that loads a model, starts a
process or builds a window, so `make test-fast` cannot grow back into the slow suite."""

from __future__ import annotations

import ast
import os
import subprocess
import threading
from pathlib import Path

import pytest

from engine import children

UNIT = Path(__file__).resolve().parent


def _refused(guard, attempt) -> str:
    with pytest.raises(pytest.fail.Exception) as e:
        attempt()
    assert guard.tries, "the attempt was not recorded"
    guard.tries.clear()  # this test made it on purpose: no failure at teardown
    return str(e.value)


def test_a_unit_test_that_starts_a_process_fails_saying_where_it_belongs(_inner_loop_only, tmp_path):
    said = _refused(_inner_loop_only, lambda: subprocess.run(["true"], check=True))
    assert "starts no process" in said and "tests/integration" in said and "'true'" in said
    _refused(_inner_loop_only, lambda: children.start(["sleep", "1"]))
    _refused(_inner_loop_only, os.fork)
    mark = tmp_path / "ran"
    _refused(_inner_loop_only, lambda: os.system(f"touch {mark}"))
    assert not mark.exists()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the thread's failure
def test_a_process_started_on_another_thread_is_caught_too(_inner_loop_only):
    t = threading.Thread(target=lambda: subprocess.run(["true"]))
    t.start()
    t.join()
    assert _inner_loop_only.tries == ["subprocess.Popen(['true'])"]  # the test would fail at teardown
    _inner_loop_only.tries.clear()


def test_a_unit_test_that_loads_a_model_fails(_inner_loop_only, model_path):
    from engine.backends.llama_cpp import Backend, BackendConfig

    said = _refused(_inner_loop_only, lambda: Backend(model_path, BackendConfig(n_ctx=512, n_seq_max=1)))
    assert "loads no model" in said and "llama_model_load_from_file" in said


def test_no_unit_test_asks_for_a_window_or_a_loaded_model():
    """No test or fixture in this folder takes the fixtures that build a window or load the model
    (the guard fails such a test at its start; this names every one at once)."""
    asking = []
    for f in sorted(UNIT.glob("*.py")):
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef):
                taken = {a.arg for a in node.args.args} & {"qtbot", "qapp", "backend", "fresh"}
                asking += [f"{f.name}::{node.name}({name})" for name in sorted(taken)]
    assert asking == []
