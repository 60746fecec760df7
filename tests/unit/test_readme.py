"""The README's commands stay true: every `ponder …` line in it is one the CLI accepts, and no page
speaks of the project's history. The quick lines run, and the help lists the commands that live in
the app's half (screenshot, bench --pan, bench --gui), in tests/integration/test_readme_runs.py."""

from __future__ import annotations

import shlex

import pytest
from readme_lines import README, ponder_lines


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


def test_the_readme_speaks_to_users_not_to_the_project_history():
    text = README.read_text(encoding="utf-8").lower()
    assert "issue" not in text
    for doc in (README.parent / "docs").glob("*.md"):
        assert "issue" not in doc.read_text(encoding="utf-8").lower(), doc.name
