"""The compare form's two bars: the problem (typed, or picked from a problem set, with its
reference answer) and the strategy controls (one check box and ⚙ menu per registered strategy,
then the budget, PRM, max tokens and seeds, and Run / Cancel). Both fill a Qt-free
:class:`gui.form.CompareForm`."""

from __future__ import annotations

import random
from typing import Any

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGridLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QMenu,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QToolButton,
    QVBoxLayout,
    QWidget,
    QWidgetAction,
)

from engine.errors import PonderError
from engine.prm import registry as prm_kinds
from engine.search import registry
from gui.form import CompareForm

DEFAULT_PROBLEM = (
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?"
)
PROBLEM_SETS = {"GSM8K": "gsm8k", "MATH-500": "math500"}
MAX_BUDGET = 256  # generations; past the sequences decoded at once they wait their turn


def param_widget(param: registry.Param) -> QWidget:
    """An editor for one strategy parameter, set to its default."""
    if param.kind == "choice":
        w: Any = QComboBox()
        w.addItems(list(param.options()))
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
    if isinstance(w, (QSpinBox, QDoubleSpinBox)):
        return w.value()
    raise TypeError(f"not a parameter editor: {type(w).__name__}")  # param_widget makes only these


STRATEGIES_PER_ROW = 5  # checkboxes in a row of the strategy picker


class ProblemBar(QWidget):
    """The problem text, a problem-set picker (set, index, Random) and the reference answer."""

    message = Signal(str)  # what went wrong loading a problem, for the status bar

    def __init__(self) -> None:
        super().__init__()
        pbar = QHBoxLayout(self)
        pbar.setContentsMargins(0, 0, 0, 0)
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
        self.random_button.clicked.connect(self.random_problem)
        self.set_combo.currentIndexChanged.connect(self.load_problem)
        self.index_spin.valueChanged.connect(self.load_problem)

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
            self.message.emit(str(e))
            return
        self.prompt.setPlainText(p.question)
        self.reference.setText(p.reference)

    def random_problem(self) -> None:
        if self.set_combo.currentText() not in PROBLEM_SETS:
            self.set_combo.setCurrentIndex(1)
        self.index_spin.setValue(random.randrange(self.index_spin.maximum() + 1))
        self.load_problem()

    def set_problem(self, problem: str, reference: str | None) -> None:
        self.prompt.setPlainText(problem)
        self.reference.setText(reference or "")


class StrategyControls(QWidget):
    """One row of strategies (generated from the strategy registry, each with its ⚙ beside it),
    then the run's settings and Run / Cancel."""

    run_requested = Signal()
    cancel_requested = Signal()

    def __init__(self) -> None:
        super().__init__()
        col = QVBoxLayout(self)
        col.setContentsMargins(0, 0, 0, 0)
        # the strategies in rows of STRATEGIES_PER_ROW (a checkbox and its ⚙ each), so that more
        # strategies add a row, not width: the window still fits a 1600-pixel screen (and less)
        picks = QGridLayout()
        picks.setHorizontalSpacing(4)
        picks.setVerticalSpacing(2)
        picks.addWidget(QLabel("Strategies"), 0, 0)
        self.strategy_boxes: dict[str, QCheckBox] = {}
        self.strategy_params: dict[str, dict[str, Any]] = {}
        for k, strat in enumerate(registry.strategies()):
            box = QCheckBox(strat.label)
            box.setChecked(strat.default)
            box.setToolTip(strat.summary)
            self.strategy_boxes[strat.name] = box
            cell = QHBoxLayout()
            cell.setSpacing(4)
            cell.setContentsMargins(10, 0, 0, 0)
            cell.addWidget(box)
            cell.addWidget(self._params_button(strat))
            cell.addStretch(1)
            picks.addLayout(cell, k // STRATEGIES_PER_ROW, 1 + k % STRATEGIES_PER_ROW)
        picks.setColumnStretch(STRATEGIES_PER_ROW + 1, 1)
        col.addLayout(picks)
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
        for kind in prm_kinds.listed():
            self.prm_combo.addItem(kind.label, kind.name)
            self.prm_combo.setItemData(self.prm_combo.count() - 1, kind.summary, Qt.ItemDataRole.ToolTipRole)
        # A PRM file's or a PRM server's name is long: room for most of it, the whole in the tooltip
        self.prm_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.prm_combo.setMinimumContentsLength(28)
        self.prm_combo.currentTextChanged.connect(self.prm_combo.setToolTip)
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
        col.addLayout(controls)
        self.run_button.clicked.connect(self.run_requested.emit)
        self.cancel_button.clicked.connect(self.cancel_requested.emit)

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
        self.strategy_params[strat.name] = widgets
        action = QWidgetAction(self)
        action.setDefaultWidget(host)
        menu = QMenu(self)
        menu.addAction(action)
        button = QToolButton()
        button.setText("⚙")
        button.setToolTip(f"{strat.label}: parameters")
        button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        button.setMenu(menu)
        button.setAutoRaise(True)
        return button

    def strategies(self) -> list[str]:
        return [k for k, box in self.strategy_boxes.items() if box.isChecked()]

    def overrides(self) -> dict[str, dict[str, Any]]:
        """The strategies' parameters as set in their ⚙ menus (only what differs from the default)."""
        out: dict[str, dict[str, Any]] = {}
        for key, widgets in self.strategy_params.items():
            strat = registry.get(key)
            o: dict[str, Any] = {}
            for name, w in widgets.items():
                v = widget_value(w)
                if v != strat.param(name).default:  # type: ignore[union-attr]  # the widgets are the strategy's own params
                    o[name] = v
            if o:
                out[key] = o
        return out

    def set_prms(self, prms: list) -> None:
        """The built-in scorers, then every token-PRM GGUF the catalog recognises, then the reward
        models on servers."""
        self._prm_files = list(prms)
        self._fill_prms()

    def set_prm_servers(self, servers: list[dict[str, Any]]) -> None:
        """Reward models on servers (vLLM's pooling API), as ``KIND@URL`` in the PRM list (the
        classification-head kind's name)."""
        self._prm_servers = list(servers)
        self._fill_prms()

    def _fill_prms(self) -> None:
        listed = prm_kinds.listed()
        current = self.prm_combo.currentData() or self.prm_combo.currentText() or listed[0].name
        self.prm_combo.blockSignals(True)
        self.prm_combo.clear()
        for kind in listed:
            self.prm_combo.addItem(kind.label, kind.name)
            self.prm_combo.setItemData(self.prm_combo.count() - 1, kind.summary, Qt.ItemDataRole.ToolTipRole)
        for e in getattr(self, "_prm_files", []):
            self.prm_combo.addItem(f"PRM: {e.info.name} · {e.info.quantization}", e.path)
        head = prm_kinds.head_kind()
        if head is not None:
            for srv in getattr(self, "_prm_servers", []):
                self.prm_combo.addItem(
                    f"PRM: {srv['model']} ({head.label}) @ {srv['url']}", f"{head.name}@{srv['url']}"
                )
        i = self.prm_combo.findData(current)
        self.prm_combo.setCurrentIndex(max(i, 0))
        self.prm_combo.blockSignals(False)

    def prm(self) -> str:
        return self.prm_combo.currentData() or self.prm_combo.currentText()

    def show_settings(self, settings: dict[str, Any]) -> None:
        """An opened session's settings in the form (strategies, budget, PRM, tokens, seeds), so
        that Run runs it again as it was; what a session does not say is left as it is."""
        names = settings.get("strategies")
        if isinstance(names, list) and names:
            for name, box in self.strategy_boxes.items():
                box.setChecked(name in names)
        if settings.get("budget_tokens"):
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("tokens"))
            self.budget_spin.setValue(int(settings["budget_tokens"]))
        elif isinstance(settings.get("budget"), int):
            self.budget_kind.setCurrentIndex(self.budget_kind.findData("generations"))
            self.budget_spin.setValue(int(settings["budget"]))
        if isinstance(settings.get("max_tokens"), int):
            self.tokens_spin.setValue(int(settings["max_tokens"]))
        if isinstance(settings.get("seed"), int):
            self.seed_spin.setValue(int(settings["seed"]))
        i = self.seeds_combo.findData(settings.get("seeds"))
        if i >= 0:
            self.seeds_combo.setCurrentIndex(i)
        i = self.prm_combo.findData(settings.get("prm"))
        if i >= 0:
            self.prm_combo.setCurrentIndex(i)

    def set_running(self, running: bool) -> None:
        self.run_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def form(self, problem: ProblemBar) -> CompareForm:
        strategies = self.strategies()
        return CompareForm(
            problem=problem.prompt.toPlainText(),
            strategies=strategies,
            budget=self.budget_spin.value(),
            prm=self.prm(),
            reference=problem.reference.text().strip() or None,
            budget_kind=self.budget_kind.currentData(),
            max_tokens=self.tokens_spin.value(),
            seed=self.seed_spin.value(),
            seeds=self.seeds_combo.currentData(),
            overrides={k: v for k, v in self.overrides().items() if k in strategies},
        )
