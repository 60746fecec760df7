"""The compare's panels: one per strategy (grouped by model when two models race), each a trace
with a header and a footer; beside them the node detail pane, in a splitter that remembers its
width; below them the score legend and the replay timeline. Replaying an opened session folds its
events into the panels here."""

from __future__ import annotations

from typing import Any

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from engine.events import Event, NodeAdded, TextDelta, Trace
from engine.present import human_flops
from engine.search import registry
from gui.detail import node_html
from gui.offload import Offload
from gui.theme import ON_TINT, colours
from gui.trace_view import TraceView, answer_ids, card_notes, drawn_as, exact_groups, score_qcolor
from gui.tree_layout import equivalent_groups

DETAIL_CHARS = 60  # the detail pane's default width, in characters of its font


class RunPanel(QFrame):
    """One strategy: a header, its trace, a footer with the chosen answer and the counts."""

    def __init__(self, strategy: str, offload: Offload | None = None, model: str | None = None) -> None:
        super().__init__()
        self.strategy = strategy
        self.model = model
        self.offload = offload
        self.setObjectName("runPanel")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.header = QLabel(f"<b>{registry.label(strategy)}</b>")
        self.view = TraceView()
        self.view.setMinimumSize(220, 240)
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
        self._groups: dict[tuple[str, ...], list[int]] = {}  # answers -> equivalence classes

    def reset(self) -> None:
        self.trace = Trace()
        self.live = {}
        self.run_id = None
        self.view.reset()

    def apply(self, ev: Event) -> None:
        if isinstance(ev, TextDelta):
            self.live[ev.node_id] = self.live.get(ev.node_id, "") + ev.text
            return
        if self.run_id is None:
            self.run_id = ev.run_id
        self.trace.apply(ev)
        if isinstance(ev, NodeAdded):
            self.live.pop(ev.node_id, None)

    def _notes(self) -> dict[int, str] | None:
        """Best-of-N cards: each answer and its votes. Whether two answers are one (math-verify) is
        asked off the GUI thread; until it is back, answers are grouped by their text."""
        if drawn_as(self.strategy) != "column":
            return None
        _ids, answers = answer_ids(self.trace)
        key = tuple(answers)
        groups = self._groups.get(key)
        if groups is None:
            groups = self._groups[key] = exact_groups(answers)  # asked once per set of answers
            if self.offload is not None:

                def back(result: Any, key: tuple[str, ...] = key) -> None:
                    if isinstance(result, list):
                        self._groups[key] = result
                        self.redraw()

                self.offload.submit(lambda: equivalent_groups(list(key)), back)
        return card_notes(self.trace, groups)

    def redraw(self) -> None:
        self.view.show_trace(self.trace, self.strategy, self.live, self._notes())
        st = self.trace.started
        if st is not None:
            strat = registry.find(self.strategy)
            keys = strat.shown if strat is not None else ("n",)
            params = ", ".join(f"{k}={st.params[k]}" for k in keys if k in st.params)
            old = "token_budget"  # in sessions recorded before the name was one
            tokens = st.params.get("budget_tokens") or st.params.get(old)
            if tokens:
                params += f" · at most {tokens} tokens"
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
                f"{rate:.0f} tok/s · {human_flops(fin.policy_flops + fin.prm_flops)}{self._spent_note()}"
            )
        self._show_progress()

    def _spent_note(self) -> str:
        """ " · spent 8 of 16 generations" for a strategy whose budget is a maximum (adaptive
        best-of-N stops when its vote is settled); "" for the others, which spend their budget."""
        strat = registry.find(self.strategy)
        st = self.trace.started
        if strat is None or st is None or not strat.budget_is_maximum:
            return ""
        try:
            budget = int(strat.cost(st.params))
        except (KeyError, TypeError, ValueError):
            return ""
        return f" · spent {strat.generations_spent(self.trace, st.params)} of {budget} generations"

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
        text += self._spent_note()
        if status != "done":
            text += f" · <i>{status}</i>"
        self.footer.setText(text)


def legend_html() -> str:
    return (
        "PRM score: "
        + "".join(
            f"<span style='background:{score_qcolor(s).name()};color:{ON_TINT}'>&nbsp;{s:.1f}&nbsp;</span>"
            for s in (0.0, 0.25, 0.5, 0.75, 1.0)
        )
        + f" &nbsp; <span style='background:#ececec;color:{ON_TINT}'>&nbsp;unscored&nbsp;</span>"
        + f" &nbsp; <b style='color:{colours()['chosen']}'>▭</b> chosen path &nbsp; faded: pruned"
        + " (click a “+N pruned” stub to show them)"
    )


class PanelArea(QWidget):
    """Panels side by side (a titled group per model when there are two), the detail pane in a
    splitter beside them, the legend and the replay timeline below."""

    position = Signal(int)  # the timeline moved: show the opened session up to this event

    def __init__(self, settings: Any, offload: Offload | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.offload = offload
        self.panels: dict[str, RunPanel] = {}
        root = QVBoxLayout(self)
        root.setContentsMargins(0, 0, 0, 0)
        self.split = QSplitter(Qt.Orientation.Horizontal)
        self.split.setObjectName("detailSplit")
        self.panel_host = QWidget()
        self.panel_row = QHBoxLayout(self.panel_host)
        self.panel_row.setContentsMargins(0, 0, 0, 0)
        self.split.addWidget(self.panel_host)
        self.detail = QTextBrowser()
        self.detail.setPlaceholderText("Click a node to see its text and step scores.")
        self.detail.setMinimumWidth(160)
        self.split.addWidget(self.detail)
        self.split.setStretchFactor(0, 1)
        self.split.setStretchFactor(1, 0)
        self.split.setCollapsible(0, False)
        self.split.splitterMoved.connect(self._save_width)
        root.addWidget(self.split, 1)
        self._width = self._saved_width()
        tl = QHBoxLayout()
        self.legend = QLabel(legend_html())
        tl.addWidget(self.legend)
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
        self._play_timer = QTimer(self, interval=60)
        self._play_timer.timeout.connect(self._play_step)
        self.timeline.valueChanged.connect(self.position.emit)
        self.play_button.clicked.connect(self.toggle_play)

    # --- the detail pane's width ----------------------------------------------------------------

    def default_detail_width(self) -> int:
        return self.detail.fontMetrics().averageCharWidth() * DETAIL_CHARS + 36

    def _saved_width(self) -> int:
        try:
            w = int(self.settings.value("detail_width", 0) or 0)
        except (TypeError, ValueError):
            w = 0
        return w if w >= 160 else self.default_detail_width()

    def detail_width(self) -> int:
        return self.split.sizes()[1] if self.split.width() > 0 and self.isVisible() else self._width

    def _save_width(self, *_: Any) -> None:
        self._width = self.split.sizes()[1]
        self.settings.setValue("detail_width", self._width)

    def showEvent(self, event: Any) -> None:  # noqa: N802 - Qt's name
        super().showEvent(event)
        total = sum(self.split.sizes()) or self.split.width()
        if total > 0:
            w = min(self._width, max(160, total - 240))
            self.split.setSizes([total - w, w])

    # --- panels ---------------------------------------------------------------------------------

    def make_panels(self, groups: list[tuple[str | None, list[str]]]) -> dict[str, RunPanel]:
        """New panels: ``groups`` is [(model label or None, strategies)]; with one group the panels
        are keyed by strategy, with more by "model label: strategy"."""
        for p in self.panels.values():
            p.setParent(None)
            p.deleteLater()
        while self.panel_row.count():
            item = self.panel_row.takeAt(0)
            widget = item.widget() if item is not None else None
            if widget is not None:
                widget.setParent(None)
                widget.deleteLater()
        self.panels = {}
        for label, strategies in groups:
            host: QWidget = self.panel_host
            row = self.panel_row
            if len(groups) > 1:
                box = QFrame()
                box.setObjectName("modelGroup")
                box.setFrameShape(QFrame.Shape.StyledPanel)
                col = QVBoxLayout(box)
                col.setContentsMargins(4, 4, 4, 4)
                title = QLabel(f"<b>{label}</b>")
                title.setObjectName("modelGroupTitle")
                col.addWidget(title)
                row = QHBoxLayout()
                col.addLayout(row, 1)
                self.panel_row.addWidget(box, len(strategies))
                host = box
            for s in strategies:
                panel = RunPanel(s, self.offload, label)
                panel.setParent(host)
                panel.view.node_clicked.connect(lambda nid, p=panel: self.show_node(p, nid))
                strat = registry.find(s)  # trees get more width than a column of cards
                row.addWidget(panel, 3 if strat is not None and strat.drawn_as == "tree" else 2)
                self.panels[s if len(groups) == 1 else f"{label}: {s}"] = panel
        return self.panels

    def show_node(self, panel: RunPanel, nid: int) -> None:
        html = node_html(panel.trace, panel.strategy, nid)
        if html:
            self.detail.setHtml(html)

    # --- replay ---------------------------------------------------------------------------------

    def set_replay(self, n_events: int) -> None:
        self.timeline.blockSignals(True)
        self.timeline.setRange(0, n_events)
        self.timeline.setValue(n_events)
        self.timeline.blockSignals(False)
        self.timeline.setEnabled(n_events > 0)
        self.play_button.setEnabled(n_events > 0)

    def clear_replay(self) -> None:
        self.stop_replay()
        self.timeline.setEnabled(False)
        self.play_button.setEnabled(False)
        self.timeline_label.setText("")

    def toggle_play(self) -> None:
        if self._play_timer.isActive():
            self.stop_replay()
            return
        if self.timeline.value() >= self.timeline.maximum():
            self.timeline.setValue(0)
        self.play_button.setText("Pause")
        self._play_timer.start()

    def _play_step(self) -> None:
        if self.timeline.value() >= self.timeline.maximum():
            self.stop_replay()
            return
        self.timeline.setValue(self.timeline.value() + 1)
        if self.timeline.value() >= self.timeline.maximum():
            self.stop_replay()

    def stop_replay(self) -> None:
        self._play_timer.stop()
        self.play_button.setText("Play")
