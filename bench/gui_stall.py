"""``ponder bench --gui [--budget 16] [--max-tokens 128] [--index 0] [--json]``: does the window stall
while a run draws? A real compare (the three default strategies, the judge PRM) runs in the real main
window, offscreen, while a 10 ms timer on the GUI thread notes when it fires; a gap longer than the
timer's interval is time the GUI thread could not answer (a stall). Then the same compare runs from
the CLI, in a process of its own, so the window's cost shows as a ratio of the two runs' times.

Printed: ``max_stall_ms`` and ``p99_stall_ms`` (targets: at most 50 and 20), the GUI run's and the
CLI run's seconds (the slowest strategy's wall time as the engine measures it, and the whole command's)
and their ratio (target: at most 1.10). With ``PONDER_BENCH_PROFILE=1`` a slow handler's profile and
the GUI thread's stack in a long gap go to stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

from engine.search import default_strategies

TICK_MS = 10
TIMED_HANDLERS = (
    "start", "_on_events", "_redraw", "_on_compared", "_opened", "_show_upto", "refresh_sessions",
)  # fmt: skip


def _profiling() -> bool:
    return bool(os.environ.get("PONDER_BENCH_PROFILE"))


def _open_window(budget: int, max_tokens: int, problem_index: int) -> tuple[Any, Any, list[str]]:
    """The app and its main window, offscreen, with the compare form filled in: (app, window, strategies)."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("PONDER_CONFIG_DIR", tempfile.mkdtemp(prefix="ponder-bench-gui-"))
    from PySide6.QtWidgets import QApplication, QMessageBox

    from gui.app import STYLE, MainWindow

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setStyleSheet(STYLE)
    QMessageBox.warning = lambda *a, **k: None  # type: ignore[method-assign] - a failure is reported below
    db = os.path.join(tempfile.mkdtemp(prefix="ponder-bench-gui-db-"), "bench.db")
    win = MainWindow(db=db)
    win.resize(1600, 1000)
    win.show()
    deadline = time.monotonic() + 60
    while win.offload.pending and time.monotonic() < deadline:  # discovery done: a quiet start
        app.processEvents()
        time.sleep(0.01)
    win.set_combo.setCurrentText("GSM8K")
    win.index_spin.setValue(problem_index)
    win.load_problem()
    strategies = list(default_strategies())
    for name, box in win.strategy_boxes.items():
        box.setChecked(name in strategies)
    win.budget_spin.setValue(budget)
    win.tokens_spin.setValue(max_tokens)
    win.prm_combo.setCurrentText("judge")
    return app, win, strategies


def _timed(name: str, fn: Callable[..., Any], slow: dict[str, float]) -> Callable[..., Any]:
    """``fn`` noting its longest call in ``slow[name]`` (ms); profiled when it is slow, on request."""

    def note(t: float) -> None:
        slow[name] = max(slow.get(name, 0.0), round((time.perf_counter() - t) * 1000, 1))

    def wrapper(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        if _profiling():
            import cProfile
            import pstats

            pr = cProfile.Profile()
            pr.enable()
            try:
                return fn(*a, **k)
            finally:
                pr.disable()
                if time.perf_counter() - t > 0.03:
                    pstats.Stats(pr, stream=sys.stderr).sort_stats("cumulative").print_stats(12)
                note(t)
        try:
            return fn(*a, **k)
        finally:
            note(t)

    return wrapper


def _watch_stalls(ticks: list[float], result: dict[str, Any]) -> None:
    """In a thread of its own: the GUI thread's stack (and the others') whenever the timer has
    not fired for 60 ms, until the run ends."""
    gui_id = threading.get_ident()

    def watch() -> None:
        while not result:
            time.sleep(0.02)
            if ticks and time.perf_counter() - ticks[-1] > 0.06:
                frames = sys._current_frames()
                print("--- stall; GUI thread:", file=sys.stderr)
                traceback.print_stack(frames.get(gui_id), limit=8, file=sys.stderr)
                for tid, fr in frames.items():
                    if tid != gui_id and tid != threading.get_ident():
                        print(f"--- thread {tid}:", file=sys.stderr)
                        traceback.print_stack(fr, limit=5, file=sys.stderr)
                time.sleep(0.1)

    threading.Thread(target=watch, daemon=True).start()


def _run_in_window(app: Any, win: Any) -> dict[str, Any]:
    """Press Run and wait for the compare while a 10 ms timer ticks on the GUI thread."""
    from PySide6.QtCore import QTimer

    slow: dict[str, float] = {}  # the longest call of each window handler, ms
    for name in TIMED_HANDLERS:
        setattr(win, name, _timed(name, getattr(win, name), slow))
    ticks: list[float] = []
    timer = QTimer(interval=TICK_MS, timeout=lambda: ticks.append(time.perf_counter()))
    result: dict[str, Any] = {}
    win.bridge.compared.connect(lambda sid, summaries: result.update(sid=sid, summaries=summaries))
    win.bridge.failed.connect(lambda msg: result.update(error=msg))
    if _profiling():  # name what the GUI thread is doing in a long gap
        _watch_stalls(ticks, result)
    timer.start()
    t0 = time.perf_counter()
    win.start()
    while not result:
        app.processEvents()
        time.sleep(0.001)
    gui_wall = time.perf_counter() - t0
    for _ in range(20):  # the saved session is drawn again from the store: count that too
        app.processEvents()
        time.sleep(0.005)
    timer.stop()
    nodes = sum(len(p.trace.nodes) for p in win.panels.values())
    win.close()
    if "error" in result:
        raise RuntimeError(result["error"])
    return {"ticks": ticks, "t0": t0, "gui_wall": gui_wall, "nodes": nodes, "slow": slow, **result}


def _stalls(ticks: list[float], t0: float) -> dict[str, Any]:
    pairs = list(zip(ticks, ticks[1:], strict=False))
    worst = max(pairs, key=lambda ab: ab[1] - ab[0], default=(t0, t0))
    gaps = sorted(max(0.0, (b - a) * 1000 - TICK_MS) for a, b in pairs)
    return {
        "ticks": len(ticks),
        "max_stall_ms": round(gaps[-1], 1) if gaps else None,
        "p99_stall_ms": round(gaps[int(0.99 * (len(gaps) - 1))], 1) if gaps else None,
        "median_stall_ms": round(gaps[len(gaps) // 2], 2) if gaps else None,
        "worst_at": worst[0],
    }


def run_gui_bench(budget: int, max_tokens: int, problem_index: int = 0) -> dict[str, Any]:
    app, win, strategies = _open_window(budget, max_tokens, problem_index)
    got = _run_in_window(app, win)
    stalls = _stalls(got["ticks"], got["t0"])
    gui_run = max(s["seconds"] for s in got["summaries"])
    cli = _cli_compare(strategies, budget, max_tokens, problem_index)
    return {
        "strategies": strategies,
        "budget": budget,
        "max_tokens": max_tokens,
        "prm": "judge",
        "nodes_drawn": got["nodes"],
        "ticks": stalls["ticks"],
        "max_stall_ms": stalls["max_stall_ms"],
        "p99_stall_ms": stalls["p99_stall_ms"],
        "median_stall_ms": stalls["median_stall_ms"],
        "gui_run_s": round(gui_run, 2),
        "cli_run_s": round(cli["run_s"], 2),
        "run_ratio": round(gui_run / cli["run_s"], 3) if cli["run_s"] else None,
        "gui_wall_s": round(got["gui_wall"], 2),
        "cli_wall_s": round(cli["wall_s"], 2),
        "tokens_gui": sum(s["generated_tokens"] for s in got["summaries"]),
        "tokens_cli": cli["tokens"],
        "slowest_handler_ms": got["slow"],
        "worst_stall_at_s": round(stalls["worst_at"] - got["t0"], 2),  # since Run was pressed
    }


def _cli_compare(strategies: list[str], budget: int, max_tokens: int, index: int) -> dict[str, Any]:
    db = os.path.join(tempfile.mkdtemp(prefix="ponder-bench-cli-db-"), "bench.db")
    cmd = [
        sys.executable, "-m", "gui.launch", "compare", "--problem-set", "gsm8k", "--index", str(index),
        "--strategies", ",".join(strategies), "--budget", str(budget), "--max-tokens", str(max_tokens),
        "--prm", "judge", "--db", db, "--json",
    ]  # fmt: skip
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    wall = time.perf_counter() - t0
    if r.returncode not in (0, 3):
        raise RuntimeError(f"the CLI compare failed: {r.stderr.strip()[-400:]}")
    runs = json.loads(r.stdout)["runs"]
    return {
        "run_s": max(x["seconds"] for x in runs),
        "wall_s": wall,
        "tokens": sum(x["generated_tokens"] for x in runs),
    }


def format_gui_bench(r: dict[str, Any]) -> str:
    return (
        f"{', '.join(r['strategies'])} at budget {r['budget']} ({r['max_tokens']} tokens, judge): "
        f"GUI thread stalls max {r['max_stall_ms']} ms, 99th percentile {r['p99_stall_ms']} ms "
        f"({r['ticks']} ticks of {TICK_MS} ms, {r['nodes_drawn']} nodes drawn); "
        f"run {r['gui_run_s']} s in the window against {r['cli_run_s']} s from the CLI "
        f"(x{r['run_ratio']})"
    )
