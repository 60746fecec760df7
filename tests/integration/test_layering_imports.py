"""The house keeps its shape, checked in processes of their own: import-linter's contracts (the
engine's layers, the backends apart, no Qt in the engine, the product never importing the
benchmarks) hold; importing the engine loads no Qt. The import circles and size limits are read
from the source in tests/unit/test_layering.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency"
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Contracts: (\d+) kept, (\d+) broken", r.stdout)
    assert m is not None, r.stdout
    kept, broken = int(m[1]), int(m[2])
    assert broken == 0 and kept >= 7, r.stdout
    assert "the engine in layers" in r.stdout  # the layers contract is among those checked


def test_engine_and_cli_import_no_qt():
    code = (
        "import sys, engine.backends.llama_cpp, engine.cli, engine.run.compare, engine.sweeps, "
        "engine.models, engine.worker; import gui.launch; "
        "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'shiboken'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert r.stdout.strip() == "[]"
