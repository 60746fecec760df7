"""``ponder bench --pan [--nodes 2000] [--frames 300] [--json]``: frames per second while panning a
beam tree of that many nodes in the app's TraceView, offscreen. Each frame scrolls the view and
repaints it synchronously, so the figure is the time Qt needs to draw the visible part of the tree."""

from __future__ import annotations

import os
import sys
import time

import numpy as np

from engine.events import NodeAdded, NodePruned, NodeScored, RunStarted, Trace, fold


def synthetic_beam_trace(n_nodes: int, width: int = 8) -> Trace:
    """A beam-search-shaped trace: ``width`` beams, each round's survivors get children, some pruned."""
    rng = np.random.default_rng(0)
    evs: list = [RunStarted("bench", "beam_search", {"n": width}, {}, {}, 0, "bench")]
    frontier: list[int] = []
    nid = 0
    it = 0
    while nid < n_nodes:
        parents = [None] * width if not frontier else [frontier[i % len(frontier)] for i in range(width)]
        kids = []
        for p in parents:
            if nid >= n_nodes:
                break
            evs.append(
                NodeAdded("bench", nid, p, "step", f"## Step {it}: compute {nid} * 3 = {3 * nid}.", 20, -5.0)
            )
            s = float(rng.random())
            evs.append(NodeScored("bench", nid, [s], s, "judge"))
            kids.append((s, nid))
            nid += 1
        kids.sort(reverse=True)
        frontier = [k for _, k in kids[: max(1, width // 4)]]
        for _, k in kids[max(1, width // 4) :]:
            evs.append(NodePruned("bench", k, it))
        it += 1
    return fold(evs)


def run_pan_bench(n_nodes: int = 2000, frames: int = 300, size: tuple[int, int] = (900, 700)) -> dict:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication

    from gui.trace_view import TraceView

    app = QApplication.instance() or QApplication(sys.argv[:1])
    trace = synthetic_beam_trace(n_nodes)
    view = TraceView()
    view.resize(*size)
    view.show()
    t0 = time.perf_counter()
    view.show_trace(trace, "beam_search")
    build_s = time.perf_counter() - t0
    view._auto_fit = False
    view.resetTransform()  # 1:1, the scale a user reads at
    app.processEvents()
    h, v = view.horizontalScrollBar(), view.verticalScrollBar()
    step_x = max(1, (h.maximum() - h.minimum()) // frames) if h.maximum() > h.minimum() else 0
    times = []
    for f in range(frames):
        h.setValue(h.minimum() + (f * step_x) % max(1, h.maximum() - h.minimum() + 1))
        v.setValue(v.minimum() + (f * 7) % max(1, v.maximum() - v.minimum() + 1))
        t = time.perf_counter()
        view.viewport().repaint()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    p95 = times[int(len(times) * 0.95)]
    view.close()
    return {
        "nodes": len(trace.nodes),
        "frames": frames,
        "viewport": list(size),
        "scene_build_s": round(build_s, 3),
        "frame_ms_median": round(1000 * median, 2),
        "frame_ms_p95": round(1000 * p95, 2),
        "fps_median": round(1 / median, 1) if median > 0 else None,
        "fps_p95": round(1 / p95, 1) if p95 > 0 else None,
    }


def format_pan_bench(r: dict) -> str:
    return (
        f"{r['nodes']} nodes, {r['frames']} frames at {r['viewport'][0]}x{r['viewport'][1]}: "
        f"median {r['frame_ms_median']} ms a frame ({r['fps_median']} fps), 95th percentile "
        f"{r['frame_ms_p95']} ms ({r['fps_p95']} fps); scene built in {r['scene_build_s']} s"
    )
