"""The `ponder` console script: no arguments opens the app, a subcommand runs the CLI.

It lives in gui/ because the engine may not import the GUI; the CLI path imports no Qt at all (the
commands that draw with Qt, ``bench --pan``/``--gui`` and ``screenshot``, import it when they run).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    gui_flags = {"--model", "--n-gpu-layers", "--db", "--theme"}
    if not args or (args[0] in gui_flags):
        from gui.app import run

        return run(args)
    from engine.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
