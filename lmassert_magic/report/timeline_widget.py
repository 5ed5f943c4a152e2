"""The widget's Timeline tab: pick a setting and an example (failing ones first), read every attempt.

Why a tab of its own: a report's tables say how often a constraint failed; this says how one example
got from its first output to the one it returned. The body is `timeline.TimelineView.html`, the
fragment the static report and `%lmassert trace` show. With a review (`on_pin`), an attempt can be
pinned as a demo of its step.
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as W

from ..engine.ablation import LABELS, AblationResult
from ..engine.timeline import default_setting, example_summary, find_example, find_setting, trouble_order
from .escape import clean, secrets_hidden
from .static_html import text_html
from .timeline import TimelineView

#: on_pin(setting key, example index, attempt seq) -> a line saying what happened (raises on a bad pin).
PinHandler = Callable[[str, int, int], str]


class TimelineTab(W.VBox):
    """Setting and example pickers, the timeline, and (with a review) a control to pin an attempt as a demo."""

    def __init__(self, result: AblationResult, on_pin: PinHandler | None = None) -> None:
        self.result = result
        self.on_pin = on_pin
        keys = list(result.settings)
        self.setting = W.Dropdown(options=[(LABELS.get(k, k), k) for k in keys],
                                  value=default_setting(result) if keys else None, description="setting")
        self.example = W.Dropdown(options=[], description="example", layout=W.Layout(width="auto"))
        self.body = W.HTML()
        self.attempt = W.Dropdown(options=[], description="attempt", layout=W.Layout(width="auto"))
        self.pin_button = W.Button(description="Pin as a demo", layout=W.Layout(width="auto"),
                                   tooltip="add this attempt's inputs and outputs to its step's demos in the program")
        self.pin_status = W.HTML()
        self.pin_button.on_click(lambda _: self._pin())
        self.setting.observe(lambda _: self._fill_examples(), names="value")
        self.example.observe(lambda _: self._show(), names="value")
        pin_row = W.HBox([self.attempt, self.pin_button, self.pin_status])
        children: list[W.Widget] = [W.HBox([self.setting, self.example]), self.body]
        if on_pin is not None:
            children.append(pin_row)
        super().__init__(children)
        self.add_class("lmassert-timeline-tab")
        self._fill_examples()

    def _fill_examples(self) -> None:
        if self.setting.value is None:
            self.body.value = "<p><em>No setting ran.</em></p>"
            return
        res = find_setting(self.result, self.setting.value)
        with secrets_hidden():  # the labels are plain text (no HTML), but can quote a constraint's name
            options = [(clean(example_summary(e)), e.index) for e in trouble_order(res)]
        self.example.unobserve_all("value")
        self.example.options = options
        self.example.value = options[0][1] if options else None
        self.example.observe(lambda _: self._show(), names="value")
        self._show()

    def _show(self) -> None:
        self.pin_status.value = ""
        if self.setting.value is None or self.example.value is None:
            self.body.value, self.attempt.options = "", []
            return
        res = find_setting(self.result, self.setting.value)
        view = TimelineView.of(res, find_example(res, self.example.value))
        self.body.value = view.html()
        with secrets_hidden():
            self.attempt.options = [
                (clean(f"#{r.attempt.seq} {r.attempt.step} · attempt {r.attempt.attempt}"
                       + (" · kept" if r.attempt.kept else "")), r.attempt.seq)
                for r in view.rows if not r.attempt.error
            ]
        kept = [seq for label, seq in self.attempt.options if label.endswith("kept")]
        if kept:
            self.attempt.value = kept[-1]

    def _pin(self) -> None:
        if self.on_pin is None or self.attempt.value is None:
            return
        try:
            message = self.on_pin(self.setting.value, self.example.value, self.attempt.value)
        except Exception as exc:  # a pin the program cannot take: say why, change nothing
            message = f"not pinned: {exc}"
        self.pin_status.value = text_html(message)


__all__ = ["PinHandler", "TimelineTab"]
