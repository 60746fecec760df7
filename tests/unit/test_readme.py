"""The README's commands stay true: every `ponder …` line in it is one the CLI accepts (the quick
ones are run), and the help lists the commands that live in the app's half (screenshot, bench
--pan, bench --gui)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
QUICK = {("--help",), ("models",), ("info",), ("sessions", "list")}  # run, not only parsed


def ponder_lines() -> list[str]:
    """Lines of fenced code blocks that start with `ponder`, and inline `ponder …` spans that are
    concrete (no PLACEHOLDER, [option] or a | b)."""
    text = README.read_text(encoding="utf-8")
    out: list[str] = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
            continue
        if fence and line.startswith("ponder"):
            out.append(re.split(r"\s+#\s", line)[0].strip())
    for span in re.findall(r"`(ponder(?: [^`]*)?)`", text):
        if not re.search(r"\b[A-Z]{3,}\b|\[|\||…", span):
            out.append(span.strip())
    return list(dict.fromkeys(out))


def check(args: list[str]) -> None:
    """Parse ``args`` the way `ponder` would dispatch them; SystemExit(2) on a bad line."""
    if not args or args[0] in ("--model", "--n-gpu-layers", "--db", "--theme"):
        import argparse

        ap = argparse.ArgumentParser(prog="ponder", add_help=False, exit_on_error=True)
        for flag in ("--model", "--n-gpu-layers", "--db", "--theme"):
            ap.add_argument(flag)
        ap.parse_args(args)
    elif args[0] in ("screenshot", "bench"):  # command modules of bench/ (every bench mode is one parser)
        import argparse
        import importlib

        ap = argparse.ArgumentParser(prog=f"ponder {args[0]}", exit_on_error=True)
        command = importlib.import_module({"screenshot": "bench.screenshot", "bench": "bench.cli"}[args[0]])
        command.add_arguments(ap)
        ap.parse_args(args[1:])
    elif args != ["--help"]:
        from engine.cli import build_parser

        build_parser().parse_args(args)


def test_the_readme_has_commands_to_check():
    lines = ponder_lines()
    assert len(lines) >= 15
    assert any(line.startswith("ponder compare") for line in lines)
    assert any(line.startswith("ponder sweep") for line in lines)


@pytest.mark.parametrize("line", ponder_lines())
def test_every_ponder_line_in_the_readme_is_accepted(line):
    args = shlex.split(line)[1:]
    try:
        check(args)
    except SystemExit as e:
        pytest.fail(f"the README says `{line}`, which ponder refuses (exit {e.code})")
    if tuple(args) in QUICK:
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


def test_the_readme_speaks_to_users_not_to_the_project_history():
    text = README.read_text(encoding="utf-8").lower()
    assert "issue" not in text
    for doc in (README.parent / "docs").glob("*.md"):
        assert "issue" not in doc.read_text(encoding="utf-8").lower(), doc.name
