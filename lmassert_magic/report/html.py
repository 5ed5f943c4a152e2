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
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..engine.ablation import ALL_CONSTRAINTS, COMPILE, LABELS, AblationResult, CompileSummary, SettingResult
from ..engine.records import ConstraintStats, Counterexample
from ..engine.stats import Rate

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
ALL_COLOR = "#8a6d00"

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


_MEMO: contextvars.ContextVar[dict[tuple[int, str], tuple[Any, Any]] | None] = contextvars.ContextVar(
    "lmassert_memo", default=None)


@contextlib.contextmanager
def rendering_once() -> Iterator[None]:
    """Within this block each result's rows, comparisons and headlines are read from the engine once.

    The engine recomputes them on every call (merging every record, bootstrapping every interval); a
    display bundle renders the text, the HTML and the widget from the same numbers.
    """
    if _MEMO.get() is not None:
        yield
        return
    token = _MEMO.set({})
    try:
        yield
    finally:
        _MEMO.reset(token)


def _once(result: Any, what: str, compute: Callable[[], Any]) -> Any:
    memo = _MEMO.get()
    if memo is None:
        return compute()
    key = (id(result), what)
    if key not in memo:
        memo[key] = (result, compute())  # the result is kept so its id is not reused while the memo lives
    return memo[key][1]


def hiding_secrets(render: _F) -> _F:
    """Decorator for the views' entry points: everything they render has keys blanked (and the engine's
    numbers are read once per rendering)."""

    @functools.wraps(render)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        with secrets_hidden(), rendering_once():
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


def kind_badge(hard: bool | None) -> str:
    """A small 'hard · Assert' / 'soft · Suggest' tag: the two kinds must never be confused.

    `None` is the "all constraints" measure (an example passes when it satisfies every constraint).
    """
    if hard is None:
        return (
            f'<span class="lmassert-kind lmassert-all" style="border:1px solid {ALL_COLOR};color:{ALL_COLOR};'
            'border-radius:3px;padding:0 4px;font-size:11px;white-space:nowrap">every constraint</span>'
        )
    color, word = (HARD_COLOR, "hard · Assert") if hard else (SOFT_COLOR, "soft · Suggest")
    return (
        f'<span class="lmassert-kind lmassert-{"hard" if hard else "soft"}" style="border:1px solid {color};'
        f'color:{color};border-radius:3px;padding:0 4px;font-size:11px;white-space:nowrap">{word}</span>'
    )


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.0f}%"


def _num(x: float, digits: int = 1) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def _signed(x: float, digits: int) -> str:
    """+12 / -3 / 0 (never '-0'); 'n/a' for nan."""
    if x is None or not math.isfinite(x):
        return "n/a"
    r = round(x, digits)
    return f"{0.0:.{digits}f}" if r == 0 else f"{r:+.{digits}f}"


def rate_parts(rate: Rate) -> tuple[str, str]:
    """The engine's own wording of a rate, split for a table cell: ('85%', '(95% CI 64-95%, n=20)')."""
    head, sep, tail = str(rate).partition(" (")
    return head, f"({tail}" if sep else ""


def rate_cell_html(rate: Rate) -> str:
    """A rate with its interval and n under it (the text is `str(rate)`, the engine's wording)."""
    head, tail = rate_parts(rate)
    small = f'<br><small class="lmassert-ci" style="color:#666;white-space:nowrap">{esc(tail)}</small>' if tail else ""
    return f'<span class="lmassert-rate">{esc(head)}</span>{small}'


# ------------------------------------------------------------------------------------------- model


@dataclass
class ConstraintInfo:
    """A measure the report shows: a constraint (hard True/False) or "all constraints" (hard None)."""

    name: str
    hard: bool | None

    @property
    def kind(self) -> str:
        return "all" if self.hard is None else ("hard" if self.hard else "soft")


@dataclass
class SettingRow:
    """One setting's numbers, read once from the engine and shared by the text, HTML and widget views.

    `metric`, `metric_low` and `metric_high` are on the summary's scale (100 x the metric's mean);
    `rates` holds the engine's `Rate` per measure (`SettingResult.rate`).
    """

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
    rates: dict[str, Rate] = field(default_factory=dict)
    metric_low: float = math.nan
    metric_high: float = math.nan
    cache_hits: int = 0
    observe_lm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    eval_seconds: float = 0.0
    compile_seconds: float = 0.0
    compile_tokens: int = 0
    compile: CompileSummary | None = None
    stray_predictor_calls: int = 0

    def rate(self, name: str) -> float:
        """The pass rate of `name` in percent (nan when no example was checked)."""
        r = self.rates.get(name)
        return 100 * r.rate if r is not None and r.n else math.nan

    def per_example(self, total: float) -> float:
        return total / self.n if self.n else math.nan


def constraint_infos(result: AblationResult) -> list[ConstraintInfo]:
    """Declared constraints, then inline ones as they appear in the records (the engine's list)."""
    infos = _once(result, "constraint_infos", result.constraint_infos)
    return [ConstraintInfo(name, bool(hard)) for name, hard in infos]


def measure_names(result: AblationResult) -> list[str]:
    """The engine's measures: constraint names, then "all constraints" when there is more than one."""
    return list(_once(result, "measures", result.measures))


def measure_infos(result: AblationResult) -> list[ConstraintInfo]:
    """What the pass-rate columns and chart groups show: the engine's measures, in its order."""
    hard = {c.name: c.hard for c in constraint_infos(result)}
    return [ConstraintInfo(name, None if name == ALL_CONSTRAINTS else bool(hard.get(name)))
            for name in measure_names(result)]


def comparisons_frame(result: AblationResult) -> Any:
    """The engine's paired comparisons (`AblationResult.comparisons`), read once per rendering."""
    return _once(result, "comparisons", result.comparisons)


def setting_rows(result: AblationResult) -> list[SettingRow]:
    """One row per setting that ran, in run order (merging the stats once, not once per view)."""
    return list(_once(result, "rows", lambda: _setting_rows(result)))


def _setting_rows(result: AblationResult) -> list[SettingRow]:
    measures = measure_names(result)
    rows = []
    for i, (key, res) in enumerate(result.settings.items()):
        color = SETTING_COLORS.get(key, _FALLBACK_COLORS[i % len(_FALLBACK_COLORS)])
        rows.append(_row(key, res, color, measures, result.seed))
    return rows


def _label(res: SettingResult) -> str:
    try:
        return res.label
    except KeyError:  # a setting this version does not know: show its key
        return res.key


def _row(key: str, res: SettingResult, color: str, measures: Sequence[str], seed: int) -> SettingRow:
    low, high = res.metric_interval(seed)
    return SettingRow(
        key=key, label=_label(res), color=color, n=res.n, n_failed=res.n_failed, metric=100 * res.metric,
        lm_calls=res.lm_calls, tokens=res.tokens, seconds=res.seconds, compile_lm_calls=res.compile_lm_calls,
        complete=res.complete, stats=res.constraint_stats, rates={name: res.rate(name) for name in measures},
        metric_low=100 * low, metric_high=100 * high, cache_hits=res.cache_hits,
        observe_lm_calls=res.observe_lm_calls, prompt_tokens=res.prompt_tokens,
        completion_tokens=res.completion_tokens, eval_seconds=res.eval_seconds,
        compile_seconds=res.compile_seconds, compile_tokens=res.compile_tokens, compile=res.compile,
        stray_predictor_calls=res.stray_predictor_calls,
    )


def metric_text(row: SettingRow) -> str:
    """'50.0 (95% CI 15.0-85.0, n=4)': the metric (x 100) with the engine's interval and n."""
    if not row.n or math.isnan(row.metric):
        return f"n/a (n={row.n})"
    if math.isnan(row.metric_low) or math.isnan(row.metric_high):
        return f"{_num(row.metric)} (n={row.n})"
    if row.metric_low == row.metric_high:  # the engine's degenerate interval: no spread was observed
        return f"{_num(row.metric)} (no spread observed, n={row.n})"
    return f"{_num(row.metric)} (95% CI {_num(row.metric_low)}-{_num(row.metric_high)}, n={row.n})"


def calibration_of(result: AblationResult, name: str) -> Any:
    """The judge calibration measured for constraint `name`, or None (nothing is invented)."""
    return (getattr(result, "calibrations", None) or {}).get(name)


def calibration_note(cal: Any) -> str:
    """'judge agreement 55% (95% CI 40-69%, n=40), kappa 0.05: at chance on this model (model id)'."""
    model = f" ({cal.model})" if getattr(cal, "model", "") else ""
    if not cal.n:
        return f"judge not measured: no labelled item was scored{model}"
    if cal.kappa is None or math.isnan(cal.kappa):
        kappa = "kappa undefined"
    else:
        k = round(cal.kappa, 2)
        kappa = f"kappa {0.0 if k == 0 else k:.2f}"
    verdict = "at chance on this model" if cal.at_chance else "better than chance on this model"
    return f"judge agreement {cal.agreement}, {kappa}: {verdict}{model}"


def summary_lines(result: AblationResult) -> list[str]:
    """The engine's generated headlines; per-setting rates (with n and interval) when no baseline pair ran."""
    lines = list(_once(result, "headlines", result.headlines))
    if lines:
        return lines
    measures = measure_infos(result)
    for row in setting_rows(result):
        parts = [f"{c.name} {row.rates[c.name]}" for c in measures]
        parts.append(f"{result.metric_name} {metric_text(row)}")
        parts.append(f"{_num(row.per_example(row.lm_calls), 2)} LM calls per example")
        lines.append(f"{row.label}: " + ", ".join(parts))
    return lines


def missing_settings(result: AblationResult) -> list[str]:
    """Requested settings with no result: what an interrupted run did not get to."""
    return [LABELS.get(k, k) for k in result.requested if k not in result.settings]


def failed_examples(result: AblationResult) -> list[tuple[str, Any]]:
    """(setting label, ExampleResult) for every example that raised (LM fault, hard assertion, metric)."""
    return [(_label(res), e) for res in result.settings.values() for e in res.examples if not e.ok]


def demo_groups(result: AblationResult) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """(setting label, predictor, demos) for every compiled setting and predictor."""
    return [
        (LABELS.get(key, key), predictor, demos)
        for key, per_predictor in result.demos.items()
        for predictor, demos in per_predictor.items()
    ]


def config_text(result: AblationResult) -> str:
    """'seed 0 · max_backtracks=2 · budget=shared · ...': what the run was asked to do."""
    parts = [f"seed {result.seed}"]
    parts += [f"{k}={v}" for k, v in (getattr(result, "config", None) or {}).items()]
    return " · ".join(parts)


def warning_lines(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> list[str]:
    """What a reader must not miss: unchecked predictor calls, training examples that failed to compile."""
    rows = setting_rows(result) if rows is None else rows
    out = []
    for r in rows:
        if r.stray_predictor_calls > 0:
            out.append(
                f"{r.label}: {r.stray_predictor_calls} predictor call(s) ran outside any program run while one "
                "was active (e.g. a thread the engine does not follow); their outputs were not checked by any "
                "constraint."
            )
    seen: set[tuple[Any, ...]] = set()
    for r in rows:
        c = r.compile
        if c is not None and c.n_failed:
            key = (c.n_examples, c.n_failed, tuple(c.failures))
            if key in seen:  # C+Infer w/ Assert reuses Compile w/ Assert's compile: say it once
                continue
            seen.add(key)
            out.append(f"{r.label}: {c.n_failed} of {c.n_examples} training examples failed while compiling "
                       "(see Cost per example and compile).")
    return out


COUNTEREXAMPLE_MODES = {
    "retry": "retry prompts only, as in DSPy 2.5",
    "prompt": "also in the normal prompt's instructions",
}
#: Training-example failures listed per compile (the rest are counted).
FAILURE_LIMIT = 3


def counterexample_mode_text(mode: str) -> str:
    return COUNTEREXAMPLE_MODES.get(mode, mode)


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


def warnings_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    lines = warning_lines(result, rows)
    if not lines:
        return ""
    body = "<br>".join(f"⚠ {esc(line)}" for line in lines)
    return (
        '<div class="lmassert-warning" style="border-left:4px solid #c77700;background:rgba(199,119,0,.08);'
        f'padding:4px 8px;margin:4px 0">{body}</div>'
    )


def header_html(result: AblationResult) -> str:
    """The title, then the seed and the run's configuration."""
    return (
        f'<div class="lmassert-title" style="font-size:15px;font-weight:700">{esc(report_title(result))}</div>'
        f'<div class="lmassert-config" style="color:#666;font-size:12px">{esc(config_text(result))}</div>'
    )


def headline_html(result: AblationResult, lines: Sequence[str] | None = None) -> str:
    """The generated sentences; those the engine calls noise are greyed (the words still say so)."""
    lines = summary_lines(result) if lines is None else lines
    if not lines:
        return ""
    groups: list[list[str]] = [[]]
    for line in lines:  # the engine ends each pair's sentences with its cost line: one list per pair
        groups[-1].append(line)
        if line.startswith("cost:"):
            groups.append([])
    lists = []
    for group in (g for g in groups if g):
        items = "".join(
            f'<li class="lmassert-noise" style="color:#777">{esc(line)}</li>' if "distinguishable from noise" in line
            else f"<li>{esc(line)}</li>"
            for line in group
        )
        lists.append(f'<ul style="margin:4px 0;padding-left:20px">{items}</ul>')
    return f'<div class="lmassert-headline" style="margin:4px 0;font-size:14px">{"".join(lists)}</div>'


def _swatch(color: str) -> str:
    return f'<span style="display:inline-block;width:10px;height:10px;background:{color};margin-right:4px"></span>'


def _cell_tip(name: str, rate: Rate, s: ConstraintStats | None) -> str:
    """Examples and checks apart: the rate is per example, check counts are raw."""
    if not rate.n:
        return "never checked"
    if name == ALL_CONSTRAINTS:
        return (f"{rate.successes} of {rate.n} examples: the returned output satisfies every constraint checked "
                "on it (an example that raised satisfies none)")
    tip = f"examples: {rate.successes} of {rate.n} pass on the returned output"
    if s is not None:
        tip += f" ({s.passed_first} of {s.examples} on the first try)"
        tip += (f"; checks: {s.final_passes} of {s.checks} passed ({s.first_try_passes} first try, "
                f"{s.passes_after_backtrack} after backtracking), {s.backtracks} backtracks, {s.errors} errors")
    return tip


def passrate_table_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Settings × (metric, each constraint's pass rate, all constraints, examples), each with n and a 95% CI."""
    rows = setting_rows(result) if rows is None else rows
    measures = measure_infos(result)
    if not rows:
        return '<p class="lmassert-empty"><em>No setting finished.</em></p>'
    head = [f'<th style="{_CELL}">setting</th>',
            f'<th style="{_CELL}">{esc(result.metric_name)}<br><small>metric × 100</small></th>']
    for c in measures:
        cal = calibration_of(result, c.name)
        note = ""
        if cal is not None:
            color = HARD_COLOR if cal.at_chance else "#2e7d32"
            note = (f'<br><small class="lmassert-judge{" lmassert-at-chance" if cal.at_chance else ""}" '
                    f'style="color:{color};font-weight:normal">{esc(calibration_note(cal))}</small>')
        head.append(f'<th style="{_CELL}" title="{esc(c.name)} ({c.kind})">{esc(c.name)}<br>{kind_badge(c.hard)}'
                    f"{note}</th>")
    head.append(f'<th style="{_CELL}">examples<br><small>ok / failed</small></th>')
    body = []
    for r in rows:
        cells = [f'<th style="{_CELL};white-space:nowrap">{_swatch(r.color)}{esc(r.label)}</th>']
        m_head, _, m_tail = metric_text(r).partition(" (")
        cells.append(f'<td style="{_NUM}"><span class="lmassert-rate">{esc(m_head)}</span><br>'
                     f'<small class="lmassert-ci" style="color:#666;white-space:nowrap">({esc(m_tail)}</small></td>')
        for c in measures:
            rate = r.rates[c.name]
            s = r.stats.get(c.name)
            tip = _cell_tip(c.name, rate, s)
            broken = ""
            if s and s.errors:  # the constraint's own code failed: say so here, not just 'n/a'
                tip += f"; the check itself failed {s.errors} time(s) (see the failed examples)"
                broken = (f'<br><small class="lmassert-broken" style="color:{HARD_COLOR}">'
                          f"{s.errors} broken</small>")
            cells.append(f'<td style="{_NUM}" title="{esc(tip)}">{rate_cell_html(rate)}{broken}</td>')
        failed = f'<b style="color:{HARD_COLOR}">{r.n_failed}</b>' if r.n_failed else "0"
        cells.append(f'<td style="{_NUM}">{r.n - r.n_failed} / {failed}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = (
        '<p class="lmassert-note" style="color:#666;font-size:12px;margin:2px 0">A pass rate is the share of dev '
        "examples whose returned output satisfies the constraint (unit = example; hover a cell for the raw "
        "checks); “all constraints” is the share satisfying every one. Each carries n and a 95% Wilson "
        "interval; the metric's interval is Wilson for 0/1 scores, else a seeded bootstrap.</p>"
    )
    return (
        f'<table class="lmassert-passrates" style="{_TABLE}"><thead><tr>{"".join(head)}</tr></thead>'
        f'<tbody>{"".join(body)}</tbody></table>{note}'
    )


def calibration_html(result: AblationResult) -> str:
    """Each calibrated judge's agreement with labelled items, in the engine's words; at chance in red."""
    cals = getattr(result, "calibrations", None) or {}
    if not cals:
        return ""
    items = []
    for name, cal in cals.items():
        color = HARD_COLOR if cal.at_chance else "inherit"
        flag = " — its pass rates say nothing about the outputs" if cal.at_chance else ""
        items.append(
            f'<li class="lmassert-calibration-item{" lmassert-at-chance" if cal.at_chance else ""}" '
            f'style="color:{color}"><b>{esc(name)}</b>: {esc(calibration_note(cal))}{esc(flag)}.<br>'
            f'<small style="color:#666">{esc(cal.describe())}</small></li>'
        )
    return (
        '<div class="lmassert-calibration" style="margin:4px 0"><b>LM judges, measured against labelled '
        f'items</b><ul style="margin:2px 0;padding-left:20px">{"".join(items)}</ul></div>'
    )


def comparison_cells(result: AblationResult, row: Mapping[str, Any],
                     measures: Collection[str] | None = None) -> dict[str, str]:
    """One row of `AblationResult.comparisons()` as display strings (shared by HTML and text).

    `measures` is `result.measures()`, passed in when rendering many rows (the engine merges every
    record to compute it).
    """
    measures = measure_names(result) if measures is None else measures
    metric = row["measure"] == result.metric_name and row["measure"] not in measures
    value = (lambda x: _num(x)) if metric else _pct
    digits = 1 if metric else 0
    lo, hi = row["ci_low"], row["ci_high"]
    if not row["n"] or math.isnan(lo) or math.isnan(hi):
        ci = "n/a"
    elif lo == hi:
        ci = "no spread in the differences"
    else:
        ci = f"{_signed(lo, digits)} to {_signed(hi, digits)}"
    changed = f"{row['up']} rose, {row['down']} fell"
    if row["dropped"]:
        changed += f", {row['dropped']} dropped (missing value)"
    p = row["p_value"]
    return {
        "comparison": f"{row['base']} → {row['setting']}",
        "measure": f"{row['measure']} (metric)" if metric else str(row["measure"]),
        "base": value(row["base_rate"]),
        "setting": value(row["rate"]),
        "difference": "n/a" if not row["n"] else f"{_signed(row['diff'], digits)} points",
        "95% CI": ci,
        "n": str(row["n"]),
        "changed": changed,
        "exact p": "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}",
        "verdict": "distinguishable at this n" if row["distinguishable"]
        else "noise: not distinguishable from noise at this n",
    }


def comparisons_html(result: AblationResult, frame: Any = None) -> str:
    """Paired differences per like-with-like pair (the engine's `comparisons()`), noise said in words."""
    frame = comparisons_frame(result) if frame is None else frame
    if frame is None or not len(frame):
        return ('<p class="lmassert-empty"><em>No comparison: a pair of like-with-like settings (Vanilla and Infer '
                "w/ Assert, Compile and Compile w/ Assert, Compile w/ Assert and C+Infer w/ Assert) did not both "
                "run.</em></p>")
    cols = ["comparison", "measure", "base", "setting", "difference", "95% CI", "n", "changed", "exact p", "verdict"]
    head = "".join(f'<th style="{_CELL}">{c}</th>' for c in cols)
    body = []
    measures = set(measure_names(result))
    for _, row in frame.iterrows():
        cells = comparison_cells(result, row, measures)
        noise = not row["distinguishable"]
        tds = []
        for c in cols:
            style = _CELL if c in ("comparison", "measure", "changed", "verdict") else _NUM
            if c == "verdict":
                style += ";color:#777" if noise else ";font-weight:600"
            tds.append(f'<td style="{style}">{esc(cells[c])}</td>')
        cls = "lmassert-comparison lmassert-noise" if noise else "lmassert-comparison lmassert-distinguishable"
        body.append(f'<tr class="{cls}">{"".join(tds)}</tr>')
    note = (
        '<p class="lmassert-note" style="color:#666;font-size:12px;margin:2px 0">Each setting against its '
        "like-with-like baseline on the same dev examples, paired by example. Differences are in percentage "
        "points (the metric: points of 100 × its scale) with a 95% interval; a difference is called noise "
        "when its interval holds 0 or an exact test (McNemar on pass/fail) cannot rule out chance.</p>"
    )
    return (f'<table class="lmassert-comparisons" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{note}')


def costs_table_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Per dev example, counted the same way in every setting: LM calls, cache hits, judge calls, tokens; seconds."""
    rows = setting_rows(result) if rows is None else rows
    if not rows:
        return ""
    heads = [
        ("setting", ""),
        ("LM calls", "per example; the program's own requests, cache hits included"),
        ("cache hits", "per example"),
        ("judge calls", "per example; only measuring"),
        ("prompt tokens", "per example"),
        ("completion tokens", "per example"),
        ("seconds", "evaluation + compile"),
    ]
    head = "".join(f'<th style="{_CELL}">{h}' + (f"<br><small>{s}</small>" if s else "") + "</th>" for h, s in heads)
    body = []
    for r in rows:
        compile_note = f" (+{r.compile_lm_calls:,} compiling)" if r.compile_lm_calls else ""
        cells = [
            f'<th style="{_CELL};white-space:nowrap">{_swatch(r.color)}{esc(r.label)}</th>',
            f'<td style="{_NUM}" title="{r.lm_calls:,} in total{compile_note}">'
            f"{_num(r.per_example(r.lm_calls), 2)}</td>",
            f'<td style="{_NUM}" title="{r.cache_hits:,} in total">{_num(r.per_example(r.cache_hits), 2)}</td>',
            f'<td style="{_NUM}" title="{r.observe_lm_calls:,} in total: LM-judge calls spent only on measuring '
            f'outputs where constraints were observed, not enforced">{_num(r.per_example(r.observe_lm_calls), 2)}</td>',
            f'<td style="{_NUM}" title="{r.prompt_tokens:,} in total">{_num(r.per_example(r.prompt_tokens), 0)}</td>',
            f'<td style="{_NUM}" title="{r.completion_tokens:,} in total">'
            f"{_num(r.per_example(r.completion_tokens), 0)}</td>",
            f'<td style="{_NUM}" title="evaluation {r.eval_seconds:.1f} s + compile {r.compile_seconds:.1f} s">'
            f"{r.seconds:.1f} s</td>",
        ]
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = (
        '<p class="lmassert-note" style="color:#666;font-size:12px;margin:2px 0">Per dev example, counted the same '
        "way in every setting whatever order they ran in: LM calls are the program's own requests including those "
        "the cache answered; judge calls are LM-judge calls made only to measure outputs where constraints were "
        "observed, not enforced (not part of the program's cost); tokens include cached responses. Seconds "
        "depend on the cache (a cached request returns at once): compare LM calls and tokens, not seconds.</p>"
    )
    return (f'<table class="lmassert-costs" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{note}')


def compile_html(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Per compiled setting: training examples that failed and why, demos dropped, where counterexamples show."""
    rows = [r for r in (setting_rows(result) if rows is None else rows) if r.compile is not None]
    if not rows:
        return '<p class="lmassert-empty"><em>No compiling setting ran.</em></p>'
    cols = ["setting", "training examples run", "failed", "why (first few)", "dropped as demos",
            "counterexamples shown in", "compile cost"]
    head = "".join(f'<th style="{_CELL}">{c}</th>' for c in cols)
    body = []
    for r in rows:
        c = r.compile
        assert c is not None
        failed = (f'<b class="lmassert-compile-failed" style="color:{HARD_COLOR}">{c.n_failed} of {c.n_examples}</b>'
                  if c.n_failed else f"0 of {c.n_examples}")
        reasons = "".join(f"<li>{text_html(f)}</li>" for f in c.failures[:FAILURE_LIMIT])
        more = max(c.n_failed, len(c.failures)) - min(len(c.failures), FAILURE_LIMIT)
        why = (f'<ul class="lmassert-compile-failures" style="margin:0;padding-left:16px">{reasons}</ul>'
               if reasons else ("—" if not c.n_failed else "<em>no message kept</em>"))
        if reasons and more > 0:
            why += f"<small>and {more} more</small>"
        if r.key == COMPILE and not c.dropped_soft_failures:
            dropped = '<span class="lmassert-dropped">none: constraints are off while compiling the baseline</span>'
        elif c.keep_soft_failures:
            dropped = ('<span class="lmassert-dropped">none: traces that still failed a soft constraint were kept '
                       "as demos (keep_soft_failures, as DSPy 2.5 did)</span>")
        else:
            dropped = (f'<span class="lmassert-dropped">{c.dropped_soft_failures} trace(s) passed the metric but '
                       "still failed a soft constraint, so were not kept as demos</span>")
        mode = ("none: no assertions while compiling" if r.key == COMPILE
                else counterexample_mode_text(c.counterexample_mode))
        cost = f"{r.compile_lm_calls:,} LM calls, {r.compile_tokens:,} tokens, {r.compile_seconds:.1f} s"
        body.append(
            f'<tr class="lmassert-compile-row"><th style="{_CELL};white-space:nowrap">{_swatch(r.color)}'
            f'{esc(r.label)}</th><td style="{_NUM}">{c.n_examples}</td><td style="{_NUM}">{failed}</td>'
            f'<td style="{_CELL}">{why}</td><td style="{_CELL}">{dropped}</td>'
            f'<td style="{_CELL}" class="lmassert-cx-mode">{esc(mode)}</td><td style="{_CELL}">{esc(cost)}</td></tr>'
        )
    note = ('<p class="lmassert-note" style="color:#666;font-size:12px;margin:2px 0">Training examples run: the '
            "teacher's runs (it stops once it has enough demos). One that failed (an LM error, a hard assertion) "
            "yields no demo. Compile cost is the whole compile, not per example.</p>")
    return (f'<table class="lmassert-compile" style="{_TABLE}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table>{note}')


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def chart_svg(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> str:
    """Grouped horizontal bars (one per setting) per measure, plus the metric; a 95% interval whisker on each
    bar; inline SVG, no JS.

    Hard constraints get solid bars, soft ones light bars with a dashed outline, "all constraints" solid
    bars with a heavy outline, and every group label says which it is, so the distinction survives
    greyscale printing too. The whisker spans the engine's interval (Wilson for rates).
    """
    rows = setting_rows(result) if rows is None else rows
    if not rows:
        return ""
    measures = measure_infos(result)
    label_w, bar_w, value_w = 170, 300, 60
    width = label_w + bar_w + value_w
    bar_h, gap, group_gap, head_h = 13, 3, 10, 18
    # (title, kind, [(value, low, high, tooltip value)] per row)
    groups: list[tuple[str, str, list[tuple[float, float, float, str]]]] = [
        (f"metric: {result.metric_name}", "metric",
         [(r.metric, r.metric_low, r.metric_high, metric_text(r)) for r in rows])
    ]
    for c in measures:
        values = []
        for r in rows:
            rate = r.rates[c.name]
            values.append((r.rate(c.name), 100 * rate.ci_low, 100 * rate.ci_high, str(rate)))
        groups.append((c.name, c.kind, values))

    def x_of(v: float) -> float:
        return label_w + max(0.0, min(100.0, v)) / 100 * bar_w

    parts: list[str] = []
    y = 4
    x = 0
    for r in rows:  # legend: one swatch per setting
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
        f'<line x1="230" y1="{y + 5.5}" x2="250" y2="{y + 5.5}" stroke="currentColor" stroke-width="1.2"/>'
        f'<line x1="230" y1="{y + 2}" x2="230" y2="{y + 9}" stroke="currentColor" stroke-width="1.2"/>'
        f'<line x1="250" y1="{y + 2}" x2="250" y2="{y + 9}" stroke="currentColor" stroke-width="1.2"/>'
        f'<text x="256" y="{y + 10}" font-size="11">95% interval</text>'
    )
    y += 22
    for title, kind, values in groups:
        suffix = {"metric": "", "hard": " · hard", "soft": " · soft", "all": " · every constraint"}[kind]
        cal = calibration_of(result, title) if kind in ("hard", "soft") else None
        if cal is not None:
            suffix += " · judge at chance on this model" if cal.at_chance else " · judge better than chance"
        color = {"metric": "currentColor", "hard": HARD_COLOR, "soft": SOFT_COLOR, "all": ALL_COLOR}[kind]
        parts.append(
            f'<g class="lmassert-group" data-kind="{kind}">'
            f'<text x="0" y="{y + 12}" font-size="12" font-weight="600" fill="{color}">'
            f"<title>{esc(title)}{esc(suffix)}</title>{esc(_short(title, 44))}{esc(suffix)}</text>"
        )
        y += head_h
        for r, (v, low, high, shown) in zip(rows, values):
            parts.append(f'<text x="{label_w - 6}" y="{y + 10}" font-size="11" text-anchor="end">{esc(r.label)}</text>')
            tip = f"{r.label} — {title}: {shown}"
            if math.isnan(v):
                parts.append(
                    f'<text x="{label_w + 2}" y="{y + 10}" font-size="11" fill="#888"><title>{esc(tip)}</title>'
                    "not checked</text>"
                )
                y += bar_h + gap
                continue
            w = x_of(v) - label_w
            style = (
                f'fill="{r.color}" fill-opacity="0.35" stroke="{r.color}" stroke-dasharray="3,2"' if kind == "soft"
                else f'fill="{r.color}" stroke="{ALL_COLOR}" stroke-width="1.5"' if kind == "all"
                else f'fill="{r.color}"'
            )
            parts.append(
                f'<rect class="lmassert-bar" x="{label_w}" y="{y}" width="{w:.1f}" height="{bar_h}" {style}>'
                f"<title>{esc(tip)}</title></rect>"
            )
            end = x_of(v)
            if not (math.isnan(low) or math.isnan(high)):
                x1, x2, mid = x_of(low), x_of(high), y + bar_h / 2
                parts.append(
                    f'<g class="lmassert-ci">'
                    f"<title>{esc(tip)}</title>"
                    f'<line x1="{x1:.1f}" y1="{mid:.1f}" x2="{x2:.1f}" y2="{mid:.1f}" stroke="currentColor" '
                    f'stroke-width="1.2"/>'
                    f'<line x1="{x1:.1f}" y1="{y + 2}" x2="{x1:.1f}" y2="{y + bar_h - 2}" stroke="currentColor" '
                    f'stroke-width="1.2"/>'
                    f'<line x1="{x2:.1f}" y1="{y + 2}" x2="{x2:.1f}" y2="{y + bar_h - 2}" stroke="currentColor" '
                    f'stroke-width="1.2"/></g>'
                )
                end = max(end, x2)
            parts.append(
                f'<text x="{end + 4:.1f}" y="{y + 10}" font-size="11">{_num(v) if kind == "metric" else _pct(v)}</text>'
            )
            y += bar_h + gap
        parts.append("</g>")
        y += group_gap
    axis = f'<line x1="{label_w}" y1="0" x2="{label_w}" y2="{y}" stroke="#999" stroke-width="1"/>'
    return (
        f'<svg class="lmassert-chart" xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" height="{y}" '
        f'viewBox="0 0 {width} {y}" fill="currentColor" style="max-width:100%;height:auto">'
        f"<title>Pass rate per constraint and setting, with 95% intervals</title>{axis}{''.join(parts)}</svg>"
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
    comparisons = comparisons_frame(result)
    n_demos = sum(len(d) for _, _, d in demo_groups(result))
    n_cx = len(result.all_counterexamples())
    failures = failed_examples(result)
    compiled = [r for r in rows if r.compile is not None]
    compile_failed = any(r.compile.n_failed for r in compiled if r.compile is not None)
    parts = [
        f'<div class="lmassert-report" style="{_BASE_STYLE}">',
        header_html(result),
        banner_html(result),
        warnings_html(result, rows),
        headline_html(result),
        _section("Pass rates and metric per setting (n, 95% interval)",
                 passrate_table_html(result, rows) + calibration_html(result) + chart_svg(result, rows), True,
                 "lmassert-section-passrates"),
        _section(f"Comparisons, paired by example ({len(comparisons)})", comparisons_html(result, comparisons), True,
                 "lmassert-section-comparisons"),
        _section("Cost per example" + (" and compile" if compiled else ""),
                 costs_table_html(result, rows) + (compile_html(result, rows) if compiled else ""),
                 compile_failed or not compiled, "lmassert-section-costs"),
        _section(f"Failed examples ({len(failures)})", failures_html(result, row_limit), bool(failures),
                 "lmassert-section-failures"),
        _section(f"Bootstrapped demos ({n_demos})", demos_html(result, row_limit), False, "lmassert-section-demos"),
        _section(f"Counterexamples ({n_cx})", counterexamples_html(result, row_limit), False,
                 "lmassert-section-counterexamples"),
        "</div>",
    ]
    return "".join(parts)


# ------------------------------------------------------------------------------------------- plain text


def _frame_text(frame: Any) -> str:
    import pandas as pd

    with pd.option_context("display.width", 200, "display.max_columns", 50, "display.max_colwidth", 80):
        return clean(frame.to_string())


def compile_lines(result: AblationResult, rows: Sequence[SettingRow] | None = None) -> list[str]:
    """One line per compiled setting: failed training examples (first few reasons), dropped demos, where
    counterexamples show, compile cost."""
    rows = setting_rows(result) if rows is None else rows
    out = []
    for r in rows:
        c = r.compile
        if c is None:
            continue
        line = f"{r.label}: {c.n_examples} training examples run, {c.n_failed} failed"
        if c.failures:
            shown = [_short(clean(f), 120) for f in c.failures[:FAILURE_LIMIT]]
            more = max(c.n_failed, len(c.failures)) - len(shown)
            line += " (" + "; ".join(shown) + (f"; and {more} more" if more > 0 else "") + ")"
        if r.key == COMPILE and not c.dropped_soft_failures:
            line += "; no trace dropped (constraints are off while compiling the baseline)"
        elif c.keep_soft_failures:
            line += "; traces failing a soft constraint kept as demos (keep_soft_failures)"
        else:
            line += f"; {c.dropped_soft_failures} trace(s) dropped as demos for still failing a soft constraint"
        mode = ("none (no assertions while compiling)" if r.key == COMPILE
                else counterexample_mode_text(c.counterexample_mode))
        line += f"; counterexamples shown in: {mode}"
        line += (f"; compile cost {r.compile_lm_calls:,} LM calls, {r.compile_tokens:,} tokens, "
                 f"{r.compile_seconds:.1f} s")
        out.append(line)
    return out


@hiding_secrets
def render_text(result: AblationResult, row_limit: int = 5) -> str:
    """A terminal-sized report: headlines, pass rates with n and 95% intervals, comparisons, costs, compile."""
    import pandas as pd

    rows = setting_rows(result)
    out = [f"LM Assertions report: {len(rows)} setting(s)", f"  {clean(config_text(result))}"]
    missing = missing_settings(result)
    if result.interrupted:
        out.append("!! INTERRUPTED: partial result" + (f"; not run: {', '.join(missing)}" if missing else ""))
    elif missing:
        out.append(f"!! partial result; not run: {', '.join(missing)}")
    out += [f"!! {clean(line)}" for line in warning_lines(result, rows)]
    out += [f"  {clean(line)}" for line in summary_lines(result)]
    if rows:
        measures = measure_infos(result)
        table = {
            r.label: {
                result.metric_name: metric_text(r),
                **{(c.name if c.hard is None else f"{c.name} ({c.kind})"): str(r.rates[c.name]) for c in measures},
                "failed": r.n_failed,
            }
            for r in rows
        }
        out.append("Pass rates: share of examples whose returned output satisfies each, with its 95% (Wilson) "
                   "interval and n; the metric x 100 with its 95% interval:")
        out.append(_frame_text(pd.DataFrame.from_dict(table, orient="index")))
        for name, cal in (getattr(result, "calibrations", None) or {}).items():
            out.append(f"Judge {clean(name)}: {clean(calibration_note(cal))}"
                       + (" -- its pass rates say nothing about the outputs" if cal.at_chance else ""))
        broken = {c.name: sum(r.stats[c.name].errors for r in rows if c.name in r.stats)
                  for c in measures if c.hard is not None}
        if any(broken.values()):
            out.append("Broken checks (the constraint's own code failed): " + ", ".join(
                f"{clean(name)}: {n}" for name, n in broken.items() if n))
        comparisons = comparisons_frame(result)
        if len(comparisons):
            cols = ["comparison", "measure", "difference", "95% CI", "n", "verdict"]
            names = {c.name for c in measures}
            shown = [comparison_cells(result, row, names) for _, row in comparisons.iterrows()]
            frame = pd.DataFrame([{c: cells[c] for c in cols} for cells in shown])
            out.append("Comparisons, paired by example (difference in points, 95% interval; noise called noise):")
            out.append(_frame_text(frame.set_index("comparison")))
        costs = {
            r.label: {
                "lm_calls/ex": _num(r.per_example(r.lm_calls), 2),
                "cache_hits/ex": _num(r.per_example(r.cache_hits), 2),
                "observe_calls/ex": _num(r.per_example(r.observe_lm_calls), 2),
                "prompt_tokens/ex": _num(r.per_example(r.prompt_tokens), 0),
                "completion_tokens/ex": _num(r.per_example(r.completion_tokens), 0),
                "seconds": f"{r.seconds:.1f}",
            }
            for r in rows
        }
        out.append("Cost per example, counted the same way in every setting (LM calls include cache hits; "
                   "observe calls are judge calls spent only measuring; seconds depend on the cache):")
        out.append(_frame_text(pd.DataFrame.from_dict(costs, orient="index")))
        lines = compile_lines(result, rows)
        if lines:
            out.append("Compile:")
            out += [f"  {line}" for line in lines]
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
    "COUNTEREXAMPLE_MODES",
    "ROW_LIMIT",
    "SettingRow",
    "TEXT_LIMIT",
    "banner_html",
    "calibration_html",
    "calibration_note",
    "calibration_of",
    "chart_svg",
    "clean",
    "compile_html",
    "compile_lines",
    "comparison_cells",
    "comparisons_frame",
    "comparisons_html",
    "config_text",
    "constraint_infos",
    "costs_table_html",
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
    "header_html",
    "headline_html",
    "hide_secrets",
    "hide_secrets_in",
    "hiding_secrets",
    "measure_infos",
    "measure_names",
    "metric_text",
    "missing_settings",
    "passrate_table_html",
    "rate_cell_html",
    "rate_parts",
    "rendering_once",
    "render_html",
    "render_text",
    "report_title",
    "secrets_hidden",
    "setting_rows",
    "summary_lines",
    "text_html",
    "to_text",
    "warning_lines",
    "warnings_html",
]
