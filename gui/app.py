"""Ponder's main window: strategies race side by side on one problem, each run drawn as a trace with
its PRM step scores, every run saved; saved sessions reopen and replay.

The engine runs in its own thread behind :class:`gui.bridge.EngineBridge`; the window only reacts to
signals carrying :mod:`engine.events`, and draws a live run and a replayed one through the same
:class:`engine.events.Trace` fold.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QColor, QKeySequence, QShortcut
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QDialog,
    QDockWidget,
    QDoubleSpinBox,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMenu,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QSlider,
    QSpinBox,
    QSplitter,
    QTabWidget,
    QTextBrowser,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QWidgetAction,
)

from engine.backends.llama_cpp import BackendConfig
from engine.compare import human_flops
from engine.errors import PonderError
from engine.events import Event, NodeAdded, TextDelta, Trace
from engine.gguf_info import human_params, human_size, read_gguf
from engine.models import (
    add_model_file,
    adopt_model_files,
    default_model_path,
    describe,
    discover,
    estimate_memory,
    load_catalog,
)
from engine.report import scored_steps
from engine.search import registry
from gui.bridge import EngineBridge
from gui.servers import ServerDialog, ServerProbe, server_entry_label, server_entry_tooltip
from gui.sweeps import SweepsTab
from gui.theme import ON_TINT, THEMES, apply_theme, colours
from gui.trace_view import TraceView, score_qcolor


def param_widget(param: registry.Param) -> QWidget:
    """An editor for one strategy parameter, set to its default."""
    if param.kind == "choice":
        w: Any = QComboBox()
        w.addItems(list(param.choices))
        w.setCurrentText(str(param.default))
    elif param.kind == "bool":
        w = QCheckBox()
        w.setChecked(bool(param.default))
    elif param.kind == "int":
        w = QSpinBox()
        w.setRange(
            int(param.lo if param.lo is not None else -(2**31)),
            int(param.hi if param.hi is not None else 2**31 - 1),
        )
        w.setValue(int(param.default))
    elif param.kind == "float":
        w = QDoubleSpinBox()
        w.setDecimals(3)
        w.setRange(
            float(param.lo if param.lo is not None else -1e9),
            float(param.hi if param.hi is not None else 1e9),
        )
        w.setSingleStep(0.1)
        w.setValue(float(param.default))
    else:
        w = QLineEdit(str(param.default))
    if param.special and isinstance(w, QSpinBox):
        w.setSpecialValueText(param.special)
    return w


def widget_value(w: QWidget) -> Any:
    if isinstance(w, QComboBox):
        return w.currentText()
    if isinstance(w, QCheckBox):
        return w.isChecked()
    if isinstance(w, QLineEdit):
        return w.text()
    return w.value()  # type: ignore[attr-defined]


DEFAULT_PROBLEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
PROBLEM_SETS = {"GSM8K": "gsm8k", "MATH-500": "math500"}


class RunPanel(QFrame):
    """One strategy: a header, its trace, a footer with the chosen answer and the counts."""

    def __init__(self, strategy: str) -> None:
        super().__init__()
        self.strategy = strategy
        self.setObjectName("runPanel")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.header = QLabel(f"<b>{registry.label(strategy)}</b>")
        self.view = TraceView()
        self.view.setMinimumSize(260, 240)
        self.footer = QLabel("waiting…")
        self.footer.setObjectName("panelFooter")
        self.footer.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setMaximumHeight(14)
        self.progress.setTextVisible(True)
        self.progress.setFormat("%v/%m finished")
        self.progress.hide()
        lay.addWidget(self.header)
        lay.addWidget(self.view, 1)
        lay.addWidget(self.progress)
        lay.addWidget(self.footer)
        self.trace = Trace()
        self.live: dict[int, str] = {}
        self.run_id: str | None = None

    def reset(self) -> None:
        self.trace = Trace()
        self.live = {}
        self.run_id = None

    def apply(self, ev: Event) -> None:
        if isinstance(ev, TextDelta):
            self.live[ev.node_id] = self.live.get(ev.node_id, "") + ev.text
            return
        if self.run_id is None:
            self.run_id = ev.run_id
        self.trace.apply(ev)
        if isinstance(ev, NodeAdded):
            self.live.pop(ev.node_id, None)

    def redraw(self) -> None:
        self.view.show_trace(self.trace, self.strategy, self.live)
        st = self.trace.started
        if st is not None:
            strat = registry.find(self.strategy)
            keys = strat.shown if strat is not None else ("n",)
            params = ", ".join(f"{k}={st.params[k]}" for k in keys if k in st.params)
            if st.params.get("token_budget"):
                params += f" · at most {st.params['token_budget']} tokens"
            if st.params.get("seeds", "common") == "common":  # (sessions saved before the choice: common)
                params += " · common seeds"
            self.header.setText(f"<b>{registry.label(self.strategy)}</b> &nbsp; {params}")
        fin = self.trace.finished
        if fin is None:
            self.footer.setText(f"running… {len(self.trace.nodes)} nodes")
        elif self.footer.text().startswith("running…"):  # ended while the others run on
            sel = self.trace.selected
            answer = sel.answer if sel is not None and sel.answer is not None else "-"
            rate = fin.generated_tokens / fin.wall_s if fin.wall_s > 0 else 0.0
            self.footer.setText(
                f"{fin.status}: answer <b>{answer}</b> · {fin.generated_tokens} tok · {fin.wall_s:.1f} s · "
                f"{rate:.0f} tok/s · {human_flops(fin.policy_flops + fin.prm_flops)}"
            )
        self._show_progress()

    def _show_progress(self) -> None:
        """Finished candidates of the ones the run will make (N solutions, N beams, chains x
        length attempts: the strategy says), while it runs or a replay is part-way."""
        st = self.trace.started
        strat = registry.find(self.strategy)
        if st is None or self.trace.finished is not None or strat is None or strat.candidates is None:
            self.progress.hide()
            return
        try:
            expected = int(strat.candidates(st.params))
        except (KeyError, TypeError, ValueError):  # a session saved with other parameters
            self.progress.hide()
            return
        done = sum(1 for n in self.trace.nodes.values() if n.finish_reason is not None)
        self.progress.setRange(0, max(expected, 1))
        self.progress.setValue(min(done, max(expected, 1)))
        self.progress.show()

    def set_footer(
        self,
        answer: Any,
        correct: Any,
        tally: dict,
        tokens: int,
        seconds: float,
        status: str,
        flops: float = 0.0,
    ) -> None:
        verdict = {
            True: f"<span style='color:{colours()['ok']}'>correct</span>",
            False: f"<span style='color:{colours()['bad']}'>wrong</span>",
        }
        top = ", ".join(f"{a}: {v:.2f}" for a, v in sorted(tally.items(), key=lambda kv: -kv[1])[:3])
        rate = tokens / seconds if seconds > 0 else 0.0
        text = f"answer <b>{answer if answer is not None else '-'}</b> {verdict.get(correct, '')}"
        if top:
            text += f" · votes {top}"
        text += f" · {tokens} tok · {seconds:.1f} s · {rate:.0f} tok/s"
        if flops:
            text += f" · {human_flops(flops)}"
        if status != "done":
            text += f" · <i>{status}</i>"
        self.footer.setText(text)


MAX_BUDGET = 256  # generations; past the sequences decoded at once they wait their turn


class MainWindow(QMainWindow):
    def __init__(self, model_path: str | None = None, n_gpu_layers: int = 0, db: str | None = None) -> None:
        super().__init__()
        self.setWindowTitle("Ponder")
        self.resize(1500, 920)
        self.db = db
        self.bridge: EngineBridge | None = None
        self.panels: dict[str, RunPanel] = {}
        self.session_id: str | None = None
        self._replay: list[tuple[str, Event]] = []
        self._run_strategy: dict[str, str] = {}
        self._runs: dict[str, Any] = {}  # the opened session's runs (RunInfo by id), for footers
        self._shown = 0  # how many of the opened session's events the panels show
        self._dirty: set[str] = set()
        self._redraw_timer = QTimer(self, singleShot=True, interval=100, timeout=self._redraw)
        self._play_timer = QTimer(self, interval=60, timeout=self._play_step)

        central = QWidget()
        root = QVBoxLayout(central)
        root.setContentsMargins(10, 8, 10, 8)
        root.setSpacing(6)

        mbar = QHBoxLayout()
        mbar.addWidget(QLabel("Model"))
        self.model_combo = QComboBox()
        self.model_combo.setMinimumWidth(240)
        self.model_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.model_combo.setMinimumContentsLength(28)
        mbar.addWidget(self.model_combo)
        self.add_model_button = QPushButton("Add GGUF…")
        mbar.addWidget(self.add_model_button)
        self.server_button = QPushButton("Server…")
        self.server_button.setToolTip(
            "Add an inference server: llama-server, vLLM, SGLang (OpenAI-compatible)"
        )
        mbar.addWidget(self.server_button)
        self.folders_button = QPushButton("Folders…")
        self.folders_button.setToolTip("Folders scanned for GGUF models")
        mbar.addWidget(self.folders_button)
        mbar.addSpacing(10)
        self.backend_label = QLabel()
        mbar.addWidget(self.backend_label)
        mbar.addWidget(QLabel("GPU layers"))
        self.ngl_slider = QSlider(Qt.Orientation.Horizontal)
        self.ngl_slider.setFixedWidth(110)
        self.ngl_value = QLabel("0")
        mbar.addWidget(self.ngl_slider)
        mbar.addWidget(self.ngl_value)
        mbar.addWidget(QLabel("Context"))
        self.ctx_spin = QSpinBox()
        self.ctx_spin.setRange(1024, 262144)
        self.ctx_spin.setSingleStep(2048)
        self.ctx_spin.setValue(16384)
        mbar.addWidget(self.ctx_spin)
        self.memory_label = QLabel()
        mbar.addWidget(self.memory_label)
        mbar.addStretch(1)
        root.addLayout(mbar)
        self.model_label = QLabel()
        self.model_label.setObjectName("modelLabel")
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        # The line ends with the model's path, as long as the folder it lives in: it may be cut at
        # the window's edge (the path is in its tooltip), never widen the window.
        self.model_label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        root.addWidget(self.model_label)

        # Problem bar
        pbar = QHBoxLayout()
        self.prompt = QPlainTextEdit(DEFAULT_PROBLEM)
        self.prompt.setMaximumHeight(64)
        self.prompt.setPlaceholderText("Type a problem, or pick one from a problem set…")
        pbar.addWidget(self.prompt, 1)
        side = QVBoxLayout()
        row = QHBoxLayout()
        self.set_combo = QComboBox()
        self.set_combo.addItems(["Own problem", *PROBLEM_SETS])
        self.index_spin = QSpinBox()
        self.index_spin.setRange(0, 9999)
        self.random_button = QPushButton("Random")
        row.addWidget(self.set_combo)
        row.addWidget(self.index_spin)
        row.addWidget(self.random_button)
        side.addLayout(row)
        self.reference = QLineEdit("72")
        self.reference.setPlaceholderText("reference answer (optional)")
        side.addWidget(self.reference)
        pbar.addLayout(side)
        root.addLayout(pbar)

        # Controls
        # One row of strategies (each with its ⚙ beside it), then the run's settings.
        picks = QHBoxLayout()
        picks.setSpacing(4)
        picks.addWidget(QLabel("Strategies"))
        self.strategy_boxes: dict[str, QCheckBox] = {}
        self.strategy_params: dict[str, dict[str, Any]] = {}
        for strat in registry.strategies():
            box = QCheckBox(strat.label)
            box.setChecked(strat.default)
            box.setToolTip(strat.summary)
            self.strategy_boxes[strat.name] = box
            picks.addSpacing(10)
            picks.addWidget(box)
            picks.addWidget(self._params_button(strat))
        picks.addStretch(1)
        root.addLayout(picks)
        controls = QHBoxLayout()
        controls.addWidget(QLabel("Budget"))
        self.budget_spin = QSpinBox()
        self.budget_spin.setRange(1, MAX_BUDGET)
        self.budget_spin.setValue(4)
        self.budget_spin.setToolTip("Generations per strategy, as Snell et al. count them")
        controls.addWidget(self.budget_spin)
        self.budget_kind = QComboBox()
        self.budget_kind.addItem("generations", "generations")
        self.budget_kind.addItem("tokens", "tokens")
        self.budget_kind.setToolTip(
            "Match the strategies by generations (as Snell et al. count them) or by generated tokens"
        )
        self.budget_kind.currentIndexChanged.connect(self._budget_kind_changed)
        controls.addWidget(self.budget_kind)
        controls.addWidget(QLabel("PRM"))
        self.prm_combo = QComboBox()
        self.prm_combo.addItems(["judge", "arithmetic", "reference"])
        controls.addWidget(self.prm_combo)
        controls.addWidget(QLabel("Max tokens"))
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(8, 2048)
        self.tokens_spin.setValue(384)
        controls.addWidget(self.tokens_spin)
        controls.addWidget(QLabel("Seed"))
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2_000_000_000)
        self.seed_spin.setMaximumWidth(96)
        controls.addWidget(self.seed_spin)
        self.seeds_combo = QComboBox()
        self.seeds_combo.addItem("independent seeds", "independent")
        self.seeds_combo.addItem("common seeds", "common")
        self.seeds_combo.setToolTip(
            "independent: each strategy draws its own random numbers; common: every strategy's k-th "
            "sample draws the same ones (paired comparisons)"
        )
        controls.addWidget(self.seeds_combo)
        controls.addStretch(1)
        self.run_button = QPushButton("Run  (Ctrl+Enter)")
        self.run_button.setDefault(True)
        self.cancel_button = QPushButton("Cancel  (Esc)")
        self.cancel_button.setEnabled(False)
        controls.addWidget(self.run_button)
        controls.addWidget(self.cancel_button)
        root.addLayout(controls)

        # Panels side by side, and the detail of the clicked node
        split = QSplitter(Qt.Orientation.Horizontal)
        self.panel_host = QWidget()
        self.panel_row = QHBoxLayout(self.panel_host)
        self.panel_row.setContentsMargins(0, 0, 0, 0)
        split.addWidget(self.panel_host)
        self.detail = QTextBrowser()
        self.detail.setPlaceholderText("Click a node to see its text and step scores.")
        split.addWidget(self.detail)
        split.setStretchFactor(0, 5)
        split.setStretchFactor(1, 1)
        self.detail.setMinimumWidth(220)
        split.setSizes([1200, 260])
        root.addWidget(split, 1)

        # Legend and the replay timeline
        tl = QHBoxLayout()
        legend = QLabel(
            "PRM score: "
            + "".join(
                f"<span style='background:{score_qcolor(s).name()};color:{ON_TINT}'>"
                f"&nbsp;{s:.1f}&nbsp;</span>"
                for s in (0.0, 0.25, 0.5, 0.75, 1.0)
            )
            + f" &nbsp; <span style='background:#ececec;color:{ON_TINT}'>&nbsp;unscored&nbsp;</span>"
            + f" &nbsp; <b style='color:{colours()['chosen']}'>▭</b> chosen &nbsp; faded: pruned"
        )
        tl.addWidget(legend)
        tl.addSpacing(20)
        self.play_button = QPushButton("Play")
        self.play_button.setEnabled(False)
        self.timeline = QSlider(Qt.Orientation.Horizontal)
        self.timeline.setEnabled(False)
        self.timeline_label = QLabel("")
        tl.addWidget(self.play_button)
        tl.addWidget(self.timeline, 1)
        tl.addWidget(self.timeline_label)
        root.addLayout(tl)
        self.tabs = QTabWidget()
        self.tabs.setDocumentMode(True)
        self.tabs.addTab(central, "Compare")
        self.sweeps_tab = SweepsTab(self)
        self.tabs.addTab(self.sweeps_tab, "Sweeps")
        self.setCentralWidget(self.tabs)

        # Sessions browser
        dock = QDockWidget("Sessions", self)
        dock.setObjectName("sessionsDock")
        host = QWidget()
        dl = QVBoxLayout(host)
        self.session_search = QLineEdit()
        self.session_search.setPlaceholderText("search problems…")
        self.session_list = QListWidget()
        self.session_list.setWordWrap(True)
        self.session_list.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        buttons = QHBoxLayout()
        self.open_button = QPushButton("Open  (Ctrl+O)")
        self.delete_button = QPushButton("Delete")
        self.export_button = QPushButton("Export…")
        buttons.addWidget(self.open_button)
        buttons.addWidget(self.export_button)
        buttons.addWidget(self.delete_button)
        filters = QHBoxLayout()
        self.session_model = QLineEdit()
        self.session_model.setPlaceholderText("model…")
        self.session_correct = QComboBox()
        self.session_correct.addItems(["any result", "a correct run", "a wrong run"])
        self.session_since = QLineEdit()
        self.session_since.setPlaceholderText("since YYYY-MM-DD")
        filters.addWidget(self.session_model)
        filters.addWidget(self.session_correct)
        dl.addWidget(self.session_search)
        dl.addLayout(filters)
        since_row = QHBoxLayout()
        since_row.addWidget(self.session_since, 1)
        self.session_sweeps = QCheckBox("sweep runs")
        self.session_sweeps.setToolTip(
            "Also list the sessions sweeps ran (one per problem, strategy and budget)"
        )
        since_row.addWidget(self.session_sweeps)
        dl.addLayout(since_row)
        dl.addWidget(self.session_list, 1)
        dl.addLayout(buttons)
        dock.setWidget(host)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        self.resizeDocks([dock], [300], Qt.Orientation.Horizontal)

        self.status = self.statusBar()
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self.random_button.clicked.connect(self.random_problem)
        self.set_combo.currentIndexChanged.connect(self.load_problem)
        self.index_spin.valueChanged.connect(self.load_problem)
        self.open_button.clicked.connect(self.open_selected)
        self.delete_button.clicked.connect(self.delete_selected)
        self.session_list.itemDoubleClicked.connect(lambda _i: self.open_selected())
        self.session_search.textChanged.connect(self.refresh_sessions)
        self.session_model.textChanged.connect(self.refresh_sessions)
        self.session_correct.currentIndexChanged.connect(self.refresh_sessions)
        self.session_since.textChanged.connect(self.refresh_sessions)
        self.session_sweeps.toggled.connect(self.refresh_sessions)
        self.export_button.clicked.connect(self.export_selected)
        self.timeline.valueChanged.connect(self._show_upto)
        self.play_button.clicked.connect(self.toggle_play)
        QShortcut(QKeySequence("Ctrl+Return"), self, activated=self.start)
        QShortcut(QKeySequence("Ctrl+Enter"), self, activated=self.start)
        QShortcut(QKeySequence(Qt.Key.Key_Escape), self, activated=self.cancel)
        QShortcut(QKeySequence("Ctrl+O"), self, activated=self.open_selected)

        self.settings = _settings()
        self._server_keys: dict[str, str | None] = {}  # API keys: in memory only
        self._server_status: dict[str, dict[str, Any]] = {}  # url -> what its probe said
        self._server_probe = ServerProbe()
        self._server_probe.done.connect(self._server_probed)
        self.server_button.clicked.connect(lambda: ServerDialog(self).exec())
        self.add_model_button.clicked.connect(self.add_model)
        self.folders_button.clicked.connect(self.edit_folders)
        self.prm_combo.currentIndexChanged.connect(self._update_memory)
        self.model_combo.currentIndexChanged.connect(self._model_changed)
        self.ngl_slider.valueChanged.connect(self._model_changed)
        self.ctx_spin.editingFinished.connect(self._model_changed)
        saved = self.settings.value("model", "", str) or None
        if saved and not os.path.exists(saved):
            saved = None  # the last model was moved or deleted: start on the default
        self._fill_models(model_path or saved)
        if model_path is None:
            self._select_server(self.settings.value("model_server", "", str))
        self.ngl_slider.setValue(n_gpu_layers if n_gpu_layers >= 0 else self.ngl_slider.maximum())
        self._model_changed()
        for url in dict.fromkeys(e["url"] for e in self._saved_servers()):
            self._server_probe.probe(url, os.environ.get("PONDER_API_KEY") or None)
        geometry = self.settings.value("geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        state = self.settings.value("window_state")
        if state is not None:
            self.restoreState(state)
        self.refresh_sessions()
        self.sweeps_tab.refresh()

    def _budget_kind_changed(self) -> None:
        if self.budget_kind.currentData() == "tokens":
            self.budget_spin.setRange(16, 1_000_000)
            self.budget_spin.setValue(max(self.budget_spin.value(), 1024))
            self.budget_spin.setToolTip("Generated tokens each strategy may spend")
        else:
            self.budget_spin.setRange(1, MAX_BUDGET)
            self.budget_spin.setValue(min(self.budget_spin.value(), 4))
            self.budget_spin.setToolTip("Generations per strategy, as Snell et al. count them")

    def _params_button(self, strat: registry.Strategy) -> QToolButton:
        """A ⚙ button whose menu holds the strategy's own parameters (the budget sets the rest),
        made from what the strategy registers."""
        host = QWidget()
        form = QFormLayout(host)
        form.setContentsMargins(10, 8, 10, 8)
        widgets: dict[str, Any] = {}
        for param in strat.params:
            w = param_widget(param)
            w.setToolTip(param.help)
            form.addRow(param.label, w)
            widgets[param.name] = w
        key, name = strat.name, strat.label
        self.strategy_params[key] = widgets
        action = QWidgetAction(self)
        action.setDefaultWidget(host)
        menu = QMenu(self)
        menu.addAction(action)
        button = QToolButton()
        button.setText("⚙")
        button.setToolTip(f"{name}: parameters")
        button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        button.setMenu(menu)
        button.setAutoRaise(True)
        return button

    def overrides(self) -> dict[str, dict[str, Any]]:
        """The strategies' parameters as set in their ⚙ menus (only what differs from the default)."""
        out: dict[str, dict[str, Any]] = {}
        for key, widgets in self.strategy_params.items():
            strat = registry.get(key)
            o: dict[str, Any] = {}
            for name, w in widgets.items():
                v = widget_value(w)
                if v != strat.param(name).default:  # type: ignore[union-attr]
                    o[name] = v
            if o:
                out[key] = o
        return out

    # --- model --------------------------------------------------------------------------------------

    def _fill_models(self, wanted: str | None) -> None:
        """The policy models discovery finds, the GGUFs the user added, and ``wanted``; a file that
        cannot be read is listed, disabled, with its error."""
        paths: list[str] = []
        self.model_combo.blockSignals(True)
        self.model_combo.clear()
        self._adopt_added_models()
        extra = [str(wanted)] if wanted else []
        entries = discover()
        known = {e.path for e in entries}
        catalog = load_catalog()
        entries += [describe(Path(p), "given", catalog) for p in dict.fromkeys(extra) if p not in known]
        prms = [e for e in entries if e.ok and e.info is not None and "prm" in e.roles]
        self._fill_prms(prms)
        for e in entries:
            if e.roles and "policy" not in e.roles and "judge" not in e.roles:
                continue  # a PRM-only model is not a policy
            label = (
                f"{e.info.name} · {e.info.quantization}" if e.info else Path(e.path).name
            ) + f"  ({e.source})"
            self.model_combo.addItem(label, e.path)
            i = self.model_combo.count() - 1
            if not e.ok:
                self.model_combo.setItemData(i, f"Cannot use: {e.error}", Qt.ItemDataRole.ToolTipRole)
                item = self.model_combo.model().item(i)
                if item is not None:
                    item.setEnabled(False)
            paths.append(e.path)
        for entry in self._saved_servers():
            status = self._server_status.get(entry["url"])
            self.model_combo.addItem(server_entry_label(entry, status), entry)
            self.model_combo.setItemData(
                self.model_combo.count() - 1, server_entry_tooltip(status), Qt.ItemDataRole.ToolTipRole
            )
        target = str(wanted) if wanted else str(default_model_path()) if paths else ""
        idx = paths.index(target) if target in paths else 0
        self.model_combo.setCurrentIndex(idx)
        self.model_combo.blockSignals(False)

    # --- servers ----------------------------------------------------------------------------------

    def _saved_servers(self) -> list[dict[str, Any]]:
        import json

        try:
            raw = json.loads(self.settings.value("servers", "[]", str) or "[]")
        except ValueError:
            return []
        return [e for e in raw if isinstance(e, dict) and e.get("url") and e.get("model")]

    def add_server_models(self, infos: list[dict[str, Any]], api_key: str | None) -> None:
        """A server the user connected to: every model it serves joins the model list (kept), the
        first one is chosen."""
        import json

        saved = self._saved_servers()
        for i in infos:
            entry = {"url": i["url"], "model": i["model"]}
            if entry not in saved:
                saved.append(entry)
            self._server_keys[i["url"]] = api_key
            self._server_status[i["url"]] = i
        self.settings.setValue("servers", json.dumps(saved))
        self._fill_models(None)
        self._select_server(json.dumps({"url": infos[0]["url"], "model": infos[0]["model"]}))
        self._model_changed()

    def _select_server(self, wanted: str) -> None:
        import json

        try:
            entry = json.loads(wanted) if wanted else None
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            return
        for i in range(self.model_combo.count()):
            if self.model_combo.itemData(i) == entry:
                self.model_combo.setCurrentIndex(i)
                return

    def _server_probed(self, url: str, infos: Any, error: str) -> None:
        """A saved server answered (or did not): its lines in the model list say so."""
        if infos is None:
            self._server_status[url] = {"error": error}
        else:
            for i in infos:
                self._server_status[i["url"]] = i
        for i in range(self.model_combo.count()):
            entry = self.model_combo.itemData(i)
            if isinstance(entry, dict) and entry.get("url") == url:
                status = self._server_status.get(url)
                self.model_combo.setItemText(i, server_entry_label(entry, status))
                self.model_combo.setItemData(i, server_entry_tooltip(status), Qt.ItemDataRole.ToolTipRole)
        current = self.model_combo.currentData()
        if isinstance(current, dict) and current.get("url") == url:
            self._show_server_label(current)

    def _show_server_label(self, entry: dict[str, Any]) -> None:
        st = self._server_status.get(entry["url"])
        if st is None:
            state = "asking the server…"
        elif st.get("error"):
            state = f"<span style='color:#c0392b'>{_html(st['error'])}</span>"
        else:
            params = f" · {human_params(st['n_params'])} parameters" if st.get("n_params") else ""
            state = (
                f"{st.get('dialect')}{params} · {st.get('slots')} slots · context {st.get('n_ctx') or '?'}"
                f" · build {_html(st.get('build') or '?')}"
            )
        self.model_label.setText(
            f"<b>{_html(entry['model'])}</b> &nbsp; on {_html(entry['url'])} &nbsp; {state}"
        )

    def _set_server(self, entry: dict[str, Any]) -> None:
        """Run on a server: no GPU layers or context to set here (the server has its own)."""
        import json

        if self.bridge is not None and self.bridge.busy:
            return
        self.run_button.setEnabled(True)
        for w in (self.ngl_slider, self.ctx_spin):
            w.setEnabled(False)
        self.ngl_value.setText("-")
        self.backend_label.setText("inference server")
        self.memory_label.setText("runs on the server")
        self.memory_label.setToolTip("")
        self._policy_info = None
        self._show_server_label(entry)
        self.settings.setValue("model_server", json.dumps(entry))
        server = {
            "urls": [entry["url"]],
            "model": entry["model"],
            "api_key": self._server_keys.get(entry["url"]) or os.environ.get("PONDER_API_KEY") or None,
        }
        if self.bridge is not None and self.bridge.server == server:
            return
        if self.bridge is not None:
            self.bridge.shutdown()
        self._connect_bridge(EngineBridge(f"{entry['model']} @ {entry['url']}", server=server))
        self.status.showMessage("Ready. Ponder connects to the server on the first run.")

    def _connect_bridge(self, bridge: EngineBridge) -> None:
        self.bridge = bridge
        bridge.loaded.connect(self._on_loaded)
        bridge.events.connect(self._on_events)
        bridge.compared.connect(self._on_compared)
        bridge.failed.connect(self._on_failed)
        bridge.sweep_progress.connect(self.sweeps_tab.on_progress)
        bridge.swept.connect(self.sweeps_tab.on_done)

    def _fill_prms(self, prms: list) -> None:
        """The built-in scorers, then every token-PRM GGUF the catalog recognises."""
        current = self.prm_combo.currentData() or self.prm_combo.currentText() or "judge"
        self.prm_combo.blockSignals(True)
        self.prm_combo.clear()
        for name in ("judge", "arithmetic", "reference"):
            self.prm_combo.addItem(name, name)
        for e in prms:
            self.prm_combo.addItem(f"PRM: {e.info.name} · {e.info.quantization}", e.path)
        i = self.prm_combo.findData(current)
        self.prm_combo.setCurrentIndex(max(i, 0))
        self.prm_combo.blockSignals(False)

    def edit_folders(self) -> None:
        FoldersDialog(self).exec()

    def rescan_models(self) -> None:
        """Discovery again (after the folders changed), keeping the chosen model."""
        import json

        current = self.model_combo.currentData()
        if isinstance(current, dict):
            self._fill_models(None)
            self._select_server(json.dumps(current))
        else:
            self._fill_models(current)
        self._model_changed()

    def _adopt_added_models(self) -> None:
        """GGUFs an older Ponder kept in the app's own settings move to the shared list, once."""
        old = [p for p in self.settings.value("added_models", [], list) or [] if p]
        if old:
            try:
                adopt_model_files(old)
            except PonderError:
                return  # kept where they are until the list can be written
            self.settings.remove("added_models")

    def add_model(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path, _ = QFileDialog.getOpenFileName(self, "Add a GGUF model", "", "GGUF models (*.gguf)")
        if path:
            self.add_model_path(path)

    def add_model_path(self, path: str) -> None:
        try:
            read_gguf(path)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        try:
            add_model_file(path)  # one list with the CLI's (engine.models)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
        self._fill_models(path)
        self._model_changed()

    def _model_changed(self, *_: Any) -> None:
        data = self.model_combo.currentData()
        if isinstance(data, dict):
            self._set_server(data)
            return
        for w in (self.ngl_slider, self.ctx_spin):
            w.setEnabled(True)
        self.settings.setValue("model_server", "")
        self._set_model(data, self.ngl_slider.value())

    def _update_memory(self, *_: Any) -> None:
        """Policy and PRM together (a PRM GGUF gets its own context of the same size and offload)."""
        info = getattr(self, "_policy_info", None)
        if info is None:
            return
        ctx, ngl = self.ctx_spin.value(), self._policy_ngl
        parts = [("policy", estimate_memory(info, ctx, ngl))]
        prm = self.prm_combo.currentData()
        if prm and prm.lower().endswith(".gguf"):
            try:
                parts.append(("PRM", estimate_memory(read_gguf(prm), ctx, ngl)))
            except PonderError:
                pass
        gpu, cpu = sum(m["gpu"] for _, m in parts), sum(m["cpu"] for _, m in parts)
        self.memory_label.setText(f"~{human_size(gpu)} GPU + {human_size(cpu)} RAM")
        self.memory_label.setToolTip(
            "Estimated from the GGUF headers: "
            + "; ".join(
                f"{who}: weights {human_size(m['weights'])}, "
                f"f16 KV cache of {ctx} cells {human_size(m['kv_cache'])}"
                for who, m in parts
            )
            + "; split by the layers offloaded"
        )

    def _set_model(self, model_path: str | None, n_gpu_layers: int) -> None:
        if self.bridge is not None and self.bridge.busy:
            return
        try:
            if not model_path:
                raise PonderError("No model found: add a GGUF (Add GGUF…) or start with --model PATH.")
            path = str(model_path)
            info = read_gguf(path)  # header only: the window opens at once, weights load on Run
        except PonderError as e:
            self.model_label.setText(f"<b>No usable model</b>: {e}")
            self.run_button.setEnabled(False)
            self.status.showMessage("Pick a model with Add GGUF… or --model PATH")
            if self.bridge is not None:
                self.bridge.shutdown()
                self.bridge = None
            return
        self.run_button.setEnabled(True)
        n_layer = int(info.n_layer or 0)
        self.ngl_slider.blockSignals(True)
        self.ngl_slider.setRange(0, n_layer or 0)
        self.ngl_slider.blockSignals(False)
        n_gpu_layers = min(max(n_gpu_layers, 0), n_layer) if n_layer else 0
        self.ngl_value.setText(f"{n_gpu_layers}/{n_layer}")
        self.backend_label.setText(_accelerator_text())

        self._policy_info, self._policy_ngl = info, n_gpu_layers
        self._update_memory()
        self.settings.setValue("model", path)
        if (
            self.bridge is not None
            and self.bridge.model_path == path
            and self.bridge.config.n_gpu_layers == n_gpu_layers
            and self.bridge.config.n_ctx == self.ctx_spin.value()
        ):
            return
        if self.bridge is not None:
            self.bridge.shutdown()
        self.model_label.setText(
            f"<b>{info.name}</b> &nbsp; {info.architecture} · {human_params(info.n_params)} parameters · "
            f"{info.quantization} · {human_size(info.file_size)} · "
            f"context {info.context_length or '?'} &nbsp; <span style='color:gray'>{info.path}</span>"
        )
        self.model_label.setToolTip(str(info.path))
        config = BackendConfig(n_ctx=self.ctx_spin.value(), n_seq_max=64, n_gpu_layers=n_gpu_layers)
        self._connect_bridge(EngineBridge(path, config))
        self.status.showMessage("Ready. The model loads on the first run.")

    def _on_loaded(self, info: dict[str, Any]) -> None:
        if info.get("backend") == "server":
            self.status.showMessage(f"Connected to {', '.join(info.get('servers') or [])}: {info['name']}")
            return
        self.status.showMessage(
            f"Loaded {info['name']} on {info['accelerator']} ({info['n_layers_offloaded']} layers offloaded)"
        )

    # --- problems -----------------------------------------------------------------------------------

    def load_problem(self) -> None:
        name = self.set_combo.currentText()
        if name not in PROBLEM_SETS:
            return
        from engine.problems import get_problem, load_problem_set

        try:
            n = len(load_problem_set(PROBLEM_SETS[name]))
            self.index_spin.setMaximum(n - 1)
            p = get_problem(PROBLEM_SETS[name], self.index_spin.value())
        except PonderError as e:
            self.status.showMessage(str(e))
            return
        self.prompt.setPlainText(p.question)
        self.reference.setText(p.reference)

    def random_problem(self) -> None:
        if self.set_combo.currentText() not in PROBLEM_SETS:
            self.set_combo.setCurrentIndex(1)
        self.index_spin.setValue(random.randrange(self.index_spin.maximum() + 1))
        self.load_problem()

    # --- running ------------------------------------------------------------------------------------

    def strategies(self) -> list[str]:
        return [k for k, box in self.strategy_boxes.items() if box.isChecked()]

    def _make_panels(self, strategies: list[str]) -> None:
        for p in self.panels.values():
            p.setParent(None)
            p.deleteLater()
        self.panels = {}
        for s in strategies:
            panel = RunPanel(s)
            panel.view.node_clicked.connect(lambda nid, p=panel: self.show_node(p, nid))
            # Trees grow sideways: they get twice the width of a column of cards.
            strat = registry.find(s)
            self.panel_row.addWidget(panel, 2 if strat is not None and strat.drawn_as == "tree" else 1)
            self.panels[s] = panel

    def start(self) -> None:
        if self.bridge is None:
            return
        if self.bridge.busy:
            if self.sweeps_tab.busy:
                self.status.showMessage("A sweep is running on this model; stop it in the Sweeps tab first.")
            return
        text = self.prompt.toPlainText().strip()
        strategies = self.strategies()
        if not text:
            QMessageBox.information(self, "Ponder", "Type a problem first.")
            return
        if not strategies:
            QMessageBox.information(self, "Ponder", "Choose at least one strategy.")
            return
        prm = self.prm_combo.currentData() or self.prm_combo.currentText()
        ref = self.reference.text().strip() or None
        if prm == "reference" and not ref:
            QMessageBox.information(self, "Ponder", "The reference PRM needs a reference answer.")
            return
        overrides = {k: v for k, v in self.overrides().items() if k in strategies}
        tokens = self.budget_kind.currentData() == "tokens"
        budget_tokens = self.budget_spin.value() if tokens else None
        try:  # a budget a strategy cannot spend is refused before anything changes
            from engine.compare import strategy_params

            strategy_params(
                strategies, self.budget_spin.value(), overrides, budget_tokens, self.tokens_spin.value()
            )
        except PonderError as e:
            QMessageBox.information(self, "Ponder", str(e))
            return
        self._stop_replay()
        self._replay, self._runs, self._shown = [], {}, 0  # the timeline is an opened session's
        self.timeline.setEnabled(False)
        self.play_button.setEnabled(False)
        self.timeline_label.setText("")
        self._make_panels(strategies)
        self._run_strategy = {}
        self.session_id = None
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.status.showMessage(f"Running {', '.join(registry.label(s) for s in strategies)}…")
        self.bridge.compare(
            self.db,
            text,
            strategies,
            self.budget_spin.value(),
            prm,
            ref,
            self.seed_spin.value(),
            self.tokens_spin.value(),
            overrides,
            seeds=self.seeds_combo.currentData(),
            budget_tokens=budget_tokens,
        )

    def cancel(self) -> None:
        if self.bridge is not None and self.bridge.busy:
            self.bridge.cancel()
            self.status.showMessage("Cancelling… the partial runs are kept.")

    def _on_events(self, batch: list) -> None:
        for _run_id, strategy, ev in batch:
            panel = self.panels.get(strategy)
            if panel is None:
                continue
            panel.apply(ev)
            self._dirty.add(strategy)
        if not self._redraw_timer.isActive():
            self._redraw_timer.start()

    def _redraw(self) -> None:
        for s in self._dirty:
            if s in self.panels:
                self.panels[s].redraw()
        self._dirty.clear()
        n = sum(len(p.trace.nodes) for p in self.panels.values())
        if self.bridge is not None and self.bridge.busy:
            self.status.showMessage(f"Running… {n} nodes so far")

    def _on_compared(self, session_id: str, summaries: list) -> None:
        self._redraw_timer.stop()
        self._dirty.update(self.panels)
        self._redraw()
        for s in summaries:
            panel = self.panels.get(s["strategy"])
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
        self.session_id = session_id
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.refresh_sessions()
        # Redrawn from the store, as any saved session: what is shown is what was saved, and the
        # timeline can replay the run just watched.
        self.open_session(session_id)
        self.status.showMessage(f"Done. Saved as session {session_id}; the timeline replays it.")

    def _on_failed(self, message: str) -> None:
        self.sweeps_tab.on_failed(message)
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.status.showMessage("Failed")
        self.refresh_sessions()
        QMessageBox.warning(self, "Ponder", message)

    # --- nodes ----------------------------------------------------------------------------------------

    def show_node(self, panel: RunPanel, nid: int) -> None:
        t = panel.trace
        n = t.nodes.get(nid)
        if n is None:
            return
        body = "".join(
            f"<div style='background:{score_qcolor(sc).name()};color:{ON_TINT};padding:3px;margin:2px 0;"
            "white-space:pre-wrap'>"
            f"{_html(st)}<br><small>step score {sc:.2f}</small></div>"
            if sc is not None
            else f"<div style='background:#ececec;color:{ON_TINT};padding:3px;white-space:pre-wrap'>"
            f"{_html(st)}</div>"
            for st, sc in scored_steps(n.text, n.path_step_scores)
        )
        score = n.score
        meta = [
            f"node #{nid}",
            n.role,
            f"{n.n_tokens} tokens",
            f"mean logprob {n.logprob_sum / max(n.n_tokens, 1):.2f}",
        ]
        if score is not None:
            meta.append(f"score {score:.2f}")
        for scorer, s in n.scores.items():
            meta.append(f"{scorer}: {s:.2f}")
        if n.answer is not None:
            meta.append(f"answer {n.answer}")
        if n.weight is not None:  # particle filtering's resampling
            fate = "died" if not n.copies else f"copied to {n.copies} particle{'s' * (n.copies != 1)}"
            meta.append(f"weight {n.weight:.3f}, {fate}")
        if n.pruned_at is not None:
            meta.append(f"pruned at round {n.pruned_at}")
        tokens = ""
        if n.token_texts and len(n.token_texts) == len(n.token_logprobs):
            tokens = "<p><b>Tokens</b>, shaded by the model's probability (white 1, red 0):</p>" + "".join(
                f"<span style='background:{_prob_colour(lp)};color:{ON_TINT}' title='p = {math.exp(lp):.3f}'>"
                f"{_html(t)}</span>"
                for t, lp in zip(n.token_texts, n.token_logprobs, strict=True)
            )
            tokens = f"<div style='white-space:pre-wrap;font-family:monospace'>{tokens}</div>"
        diff = self._revision_diff(panel, nid)
        self.detail.setHtml(
            f"<p><b>{registry.label(panel.strategy)}</b> · {' · '.join(meta)}</p>{body}{diff}{tokens}"
        )

    def _revision_diff(self, panel: RunPanel, nid: int) -> str:
        """For a revision: its words against the attempt before it (added green, removed struck)."""
        n = panel.trace.nodes[nid]
        if n.role != "revision" or n.parent_id is None or n.parent_id not in panel.trace.nodes:
            return ""
        import difflib

        old, new = panel.trace.nodes[n.parent_id].text.split(), n.text.split()
        out = []
        for op, a0, a1, b0, b1 in difflib.SequenceMatcher(a=old, b=new, autojunk=False).get_opcodes():
            if op in ("delete", "replace"):
                out.append(f"<s style='color:#a11;background:#fbe3e3'>{_html(' '.join(old[a0:a1]))}</s>")
            if op in ("insert", "replace"):
                out.append(
                    f"<span style='background:#d9f2d9;color:{ON_TINT}'>{_html(' '.join(new[b0:b1]))}</span>"
                )
            if op == "equal":
                out.append(_html(" ".join(new[b0:b1])))
        return f"<p><b>Changes from attempt #{n.parent_id}</b>:</p><p>{' '.join(out)}</p>"

    # --- sessions ---------------------------------------------------------------------------------------

    def _store(self, readonly: bool = True) -> Any:
        from engine.store import Store

        return Store.open(self.db, readonly=readonly)

    def refresh_sessions(self) -> None:
        self.session_list.clear()
        try:
            with self._store() as store:
                sessions = store.list_sessions(
                    search=self.session_search.text().strip() or None,
                    model=self.session_model.text().strip() or None,
                    correct=(None, True, False)[self.session_correct.currentIndex()],
                    since=self.session_since.text().strip() or None,
                    limit=500,
                    sweeps=self.session_sweeps.isChecked(),
                )
        except PonderError as e:
            if "no session database" not in str(e).lower():
                self.status.showMessage(str(e))
            return
        for s in sessions:
            marks = " ".join(
                f"{r.strategy[:4]}:{'✓' if r.correct else '✗' if r.correct is False else '·'}"
                + ("" if r.status == "done" else f"({r.status})")
                for r in s.runs
            )
            item = QListWidgetItem(f"{s.created[5:16].replace('T', ' ')}  {s.title[:40]}\n{marks}")
            item.setData(Qt.ItemDataRole.UserRole, s.id)
            item.setToolTip(s.problem[:400])
            self.session_list.addItem(item)

    def selected_session(self) -> str | None:
        item = self.session_list.currentItem() or (
            self.session_list.item(0) if self.session_list.count() else None
        )
        return item.data(Qt.ItemDataRole.UserRole) if item else None

    def open_selected(self) -> None:
        sid = self.selected_session()
        if sid:
            self.open_session(sid)

    def open_session(self, session_id: str) -> None:
        """Redraw the panels from the store and set the timeline to the end."""
        if self.bridge is not None and self.bridge.busy:
            return
        try:
            with self._store() as store:
                s = store.session(session_id)
                events = list(store.replay(s.id))
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        self._stop_replay()
        self.session_id = s.id
        self.prompt.setPlainText(s.problem)
        self.reference.setText(s.reference or "")
        self._run_strategy = {r.id: r.strategy for r in s.runs}
        self._runs = {r.id: r for r in s.runs}
        self._make_panels([r.strategy for r in s.runs])
        self._replay, self._shown = events, 0
        self.timeline.blockSignals(True)
        self.timeline.setRange(0, len(events))
        self.timeline.setValue(len(events))
        self.timeline.blockSignals(False)
        self.timeline.setEnabled(True)
        self.play_button.setEnabled(True)
        self._show_upto(len(events))
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
            strategy = self._run_strategy.get(run_id)
            if strategy in self.panels:
                self.panels[strategy].apply(ev)
                touched.add(strategy)
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
        self.timeline_label.setText(f"{k} / {len(self._replay)} events")

    def toggle_play(self) -> None:
        if self._play_timer.isActive():
            self._stop_replay()
            return
        if self.timeline.value() >= self.timeline.maximum():
            self.timeline.setValue(0)
        self.play_button.setText("Pause")
        self._play_timer.start()

    def _play_step(self) -> None:
        if self.timeline.value() >= self.timeline.maximum():
            self._stop_replay()
            return
        self.timeline.setValue(self.timeline.value() + 1)
        if self.timeline.value() >= self.timeline.maximum():
            self._stop_replay()

    def _stop_replay(self) -> None:
        self._play_timer.stop()
        self.play_button.setText("Play")

    def export_selected(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        sid = self.selected_session()
        if not sid:
            return
        path, _ = QFileDialog.getSaveFileName(
            self,
            "Export session",
            f"ponder-{sid}.html",
            "Web page (*.html);;JSON (*.json);;JSON lines (*.jsonl)",
        )
        if path:
            self.export_session(sid, path)

    def export_session(self, session_id: str, path: str) -> None:
        """HTML, JSON or JSONL by the file's extension; a failure is a message, the old file stays."""
        from engine.store import export_text, write_export

        ext = os.path.splitext(path)[1].lower().lstrip(".")
        try:
            with self._store() as store:
                text = export_text(store, session_id, ext if ext in ("html", "jsonl") else "json")
            out = write_export(path, text)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", f"Export failed: {e}")
            return
        self.status.showMessage(f"Exported session {session_id} to {out}")

    def delete_selected(self) -> None:
        sid = self.selected_session()
        if not sid:
            return
        answer = QMessageBox.question(self, "Ponder", f"Delete session {sid} and all its runs?")
        if answer != QMessageBox.StandardButton.Yes:
            return
        try:
            with self._store(readonly=False) as store:
                store.delete_session(sid)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
        self.refresh_sessions()

    def closeEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        self.settings.setValue("geometry", self.saveGeometry())
        self.settings.setValue("window_state", self.saveState())
        self._play_timer.stop()
        if self.bridge is not None:
            self.bridge.shutdown()
        super().closeEvent(event)


class FoldersDialog(QDialog):
    """The folders Ponder scans for GGUF files (saved for ``ponder models`` too)."""

    def __init__(self, window: MainWindow) -> None:
        super().__init__(window)
        self.window = window
        self.setWindowTitle("Model folders")
        self.resize(560, 320)
        lay = QVBoxLayout(self)
        lay.addWidget(
            QLabel(
                "Ponder lists the GGUF files in these folders (and their subfolders), besides the "
                "embedded model, models/, the Hugging Face cache and LM Studio's folder."
            )
        )
        self.list = QListWidget()
        lay.addWidget(self.list, 1)
        row = QHBoxLayout()
        self.add_button = QPushButton("Add folder…")
        self.remove_button = QPushButton("Remove")
        close = QPushButton("Close")
        row.addWidget(self.add_button)
        row.addWidget(self.remove_button)
        row.addStretch(1)
        row.addWidget(close)
        lay.addLayout(row)
        self.add_button.clicked.connect(self._pick)
        self.remove_button.clicked.connect(self.remove_selected)
        close.clicked.connect(self.accept)
        self.refresh()

    def refresh(self) -> None:
        from engine.models import saved_model_dirs

        self.list.clear()
        for d in saved_model_dirs():
            item = QListWidgetItem(str(d) + ("" if d.is_dir() else "   (missing)"))
            item.setData(Qt.ItemDataRole.UserRole, str(d))
            self.list.addItem(item)
        self.remove_button.setEnabled(self.list.count() > 0)

    def _pick(self) -> None:
        from PySide6.QtWidgets import QFileDialog

        path = QFileDialog.getExistingDirectory(self, "A folder with GGUF models")
        if path:
            self.add_folder(path)

    def add_folder(self, path: str) -> None:
        from engine.models import add_model_dir

        try:
            add_model_dir(path)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        self.refresh()
        self.window.rescan_models()

    def remove_selected(self) -> None:
        from engine.models import remove_model_dir

        item = self.list.currentItem() or (self.list.item(0) if self.list.count() else None)
        if item is None:
            return
        try:
            remove_model_dir(item.data(Qt.ItemDataRole.UserRole))
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        self.refresh()
        self.window.rescan_models()


def _settings() -> Any:
    """Kept with QSettings: last model, added GGUFs, window layout. ``PONDER_CONFIG_DIR`` moves
    the file (the tests point it at a temporary folder)."""
    from PySide6.QtCore import QSettings

    folder = os.environ.get("PONDER_CONFIG_DIR")
    if folder:
        return QSettings(os.path.join(folder, "ponder.ini"), QSettings.Format.IniFormat)
    return QSettings("Ponder", "Ponder")


@lru_cache(maxsize=1)  # the build does not change while the app runs; the slider asks often
def _accelerator_text() -> str:
    from engine.llama_lib import build_info

    b = build_info()
    gpus = [d for d in b.devices if d.type in ("GPU", "iGPU")]
    if not b.gpu_offload or not gpus:
        return "CPU build (no GPU offload)"
    d = gpus[0]
    return f"{b.accelerator}: {d.description} ({human_size(d.memory_free)} free)"


def _prob_colour(logprob: float) -> str:
    p = min(1.0, max(0.0, math.exp(logprob)))
    return QColor.fromHslF(0.0, 0.75, 1.0 - 0.35 * (1.0 - p)).name()


def _html(text: str) -> str:
    import html

    return html.escape(text)


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
    app = QApplication.instance() or QApplication(sys.argv[:1])
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
