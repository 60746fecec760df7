"""Ponder's command line. ``ponder`` with no arguments opens the app (see ``gui/launch.py``); with a
subcommand it is this CLI, which never imports Qt.

A table of commands (pip's ``commands/__init__.py`` is the model): each name maps to the module that
implements it and one line of help; a command's module is imported only when that command runs (or
when the whole parser is built for ``--help``). Each module has ``add_arguments(parser)`` and
``run(args) -> int`` and is a thin shell over the run layer; the options several commands share are
written once in :mod:`engine.cli.options`. ``bench`` and ``screenshot`` name modules of the top-level
``bench`` package, which the product never imports otherwise.

Every user-caused failure prints one clear line on stderr and exits with status 2; Ctrl+C exits
with 130. A traceback is shown only for a bug, and only with ``PONDER_DEBUG=1``.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import ModuleType

from engine.errors import PonderError

# Exit status, documented in the README and `ponder --help`.
EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug (the message says how to see the traceback)
EXIT_USER_ERROR = 2  # a usage error or a request refused before anything ran
EXIT_RUNS_FAILED = 3  # it ran, and at least one run or sweep cell failed (the rest is saved)
EXIT_INTERRUPTED = 130  # Ctrl+C or `kill`: what was done is saved


EXIT_HELP = f"""exit status:
  {EXIT_OK}    done (compare, sweep: every run finished)
  {EXIT_INTERNAL}    internal error (PONDER_DEBUG=1 shows the traceback)
  {EXIT_USER_ERROR}    usage error, or a request refused before anything ran (a budget or problem
       that cannot fit, a missing or broken model, a database that cannot be used)
  {EXIT_RUNS_FAILED}    compare, sweep or rerun ran, and a run or cell failed (the rest is saved)
  {EXIT_INTERRUPTED}  interrupted (Ctrl+C, kill): what was done is saved"""


@dataclass(frozen=True)
class Command:
    module: str  # imported only when the command runs
    help: str  # the line `ponder --help` shows


COMMANDS: dict[str, Command] = {
    "screenshot": Command(
        "bench.screenshot",
        "render the app's window offscreen to a PNG (a saved session, a sweep, or mid-run); "
        "see ponder screenshot --help",
    ),
    "models": Command("engine.cli.models", "list the GGUF models Ponder can see"),
    "info": Command("engine.cli.info", "what this llama.cpp build supports, and a model as loaded"),
    "generate": Command("engine.cli.generate", "sample N continuations of a prompt in one batch"),
    "compare": Command("engine.cli.compare", "run search strategies side by side on one problem"),
    "sweep": Command(
        "engine.cli.sweep", "accuracy against budget over a problem set: run (resumably) and analyse"
    ),
    "serve": Command(
        "engine.cli.serve",
        "start a local llama-server (built from the pinned llama.cpp source) and print its URL",
    ),
    "sessions": Command(
        "engine.cli.sessions", "saved sessions: list, show, replay, export, import, delete, rerun"
    ),
    "bench": Command("bench.cli", "batched backend vs a naive Llama.create_completion loop"),
}


def command_module(name: str) -> ModuleType:
    """The module of command ``name``, imported now; a command whose package this installation
    lacks (the benchmarks) is one clear error."""
    path = COMMANDS[name].module
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError as e:
        if e.name is not None and (path == e.name or path.startswith(e.name + ".")):
            raise PonderError(
                f"`ponder {name}` needs the {path.split('.')[0]} package, which this installation lacks "
                "(run it from a Ponder checkout: make run)."
            ) from e
        raise


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``only`` one command's arguments in full and the others' one line
    each (what ``main`` needs to run a command without importing the rest)."""
    ap = argparse.ArgumentParser(
        prog="ponder",
        description="Ponder: test-time compute on local GGUF models. Without a command, opens the app.",
        epilog=EXIT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="command", metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help[:1].upper() + cmd.help[1:] + ".")
        if only is None or only == name:
            command_module(name).add_arguments(p)
    return ap


def _command_in(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if not a.startswith("-")), None)


class _NotesOnce(logging.Handler):
    """The engine's notes (``ponder.note``: what an endpoint lacks and what Ponder does instead, a
    model without a chat template) and any Python warning, each printed once as one line on stderr,
    ``ponder: note: …``, without a source path (``sys.stderr`` looked up each time: a live progress
    display puts its own there, and prints the line above itself)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seen: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        text = " ".join(record.getMessage().split())
        if text and text not in self.seen:
            self.seen.add(text)
            print(f"ponder: note: {text}", file=sys.stderr)


@contextlib.contextmanager
def _notes_to_stderr() -> Iterator[None]:
    log = logging.getLogger("ponder.note")
    handler, level, show = _NotesOnce(), log.level, warnings.showwarning
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    if os.environ.get("PONDER_DEBUG") != "1":  # a warning's source path is for debugging only
        warnings.showwarning = lambda message, *_a, **_k: log.info(str(message))
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
        warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    with _notes_to_stderr():
        return _main(argv)


def _main(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        name = _command_in(argv)
        # one command's module imported, or none (`--help`, an unknown command: the table's lines suffice)
        args = build_parser(only=name if name in COMMANDS else "").parse_args(argv)
        if args.command is None:
            build_parser(only="").print_help()
            return EXIT_OK
        return int(command_module(args.command).run(args))
    except PonderError as e:
        print(f"ponder: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("\nponder: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as e:  # a bug: say so briefly, the traceback only on request
        if os.environ.get("PONDER_DEBUG") == "1":
            traceback.print_exc()
        print(
            f"ponder: internal error: {type(e).__name__}: {e} (set PONDER_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
