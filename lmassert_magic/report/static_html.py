"""The static HTML report: self-contained markup built from Jinja2 templates (`report/templates/`).

Why static: nbconvert exports, GitHub's notebook view and a terminal IPython have no widget
frontend, so the report must read completely without one. The HTML uses no script, no external
asset and no <style> block (sanitisers strip those); the chart is inline SVG.

Why templates with autoescape: every `{{ value }}` is cleaned (keys blanked, hidden characters
shown: `escape.clean`) and HTML-escaped by the environment's `finalize`, so escaping is the default
and no section writes user text by hand. Each section function here prepares the numbers from
`report.model` and calls one template macro; the widget shows the same fragments.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from markupsafe import Markup

from ..engine.ablation import ALL_CONSTRAINTS, AblationResult
from ..engine.records import ConstraintStats, Counterexample
from ..engine.review import DemoReview
from ..engine.stats import Rate
from ..engine.timeline import in_trouble, retried
from .environment import ALL_COLOR, ENV, HARD_COLOR, SOFT_COLOR, TEXT_LIMIT, template_module
from .model import (
    SettingRow,
    calibration_of,
    comparison_cells,
    comparisons_frame,
    config_text,
    demo_groups,
    failed_examples,
    hiding_secrets,
    measure_infos,
    measure_names,
    metric_text,
    missing_settings,
    number,
    percent,
    report_title,
    setting_rows,
    summary_lines,
    warning_lines,
)
from .review import review_html
from .timeline import timelines_html

#: Rows shown per group (constraint, predictor, setting) in the static HTML; the rest are counted.
ROW_LIMIT = 25

COMPARISON_COLUMNS = ("comparison", "measure", "base", "setting", "difference", "95% CI", "n", "changed", "exact p",
                      "verdict")


_PARTS = template_module("parts.html")
_SECTIONS = template_module("sections.html")
_ITEMS = template_module("items.html")
_CHART = template_module("chart.svg")
_REPORT = ENV.get_template("report.html")


# ------------------------------------------------------------------------------------------- small parts


def text_html(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Cleaned, escaped text; past `limit` characters the rest sits behind a <details> expand control."""
    return str(_PARTS.text(value, limit))


def fields_html(fields: Mapping[str, Any] | None, limit: int = TEXT_LIMIT, skip: Iterable[str] = ()) -> str:
    """A small name/value table for a dict of fields."""
    return str(_PARTS.fields(fields, limit, tuple(skip)))


def kind_badge(hard: bool | None) -> str:
    """A small 'hard · Assert' / 'soft · Suggest' tag; `None` is the "all constraints" measure."""
    return str(_PARTS.kind_badge(hard))


def rate_cell_html(rate: Rate) -> str:
    """A rate with its interval and n under it (the text is `str(rate)`, the engine's wording)."""
    return str(_PARTS.rate_cell(rate))


# ------------------------------------------------------------------------------------------- sections


def banner_html(result: AblationResult) -> str:
    """Says loudly when the result is partial: an interrupted run or settings that never finished."""
    notes = []
    missing = missing_settings(result)
    if result.interrupted:
        what = f" — not run: {', '.join(missing)}" if missing else ""
        notes.append(f"Interrupted: this is a partial result{what}.")
    elif missing:
        notes.append(f"Partial result — not run: {', '.join(missing)}.")
    incomplete = [r.label for r in result.settings.values() if not r.complete]
    if incomplete:
        notes.append(f"Stopped part-way: {', '.join(incomplete)}.")
    return str(_SECTIONS.banner(notes))


def warnings_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """What a reader must not miss (`model.warning_lines`), in an amber box."""
    return str(_SECTIONS.warnings(warning_lines(result, rows)))


def header_html(result: AblationResult) -> str:
    """The title, then the seed and the run's configuration."""
    return str(_SECTIONS.header(report_title(result), config_text(result)))


def headline_html(result: AblationResult, lines: Sequence[str] | None = None) -> str:
    """The generated sentences; those the engine calls noise are greyed (the words still say so)."""
    lines = summary_lines(result) if lines is None else lines
    groups: list[list[str]] = [[]]
    for line in lines:  # the engine ends each pair's sentences with its cost line: one list per pair
        groups[-1].append(line)
        if line.startswith("cost:"):
            groups.append([])
    return str(_SECTIONS.headline([g for g in groups if g]))


def _cell_tip(name: str, rate: Rate, s: ConstraintStats | None) -> str:
    """Examples and checks apart: the rate is per example, check counts are raw."""
    if not rate.n:
        tip = "never checked"
    elif name == ALL_CONSTRAINTS:
        tip = (f"{rate.successes} of {rate.n} examples: the returned output satisfies every constraint checked "
               "on it (an example that raised satisfies none)")
    else:
        tip = f"examples: {rate.successes} of {rate.n} pass on the returned output"
        if s is not None:
            tip += f" ({s.passed_first} of {s.examples} on the first try)"
            tip += (f"; checks: {s.final_passes} of {s.checks} passed ({s.first_try_passes} first try, "
                    f"{s.passes_after_backtrack} after backtracking), {s.backtracks} backtracks, {s.errors} errors")
    if s and s.errors:  # the constraint's own code failed: say so here, not just 'n/a'
        tip += f"; the check itself failed {s.errors} time(s) (see the failed examples)"
    return tip


def passrate_table_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Settings × (metric, each constraint's pass rate, all constraints, examples), each with n and a 95% CI."""
    rows = setting_rows(result) if rows is None else rows
    measures = measure_infos(result)
    columns = [(c, calibration_of(result, c.name)) for c in measures]
    table = []
    for r in rows:
        head, _, tail = metric_text(r).partition(" (")
        cells = []
        for c in measures:
            rate, s = r.rates[c.name], r.stats.get(c.name)
            cells.append((rate, _cell_tip(c.name, rate, s), s.errors if s else 0))
        table.append((r, head, tail, cells))
    return str(_SECTIONS.passrates(result.metric_name, columns, table))


def calibration_html(result: AblationResult) -> str:
    """Each calibrated judge's agreement with labelled items, in the engine's words; at chance in red."""
    return str(_SECTIONS.calibration(getattr(result, "calibrations", None) or {}))


def comparisons_html(result: AblationResult, frame: Any = None) -> str:
    """Paired differences per like-with-like pair (the engine's `comparisons()`), noise said in words."""
    frame = comparisons_frame(result) if frame is None else frame
    rows = []
    if frame is not None and len(frame):
        measures = set(measure_names(result))
        rows = [(comparison_cells(result, row, measures), not row["distinguishable"]) for _, row in frame.iterrows()]
    return str(_SECTIONS.comparisons(COMPARISON_COLUMNS, rows))


def costs_table_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Per dev example, counted the same way in every setting: LM calls, cache hits, judge calls, tokens; seconds."""
    return str(_SECTIONS.costs(setting_rows(result) if rows is None else rows))


def compile_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Per compiled setting: training examples that failed and why, demos dropped, where counterexamples show."""
    rows = setting_rows(result) if rows is None else rows
    return str(_SECTIONS.compile([r for r in rows if r.compile is not None]))


def chart_svg(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Grouped horizontal bars per measure and the metric, a 95% interval whisker on each bar; inline SVG.

    The whisker spans the engine's interval (Wilson for rates).
    """
    rows = setting_rows(result) if rows is None else rows
    if not rows:
        return ""
    return str(_CHART.chart(_chart_layout(result, rows)))


def _chart_layout(result: AblationResult, rows: Sequence[SettingRow]) -> dict[str, Any]:
    """Where every legend entry, group and bar goes (the template only draws)."""
    label_w, bar_w, value_w = 170, 300, 60
    width = label_w + bar_w + value_w
    bar_h, gap, group_gap, head_h = 13, 3, 10, 18
    # (title, kind, [(value, low, high, tooltip value)] per row)
    groups: list[tuple[str, str, list[tuple[float, float, float, str]]]] = [
        (f"metric: {result.metric_name}", "metric",
         [(r.metric, r.metric_low, r.metric_high, metric_text(r)) for r in rows])
    ]
    for c in measure_infos(result):
        values = []
        for r in rows:
            rate = r.rates[c.name]
            values.append((r.rate(c.name), 100 * rate.ci_low, 100 * rate.ci_high, str(rate)))
        groups.append((c.name, c.kind, values))

    def x_of(v: float) -> float:
        return label_w + max(0.0, min(100.0, v)) / 100 * bar_w

    legend = []
    y, x = 4, 0
    for r in rows:  # one swatch per setting, wrapped to the chart's width
        text_w = 7 * len(r.label) + 26
        if x + text_w > width:
            x, y = 0, y + 16
        legend.append((x, y, r.color, r.label))
        x += text_w
    key_y = y + 18
    y = key_y + 22
    drawn = []
    for title, kind, values in groups:
        suffix = {"metric": "", "hard": " · hard", "soft": " · soft", "all": " · every constraint"}[kind]
        cal = calibration_of(result, title) if kind in ("hard", "soft") else None
        if cal is not None:
            suffix += " · judge at chance on this model" if cal.at_chance else " · judge better than chance"
        color = {"metric": "currentColor", "hard": HARD_COLOR, "soft": SOFT_COLOR, "all": ALL_COLOR}[kind]
        group: dict[str, Any] = {"kind": kind, "color": color, "title": title, "suffix": suffix, "y": y, "bars": []}
        y += head_h
        for r, (v, low, high, shown) in zip(rows, values):
            bar: dict[str, Any] = {"label": r.label, "color": r.color, "y": y, "tip": f"{r.label} — {title}: {shown}",
                                   "value": None, "whisker": None}
            if not math.isnan(v):
                end = x_of(v)
                if not (math.isnan(low) or math.isnan(high)):
                    bar["whisker"] = (x_of(low), x_of(high), y + bar_h / 2)
                    end = max(end, x_of(high))
                bar.update(width=x_of(v) - label_w, end=end, value=number(v) if kind == "metric" else percent(v))
            group["bars"].append(bar)
            y += bar_h + gap
        drawn.append(group)
        y += group_gap
    return {"width": width, "height": y, "label_w": label_w, "bar_h": bar_h, "legend": legend, "key_y": key_y,
            "groups": drawn}


# ------------------------------------------------------------------------------------------- items


def demo_html(demo: Mapping[str, Any], index: int, limit: int = TEXT_LIMIT) -> str:
    """One demo as a field table, flagged when it came from a counterexample (it carries feedback)."""
    return str(_ITEMS.demo(demo, index, limit))


def demos_items_html(items: Sequence[tuple[str, str, int, Mapping[str, Any]]], limit: int = TEXT_LIMIT) -> str:
    """A flat page of demos: (setting, predictor, index, demo)."""
    return str(_ITEMS.demo_page(items, limit))


def demos_html(result: AblationResult, row_limit: int = ROW_LIMIT) -> str:
    """Demos per (setting, predictor), each group behind its own <details>, the first `row_limit` shown."""
    groups = [(setting, predictor, demos, sum(1 for d in demos if "feedback" in d))
              for setting, predictor, demos in demo_groups(result)]
    return str(_ITEMS.demo_groups(groups, row_limit))


def counterexample_rows_html(items: Sequence[tuple[str, Counterexample]], limit: int = TEXT_LIMIT) -> str:
    """Counterexamples as cards: where, inputs, failing output, feedback, and the fixed output or 'not fixed'."""
    return str(_ITEMS.counterexample_cards(items, limit))


def counterexamples_html(result: AblationResult, row_limit: int = ROW_LIMIT) -> str:
    """Grouped by constraint, each group behind its own <details> (the static stand-in for a filter)."""
    by_name: dict[str, list[tuple[str, Counterexample]]] = {}
    for phase, c in result.all_counterexamples():
        by_name.setdefault(c.constraint, []).append((phase, c))
    groups = [(name, group, sum(1 for _, c in group if c.fixed)) for name, group in by_name.items()]
    return str(_ITEMS.counterexample_groups(groups, row_limit))


def failures_rows_html(items: Sequence[tuple[str, Any]], limit: int = TEXT_LIMIT) -> str:
    """Failed examples with their cause (LM fault, hard assertion failure, metric error)."""
    return str(_ITEMS.failure_rows(items, limit))


def failures_html(result: AblationResult, row_limit: int = ROW_LIMIT) -> str:
    """The first `row_limit` failed examples, the rest counted."""
    items = failed_examples(result)
    shown = min(row_limit, len(items))
    return str(_ITEMS.failure_rows(items[:row_limit]) + _PARTS.more_note(shown, len(items), "failures"))


# ------------------------------------------------------------------------------------------- the report


@hiding_secrets
def render_html(result: AblationResult, row_limit: int = ROW_LIMIT, review: DemoReview | None = None) -> str:
    """The whole report as one static HTML fragment (with the demos chosen by hand, read-only, if `review`)."""
    rows = setting_rows(result)
    comparisons = comparisons_frame(result)
    compiled = [r for r in rows if r.compile is not None]
    parts = {
        "header": header_html(result),
        "banner": banner_html(result),
        "warnings": warnings_html(result, rows),
        "headline": headline_html(result),
        "passrates": passrate_table_html(result, rows),
        "calibration": calibration_html(result),
        "chart": chart_svg(result, rows),
        "comparisons": comparisons_html(result, comparisons),
        "costs": costs_table_html(result, rows),
        "compile": compile_html(result, rows),
        "failures": failures_html(result, row_limit),
        "demos": demos_html(result, row_limit),
        "counterexamples": counterexamples_html(result, row_limit),
        "timelines": timelines_html(result),
        "review": review_html(review) if review is not None else "",
    }
    return _REPORT.render(
        {name: Markup(fragment) for name, fragment in parts.items()},
        n_comparisons=len(comparisons),
        n_failures=len(failed_examples(result)),
        n_demos=sum(len(d) for _, _, d in demo_groups(result)),
        n_counterexamples=len(result.all_counterexamples()),
        n_timelines=sum(1 for res in result.settings.values() for e in res.examples if in_trouble(e) or retried(e)),
        compiled=bool(compiled),
        compile_failed=any(r.compile.n_failed for r in compiled if r.compile is not None),
    )


__all__ = [
    "ALL_COLOR",
    "COMPARISON_COLUMNS",
    "HARD_COLOR",
    "ROW_LIMIT",
    "SOFT_COLOR",
    "TEXT_LIMIT",
    "banner_html",
    "calibration_html",
    "chart_svg",
    "comparisons_html",
    "compile_html",
    "costs_table_html",
    "counterexample_rows_html",
    "counterexamples_html",
    "demo_html",
    "demos_html",
    "demos_items_html",
    "failures_html",
    "failures_rows_html",
    "fields_html",
    "header_html",
    "headline_html",
    "kind_badge",
    "passrate_table_html",
    "rate_cell_html",
    "render_html",
    "text_html",
    "warnings_html",
]
