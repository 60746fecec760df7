"""The engine is headless: import-linter contracts hold and importing it loads no Qt."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold():
    exe = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    assert exe, "import-linter is a test dependency"
    r = subprocess.run([exe], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "4 kept, 0 broken" in r.stdout  # engine/Qt, gui/llama.cpp, Qt-free gui modules, parts apart


def test_engine_and_cli_import_no_qt():
    code = (
        "import sys, engine.backends.llama_cpp, engine.cli, engine.bench, engine.models, engine.worker; "
        "import gui.launch; "
        "print(sorted(m for m in sys.modules if m.startswith(('PySide6', 'shiboken'))))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
