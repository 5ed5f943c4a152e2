"""Static rendering of an AblationResult: plain text and self-contained HTML.

Why static: nbconvert exports, GitHub's notebook view and a terminal IPython have no widget
frontend, so the report must read completely without one. The HTML uses no script, no external
asset and no <style> block (sanitisers strip those); the chart is inline SVG.

Why escaping lives here: the ipywidgets `HTML` widget injects its value as raw HTML, and almost
every string in a report (outputs, feedback, demos, field names, even constraint names) came from
an LM or a notebook user. Everything goes through `esc`/`text_html`; nothing else writes user text.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import html
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..engine.ablation import AblationResult, SettingResult
from ..engine.records import ConstraintStats, Counterexample

try:  # the lm layer knows which environment variables hold keys; the report works without it
    from ..lm.redact import REDACTED, secret_env_values
except ImportError:  # pragma: no cover - depends on the lm layer being present
    REDACTED = "[REDACTED]"

    def secret_env_values() -> list[str]:  # type: ignore[misc]
        return []

#: Text longer than this is cut and the rest put behind an expand control (<details>).
TEXT_LIMIT = 280
#: Rows shown per group (constraint, predictor, setting) in the static HTML; the rest are counted.
ROW_LIMIT = 25

SETTING_COLORS = {
    "vanilla": "#8c8c8c",
    "infer_assert": "#3b75af",
    "compile": "#ef8636",
    "compile_assert": "#4a9a44",
    "c_infer_assert": "#8e5fb0",
}
_FALLBACK_COLORS = ("#c03d3e", "#3a9ea5", "#b5a13a", "#7a5230")
HARD_COLOR = "#b3261e"
SOFT_COLOR = "#1f6f8b"

_BASE_STYLE = "font-family:system-ui,-apple-system,'Segoe UI',sans-serif;font-size:13px;line-height:1.4"
_CELL = "border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:left"
_NUM = "border:1px solid #ccc;padding:3px 6px;vertical-align:top;text-align:right;font-variant-numeric:tabular-nums"
_VALUE = ("white-space:pre-wrap;overflow-wrap:break-word;line-height:1.35;"
          "font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px")
_TABLE = "border-collapse:collapse;margin:4px 0"

# Invisible or direction-changing characters that can make shown text lie about what it is.
_INVISIBLE = [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F, 0x200B, 0x200C, 0x200D, 0x200E, 0x200F,
              *range(0x202A, 0x202F), *range(0x2066, 0x206A), 0xFEFF,
              # Lone surrogates (half an emoji from a cut-off JSON escape) cannot be encoded as UTF-8: the
              # kernel could not send a report holding one, nor could the notebook be saved.
              *range(0xD800, 0xE000)]
_VISIBLE = {c: f"\\u{c:04x}" for c in _INVISIBLE}


# ------------------------------------------------------------------------------------------- text


_SECRETS: contextvars.ContextVar[tuple[str, ...] | None] = contextvars.ContextVar("lmassert_secrets", default=None)
_F = TypeVar("_F", bound=Callable[..., Any])


@contextlib.contextmanager
def secrets_hidden() -> Iterator[None]:
    """Read the secret environment values once for a whole rendering (`clean` runs once per string)."""
    token = _SECRETS.set(tuple(secret_env_values()))
    try:
        yield
    finally:
        _SECRETS.reset(token)


def hiding_secrets(render: _F) -> _F:
    """Decorator for the views' entry points: everything they render has keys blanked."""

    @functools.wraps(render)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with secrets_hidden():
            return render(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def hide_secrets(text: str) -> str:
    """Blank the values of secret-looking environment variables (API keys): an LM error, or an LM echoing
    its prompt, can carry one, and a report ends up on a projector and in the saved notebook."""
    secrets = _SECRETS.get()
    for value in secret_env_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, REDACTED)
    return text


def hide_secrets_in(value: Any) -> Any:
    """`hide_secrets` over the strings inside lists, tuples and dicts (table cells hold those)."""
    if isinstance(value, str):
        return hide_secrets(value)
    if isinstance(value, (list, tuple)):
        return type(value)(hide_secrets_in(v) for v in value)
    if isinstance(value, Mapping):
        return {k: hide_secrets_in(v) for k, v in value.items()}
    return value


def clean(text: str) -> str:
    """Blank API keys, and make control, zero-width and bidi-override characters visible, so text
    cannot disguise itself."""
    return hide_secrets(text).translate(_VISIBLE)


def to_text(value: Any) -> str:
    """A readable one-string form of a field value (lists become bullet lines)."""
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "\n".join("• " + to_text(v) for v in value)
    if isinstance(value, Mapping):
        return "\n".join(f"{to_text(k)}: {to_text(v)}" for k, v in value.items())
    return str(value)


def esc(value: Any) -> str:
    """HTML-escape any value (quotes too, so it is also safe inside an attribute)."""
    return html.escape(clean(to_text(value)), quote=True)


def text_html(value: Any, limit: int = TEXT_LIMIT) -> str:
    """Escaped text; past `limit` characters the rest sits behind a <details> expand control.

    The summary shows the head and the expanded part only the remainder, so long text is not stored twice.
    """
    text = clean(to_text(value))
    if len(text) <= limit:
        return f'<span style="{_VALUE}">{html.escape(text, quote=True)}</span>'
    head = html.escape(text[:limit], quote=True)
    return (
        f'<details class="lmassert-more"><summary style="{_VALUE}">{head}… '
        f"<em>(+{len(text) - limit} chars)</em></summary>"
        f'<div style="{_VALUE}">…{html.escape(text[limit:], quote=True)}</div></details>'
    )


def fields_html(fields: Mapping[str, Any] | None, limit: int = TEXT_LIMIT, skip: Iterable[str] = ()) -> str:
    """A small name/value table for a dict of fields."""
    if not fields:
        return "<em>none</em>"
    skipped = set(skip)
    rows = "".join(
        f'<tr><th style="{_CELL};font-weight:600">{esc(k)}</th><td style="{_CELL}">{text_html(v, limit)}</td></tr>'
        for k, v in fields.items()
        if k not in skipped
    )
    return f'<table class="lmassert-fields" style="{_TABLE}">{rows}</table>'


def kind_badge(hard: bool) -> str:
    """A small 'hard · Assert' / 'soft · Suggest' tag: the two kinds must never be confused."""
    color, word = (HARD_COLOR, "hard · Assert") if hard else (SOFT_COLOR, "soft · Suggest")
    return (
        f'<span class="lmassert-kind lmassert-{"hard" if hard else "soft"}" style="border:1px solid {color};'
        f'color:{color};border-radius:3px;padding:0 4px;font-size:11px;white-space:nowrap">{word}</span>'
    )


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.0f}%"


def _num(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


# ------------------------------------------------------------------------------------------- model


@dataclass
class ConstraintInfo:
    name: str
    hard: bool

    @property
    def kind(self) -> str:
        return "hard" if self.hard else "soft"


@dataclass
class SettingRow:
    """One setting's numbers, computed once and shared by the text, HTML and widget views."""

    key: str
    label: str
    color: str
    n: int
    n_failed: int
    metric: float
    lm_calls: int
    tokens: int
    seconds: float
    compile_lm_calls: int
    complete: bool
    stats: dict[str, ConstraintStats] = field(default_factory=dict)

    def rate(self, name: str) -> float:
        s = self.stats.get(name)
        return 100 * s.pass_rate if s and s.checks else math.nan

    def per_example(self, total: float) -> float:
        return total / self.n if self.n else math.nan


def constraint_infos(result: AblationResult) -> list[ConstraintInfo]:
    """Declared constraints, plus any that only appear in the records (e.g. inline Assert calls),
    so a check written in Python code still gets a column and bars."""
    infos = [ConstraintInfo(c.name, c.hard) for c in result.constraints]
    seen = {c.name for c in infos}
    for res in result.settings.values():
        for name, s in res.constraint_stats.items():
            if name not in seen:
                seen.add(name)
                infos.append(ConstraintInfo(name, s.hard))
    return infos


def setting_rows(result: AblationResult) -> list[SettingRow]:
    """One row per setting that ran, in run order (merging the stats once, not once per view)."""
    rows = []
    for i, (key, res) in enumerate(result.settings.items()):
        rows.append(_row(key, res, SETTING_COLORS.get(key, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])))
    return rows


def _label(res: SettingResult) -> str:
    try:
        return res.label
    except KeyError:  # a setting this version does not know: show its key
        return res.key


def _row(key: str, res: SettingResult, color: str) -> SettingRow:
    return SettingRow(
        key=key, label=_label(res), color=color, n=res.n, n_failed=res.n_failed, metric=100 * res.metric,
        lm_calls=res.lm_calls, tokens=res.tokens, seconds=res.seconds, compile_lm_calls=res.compile_lm_calls,
        complete=res.complete, stats=res.constraint_stats,
    )


def summary_lines(result: AblationResult) -> list[str]:
    """The sentences an instructor reads aloud; falls back to per-setting rates when no baseline pair ran."""
    lines = list(result.headlines())
    if lines:
        return lines
    infos = constraint_infos(result)
    for row in setting_rows(result):
        parts = [f"{c.name} {_pct(row.rate(c.name))}" for c in infos]
        parts.append(f"{result.metric_name} {_num(row.metric)}")
        parts.append(f"{_num(row.per_example(row.lm_calls))} LM calls per example")
        lines.append(f"{row.label}: " + ", ".join(parts))
    return lines


def missing_settings(result: AblationResult) -> list[str]:
    """Requested settings with no result: what an interrupted run did not get to."""
    from ..engine.ablation import LABELS

    return [LABELS.get(k, k) for k in result.requested if k not in result.settings]


def failed_examples(result: AblationResult) -> list[tuple[str, Any]]:
    """(setting label, ExampleResult) for every example that raised (LM fault, hard assertion, metric)."""
    return [(_label(res), e) for res in result.settings.values() for e in res.examples if not e.ok]


def demo_groups(result: AblationResult) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(setting label, predictor, demos) for every compiled setting and predictor."""
    from ..engine.ablation import LABELS

    return [
        (LABELS.get(key, key), predictor, demos)
        for key, per_predictor in result.demos.items()
        for predictor, demos in per_predictor.items()
    ]


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
    if not notes:
        return ""
    body = "<br>".join(esc(n) for n in notes)
    return (
        '<div class="lmassert-interrupted" style="border-left:4px solid #c77700;background:rgba(199,119,0,.12);'
        f'padding:4px 8px;margin:4px 0;font-weight:600">⚠ {body}</div>'
    )


def headline_html(result: AblationResult) -> str:
    lines = summary_lines(result)
    if not lines:
        return ""
    items = "".join(f"<li>{esc(line)}</li>" for line in lines)
    return f'<ul class="lmassert-headline" style="margin:4px 0;padding-left:20px;font-size:14px">{items}</ul>'


def passrate_table_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Settings × (metric, each constraint's pass rate, failures, LM calls, tokens, time)."""
    rows = setting_rows(result) if rows is None else rows
    infos = constraint_infos(result)
    if not rows:
        return '<p class="lmassert-empty"><em>No setting finished.</em></p>'
    head = [f'<th style="{_CELL}">setting</th>', f'<th style="{_CELL}">{esc(result.metric_name)}</th>']
    for c in infos:
        head.append(f'<th style="{_CELL}" title="{esc(c.name)} ({c.kind})">{esc(c.name)}<br>{kind_badge(c.hard)}</th>')
    head += [
        f'<th style="{_CELL}">examples<br><small>ok / failed</small></th>',
        f'<th style="{_CELL}">LM calls<br><small>per example</small></th>',
        f'<th style="{_CELL}">tokens<br><small>per example</small></th>',
        f'<th style="{_CELL}">time</th>',
    ]
    body = []
    for r in rows:
        swatch = (f'<span style="display:inline-block;width:10px;height:10px;background:{r.color};'
                  'margin-right:4px"></span>')
        cells = [f'<th style="{_CELL};white-space:nowrap">{swatch}{esc(r.label)}</th>',
                 f'<td style="{_NUM}">{_num(r.metric)}</td>']
        for c in infos:
            s = r.stats.get(c.name)
            tip = (
                f"{s.final_passes}/{s.checks} passed ({s.first_try_passes} first try, "
                f"{s.passes_after_backtrack} after backtracking), {s.backtracks} backtracks, {s.errors} errors"
                if s and s.checks else "never checked"
            )
            broken = ""
            if s and s.errors:  # the constraint's own code failed: say so here, not just 'n/a'
                tip += f"; the check itself failed {s.errors} time(s) (see the failed examples)"
                broken = (f'<br><small class="lmassert-broken" style="color:{HARD_COLOR}">'
                          f"{s.errors} broken</small>")
            cells.append(f'<td style="{_NUM}" title="{esc(tip)}">{_pct(r.rate(c.name))}{broken}</td>')
        failed = f'<b style="color:{HARD_COLOR}">{r.n_failed}</b>' if r.n_failed else "0"
        compile_note = f" (+{r.compile_lm_calls:,} compiling)" if r.compile_lm_calls else ""
        cells += [
            f'<td style="{_NUM}">{r.n - r.n_failed} / {failed}</td>',
            f'<td style="{_NUM}" title="{r.lm_calls:,} in total{compile_note}">{_num(r.per_example(r.lm_calls))}</td>',
            f'<td style="{_NUM}" title="{r.tokens:,} in total">{_num(r.per_example(r.tokens), 0)}</td>',
            f'<td style="{_NUM}">{r.seconds:.1f} s</td>',
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (
        f'<table class="lmassert-passrates" style="{_TABLE}"><thead><tr>{"".join(head)}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table>'
    )


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def chart_svg(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Grouped horizontal bars (one per setting) per constraint, plus the metric; inline SVG, no JS.

    Hard constraints get solid bars, soft ones light bars with a dashed outline, and every group
    label says which it is, so the distinction survives greyscale printing too.
    """
    rows = setting_rows(result) if rows is None else rows
    if not rows:
        return ""
    infos = constraint_infos(result)
    label_w, bar_w, value_w = 170, 300, 52
    width = label_w + bar_w + value_w
    bar_h, gap, group_gap, head_h = 13, 3, 10, 18
    groups: list[tuple[str, bool | None, list[float]]] = [
        (f"metric: {result.metric_name}", None, [r.metric for r in rows])
    ]
    groups += [(c.name, c.hard, [r.rate(c.name) for r in rows]) for c in infos]

    parts: list[str] = []
    y = 4
    # legend: one swatch per setting, two columns of kinds
    x = 0
    for r in rows:
        text_w = 7 * len(r.label) + 26
        if x + text_w > width:
            x, y = 0, y + 16
        parts.append(f'<rect x="{x}" y="{y}" width="11" height="11" fill="{r.color}"/>')
        parts.append(f'<text x="{x + 15}" y="{y + 10}" font-size="11">{esc(r.label)}</text>')
        x += text_w
    y += 18
    parts.append(
        f'<rect x="0" y="{y}" width="11" height="11" fill="#666"/><text x="15" y="{y + 10}" font-size="11">'
        f'hard (Assert)</text><rect x="110" y="{y}" width="11" height="11" fill="#666" fill-opacity="0.35" '
        f'stroke="#666" stroke-dasharray="3,2"/><text x="125" y="{y + 10}" font-size="11">soft (Suggest)</text>'
    )
    y += 22
    for title, hard, values in groups:
        kind = "" if hard is None else (" · hard" if hard else " · soft")
        color = "currentColor" if hard is None else (HARD_COLOR if hard else SOFT_COLOR)
        parts.append(
            f'<g class="lmassert-group" data-kind="{"metric" if hard is None else ("hard" if hard else "soft")}">'
            f'<text x="0" y="{y + 12}" font-size="12" font-weight="600" fill="{color}">'
            f"<title>{esc(title)}{kind}</title>{esc(_short(title, 44))}{kind}</text>"
        )
        y += head_h
        for r, v in zip(rows, values):
            parts.append(f'<text x="{label_w - 6}" y="{y + 10}" font-size="11" text-anchor="end">{esc(r.label)}</text>')
            tip = f"{r.label} — {title}: {_pct(v) if hard is not None else _num(v)}"
            if math.isnan(v):
                parts.append(
                    f'<text x="{label_w + 2}" y="{y + 10}" font-size="11" fill="#888"><title>{esc(tip)}</title>'
                    "not checked</text>"
                )
            else:
                w = max(0.0, min(100.0, v)) / 100 * bar_w
                style = (
                    f'fill="{r.color}"' if hard is not False
                    else f'fill="{r.color}" fill-opacity="0.35" stroke="{r.color}" stroke-dasharray="3,2"'
                )
                parts.append(
                    f'<rect class="lmassert-bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" {style}>'
                    f"<title>{esc(tip)}</title></rect>"
                )
                parts.append(
                    f'<text x="{label_w + w + 4:.1f}" y="{y + 10}" font-size="11">'
                    f"{_pct(v) if hard is not None else _num(v)}</text>"
                )
            y += bar_h + gap
        parts.append("</g>")
        y += group_gap
    axis = f'<line x1="{label_w}" y1="0" x2="{label_w}" y2="{y}" stroke="#999" stroke-width="1"/>'
    return (
        f'<svg class="lmassert-chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{y}" '
        f'viewBox="0 0 {width} {y}" fill="currentColor" style="max-width:100%;height:auto">'
        f"<title>Pass rate per constraint and setting</title>{axis}{''.join(parts)}</svg>"
    )


def _more_note(shown: int, total: int, table: str) -> str:
    if total <= shown:
        return ""
    return (
        f'<p class="lmassert-truncated"><em>{shown} of {total} shown; all are in '
        f"<code>report.tables[{table!r}]</code> (or the widget's pages).</em></p>"
    )


def demo_html(demo: Mapping[str, Any], index: int, limit: int = TEXT_LIMIT) -> str:
    """One demo as a field table, flagged when it came from a counterexample (it carries feedback)."""
    flag = (
        f' <span class="lmassert-from-cx" style="color:{SOFT_COLOR};font-size:11px">from a counterexample: '
        "shows the feedback and the fixed output</span>"
        if "feedback" in demo else ""
    )
    aug = "" if demo.get("augmented") else ' <span style="color:#888;font-size:11px">(labelled example)</span>'
    return (
        f'<div class="lmassert-demo" style="margin:4px 0 8px"><b>demo {index + 1}</b>{flag}{aug}'
        f"{fields_html(demo, limit, skip=('augmented',))}</div>"
    )


def demos_items_html(items: Sequence[tuple[str, str, int, Mapping[str, Any]]], limit: int = TEXT_LIMIT) -> str:
    """A flat page of demos: (setting, predictor, index, demo)."""
    if not items:
        return "<p><em>No demos.</em></p>"
    out = []
    for setting, predictor, index, demo in items:
        out.append(
            f'<div style="color:#888;font-size:11px">{esc(setting)} · predictor {esc(predictor)}</div>'
            + demo_html(demo, index, limit)
        )
    return "".join(out)


def demos_html(result: AblationResult, row_limit: int = ROW_LIMIT) -> str:
    groups = demo_groups(result)
    if not groups:
        return "<p><em>No demos: no compiling setting ran.</em></p>"
    out = []
    for setting, predictor, demos in groups:
        from_cx = sum(1 for d in demos if "feedback" in d)
        body = "".join(demo_html(d, i) for i, d in enumerate(demos[:row_limit])) or "<p><em>No demos kept.</em></p>"
        out.append(
            f'<details class="lmassert-demos"><summary><b>{esc(setting)}</b> · predictor <code>{esc(predictor)}</code>'
            f" · {len(demos)} demos ({from_cx} from counterexamples)</summary>"
            f"{body}{_more_note(min(row_limit, len(demos)), len(demos), 'demos')}</details>"
        )
    return "".join(out)


def counterexample_rows_html(items: Sequence[tuple[str, Counterexample]], limit: int = TEXT_LIMIT) -> str:
    """Counterexamples as cards (a wide table overflows a notebook): where, inputs, failing output,
    feedback, and the fixed output or 'not fixed'."""
    if not items:
        return "<p><em>No counterexamples.</em></p>"
    label = f"{_CELL};font-weight:600;white-space:nowrap;width:1%"
    cards = []
    for phase, c in items:
        color = HARD_COLOR if c.hard else SOFT_COLOR
        if c.fixed_outputs is not None:
            status = '<b class="lmassert-fixed" style="color:#2e7d32">fixed</b>'
            fixed = fields_html(c.fixed_outputs, limit)
        else:
            status = f'<b class="lmassert-not-fixed" style="color:{HARD_COLOR}">not fixed</b>'
            fixed = f'<em style="color:{HARD_COLOR}">not fixed</em>'
        cards.append(
            f'<div class="lmassert-cx" style="border:1px solid #ccc;border-left:4px solid {color};'
            f'padding:4px 8px;margin:6px 0">'
            f"<div><b>{esc(c.constraint)}</b> {kind_badge(c.hard)} · {esc(phase)} · predictor "
            f"<code>{esc(c.predictor)}</code> · {status}</div>"
            f'<table style="{_TABLE};width:100%">'
            f'<tr><th style="{label}">inputs</th><td style="{_CELL}">{fields_html(c.inputs, limit)}</td></tr>'
            f'<tr><th style="{label}">failing output</th>'
            f'<td style="{_CELL}">{fields_html(c.failing_outputs, limit)}</td></tr>'
            f'<tr><th style="{label}">feedback</th><td style="{_CELL}">{text_html(c.feedback, limit)}</td></tr>'
            f'<tr><th style="{label}">fixed output</th><td style="{_CELL}">{fixed}</td></tr>'
            "</table></div>"
        )
    return f'<div class="lmassert-counterexamples">{"".join(cards)}</div>'


def counterexamples_html(result: AblationResult, row_limit: int = ROW_LIMIT) -> str:
    """Grouped by constraint, each group behind its own <details> (the static stand-in for a filter)."""
    items = result.all_counterexamples()
    if not items:
        return "<p><em>No counterexamples: every checked output passed on its first try.</em></p>"
    by_name: dict[str, list[tuple[str, Counterexample]]] = {}
    for phase, c in items:
        by_name.setdefault(c.constraint, []).append((phase, c))
    out = []
    for name, group in by_name.items():
        fixed = sum(1 for _, c in group if c.fixed)
        out.append(
            f'<details class="lmassert-cx-group"><summary><b>{esc(name)}</b> {kind_badge(group[0][1].hard)} · '
            f"{len(group)} counterexamples, {fixed} fixed, {len(group) - fixed} not fixed</summary>"
            f"{counterexample_rows_html(group[:row_limit])}"
            f"{_more_note(min(row_limit, len(group)), len(group), 'counterexamples')}"
            "</details>"
        )
    return "".join(out)


def failures_rows_html(items: Sequence[tuple[str, Any]], limit: int = TEXT_LIMIT) -> str:
    """Failed examples with their cause (LM fault, hard assertion failure, metric error)."""
    if not items:
        return "<p><em>No failed examples.</em></p>"
    head = "".join(f'<th style="{_CELL}">{h}</th>' for h in ("setting", "example", "inputs", "cause"))
    body = "".join(
        f'<tr class="lmassert-failure"><td style="{_CELL}">{esc(setting)}</td><td style="{_NUM}">#{e.index}</td>'
        f'<td style="{_CELL}">{fields_html(e.inputs, limit)}</td>'
        f'<td style="{_CELL};color:{HARD_COLOR}">{text_html(e.error, limit)}</td></tr>'
        for setting, e in items
    )
    return (f'<table class="lmassert-failures" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table>")


def failures_html(result: AblationResult, row_limit: int = ROW_LIMIT) -> str:
    items = failed_examples(result)
    return failures_rows_html(items[:row_limit]) + _more_note(min(row_limit, len(items)), len(items), "failures")


def _section(title: str, body: str, open_: bool, cls: str) -> str:
    return (
        f'<details class="{cls}"{" open" if open_ else ""} style="margin:6px 0">'
        f'<summary style="font-size:14px;font-weight:600;cursor:pointer">{title}</summary>'
        f'<div style="margin-left:12px">{body}</div></details>'
    )


def report_title(result: AblationResult) -> str:
    """'LM Assertions report — 5 settings, 8 dev examples'."""
    n = len(result.settings)
    n_dev = max((r.n for r in result.settings.values()), default=0)
    return (f"LM Assertions report — {n} setting{'s' if n != 1 else ''}, "
            f"{n_dev} dev example{'s' if n_dev != 1 else ''}")


@hiding_secrets
def render_html(result: AblationResult, row_limit: int = ROW_LIMIT) -> str:
    """The whole report as one static HTML fragment."""
    rows = setting_rows(result)
    n_demos = sum(len(d) for _, _, d in demo_groups(result))
    n_cx = len(result.all_counterexamples())
    failures = failed_examples(result)
    parts = [
        f'<div class="lmassert-report" style="{_BASE_STYLE}">',
        f'<div style="font-size:15px;font-weight:700">{esc(report_title(result))}</div>',
        banner_html(result),
        headline_html(result),
        _section("Pass rates, metric and cost per setting",
                 passrate_table_html(result, rows) + chart_svg(result, rows), True, "lmassert-section-passrates"),
        _section(f"Failed examples ({len(failures)})", failures_html(result, row_limit), bool(failures),
                 "lmassert-section-failures"),
        _section(f"Bootstrapped demos ({n_demos})", demos_html(result, row_limit), False, "lmassert-section-demos"),
        _section(f"Counterexamples ({n_cx})", counterexamples_html(result, row_limit), False,
                 "lmassert-section-counterexamples"),
        "</div>",
    ]
    return "".join(parts)


# ------------------------------------------------------------------------------------------- plain text


@hiding_secrets
def render_text(result: AblationResult, row_limit: int = 5) -> str:
    """A terminal-sized summary: headlines, the settings table, counts, and the first failures."""
    import pandas as pd

    rows = setting_rows(result)
    out = [f"LM Assertions report: {len(rows)} setting(s)"]
    missing = missing_settings(result)
    if result.interrupted:
        out.append("!! INTERRUPTED: partial result" + (f"; not run: {', '.join(missing)}" if missing else ""))
    elif missing:
        out.append(f"!! partial result; not run: {', '.join(missing)}")
    out += [f"  {clean(line)}" for line in summary_lines(result)]
    if rows:
        infos = constraint_infos(result)
        table = {
            r.label: {
                result.metric_name: round(r.metric, 1),
                **{f"{c.name} ({c.kind})": round(r.rate(c.name), 1) for c in infos},
                "failed": r.n_failed,
                "lm_calls/ex": round(r.per_example(r.lm_calls), 2),
                "tokens/ex": round(r.per_example(r.tokens), 0),
                "seconds": round(r.seconds, 1),
            }
            for r in rows
        }
        with pd.option_context("display.width", 200, "display.max_columns", 50):
            out.append(clean(pd.DataFrame.from_dict(table, orient="index").to_string()))
        broken = {c.name: sum(r.stats[c.name].errors for r in rows if c.name in r.stats) for c in infos}
        if any(broken.values()):
            out.append("Broken checks (the constraint's own code failed): " + ", ".join(
                f"{clean(name)}: {n}" for name, n in broken.items() if n))
    groups = demo_groups(result)
    if groups:
        out.append("Demos: " + "; ".join(
            f"{clean(s)} / {clean(p)}: {len(d)} ({sum(1 for x in d if 'feedback' in x)} from counterexamples)"
            for s, p, d in groups
        ))
    items = result.all_counterexamples()
    if items:
        by_name: dict[str, list[bool]] = {}
        for _, c in items:
            by_name.setdefault(c.constraint, []).append(c.fixed)
        out.append(f"Counterexamples: {len(items)} (" + ", ".join(
            f"{clean(n)}: {len(v)}, {sum(v)} fixed" for n, v in by_name.items()) + ")")
    failures = failed_examples(result)
    if failures:
        out.append(f"Failed examples: {len(failures)}")
        for setting, e in failures[:row_limit]:
            out.append(f"  {setting} #{e.index}: {_short(clean(str(e.error)), 200)}")  # blank keys, then cut
        if len(failures) > row_limit:
            out.append(f"  ... {len(failures) - row_limit} more in report.tables['failures']")
    return "\n".join(out)


__all__ = [
    "ConstraintInfo",
    "ROW_LIMIT",
    "SettingRow",
    "TEXT_LIMIT",
    "banner_html",
    "chart_svg",
    "clean",
    "constraint_infos",
    "counterexample_rows_html",
    "counterexamples_html",
    "demo_groups",
    "demo_html",
    "demos_html",
    "demos_items_html",
    "esc",
    "failed_examples",
    "failures_html",
    "failures_rows_html",
    "fields_html",
    "headline_html",
    "hide_secrets",
    "hide_secrets_in",
    "hiding_secrets",
    "missing_settings",
    "passrate_table_html",
    "render_html",
    "render_text",
    "report_title",
    "secrets_hidden",
    "setting_rows",
    "summary_lines",
    "text_html",
    "to_text",
]
