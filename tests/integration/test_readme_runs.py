"""The README's quick `ponder …` lines run as a user runs them (a process each), and the help
lists the commands that live in the app's half (screenshot, bench --pan, bench --gui). Every line
is parsed in tests/unit/test_readme.py."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest
from readme_lines import QUICK, ponder_lines


@pytest.mark.parametrize("line", [line for line in ponder_lines() if tuple(shlex.split(line)[1:]) in QUICK])
def test_the_quick_ponder_lines_in_the_readme_run(line):
    args = shlex.split(line)[1:]
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch", *args], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, (line, r.stderr[-400:])


def test_the_help_lists_the_app_side_commands():
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch", "--help"], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0
    assert "screenshot" in r.stdout
    r = subprocess.run(
        [sys.executable, "-m", "gui.launch", "bench", "--help"], capture_output=True, text=True, timeout=60
    )
    assert "--pan" in r.stdout and "--gui" in r.stdout
