"""``ponder screenshot --out PNG [--session ID | --sweep ID] [--db PATH] [--size 1600x1000]``: the real
main window, rendered offscreen (with a saved session loaded and its panels drawn, or a sweep in the
Sweeps tab), saved as a PNG. Used for the
README's screenshots and to check the look without a display."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="ponder screenshot", description=__doc__)
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
    ap.add_argument("--problem-set", choices=["gsm8k", "math500"], default="gsm8k", help="with --run-until")
    ap.add_argument("--index", type=int, default=0, help="with --run-until")
    ap.add_argument("--budget", type=int, default=4, help="with --run-until")
    ap.add_argument("--max-tokens", type=int, default=256, help="with --run-until")
    ap.add_argument(
        "--prm", default="judge", choices=["judge", "arithmetic", "reference"], help="with --run-until"
    )
    return ap


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    try:
        w, h = (int(x) for x in args.size.lower().split("x"))
        if w < 200 or h < 200:
            raise ValueError
    except ValueError:
        print(
            f"ponder: error: --size must be WIDTHxHEIGHT, at least 200x200; got {args.size!r}",
            file=sys.stderr,
        )
        return 2
    out = os.path.abspath(os.path.expanduser(args.out))
    if not os.path.isdir(os.path.dirname(out)):
        print(f"ponder: error: the folder {os.path.dirname(out)} does not exist", file=sys.stderr)
        return 2
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if "PONDER_CONFIG_DIR" not in os.environ:  # the user's saved layout must not move the picture
        import tempfile

        os.environ["PONDER_CONFIG_DIR"] = tempfile.mkdtemp(prefix="ponder-shot-")
    from PySide6.QtWidgets import QApplication

    from engine.errors import PonderError
    from gui.app import STYLE, MainWindow
    from gui.theme import apply_theme

    app = QApplication.instance() or QApplication(sys.argv[:1])
    apply_theme(app, args.theme)
    app.setStyleSheet(STYLE)
    win = MainWindow(args.model, 0, args.db)
    win.resize(w, h)
    win.show()
    if args.session:
        from engine.store import Store

        try:
            with Store.open(args.db, readonly=True) as store:
                store.session(args.session)
        except PonderError as e:
            print(f"ponder: error: {e}", file=sys.stderr)
            return 2
        win.open_session(args.session)
        while win.offload.pending:  # read off the GUI thread
            app.processEvents()
            time.sleep(0.01)
        if args.at is not None:
            win.timeline.setValue(max(0, min(args.at, win.timeline.maximum())))
    if args.sweep:
        from engine.store import Store

        try:
            with Store.open(args.db, readonly=True) as store:
                sweep_id = store.sweep(args.sweep).id
        except PonderError as e:
            print(f"ponder: error: {e}", file=sys.stderr)
            return 2
        win.tabs.setCurrentWidget(win.sweeps_tab)
        win.sweeps_tab.refresh()
        win.sweeps_tab.open_sweep(sweep_id)

        deadline = time.monotonic() + 120
        charts = (win.sweeps_tab.accuracy_chart, win.sweeps_tab.difficulty_chart)
        while (win.sweeps_tab.analysing or any(c.pending for c in charts)) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.05)
        for c in charts:  # drawn again at the size the window gave them
            c._render()
        while any(c.pending for c in charts) and time.monotonic() < deadline:
            app.processEvents()
            time.sleep(0.05)
    if args.run_until is not None:
        win.set_combo.setCurrentText({"gsm8k": "GSM8K", "math500": "MATH-500"}[args.problem_set])
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
    for _ in range(5):
        app.processEvents()
    got = win.size()
    if (got.width(), got.height()) != (w, h):
        print(
            f"ponder: note: the window cannot be {w}x{h}; rendered at {got.width()}x{got.height()}",
            file=sys.stderr,
        )
    ok = win.grab().save(out)
    if args.run_until is not None and win.bridge is not None and win.bridge.busy:
        win.cancel()
        while win.bridge.busy:
            app.processEvents()
            time.sleep(0.05)
    win.close()
    if not ok:
        print(f"ponder: error: cannot write {out}", file=sys.stderr)
        return 2
    print(out)
    return 0
