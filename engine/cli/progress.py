"""Live progress on stderr for the long commands (compare, sweep, bench, sessions rerun, models --get).

On a terminal, a line per strategy redrawn by rich (generations finished of those expected, tokens,
tokens/s, elapsed, an estimate of what is left); a sweep's line shows cells done of total; bench a
line per phase. When stderr is not a terminal, plain lines: one as each run (or cell) ends and one
every :data:`PLAIN_EVERY_S` seconds while it works. Nothing goes to stdout, so ``--json`` output stays
one JSON value. The event sink is called on the worker thread; rich's progress takes a lock per
update and redraws on its own thread (:data:`REFRESH_PER_S`), so no update waits on the terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    ProgressColumn,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.progress import (
    Progress as RichProgress,
)

from engine.events import Event, NodeAdded, NodeFinished, RunFinished, RunStarted, TextDelta
from engine.gguf_info import human_size
from engine.run.request import CompareRequest
from engine.search import registry

if TYPE_CHECKING:  # what the displays are handed
    from engine.hub.transfer import Progress as HubProgress
    from engine.run.scheduler import Run
    from engine.sweeps import SweepProgress

REFRESH_PER_S = 4  # redraws a second on a terminal: the line moves within a second of any change
PLAIN_EVERY_S = 30.0  # off a terminal: a status line this often while runs go on
DOWNLOAD_PLAIN_EVERY_S = 2.0  # off a terminal: a download's line this often
CHARS_PER_TOKEN = 4.0  # for text still streaming (its exact count arrives with its node)


def _console(stream: TextIO | None = None) -> Console:
    return Console(file=stream or sys.stderr, highlight=False, soft_wrap=False)


def is_terminal(stream: TextIO | None = None) -> bool:
    s = stream or sys.stderr
    try:
        return bool(s.isatty())
    except (AttributeError, ValueError):
        return False


class _Live:
    """What the live displays share: rich's progress on the stream's console, redrawn
    :data:`REFRESH_PER_S` times a second, stopped when the ``with`` block ends."""

    stream: TextIO
    _bar: RichProgress | None = None

    def _open(self, *columns: str | ProgressColumn, **options: Any) -> RichProgress:
        self._bar = RichProgress(
            *columns, console=_console(self.stream), refresh_per_second=REFRESH_PER_S, **options
        )
        return self._bar

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class _Strategy:
    """What one strategy has done so far."""

    def __init__(self, name: str, expected: int) -> None:
        self.name = name
        self.expected = max(1, expected)
        self.finished = 0
        self.tokens = 0
        self.streaming: dict[int, int] = {}  # node id -> characters streamed before it is added
        self.started = time.monotonic()
        self.status = ""

    @property
    def shown_tokens(self) -> int:
        return self.tokens + int(sum(self.streaming.values()) / CHARS_PER_TOKEN)

    def left(self) -> str:
        """What is left, from the pace of finished generations (blank until one has finished)."""
        if self.status in ("done", "failed", "cancelled"):
            return self.status
        if not self.finished or self.finished >= self.expected:
            return ""
        el = time.monotonic() - self.started
        s = el / self.finished * (self.expected - self.finished)
        return f"~{_short(s)} left"

    def rate(self) -> float:
        el = time.monotonic() - self.started
        return self.shown_tokens / el if el > 0 else 0.0


def _short(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def expected_candidates(name: str, params: dict[str, Any], budget: int) -> int:
    """The finished candidates (generations) a strategy's run is expected to produce."""
    strat = registry.find(name)
    if strat is not None and strat.candidates is not None:
        try:
            return int(strat.candidates(params))
        except (KeyError, TypeError, ValueError):
            pass
    return budget


class Progress(_Live):
    """The compare's event sink and its live display: ``with Progress.for_compare(req) as sink:``."""

    def __init__(
        self, expected: dict[str, int], live: bool, plain: bool, stream: TextIO | None = None
    ) -> None:
        self.live, self.plain = live, plain
        self.stream = stream or sys.stderr
        self.strategies = {n: _Strategy(n, e) for n, e in expected.items()}
        self._lock = threading.Lock()
        self._last_plain = time.monotonic()
        self._tasks: dict[str, TaskID] = {}

    @classmethod
    def for_compare(
        cls, request: CompareRequest, json: bool = False, stream: TextIO | None = None
    ) -> Progress:
        """Live lines on a terminal (with or without ``--json``: they go to stderr); plain lines
        off a terminal, none with ``--json``."""
        expected = {
            n: expected_candidates(n, dict(request.params.get(n, {})), request.budget)
            for n in request.strategies
        }
        tty = is_terminal(stream)
        return cls(expected, live=tty, plain=not tty and not json, stream=stream)

    # --- the display --------------------------------------------------------------------------------

    def __enter__(self) -> Progress:
        if self.live:
            width = max(len(n) for n in self.strategies) if self.strategies else 8
            bar = self._open(
                SpinnerColumn(finished_text="✓"),
                TextColumn(f"{{task.description:<{width}}}"),
                BarColumn(bar_width=10),
                TextColumn("{task.fields[gens]} gen  {task.fields[tokens]} tok  {task.fields[rate]} tok/s"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[left]}"),
                transient=False,
            )
            for name, s in self.strategies.items():
                self._tasks[name] = bar.add_task(
                    name, total=s.expected, start=False, gens=f"0/{s.expected}", tokens="0", rate="-", left=""
                )
            bar.start()
        return self

    def _show(self, s: _Strategy) -> None:
        if self._bar is None:
            return
        task = self._tasks.get(s.name)
        if task is None:
            return
        self._bar.update(
            task,
            completed=s.expected if s.status == "done" else min(s.finished, s.expected),
            gens=f"{s.finished}/{s.expected}",
            tokens=f"{s.shown_tokens:,}",
            rate=f"{s.rate():.1f}",
            left=s.left(),
        )

    # --- the sink -----------------------------------------------------------------------------------

    def __call__(self, run: Run, ev: Event) -> None:
        name = run.spec.name
        with self._lock:
            s = self.strategies.get(name)
            if s is None:
                s = self.strategies[name] = _Strategy(name, 1)
            if isinstance(ev, RunStarted):
                s.started = time.monotonic()
                s.status = "running"
                if self._bar is not None and name in self._tasks:
                    self._bar.start_task(self._tasks[name])
            elif isinstance(ev, TextDelta):
                s.streaming[ev.node_id] = s.streaming.get(ev.node_id, 0) + len(ev.text)
            elif isinstance(ev, NodeAdded):
                s.streaming.pop(ev.node_id, None)
                s.tokens += ev.n_tokens
            elif isinstance(ev, NodeFinished):
                s.finished += 1
            elif isinstance(ev, RunFinished):
                s.streaming.clear()
                s.tokens = max(s.tokens, ev.generated_tokens)
                s.status = ev.status
                if self.plain:
                    self._write(
                        f"{name} {ev.status} in {ev.wall_s:.1f} s: {s.finished} generations, "
                        f"{s.tokens:,} tokens ({s.tokens / ev.wall_s if ev.wall_s else 0:.1f} tokens/s)"
                    )
            self._show(s)
            if self.plain and time.monotonic() - self._last_plain >= PLAIN_EVERY_S:
                self._write(self.status_line())

    def status_line(self) -> str:
        parts = [
            f"{s.name} {s.finished}/{s.expected} generations, {s.shown_tokens:,} tokens ({s.rate():.1f}/s)"
            for s in self.strategies.values()
        ]
        return "progress: " + "; ".join(parts)

    def _write(self, line: str) -> None:
        self._last_plain = time.monotonic()
        self.stream.write(line + "\n")
        self.stream.flush()


class SweepBar(_Live):
    """A sweep's progress: cells done of total (and generations), elapsed and what is left; the
    callback of :func:`engine.sweeps.run_sweep`."""

    def __init__(self, json: bool = False, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = is_terminal(self.stream)
        self.done = -1
        self._task: TaskID | None = None

    def __enter__(self) -> SweepBar:
        if self.tty:
            bar = self._open(
                SpinnerColumn(),
                TextColumn("sweep"),
                BarColumn(bar_width=24),
                TextColumn("{task.fields[cells]} cells"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[current]}"),
            )
            self._task = bar.add_task("sweep", total=None, cells="-", current="")
            bar.start()
        return self

    def __call__(self, p: SweepProgress) -> None:
        from engine.sweeps import format_progress

        if self._bar is not None and self._task is not None:
            self._bar.update(
                self._task,
                total=p.units_total or 1,
                completed=p.units_done,
                cells=f"{p.done}/{p.total}",
                current=p.current[:40] + (f"  {p.failed} failed" if p.failed else ""),
            )
            if p.last_error:
                self._bar.console.print(f"ponder: {p.last_error}", markup=False)
        else:
            if p.done != self.done or p.last_error:
                self.stream.write(format_progress(p) + "\n")
            if p.last_error:
                self.stream.write(f"ponder: {p.last_error}\n")
            self.stream.flush()
        self.done = p.done


class Phases(_Live):
    """bench's progress: one line per finished phase; on a terminal a live line below them (a
    spinner and the time since the last one) shows it is still working."""

    def __init__(self, show_plain: bool, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = is_terminal(self.stream)
        self.show_plain = show_plain
        self._task: TaskID | None = None

    def __enter__(self) -> Phases:
        if self.tty:
            self._open(
                SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), transient=True
            ).start()
        return self

    def __call__(self, text: str) -> None:
        if self._bar is not None:
            if self._task is not None:
                self._bar.remove_task(self._task)
            self._bar.console.print(text, markup=False, highlight=False)
            self._task = self._bar.add_task("working on the next step")  # its elapsed time ticks
        elif self.show_plain:
            self.stream.write(text + "\n")
            self.stream.flush()


class DownloadBar(_Live):
    """``ponder models --get``: bytes of the total, rate and time left; on a terminal rich's bar (the
    file's name is on the line above it: the bar keeps to what changes, within 80 columns), off one a
    plain line every :data:`DOWNLOAD_PLAIN_EVERY_S` seconds and at each phase. ``update`` is the
    download's ``on_progress``."""

    def __init__(self, name: str, stream: TextIO | None = None) -> None:
        self.name = name
        self.stream = stream or sys.stderr
        self.tty = is_terminal(self.stream)
        self._task: TaskID | None = None
        self._last = 0.0

    def __enter__(self) -> DownloadBar:
        if self.tty:
            bar = self._open(
                TextColumn("{task.description}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            bar.start()
            self._task = bar.add_task("downloading", total=None)
        return self

    def update(self, p: HubProgress) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=p.done, total=p.total, description=f"{p.phase:<11}")
            return
        now = time.monotonic()
        if p.phase == "downloading" and now - self._last < DOWNLOAD_PLAIN_EVERY_S and p.done != p.total:
            return
        self._last = now
        share = f" ({100 * p.done / p.total:.0f}%)" if p.total else ""
        of = f" of {human_size(p.total)}" if p.total else ""
        eta = f", {p.eta:.0f} s left" if p.eta is not None and p.phase == "downloading" else ""
        self.stream.write(
            f"{self.name}: {p.phase}, {human_size(p.done)}{of}{share}, {human_size(int(p.rate))}/s{eta}\n"
        )
        self.stream.flush()
