"""Progress of a `%%compile` run: one bar per setting, advanced per example.

The bars in a notebook are tqdm's notebook bars (`tqdm.notebook`, what `tqdm.auto` picks in a
kernel), which also show the time spent and the time left in the phase. What tqdm does not do stays
here: one tracker over five settings whose events arrive out of order from DSPy's worker threads
(a late event of an earlier phase must not move a bar back), the phases (compiling, then
evaluating, each with its own total), the overall "n/5 settings done" line, stopped settings after
an interrupt, and the plain lines of a headless run: nbconvert keeps every carriage-return redraw of
a terminal bar as text, so a run without a widget frontend prints one line per phase start, quarter
and end instead.

Why so defensive: a progress display must never be the thing that breaks a long compile. So: one
lock around all state, widget updates rate-limited, any display error switches to plain text, and
plain text is the fallback everywhere.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from ..engine.ablation import LABELS, ProgressEvent
from .frontend import widget_frontend_available

#: A widget row is redrawn at most this often (seconds), except on phase changes and at the end.
MIN_INTERVAL = 0.1
_ORDER = {"waiting": 0, "compile": 1, "evaluate": 2}


@dataclass
class SettingProgress:
    """What is known about one setting; the single source both views draw from."""

    key: str
    phase: str = "waiting"  # waiting | compile | evaluate | done | stopped
    done: int = 0
    total: int | None = None
    started: float | None = None
    finished_at: float | None = None
    phase_started: float | None = None  # the clock of the current phase (compiling, then evaluating)
    milestones: set[int] = field(default_factory=set)

    @property
    def label(self) -> str:
        return LABELS.get(self.key, self.key)

    def status(self) -> str:
        if self.phase == "waiting":
            return "waiting"
        if self.phase == "stopped":
            return f"stopped ({self.done}/{self.total if self.total is not None else '?'})"
        if self.phase == "done":
            secs = (self.finished_at or 0) - (self.started or 0)
            return f"done: {self.done} examples in {secs:.1f} s"
        verb = "compiling" if self.phase == "compile" else "evaluating"
        total = "?" if self.total is None else self.total
        return f"{verb} {self.done}/{total}"


class _Tracker:
    """Thread-safe state machine over ProgressEvents; views subclass `draw`."""

    def __init__(self, settings: tuple[str, ...], n_train: int, n_dev: int) -> None:
        self.lock = threading.Lock()
        self.n_train, self.n_dev = n_train, n_dev
        self.rows: dict[str, SettingProgress] = {k: SettingProgress(k) for k in settings}

    def update(self, event: ProgressEvent) -> None:
        with self.lock:
            row = self.rows.get(event.setting)
            if row is None:
                row = self.rows[event.setting] = SettingProgress(event.setting)
                self.added(row)
            if row.phase in ("done", "stopped") or _ORDER.get(event.phase, 1) < _ORDER.get(row.phase, 0):
                return  # late event from a worker thread of an earlier phase
            changed = row.phase != event.phase
            if row.started is None:
                row.started = time.perf_counter()
            if changed:
                row.milestones.clear()
                row.done = 0
                row.phase_started = time.perf_counter()
            row.phase = event.phase
            default_total = self.n_train if event.phase == "compile" else self.n_dev
            row.total = event.total if event.total is not None else default_total
            row.done = max(row.done, event.done) if not changed else event.done
            if event.finished:
                row.phase, row.finished_at = "done", time.perf_counter()
                changed = True
            self.draw(row, force=changed)

    def close(self) -> None:
        """Mark settings that never finished as stopped and draw the final state."""
        with self.lock:
            for row in self.rows.values():
                if row.phase != "done":
                    row.phase = "stopped"
                    self.draw(row, force=True)
            self.finish()

    # views override these (called with the lock held)
    def added(self, row: SettingProgress) -> None:
        pass

    def draw(self, row: SettingProgress, force: bool) -> None:
        pass

    def finish(self) -> None:
        pass


class TextProgress(_Tracker):
    """Plain lines: a setting's phase start, every quarter of a long phase, and its end."""

    def __init__(self, settings: tuple[str, ...], n_train: int, n_dev: int, stream: TextIO | None = None) -> None:
        super().__init__(settings, n_train, n_dev)
        self.stream = stream if stream is not None else sys.stdout
        self.lines: list[str] = []
        n = len(settings)
        self._emit(f"[lmassert] running {n} setting{'s' if n != 1 else ''} on {n_dev} dev examples"
                   f" ({n_train} train)")

    def _emit(self, line: str) -> None:
        self.lines.append(line)
        try:
            print(line, file=self.stream, flush=True)
        except Exception:
            pass

    def draw(self, row: SettingProgress, force: bool) -> None:
        if row.phase == "waiting":
            return
        if force:
            if row.phase == "stopped" and row.started is None:
                self._emit(f"[lmassert] {row.label}: not run")
            else:
                self._emit(f"[lmassert] {row.label}: {row.status()}")
            return
        total = row.total or 0
        if total >= 8 and row.done:
            quarter = 4 * row.done // total
            if 0 < quarter < 4 and quarter not in row.milestones:
                row.milestones.add(quarter)
                self._emit(f"[lmassert] {row.label}: {row.status()}{_pace(row)}")


def _pace(row: SettingProgress) -> str:
    """Time spent in the phase and a linear estimate of the rest: what a headless log reader wants."""
    if row.phase_started is None or not row.done or not row.total:
        return ""
    from tqdm import tqdm

    spent = time.perf_counter() - row.phase_started
    left = spent / row.done * (row.total - row.done)
    return f" ({tqdm.format_interval(spent)} spent, about {tqdm.format_interval(left)} left)"


class WidgetProgress(_Tracker):
    """One ipywidgets row per setting: name, tqdm's bar with the time spent and left, status; an overall
    line on top. `bars` are the rows' progress widgets (tqdm's), `labels` their status labels."""

    def __init__(self, settings: tuple[str, ...], n_train: int, n_dev: int) -> None:
        import ipywidgets as W
        from tqdm.notebook import tqdm as notebook_bar

        super().__init__(settings, n_train, n_dev)
        self._W = W
        self._notebook_bar = notebook_bar
        self._last: dict[str, float] = {}
        self._timed: dict[str, str] = {}  # the phase each setting's clock was started for
        self.title = W.HTML(self._title())
        self.timers: dict[str, Any] = {}  # the tqdm bar of each setting: it keeps the phase's clock
        self.bars: dict[str, Any] = {}
        self.labels: dict[str, Any] = {}
        self.box = W.VBox([self.title] + [self._make_row(r) for r in self.rows.values()])
        self.box.add_class("lmassert-progress")

    def _title(self) -> str:
        done = sum(1 for r in self.rows.values() if r.phase == "done")
        return f"<b>lmassert</b>: {done}/{len(self.rows)} settings done · {self.n_dev} dev examples"

    def _make_row(self, row: SettingProgress) -> Any:
        W = self._W
        timer = self._notebook_bar(total=max(1, self.n_dev), display=False, leave=True, mininterval=MIN_INTERVAL,
                                   bar_format="{bar}{elapsed} spent, {remaining} left")
        timer.container.layout.width = "420px"
        status = W.Label(row.status())
        self.timers[row.key], self.bars[row.key], self.labels[row.key] = timer, timer.container.children[1], status
        return W.HBox([W.Label(row.label, layout=W.Layout(width="150px")), timer.container, status])

    def added(self, row: SettingProgress) -> None:
        self.box.children = (*self.box.children, self._make_row(row))

    def draw(self, row: SettingProgress, force: bool) -> None:
        now = time.perf_counter()
        if not force and now - self._last.get(row.key, 0.0) < MIN_INTERVAL:
            return
        self._last[row.key] = now
        timer, bar, status = self.timers[row.key], self.bars[row.key], self.labels[row.key]
        total = max(1, row.total or 1)
        if bar.max != total:
            bar.max = total
        if row.phase in ("compile", "evaluate") and self._timed.get(row.key) != row.phase:
            self._timed[row.key] = row.phase
            timer.reset(total=total)  # a new phase: its own total and clock
        timer.n = min(row.done, total)
        timer.refresh()
        bar.value = min(row.done, total)
        bar.bar_style = {"compile": "info", "evaluate": "", "done": "success", "stopped": "warning"}.get(row.phase, "")
        status.value = row.status()
        self.title.value = self._title()

    def finish(self) -> None:
        for timer in self.timers.values():  # stop the clocks (tqdm's close), then draw the final state
            with contextlib.suppress(Exception):
                timer.close()
        for row in self.rows.values():  # also flushes rows whose last update was rate-limited
            self.draw(row, force=True)
        self.title.value = self._title()


def _make_view(settings: tuple[str, ...], n_train: int, n_dev: int, mode: str) -> _Tracker:
    if mode == "off":
        return _Tracker(settings, n_train, n_dev)
    if mode == "widget" or (mode == "auto" and widget_frontend_available()):
        try:
            view = WidgetProgress(settings, n_train, n_dev)
            from IPython.display import display

            display(view.box)
            return view
        except Exception:
            pass
    return TextProgress(settings, n_train, n_dev)


@contextmanager
def progress_reporter(
    settings: tuple[str, ...], n_train: int, n_dev: int, *, mode: str = "auto"
) -> Iterator[Callable[[ProgressEvent], None]]:
    """Yield a callback for `run_ablation(progress=...)` that draws per-setting, per-example progress.

    `mode`: 'auto' (widgets in a Jupyter kernel, else text), 'widget', 'text' or 'off'. The
    callback is thread-safe and never raises; a failing widget falls back to text lines.
    """
    settings = tuple(settings)
    view = _make_view(settings, n_train, n_dev, mode)
    state = {"view": view}

    def callback(event: ProgressEvent) -> None:
        try:
            state["view"].update(event)
        except Exception:
            # The widget stack failed mid-run: carry on in text, from the state we had.
            old = state["view"]
            if isinstance(old, TextProgress):
                return
            text = TextProgress(settings, n_train, n_dev)
            with old.lock:
                text.rows = old.rows
            state["view"] = text
            try:
                text.update(event)
            except Exception:
                pass

    callback.view = view  # type: ignore[attr-defined]  # for tests and callers that want the widget
    try:
        yield callback
    finally:
        try:
            state["view"].close()
        except Exception:
            pass


__all__ = ["MIN_INTERVAL", "SettingProgress", "TextProgress", "WidgetProgress", "progress_reporter"]
