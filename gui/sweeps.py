"""The Sweeps tab: start, watch and resume a sweep; its charts and table from the store.

A sweep runs on the model chosen in the window's model bar, on the same worker thread as a compare
(one thread owns the llama.cpp context), so the two take turns. Starting a sweep whose settings
match a stored one resumes it: only the missing cells run.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.errors import PonderError
from engine.prm import registry as prm_kinds
from engine.search import registry
from engine.sweeps import Summary, SweepProgress, SweepResult, SweepSpec
from gui.charts import SweepChart

if TYPE_CHECKING:
    from engine.store import Store
    from gui.bridge import EngineBridge


def _open_store(db: str | None) -> Store:
    from engine.store import Store

    return Store.open(db, readonly=True)


class SweepHost(Protocol):
    """Where a sweep runs: the main window."""

    @property
    def db(self) -> str | None:
        """The session database's path."""

    @property
    def bridge(self) -> EngineBridge | None:
        """The engine of the model chosen in the model bar, or None."""


SETS = {"Arithmetic ladder": "arith", "GSM8K": "gsm8k", "MATH-500": "math500", "JSONL file…": "file"}


class SweepsTab(QWidget):
    analysed = Signal(object)  # a summary, or the message of what went wrong
    running = Signal(bool)  # a sweep started (True) or ended: the compare's Run button waits for it

    def __init__(self, host: SweepHost) -> None:
        """``host``: where the sweep runs, anything with ``db`` (the session database's path) and
        ``bridge`` (the engine of the model chosen in the model bar, or None)."""
        super().__init__()
        self.host = host
        self.analysing = False
        self._pending: SweepSpec | None = None
        self.analysed.connect(self._on_analysed)
        self.summary: Summary | None = None
        self.sweep_id: str | None = None
        self._file = ""
        self._refresh_timer = QTimer(self, singleShot=True, interval=3000)
        self._refresh_timer.timeout.connect(self._refresh_running)
        self._running_spec: SweepSpec | None = None

        left = self._build_left()
        charts = self._build_charts()

        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(left)
        split.addWidget(charts)
        split.setStretchFactor(0, 0)
        split.setStretchFactor(1, 1)
        split.setSizes([430, 1000])
        root = QVBoxLayout(self)
        root.setContentsMargins(8, 8, 8, 8)
        root.addWidget(split)

        self.set_combo.activated.connect(self._set_chosen)
        self.run_button.clicked.connect(lambda: self.start())  # clicked(bool) is not a yes
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self.export)
        self.exchange_button.clicked.connect(self._choose_exchange)
        self.sweep_list.currentItemChanged.connect(lambda *_: self.open_selected())
        self.difficulty_combo.currentIndexChanged.connect(lambda *_: self._reanalyse())

    # --- building the tab -----------------------------------------------------------------------------

    def _build_left(self) -> QWidget:
        """The left column: saved sweeps, the settings, the buttons, progress and the table."""
        left = QWidget()
        form_col = QVBoxLayout(left)
        form_col.setContentsMargins(0, 0, 6, 0)
        form_col.addWidget(QLabel("<b>Saved sweeps</b>"))
        self.sweep_list = QListWidget()
        self.sweep_list.setWordWrap(True)
        self.sweep_list.setMaximumHeight(110)
        form_col.addWidget(self.sweep_list)
        form_col.addLayout(self._build_form())
        form_col.addLayout(self._build_buttons())
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.setFormat("")
        form_col.addWidget(self.progress)
        self.progress_label = QLabel("")
        self.progress_label.setWordWrap(True)
        form_col.addWidget(self.progress_label)
        self.table = QTextBrowser()
        self.table.setPlaceholderText("The accuracy table appears here.")
        form_col.addWidget(self.table, 1)
        return left

    def _build_form(self) -> QFormLayout:
        """The sweep's settings."""
        form = QFormLayout()
        self.set_combo = QComboBox()
        self.set_combo.addItems(list(SETS))
        self.file_label = QLabel("")
        self.file_label.setWordWrap(True)
        self.limit_spin = QSpinBox()
        self.limit_spin.setRange(1, 100000)
        self.limit_spin.setValue(20)
        self.offset_spin = QSpinBox()
        self.offset_spin.setRange(0, 100000)
        form.addRow("Problem set", self.set_combo)
        form.addRow("", self.file_label)
        form.addRow("Problems", self.limit_spin)
        form.addRow("From index", self.offset_spin)
        boxes = QGridLayout()  # rows of four: more strategies add a row, not width
        boxes.setHorizontalSpacing(10)
        self.strategy_boxes: dict[str, QCheckBox] = {}
        for k, strat in enumerate(registry.strategies()):
            box = QCheckBox(strat.label)
            box.setChecked(strat.default)
            box.setToolTip(strat.summary)
            self.strategy_boxes[strat.name] = box
            boxes.addWidget(box, k // 4, k % 4)
        form.addRow("Strategies", boxes)
        self.budgets_edit = QLineEdit("1,2,4,8")
        self.budgets_edit.setToolTip("Generation budgets, comma-separated (as Snell et al. count them)")
        form.addRow("Budgets", self.budgets_edit)
        self.prm_combo = QComboBox()
        listed = prm_kinds.listed()
        for kind in listed:
            self.prm_combo.addItem(kind.label, kind.name)
        self.prm_combo.setToolTip("\n".join(f"{k.label}: {k.summary}" for k in listed))
        # A sweep starts on the cheapest scorer that needs no reference answer (a model-free one).
        cheap = min((k for k in listed if not k.needs_reference), key=lambda k: k.time_share)
        self.prm_combo.setCurrentIndex(self.prm_combo.findData(cheap.name))
        form.addRow("PRM", self.prm_combo)
        self.tokens_spin = QSpinBox()
        self.tokens_spin.setRange(16, 4096)
        self.tokens_spin.setValue(256)
        form.addRow("Max tokens", self.tokens_spin)
        self.seed_spin = QSpinBox()
        self.seed_spin.setRange(0, 2_000_000_000)
        form.addRow("Seed", self.seed_spin)
        self.difficulty_combo = QComboBox()
        self.difficulty_combo.addItem("the model's pass@1", "pass1")
        self.difficulty_combo.addItem("the PRM's mean score", "prm")
        form.addRow("Difficulty by", self.difficulty_combo)
        # Strategy parameters a sweep was run with (``ponder sweep --adaptive-best-of-n-threshold 0.8``):
        # kept from the sweep shown, so Run / resume continues that sweep, not one with the defaults.
        self._params: dict[str, dict[str, Any]] = {}
        self.params_label = QLabel("")
        self.params_label.setWordWrap(True)
        form.addRow("", self.params_label)
        return form

    def _build_buttons(self) -> QHBoxLayout:
        """Run / resume, Stop, Export and the exchange report."""
        buttons = QHBoxLayout()
        self.run_button = QPushButton("Run / resume")
        self.run_button.setToolTip("Runs what the store lacks for these settings; a stopped sweep resumes")
        self.cancel_button = QPushButton("Stop")
        self.cancel_button.setEnabled(False)
        self.export_button = QPushButton("Export…")
        self.export_button.setEnabled(False)
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.export_button)
        self.exchange_button = QPushButton("Exchange report…")
        self.exchange_button.setToolTip(
            "Open the exchange.json of a two-model sweep (ponder sweep --models SMALL,LARGE): accuracy "
            "against FLOPs, small model with search against the large one"
        )
        buttons.addWidget(self.exchange_button)
        return buttons

    def _build_charts(self) -> QWidget:
        """The accuracy and difficulty charts."""
        charts = QWidget()
        cl = QVBoxLayout(charts)
        cl.setContentsMargins(0, 0, 0, 0)
        self.accuracy_chart = SweepChart("accuracy_vs_budget.png")
        self.difficulty_chart = SweepChart("by_difficulty.png")
        cl.addWidget(self.accuracy_chart, 3)
        cl.addWidget(self.difficulty_chart, 2)
        return charts

    # --- the form -------------------------------------------------------------------------------------

    def _set_chosen(self, *_: Any) -> None:
        if SETS[self.set_combo.currentText()] != "file":
            self.file_label.setText("")
            return
        path = QFileDialog.getOpenFileName(self, "A problem set", "", "JSONL (*.jsonl);;All files (*)")[0]
        if path:
            self.set_file(path)
        elif not self._file:
            self.set_combo.setCurrentIndex(0)

    def set_file(self, path: str) -> None:
        self._file = path
        self.set_combo.setCurrentText("JSONL file…")
        self.file_label.setText(Path(path).name)
        self.file_label.setToolTip(path)

    def spec(self) -> SweepSpec:
        """The form as a SweepSpec; a PonderError says what is wrong."""
        from engine.errors import InvalidRequestError

        kind = SETS[self.set_combo.currentText()]
        problem_set = self._file if kind == "file" else kind
        if not problem_set:
            raise InvalidRequestError("Choose a JSONL file of problems.")
        try:
            budgets = tuple(int(x) for x in self.budgets_edit.text().split(",") if x.strip())
        except ValueError:
            raise InvalidRequestError(
                "Budgets are whole numbers separated by commas, e.g. 1,2,4,8."
            ) from None
        spec = SweepSpec(
            problem_set,
            limit=self.limit_spin.value(),
            offset=self.offset_spin.value(),
            strategies=tuple(k for k, b in self.strategy_boxes.items() if b.isChecked()),
            budgets=budgets,
            prm=self.prm_combo.currentData() or self.prm_combo.currentText(),
            seed=self.seed_spin.value(),
            max_tokens=self.tokens_spin.value(),
            params={k: v for k, v in self._params.items() if self.strategy_boxes[k].isChecked()},
        )
        spec.check()
        return spec

    def show_spec(self, spec: SweepSpec) -> None:
        kinds = {v: k for k, v in SETS.items()}
        if spec.problem_set in kinds:
            self.set_combo.setCurrentText(kinds[spec.problem_set])
        elif spec.problem_set.startswith("arith"):
            self.set_combo.setCurrentText("Arithmetic ladder")
        else:
            self.set_file(spec.problem_set)
        self.limit_spin.setValue(spec.limit)
        self.offset_spin.setValue(spec.offset)
        for k, b in self.strategy_boxes.items():
            b.setChecked(k in spec.strategies)
        self.budgets_edit.setText(",".join(str(b) for b in spec.budgets))
        i = self.prm_combo.findData(spec.prm)
        if i >= 0:
            self.prm_combo.setCurrentIndex(i)
        self.tokens_spin.setValue(spec.max_tokens)
        self.seed_spin.setValue(spec.seed)
        from engine.sweeps import describe_params

        self._params = {k: dict(v) for k, v in spec.params.items() if v and k in self.strategy_boxes}
        self.params_label.setText(
            "Strategy settings: " + "; ".join(describe_params(k, v) for k, v in self._params.items())
            if self._params
            else ""
        )

    # --- stored sweeps ------------------------------------------------------------------------------------

    def refresh(self) -> None:
        keep = self.sweep_id
        self.sweep_list.blockSignals(True)
        self.sweep_list.clear()
        try:
            with _open_store(self.host.db) as store:
                sweeps = store.list_sweeps()
        except PonderError:
            sweeps = []
        for w in sweeps:
            item = QListWidgetItem(f"{w.created[:16].replace('T', ' ')} · {w.n_cells} cells\n{w.name}")
            item.setData(Qt.ItemDataRole.UserRole, w.id)
            self.sweep_list.addItem(item)
            if w.id == keep:
                self.sweep_list.setCurrentItem(item)
        self.sweep_list.blockSignals(False)

    def open_selected(self) -> None:
        item = self.sweep_list.currentItem()
        if item is not None and not self.busy:
            self.open_sweep(item.data(Qt.ItemDataRole.UserRole))

    def open_sweep(self, sweep_id: str) -> None:
        """Show a stored sweep: its settings in the form, its charts and table."""
        from engine.sweeps import spec_of

        try:
            with _open_store(self.host.db) as store:
                info = store.sweep(sweep_id)
                spec = spec_of(info, list(store.sweep_cells(info.id)))
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        self.sweep_id = info.id
        self.show_spec(spec)
        self._analyse(spec)

    def _analyse(self, spec: SweepSpec) -> None:
        """Analyse in a thread of its own (deciding answer equivalence with math-verify can take
        seconds the first time); the summary arrives through ``analysed``. One at a time: a request
        made meanwhile runs after, with the latest spec."""
        if self.analysing:
            self._pending = spec
            return
        sweep_id, difficulty, db = self.sweep_id, self.difficulty_combo.currentData(), self.host.db
        if sweep_id is None:  # every caller has a sweep shown or running
            return
        self.analysing = True

        def work() -> None:
            from engine.store import Store
            from engine.sweeps import analyse

            try:
                with Store.open(db, readonly=True) as store:
                    result: Summary | str = analyse(store, sweep_id, spec, difficulty=difficulty)
            except PonderError as e:
                result = str(e)
            except Exception as e:  # a bug: say so in the tab, never a traceback
                result = f"Unexpected error: {type(e).__name__}: {e}"
            try:
                self.analysed.emit(result)
            except RuntimeError:  # the window closed meanwhile: nobody to tell
                pass

        threading.Thread(target=work, name="sweep-analysis", daemon=True).start()

    def _on_analysed(self, result: Summary | str) -> None:
        self.analysing = False
        if isinstance(result, str):
            self.progress_label.setText(result)
        elif result["sweep"]["id"] == self.sweep_id:
            self.show_summary(result)
        if self._pending is not None:
            spec, self._pending = self._pending, None
            self._analyse(spec)

    def _reanalyse(self) -> None:
        if self.sweep_id and not self.busy:
            self.open_sweep(self.sweep_id)

    def show_summary(self, summary: Summary) -> None:
        from engine.sweeps import markdown_table

        self.summary = summary
        self.sweep_id = summary["sweep"]["id"]
        self.accuracy_chart.set_summary(summary)
        self.difficulty_chart.set_summary(summary)
        self.table.setMarkdown(markdown_table(summary, title=False))
        self.export_button.setEnabled(True)

    # --- running ------------------------------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        return self._running_spec is not None

    def start(self, yes: bool = False) -> None:
        """Run or resume the sweep; ``yes``: the user has accepted its cost estimate."""
        bridge = self.host.bridge
        if bridge is None or self.busy:
            return
        if bridge.busy:
            QMessageBox.information(self, "Ponder", "A run is in progress; start the sweep when it ends.")
            return
        try:
            spec = self.spec()  # checked, problem set and offset included
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return
        self._running_spec = spec
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.running.emit(True)
        self.progress.setValue(0)
        self.progress.setFormat("loading the model…")
        self.progress_label.setText("")
        bridge.sweep(self.host.db, spec, self.difficulty_combo.currentData(), yes=yes)

    def cancel(self) -> None:
        if self.busy and self.host.bridge is not None:
            self.host.bridge.cancel()
            self.progress_label.setText("Stopping after the current token… what is done stays saved.")

    def on_progress(self, p: SweepProgress) -> None:
        from engine.sweeps import hms

        if not self.busy:
            return
        self.sweep_id = p.sweep_id
        self.progress.setValue(int(1000 * p.fraction))
        eta = "ETA --:--" if p.eta_s is None else f"ETA {hms(p.eta_s)}"
        self.progress.setFormat(f"{p.done}/{p.total} cells · {p.fraction:.0%} · {eta}")
        text = f"Running {p.current} · {hms(p.elapsed_s)} elapsed"
        if p.failed:
            text += f" · {p.failed} failed (last: {p.last_error})"
        self.progress_label.setText(text)
        if not self._refresh_timer.isActive():  # the charts follow, every few seconds at most
            self._refresh_timer.start()

    def _refresh_running(self) -> None:
        spec = self._running_spec  # set while busy
        if spec is not None and self.sweep_id:
            self._analyse(spec)
            self.refresh()

    def on_done(self, result: SweepResult, summary: Summary) -> None:
        self._finish()
        self.show_summary(summary)
        self.refresh()
        verb = "Stopped" if result.cancelled else "Finished"
        text = f"{verb}: {result.ran} cells run now, {result.skipped} were already saved"
        if result.failed:
            text += f", {result.failed} failed ({result.errors[-1]})"
        if result.cancelled:
            text += ". Run / resume continues it."
        self.progress_label.setText(text + ".")
        self.progress.setFormat(
            f"{summary['problems']['complete']}/{summary['problems']['requested']} problems"
        )

    def on_failed(self, message: str) -> None:
        if self.busy:
            self._finish()
            self.progress.setFormat("failed")
            self.progress_label.setText(message)

    def _finish(self) -> None:
        self._running_spec = None
        self._refresh_timer.stop()
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.running.emit(False)

    # --- a two-model exchange report ---------------------------------------------------------------------

    def _choose_exchange(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "An exchange report", "", "exchange.json (*.json)")
        if path:
            self.open_exchange(path)

    def open_exchange(self, path: str) -> Any:
        """Show an exchange report (``ponder sweep --models``); a file that is not one says so."""
        from engine.sweeps import load_report
        from gui.charts import ExchangeView

        try:
            report = load_report(Path(path).read_text(encoding="utf-8"))
            if not isinstance(report, dict) or "bins" not in report or "small" not in report:
                raise ValueError("not an exchange report")
            view = ExchangeView(report, self)
        except (OSError, ValueError, KeyError, TypeError) as e:
            QMessageBox.warning(self, "Ponder", f"{Path(path).name} is not an exchange report of "
                                f"`ponder sweep --models`: {e}")  # fmt: skip
            return None
        view.show()
        return view

    # --- export ---------------------------------------------------------------------------------------------

    def export(self) -> None:
        if self.summary is None:
            return
        folder = QFileDialog.getExistingDirectory(self, "Write summary.json, summary.md and the charts to")
        if folder:
            self.export_to(folder)

    def export_to(self, folder: str) -> list[Path]:
        from engine.sweeps import write_outputs

        if self.summary is None:  # nothing shown yet (Export is enabled once a summary is)
            return []
        try:
            files = write_outputs(self.summary, folder)
        except PonderError as e:
            QMessageBox.warning(self, "Ponder", str(e))
            return []
        self.progress_label.setText(f"Wrote {len(files)} files to {folder}.")
        return files
