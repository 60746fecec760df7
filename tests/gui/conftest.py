"""GUI tests: the window offscreen through pytest-qt (skipped where it is not installed).

The guard that turns a modal dialog no test expected into a failure (offscreen, a modal's nested
event loop waits for a click and keeps pytest-timeout's alarm from firing) is tests/conftest.py's
``_no_modal_waits``: it covers every test that builds a window, in this folder or any other."""

from __future__ import annotations

import pytest

pytest.importorskip("pytestqt")
