"""The `ponder` console script: no arguments opens the app, a subcommand runs the CLI.

It lives in gui/ because the engine may not import the GUI; the CLI path imports no Qt at all.
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
    if args[0] == "bench" and "--pan" in args:  # draws with Qt, so not in the engine's CLI
        from gui.bench import main as pan_bench

        return pan_bench(args[1:])
    if args[0] == "bench" and "--gui" in args:  # the real window, offscreen
        from gui.bench_gui import main as gui_bench

        return gui_bench(args[1:])
    if args[0] == "screenshot":  # needs Qt, so it is not part of the engine's CLI
        from gui.screenshot import main as shot

        return shot(args[1:])
    from engine.cli import main as cli_main

    return cli_main(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
