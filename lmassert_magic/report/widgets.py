"""The ipywidgets view of a report: tabs, a constraint filter and pages.

Why pages: a compile can leave thousands of demos and counterexamples; rendering one page at a
time keeps building the widget and switching filters fast. Every HTML widget value is produced by
`report.static_html`, whose templates clean and escape all LM and user text (the `HTML` widget injects its value raw).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import ipywidgets as W

from ..engine.ablation import AblationResult
from ..engine.records import Counterexample
from . import model as M
from . import static_html as H
from .escape import secrets_hidden
from .review_widget import ReviewPanel
from .timeline_widget import TimelineTab

if TYPE_CHECKING:
    from . import CompileReport

T = TypeVar("T")
PAGE_SIZE = 20
ALL = "__all__"


class Pager(W.VBox, Generic[T]):
    """A page of items rendered to HTML, with previous/next buttons and an 'x–y of n' label."""

    def __init__(self, items: Sequence[T], render: Callable[[Sequence[T]], str], page_size: int = PAGE_SIZE,
                 **kwargs: Any) -> None:
        self._items: Sequence[T] = items
        self._render = render
        self.page_size = max(1, page_size)
        self.page = 0
        self.prev_button = W.Button(description="◀ previous", layout=W.Layout(width="auto"))
        self.next_button = W.Button(description="next ▶", layout=W.Layout(width="auto"))
        self.position = W.Label()
        self.body = W.HTML()
        self.prev_button.on_click(lambda _: self.go(self.page - 1))
        self.next_button.on_click(lambda _: self.go(self.page + 1))
        controls = W.HBox([self.prev_button, self.position, self.next_button])
        super().__init__([controls, self.body], **kwargs)
        self.go(0)

    @property
    def pages(self) -> int:
        return max(1, -(-len(self._items) // self.page_size))

    @property
    def items(self) -> Sequence[T]:
        return self._items

    @items.setter
    def items(self, items: Sequence[T]) -> None:
        self._items = items
        self.go(0)

    def go(self, page: int) -> None:
        """Show page `page` (clamped)."""
        self.page = min(max(0, page), self.pages - 1)
        start = self.page * self.page_size
        chunk = self._items[start : start + self.page_size]
        n = len(self._items)
        self.position.value = f"{start + 1}–{start + len(chunk)} of {n}" if n else "0 of 0"
        self.prev_button.disabled = self.page == 0
        self.next_button.disabled = self.page >= self.pages - 1
        with secrets_hidden():
            self.body.value = self._render(chunk)


class ReportWidget(W.VBox):
    """The report as widgets; parts are attributes so tests (and users) can reach them."""

    @M.hiding_secrets
    def __init__(self, result: AblationResult, page_size: int = PAGE_SIZE, report: CompileReport | None = None) -> None:
        self.result = result
        reviewing = report is not None and report.reviewer.available
        rows = M.setting_rows(result)
        comparisons = M.comparisons_frame(result)
        self.banner = W.HTML(H.banner_html(result))
        self.warnings = W.HTML(H.warnings_html(result, rows))
        self.headline = W.HTML(H.headline_html(result))
        self.passrates = W.HTML(H.passrate_table_html(result, rows))
        self.calibration = W.HTML(H.calibration_html(result))
        self.chart = W.HTML(H.chart_svg(result, rows))
        passrate_tab = W.VBox([w for w in (self.passrates, self.calibration, self.chart) if w.value])
        self.comparisons = W.HTML(H.comparisons_html(result, comparisons))
        self.costs = W.HTML(H.costs_table_html(result, rows))
        self.compile = W.HTML(H.compile_html(result, rows))
        costs_tab = W.VBox([self.costs, self.compile])

        # demos: filter by (setting, predictor)
        self._demo_items = [
            (setting, predictor, i, demo)
            for setting, predictor, demos in M.demo_groups(result)
            for i, demo in enumerate(demos)
        ]
        demo_options: list[tuple[str, Any]] = [(f"all ({len(self._demo_items)})", ALL)]
        for setting, predictor, demos in M.demo_groups(result):
            cx = sum(1 for d in demos if "feedback" in d)
            demo_options.append((f"{setting} · {predictor} ({len(demos)}, {cx} from counterexamples)",
                                 (setting, predictor)))
        self.demo_filter = W.Dropdown(options=demo_options, value=ALL, description="demos of")
        self.demo_pager: Pager[Any] = Pager(self._demo_items, H.demos_items_html, page_size)
        self.demo_filter.observe(self._filter_demos, names="value")
        # the compiled program's demos, reviewed by hand (with a program to review)
        self.review = ReviewPanel(report, report.reviewer.name) if reviewing and report is not None else None
        demos_tab = W.VBox([w for w in (self.review, W.HTML("<b>Every setting's demos</b>") if self.review else None,
                                        self.demo_filter, self.demo_pager) if w is not None])

        # counterexamples: filter by constraint and by phase
        self._cx_items = result.all_counterexamples()
        names: dict[str, list[Counterexample]] = {}
        phases: dict[str, int] = {}
        for phase, c in self._cx_items:
            names.setdefault(c.constraint, []).append(c)
            phases[phase] = phases.get(phase, 0) + 1
        self.constraint_filter = W.Dropdown(
            options=[(f"all constraints ({len(self._cx_items)})", ALL)] + [
                (f"{name} ({'hard' if cs[0].hard else 'soft'}; {len(cs)}, {sum(c.fixed for c in cs)} fixed)", name)
                for name, cs in names.items()
            ],
            value=ALL, description="constraint",
        )
        self.phase_filter = W.Dropdown(
            options=[(f"all phases ({len(self._cx_items)})", ALL)] + [(f"{p} ({n})", p) for p, n in phases.items()],
            value=ALL, description="phase",
        )
        self.cx_pager: Pager[Any] = Pager(self._cx_items, H.counterexample_rows_html, page_size)
        self.constraint_filter.observe(self._filter_cx, names="value")
        self.phase_filter.observe(self._filter_cx, names="value")
        cx_tab = W.VBox([W.HBox([self.constraint_filter, self.phase_filter]), self.cx_pager])

        # failed examples
        self._failures = M.failed_examples(result)
        self.failures_pager: Pager[Any] = Pager(self._failures, H.failures_rows_html, page_size)

        self.timeline = TimelineTab(result, on_pin=_pinner(report) if reviewing else None)

        self.tabs = W.Tab(children=[passrate_tab, self.comparisons, costs_tab, demos_tab, cx_tab, self.timeline,
                                    self.failures_pager])
        # short titles: JupyterLab gives each tab a fixed width; the counts are in the filters too
        for i, title in enumerate((
            "Pass rates",
            "Comparisons",
            "Cost & compile",
            f"Demos ({len(self._demo_items)})",
            "Counterexamples",
            "Timeline",
            f"Failures ({len(self._failures)})",
        )):
            self.tabs.set_title(i, title)
        self.title = W.HTML(H.header_html(result))
        children = [w for w in (self.title, self.banner, self.warnings, self.headline) if w.value] + [self.tabs]
        super().__init__(children)
        self.add_class("lmassert-report-widget")

    def refresh_review(self) -> None:
        """Show the report's current review (after a change made anywhere: widget, Python, a cell)."""
        if self.review is not None:
            self.review.refresh()

    def _filter_demos(self, change: dict[str, Any]) -> None:
        want = change["new"]
        self.demo_pager.items = (
            self._demo_items if want == ALL else [d for d in self._demo_items if (d[0], d[1]) == tuple(want)]
        )

    def _filter_cx(self, change: dict[str, Any] | None = None) -> None:
        name, phase = self.constraint_filter.value, self.phase_filter.value
        self.cx_pager.items = [
            (p, c) for p, c in self._cx_items
            if (name == ALL or c.constraint == name) and (phase == ALL or p == phase)
        ]


def _pinner(report: Any) -> Callable[[str, int, int], str]:
    def pin(setting: str, example: int, seq: int) -> str:
        report.pin(example, seq, setting=setting)
        return "; ".join(report.reviewer.notes)

    return pin


def build_widget(result: AblationResult, page_size: int = PAGE_SIZE,
                 report: CompileReport | None = None) -> ReportWidget:
    """Build the ipywidgets UI for `result` (with `report`, its demo review too)."""
    return ReportWidget(result, page_size, report)


__all__ = ["ALL", "PAGE_SIZE", "Pager", "ReportWidget", "build_widget"]
