"""Ponder's main window: strategies race side by side on one problem (on one model, or on two),
each run drawn as a trace with its PRM step scores, every run saved; saved sessions reopen and
replay.

The window is made of parts, each its own module, talking through signals and the Qt-free
:class:`gui.form.CompareForm`: the model bar (:mod:`gui.model_bar`), the problem bar and strategy
controls (:mod:`gui.controls`), the panels with the detail pane and timeline (:mod:`gui.panels`), the
sessions dock (:mod:`gui.sessions_dock`) and the Sweeps tab (:mod:`gui.sweeps`). The engine runs in
its own thread behind :class:`gui.bridge.EngineBridge`; work that grows with the data (discovery,
session search, answer equivalence) goes to :class:`gui.offload.Offload`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from functools import partial
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QKeySequence, QShortcut
from PySide6.QtWidgets import QApplication, QMainWindow, QMessageBox, QTabWidget, QVBoxLayout, QWidget

from engine.events import Event
from engine.search import registry
from gui.bridge import EngineBridge, make_bridge, same_backend
from gui.controls import MAX_BUDGET, PROBLEM_SETS, ProblemBar, StrategyControls  # noqa: F401 - re-exported
from gui.model_bar import ModelBar
from gui.offload import Offload
from gui.panels import PanelArea, RunPanel
from gui.sessions_dock import SessionsDock
from gui.sweeps import SweepsTab
from gui.theme import THEMES, apply_theme
from gui.warmup import warm_answers, warm_up

SWITCH_INTERVAL_S = 0.0001
REDRAW_MS = 100  # a live run's panels are brought up to date at most this often


class MainWindow(QMainWindow):
    def __init__(self, model_path: str | None = None, n_gpu_layers: int = 0, db: str | None = None) -> None:
        super().__init__()
        # The engine's threads run Python too (sampling, math-verify's sympy); a thread waiting for
        # the GIL gets it after the holder's switch interval (5 ms by default), once per wait. The
        # GUI thread waits many times in one redraw (Qt calls release the GIL), so a shorter
        # interval is what keeps it from stalling behind them (ponder bench --gui).
        sys.setswitchinterval(SWITCH_INTERVAL_S)
        self.setWindowTitle("Ponder")
        self.resize(1500, 920)
        self.db = db
        self.settings = _settings()
        self.offload = Offload(self)
        self.bridge: EngineBridge | None = None
        self.second_bridge: EngineBridge | None = None
        self.session_id: str | None = None
        self._replay: list[tuple[str, Event]] = []
        self._run_panel: dict[str, str] = {}  # run id -> panel key
        self._runs: dict[str, Any] = {}  # the opened session's runs (RunInfo by id), for footers
        self._shown = 0  # how many of the opened session's events the panels show
        self._dirty: set[str] = set()
        self._pending: list[tuple[EngineBridge, Any]] = []  # compares still to run (engine, form)
        self._yes = False  # the user accepted the running compare's cost estimate
        self._results: list[tuple[int, str, list]] = []
        self._groups: list[str | None] = [None]  # the panels' model groups of the current compare
        self._redraw_timer = QTimer(self, singleShot=True, interval=REDRAW_MS)
        self._redraw_timer.timeout.connect(self._redraw)

        central = QWidget()
        root = QVBoxLayout(central)
        root.setContentsMargins(10, 8, 10, 8)
        root.setSpacing(6)
        self.model_bar = ModelBar(self.settings, self.offload, model_path, n_gpu_layers)
        self.problem_bar = ProblemBar()
        self.controls = StrategyControls()
        self.area = PanelArea(self.settings, self.offload)
        root.addWidget(self.model_bar)
        root.addWidget(self.problem_bar)
        root.addWidget(self.controls)
        root.addWidget(self.area, 1)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(central, "Compare")
        self.sweeps_tab = SweepsTab(self)
        self.tabs.addTab(self.sweeps_tab, "Sweeps")
        self.setCentralWidget(self.tabs)
        self.sessions = SessionsDock(self, db, self.offload)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.sessions)
        self.resizeDocks([self.sessions], [300], Qt.Orientation.Horizontal)
        self.status = self.statusBar()
        self._alias_parts()

        self.model_bar.chosen.connect(self._choose_model)
        self.model_bar.prms_found.connect(self.controls.set_prms)
        self.model_bar.prm_servers_changed.connect(self.controls.set_prm_servers)
        self.controls.set_prm_servers(self.model_bar.prm_servers())
        self.model_bar.message.connect(self.status.showMessage)
        self.controls.prm_combo.currentIndexChanged.connect(
            lambda *_: self.model_bar.set_prm(self.controls.prm())
        )
        self.controls.run_requested.connect(self.start)
        self.controls.cancel_requested.connect(self.cancel)
        self.problem_bar.message.connect(self.status.showMessage)
        self.area.position.connect(self._show_upto)
        self.sessions.open_requested.connect(self.open_session)
        self.sessions.message.connect(self.status.showMessage)
        self.sweeps_tab.running.connect(lambda on: self.controls.run_button.setEnabled(not on))
        QShortcut(QKeySequence("Ctrl+Return"), self).activated.connect(self.start)
        QShortcut(QKeySequence("Ctrl+Enter"), self).activated.connect(self.start)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self).activated.connect(self.cancel)
        QShortcut(QKeySequence("Ctrl+O"), self).activated.connect(self.sessions.open_selected)
        self.model_bar.announce()
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window_state")
        if state is not None:
            self.restoreState(state)
        self.refresh_sessions()
        self.sweeps_tab.refresh()
        QTimer.singleShot(0, warm_up)
        # math-verify's first import and check take most of a second, in part holding the GIL: done
        # now, on the offload thread, they cannot stall the window when the first run ends.
        self.offload.submit(warm_answers, lambda _r: None)

    def _alias_parts(self) -> None:
        """The parts' widgets under the names scripts and tests know (``ponder screenshot``)."""
        for part, names in (
            (
                self.model_bar,
                "model_combo model_label memory_label ngl_slider ngl_value ctx_spin second_combo",
            ),
            (self.problem_bar, "prompt set_combo index_spin reference load_problem random_problem"),
            (
                self.controls,
                "budget_spin budget_kind tokens_spin prm_combo seed_spin seeds_combo strategy_boxes "
                "strategy_params run_button cancel_button strategies overrides",
            ),
            (self.area, "detail timeline play_button timeline_label toggle_play"),
            (
                self.sessions,
                "session_list session_search session_model session_correct session_since session_sweeps "
                "open_selected export_session selected_session",
            ),
            (self.model_bar, "add_server_models rescan_models add_model_path"),
        ):
            for name in names.split():
                setattr(self, name, getattr(part, name))

    @property
    def panels(self) -> dict[str, RunPanel]:
        return self.area.panels

    def _store(self, readonly: bool = True) -> Any:
        from engine.store import Store

        return Store.open(self.db, readonly=readonly)

    # --- the backend --------------------------------------------------------------------------------

    def _busy(self) -> bool:
        return any(b is not None and b.busy for b in (self.bridge, self.second_bridge))

    def _choose_model(self, choice: dict[str, Any]) -> None:
        """The model bar's choice becomes the backend (kept when it is the same one)."""
        if self._busy():
            return
        if "error" in choice:
            self.controls.run_button.setEnabled(False)
            self.status.showMessage("Pick a model with Add GGUF… or --model PATH")
            if self.bridge is not None:
                self.bridge.shutdown()
                self.bridge = None
            return
        self.controls.run_button.setEnabled(not self.sweeps_tab.busy)
        if self.bridge is not None and same_backend(self.bridge, choice):
            return
        if self.bridge is not None:
            self.bridge.shutdown()
        self.bridge = make_bridge(choice)
        self._connect(self.bridge, 0)
        self.bridge.sweep_progress.connect(self.sweeps_tab.on_progress)
        self.bridge.swept.connect(self.sweeps_tab.on_done)
        if "server" in choice:
            self.status.showMessage("Ready. Ponder connects to the server on the first run.")
        else:
            self.status.showMessage("Ready. The model loads on the first run.")

    def _connect(self, bridge: EngineBridge, group: int) -> None:
        """``group``: 0 for the model bar's model, 1 for the second one (their panels' group)."""
        bridge.loaded.connect(self._on_loaded)
        bridge.events.connect(lambda batch: self._on_events(group, batch))
        bridge.compared.connect(lambda sid, summaries: self._on_compared(group, sid, summaries))
        bridge.failed.connect(self._on_failed)
        bridge.costly.connect(self._on_costly)

    def _second_bridge(self) -> EngineBridge | None:
        choice = self.model_bar.second()
        if choice is None:
            return None
        if self.second_bridge is not None and not same_backend(self.second_bridge, choice):
            self.second_bridge.shutdown()
            self.second_bridge = None
        if self.second_bridge is None:
            self.second_bridge = make_bridge(choice)
            self._connect(self.second_bridge, 1)
        return self.second_bridge

    def _prm_server(self, request: Any) -> Any:
        """A PRM on a server (``KIND@URL`` in the PRM list) goes with the policy's servers: the
        bridge gets that PRM server (or loses one the PRM no longer names) and the request the PRM's
        kind. None, said to the user, when the policy runs in process."""
        spec, _, url = request.prm.partition("@")
        urls = [url] if url else []
        if self.bridge is None or (urls and (self.bridge.server is None or self.model_bar.second())):
            QMessageBox.information(
                self,
                "Ponder",
                "A PRM on a server scores the steps of a model on a server: choose a server model in the "
                "model bar (and no second model), or another PRM.",
            )
            return None
        server = self.bridge.server
        if server is not None and list(server.get("prm_urls") or []) != urls:
            choice = {"server": {**server, "prm_urls": urls}, "label": self.bridge.model_path}
            self.bridge.shutdown()
            self.bridge = make_bridge(choice)
            self._connect(self.bridge, 0)
            self.bridge.sweep_progress.connect(self.sweeps_tab.on_progress)
            self.bridge.swept.connect(self.sweeps_tab.on_done)
        return dataclasses.replace(request, prm=spec) if urls else request

    def _on_loaded(self, info: dict[str, Any]) -> None:
        if info.get("backend") == "server":
            self.status.showMessage(f"Connected to {', '.join(info.get('servers') or [])}: {info['name']}")
            return
        self.status.showMessage(
            f"Loaded {info['name']} on {info['accelerator']} ({info['n_layers_offloaded']} layers offloaded)"
        )

    # --- running ------------------------------------------------------------------------------------

    def start(self, yes: bool = False) -> None:
        """Run the form's compare; ``yes``: the user has accepted its cost estimate."""
        if self.bridge is None:
            return
        if self._busy():
            if self.sweeps_tab.busy:
                self.status.showMessage("A sweep is running on this model; stop it in the Sweeps tab first.")
            return
        form = self.controls.form(self.problem_bar)
        request, problem = form.checked()
        if request is None:
            QMessageBox.information(self, "Ponder", problem or "This compare cannot run.")
            return
        request = self._prm_server(request)
        if request is None:
            return
        second = self._second_bridge()
        self.area.clear_replay()
        self._replay, self._runs, self._shown = [], {}, 0  # the timeline is an opened session's
        labels: list[str | None] = [None]
        bridges = [self.bridge]
        if second is not None:
            labels = [self.model_bar.current_label(), self.model_bar.second()["label"]]  # type: ignore[index]  # a second bridge: second() chose it
            if labels[0] == labels[1]:  # two files of one model (say, two quantizations)
                labels = [f"{labels[0]} [{os.path.basename(b.model_path)}]" for b in (self.bridge, second)]
            bridges.append(second)
        groups = [(label, form.strategies) for label in labels]
        self._pending = [(b, request) for b in bridges]
        self._yes = yes
        self._groups = [g for g, _ in groups]
        self.area.make_panels(groups)
        self._results = []
        self._run_panel = {}
        self.session_id = None
        self.controls.set_running(True)
        self.model_bar.setEnabled(False)
        self.status.showMessage(f"Running {', '.join(registry.label(s) for s in form.strategies)}…")
        self._next_compare()

    def _next_compare(self) -> None:
        """Two models run one after the other (each owns its engine thread; at once they would
        halve each other's speed and muddle their timings)."""
        bridge, request = self._pending.pop(0)
        bridge.compare(self.db, request, yes=getattr(self, "_yes", False))

    def cancel(self) -> None:
        if self._busy():
            self._pending = []
            for b in (self.bridge, self.second_bridge):
                if b is not None and b.busy:
                    b.cancel()
            self.status.showMessage("Cancelling… the partial runs are kept.")

    def _key(self, group: int, strategy: str) -> str:
        """The panel of a strategy's run on the model of ``group`` (0: the model bar's, 1: the second)."""
        if len(self._groups) < 2:
            return strategy
        return f"{self._groups[group]}: {strategy}"

    def _on_events(self, group: int, batch: list) -> None:
        for _run_id, strategy, ev in batch:
            key = self._key(group, strategy)
            panel = self.panels.get(key)
            if panel is None:
                continue
            panel.apply(ev)
            self._dirty.add(key)
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _redraw(self) -> None:
        for s in self._dirty:
            if s in self.panels:
                self.panels[s].redraw()
        self._dirty.clear()
        if self._busy():
            n = sum(len(p.trace.nodes) for p in self.panels.values())
            self.status.showMessage(f"Running… {n} nodes so far")

    def _on_compared(self, group: int, session_id: str, summaries: list) -> None:
        self._redraw_timer.stop()
        self._dirty.update(self.panels)
        self._redraw()
        for s in summaries:
            panel = self.panels.get(self._key(group, s["strategy"]))
            if panel is not None:
                panel.set_footer(
                    s["answer"],
                    s["correct"],
                    s["tally"],
                    s["generated_tokens"],
                    s["seconds"],
                    s["status"],
                    s.get("policy_flops", 0.0) + s.get("prm_flops", 0.0),
                )
        self._results.append((group, session_id, summaries))
        if self._pending:
            self._next_compare()
            return
        self.session_id = session_id
        self.controls.set_running(False)
        self.model_bar.setEnabled(True)
        self.refresh_sessions()
        if len(self._results) > 1:  # two models: each saved as its own session; the panels stay
            ids = ", ".join(sid for _, sid, _ in self._results)
            self.status.showMessage(f"Done. Saved as sessions {ids} (one per model).")
            return
        # The saved session is read back (off the GUI thread) so the timeline can replay the run
        # just watched; the panels stay (they were folded from the same events).
        self.offload.latest(
            "open", partial(_read_session, self.db, session_id), partial(self._opened, keep_panels=True)
        )
        self.status.showMessage(f"Done. Saved as session {session_id}; the timeline replays it.")

    def _on_failed(self, message: str) -> None:
        self._pending = []
        self.sweeps_tab.on_failed(message)
        self.controls.set_running(False)
        self.model_bar.setEnabled(True)
        self.status.showMessage("Failed")
        self.refresh_sessions()
        QMessageBox.warning(self, "Ponder", message)

    def _on_costly(self, message: str) -> None:
        """A compare or sweep its estimate says would take over an hour (or fill the disk), refused
        before anything was saved: say so, and run it only if the user says yes."""
        was_sweep = self.sweeps_tab.busy
        self._pending = []
        self.sweeps_tab.on_failed("Not started: " + message)
        self.controls.set_running(False)
        self.model_bar.setEnabled(True)
        self.status.showMessage("Not started: the estimate asks first")
        answer = QMessageBox.question(
            self,
            "Ponder: a long run",
            f"{message.replace(' Run it anyway with --yes (the app asks).', '')}\n\nRun it anyway?",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
            QMessageBox.StandardButton.No,
        )
        if answer != QMessageBox.StandardButton.Yes:
            return
        if was_sweep:
            self.sweeps_tab.start(yes=True)
        else:
            self.start(yes=True)

    def show_node(self, panel: RunPanel, nid: int) -> None:
        self.area.show_node(panel, nid)

    def _make_panels(self, strategies: list[str]) -> None:
        self._groups = [None]
        self.area.make_panels([(None, strategies)])

    # --- sessions -----------------------------------------------------------------------------------

    def refresh_sessions(self) -> None:
        self.sessions.refresh()

    def open_session(self, session_id: str) -> None:
        """Redraw the panels from the store and set the timeline to the end. The session is read
        off the GUI thread; the panels are drawn when it is back."""
        if self._busy():
            return
        self.offload.latest("open", partial(_read_session, self.db, session_id), self._opened)

    def _opened(self, result: Any, keep_panels: bool = False) -> None:
        if isinstance(result, BaseException):
            QMessageBox.warning(self, "Ponder", str(result))
            return
        if self._busy():
            return
        s, events = result
        self.area.stop_replay()
        self.session_id = s.id
        self._run_panel = {r.id: r.strategy for r in s.runs}
        self._runs = {r.id: r for r in s.runs}
        self._replay = events
        if keep_panels:  # the run just watched: its panels already show what was saved
            self._shown = len(events)
        else:
            self.problem_bar.set_problem(s.problem, s.reference)
            self.controls.show_settings(s.settings or {})
            self._groups = [None]
            self.area.make_panels([(None, [r.strategy for r in s.runs])])
            self._shown = 0
        self.area.set_replay(len(events))
        self._show_upto(len(events))
        if not keep_panels:
            self.status.showMessage(f"Session {s.id}: {len(events)} events")

    def _show_upto(self, k: int) -> None:
        """Show the session as it was after its first ``k`` events. Moving forward applies only the
        new events (playing is one event a step); moving back folds again from the start."""
        if k < self._shown:
            for p in self.panels.values():
                p.reset()
            self._shown = 0
            touched = set(self.panels)
        else:
            touched = set()
        for run_id, ev in self._replay[self._shown : k]:
            key = self._run_panel.get(run_id)
            if key in self.panels:
                self.panels[key].apply(ev)
                touched.add(key)
        self._shown = k
        for name, p in self.panels.items():
            if name in touched:
                p.redraw()
            r = self._runs.get(p.run_id or "")
            if r is not None and p.trace.finished is not None:
                sel = p.trace.selected
                p.set_footer(
                    sel.answer if sel else None,
                    r.correct,
                    sel.tally if sel else {},
                    r.generated_tokens,
                    r.wall_s,
                    r.status,
                    r.flops,
                )
            elif r is not None and k == len(self._replay):
                p.footer.setText(f"<i>{r.status}</i> · {len(p.trace.nodes)} nodes")
        self.area.timeline_label.setText(f"{k} / {len(self._replay)} events")

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self.settings.setValue("detail_width", self.area.detail_width())
        self.area.stop_replay()
        for b in (self.bridge, self.second_bridge):
            if b is not None:
                b.shutdown()
        self.offload.shutdown()
        super().closeEvent(event)


def _read_session(db: str | None, session_id: str) -> tuple[Any, list]:
    """A saved session and its events, read on the offload thread."""
    from engine.store import Store

    with Store.open(db, readonly=True) as store:
        s = store.session(session_id)
        return s, list(store.replay(s.id))


def _settings() -> Any:
    """Kept with QSettings: last model, servers, window layout, the detail pane's width.
    ``PONDER_CONFIG_DIR`` moves the file (the tests point it at a temporary folder)."""
    from PySide6.QtCore import QSettings

    folder = os.environ.get("PONDER_CONFIG_DIR")
    if folder:
        return QSettings(os.path.join(folder, "ponder.ini"), QSettings.Format.IniFormat)
    return QSettings("Ponder", "Ponder")


STYLE = """
#modelLabel { padding: 2px; }
#panelFooter { padding: 2px; }
"""


def run(argv: Sequence[str] = ()) -> int:
    ap = argparse.ArgumentParser(prog="ponder", add_help=False)
    ap.add_argument("--model")
    ap.add_argument("--n-gpu-layers", type=int, default=0)
    ap.add_argument("--db")
    ap.add_argument("--theme", choices=THEMES)
    args, _rest = ap.parse_known_args(list(argv))
    from gui.platform_check import check_platform

    problem = check_platform()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 2
    existing = QApplication.instance()
    app = existing if isinstance(existing, QApplication) else QApplication(sys.argv[:1])
    app.setApplicationName("Ponder")
    settings = _settings()
    theme = args.theme or settings.value("theme", "system", str)
    if args.theme:
        settings.setValue("theme", args.theme)
    apply_theme(app, theme if theme in THEMES else "system")
    app.setStyleSheet(STYLE)
    win = MainWindow(args.model, args.n_gpu_layers, args.db)
    win.show()
    return app.exec()
