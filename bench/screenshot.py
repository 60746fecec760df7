"""``ponder screenshot --out PNG [--session ID | --sweep ID] [--db PATH] [--size 1600x1000]``.

The command module of ``ponder screenshot``: :func:`add_arguments` and :func:`run`, named in the
CLI's table of commands by module path (the engine never imports the benchmarks' package). Building
its parser imports neither Qt nor the store."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from typing import Any

from engine.errors import InvalidRequestError

DESCRIPTION = (
    "The real main window, rendered offscreen (with a saved session loaded and its panels drawn, or a "
    "sweep in the Sweeps tab, or mid-run), saved as a PNG. Used for the README's screenshots and to "
    "check the look without a display."
)
PROBLEM_SETS = {"gsm8k": "GSM8K", "math500": "MATH-500"}  # --problem-set: the app's name of the set


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = parser.description or DESCRIPTION
    ap = parser
    ap.add_argument("--out", required=True, help="PNG file to write")
    ap.add_argument("--session", help="a saved session to show (default: none, the empty window)")
    ap.add_argument("--db", help="session database (default: sessions.db in the user data folder)")
    ap.add_argument("--size", default="1600x1000", help="window size WIDTHxHEIGHT (default 1600x1000)")
    ap.add_argument("--at", type=int, help="replay position: show only the first AT events")
    ap.add_argument("--sweep", help="a saved sweep to show in the Sweeps tab (an id or its first characters)")
    ap.add_argument("--model", help="model shown in the model bar")
    ap.add_argument("--theme", choices=["light", "dark"], default="light", help="colours (default light)")
    ap.add_argument(
        "--run-until",
        type=int,
        metavar="NODES",
        help="instead of a saved session: run the strategies and take the picture mid-run, once this "
        "many nodes are drawn (the run is then cancelled and saved as such)",
    )
    ap.add_argument("--problem-set", choices=list(PROBLEM_SETS), default="gsm8k", help="with --run-until")
    ap.add_argument("--index", type=int, default=0, help="with --run-until")
    ap.add_argument("--budget", type=int, default=4, help="with --run-until")
    ap.add_argument("--max-tokens", type=int, default=256, help="with --run-until")
    ap.add_argument(
        "--prm", default="judge", choices=["judge", "arithmetic", "reference"], help="with --run-until"
    )


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(x) for x in text.lower().split("x"))
        if w < 200 or h < 200:
            raise ValueError
    except ValueError:
        raise InvalidRequestError(f"--size must be WIDTHxHEIGHT, at least 200x200; got {text!r}") from None
    return w, h


def _out_path(text: str) -> str:
    out = os.path.abspath(os.path.expanduser(text))
    if not os.path.isdir(os.path.dirname(out)):
        raise InvalidRequestError(f"the folder {os.path.dirname(out)} does not exist")
    return out


def _open_window(args: argparse.Namespace, w: int, h: int) -> tuple[Any, Any]:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if "PONDER_CONFIG_DIR" not in os.environ:  # the user's saved layout must not move the picture
        os.environ["PONDER_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ponder-shot-")
    from PySide6.QtWidgets import QApplication

    from gui.app import STYLE, MainWindow
    from gui.theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_theme(app, args.theme)
    app.setStyleSheet(STYLE)
    win = MainWindow(args.model, 0, args.db)
    win.resize(w, h)
    win.show()
    return app, win


def _wait(app: Any, busy: Any, deadline: float | None = None, nap: float = 0.05) -> None:
    """Let the window work while ``busy()`` holds (until ``deadline``, a monotonic time)."""
    while busy() and (deadline is None or time.monotonic() < deadline):
        app.processEvents()
        time.sleep(nap)


def _show_session(app: Any, win: Any, args: argparse.Namespace) -> None:
    from engine.store import Store

    with Store.open(args.db, readonly=True) as store:
        store.session(args.session)  # an unknown id is one clear error, before the window tries
    win.open_session(args.session)
    _wait(app, lambda: win.offload.pending, nap=0.01)  # read off the GUI thread
    if args.at is not None:
        win.timeline.setValue(max(0, min(args.at, win.timeline.maximum())))


def _show_sweep(app: Any, win: Any, args: argparse.Namespace) -> None:
    from engine.store import Store

    with Store.open(args.db, readonly=True) as store:
        sweep_id = store.sweep(args.sweep).id
    tab = win.sweeps_tab
    win.tabs.setCurrentWidget(tab)
    tab.refresh()
    tab.open_sweep(sweep_id)
    deadline = time.monotonic() + 120
    charts = (tab.accuracy_chart, tab.difficulty_chart)
    _wait(app, lambda: tab.analysing or any(c.pending for c in charts), deadline)
    for c in charts:  # drawn again at the size the window gave them
        c._render()
    _wait(app, lambda: any(c.pending for c in charts), deadline)


def _run_until(app: Any, win: Any, args: argparse.Namespace) -> None:
    """Start the strategies and stop waiting once ``--run-until`` nodes are drawn."""
    win.set_combo.setCurrentText(PROBLEM_SETS[args.problem_set])
    win.index_spin.setValue(args.index)
    win.load_problem()
    win.budget_spin.setValue(args.budget)
    win.tokens_spin.setValue(args.max_tokens)
    win.prm_combo.setCurrentText(args.prm)
    win.start()
    deadline = time.monotonic() + 600
    bridge = win.bridge
    while bridge is not None and bridge.busy and time.monotonic() < deadline:
        app.processEvents()
        if sum(len(p.trace.nodes) for p in win.panels.values()) >= args.run_until:
            break
        time.sleep(0.05)
    win._redraw()


def _save(app: Any, win: Any, out: str, w: int, h: int) -> bool:
    for _ in range(5):
        app.processEvents()
    got = win.size()
    if (got.width(), got.height()) != (w, h):
        print(
            f"ponder: note: the window cannot be {w}x{h}; rendered at {got.width()}x{got.height()}",
            file=sys.stderr,
        )
    return bool(win.grab().save(out))


def run(args: argparse.Namespace) -> int:
    w, h = _size(args.size)
    out = _out_path(args.out)
    app, win = _open_window(args, w, h)
    if args.session:
        _show_session(app, win, args)
    if args.sweep:
        _show_sweep(app, win, args)
    if args.run_until is not None:
        _run_until(app, win, args)
    ok = _save(app, win, out, w, h)
    if args.run_until is not None and win.bridge is not None and win.bridge.busy:
        win.cancel()
        _wait(app, lambda: win.bridge.busy)
    win.close()
    if not ok:
        raise InvalidRequestError(f"cannot write {out}")
    print(out)
    return 0
