"""The view model: what a report shows, read once from an `AblationResult` and shared by every view.

Why a model apart from the views: the text, the static HTML and the widget must say the same
numbers in the same words, and the engine recomputes them on every call (merging every record,
bootstrapping every interval), so they are read once per rendering (`rendering_once`) into
`SettingRow`s and display strings here; the views only lay them out.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..engine.ablation import ALL_CONSTRAINTS, LABELS, AblationResult, CompileSummary, SettingResult
from ..engine.records import ConstraintStats
from ..engine.stats import Rate
from .escape import secrets_hidden

SETTING_COLORS = {
    "vanilla": "#8c8c8c",
    "infer_assert": "#3b75af",
    "compile": "#ef8636",
    "compile_assert": "#4a9a44",
    "c_infer_assert": "#8e5fb0",
}
_FALLBACK_COLORS = ("#c03d3e", "#3a9ea5", "#b5a13a", "#7a5230")

COUNTEREXAMPLE_MODES = {
    "retry": "retry prompts only, as in DSPy 2.5",
    "prompt": "also in the normal prompt's instructions",
}
#: Training-example failures listed per compile (the rest are counted).
FAILURE_LIMIT = 3

_F = TypeVar("_F", bound=Callable[..., Any])

# ------------------------------------------------------------------------------------------- read once

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


# ------------------------------------------------------------------------------------------- numbers


def percent(x: float) -> str:
    """'85%'; 'n/a' for nan."""
    return "n/a" if x is None or math.isnan(x) else f"{x:.0f}%"


def number(x: float, digits: int = 1) -> str:
    """'1,234.5'; 'n/a' for nan."""
    return "n/a" if x is None or math.isnan(x) else f"{x:,.{digits}f}"


def signed(x: float, digits: int) -> str:
    """+12 / -3 / 0 (never '-0'); 'n/a' for nan."""
    if x is None or not math.isfinite(x):
        return "n/a"
    r = round(x, digits)
    return f"{0.0:.{digits}f}" if r == 0 else f"{r:+.{digits}f}"


def rate_parts(rate: Rate) -> tuple[str, str]:
    """The engine's own wording of a rate, split for a table cell: ('85%', '(95% CI 64-95%, n=20)')."""
    head, sep, tail = str(rate).partition(" (")
    return head, f"({tail}" if sep else ""


# ------------------------------------------------------------------------------------------- rows


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
    truncated_responses: int = 0

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
        truncated_responses=getattr(res, "truncated_responses", 0),
    )


def metric_text(row: SettingRow) -> str:
    """'50.0 (95% CI 15.0-85.0, n=4)': the metric (x 100) with the engine's interval and n."""
    if not row.n or math.isnan(row.metric):
        return f"n/a (n={row.n})"
    if math.isnan(row.metric_low) or math.isnan(row.metric_high):
        return f"{number(row.metric)} (n={row.n})"
    if row.metric_low == row.metric_high:  # the engine's degenerate interval: no spread was observed
        return f"{number(row.metric)} (no spread observed, n={row.n})"
    return f"{number(row.metric)} (95% CI {number(row.metric_low)}-{number(row.metric_high)}, n={row.n})"


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
        parts.append(f"{number(row.per_example(row.lm_calls), 2)} LM calls per example")
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
    config = getattr(result, "config", None) or {}
    requests = config.get("lm_requests")
    concurrency = config.get("concurrency")  # an async evaluation: that many requests in flight, no threads
    parallel = (f"{concurrency} async evaluation calls at a time" if concurrency is not None
                else f"{config.get('num_threads') or 1} evaluation threads")
    if (concurrency or config.get("num_threads") or 1) > 1 and requests is not None and requests != "one at a time":
        out.append(
            f"{parallel} with an LM that may decode parallel requests together "
            f"(requests: {requests}): its outputs, and so these figures, can differ from a run with another "
            "number of threads, even with the same seed."
        )
    for r in rows:
        if r.stray_predictor_calls > 0:
            out.append(
                f"{r.label}: {r.stray_predictor_calls} predictor call(s) ran outside any program run while one "
                "was active (e.g. a thread the engine does not follow); their outputs were not checked by any "
                "constraint."
            )
    for r in rows:
        if r.truncated_responses > 0:
            out.append(
                f"{r.label}: {r.truncated_responses} LM response(s) stopped at the LM's max_tokens; their outputs "
                "may be cut short (raise max_tokens to avoid it)."
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


def counterexample_mode_text(mode: str) -> str:
    return COUNTEREXAMPLE_MODES.get(mode, mode)


def comparison_cells(result: AblationResult, row: Mapping[str, Any],
                     measures: Collection[str] | None = None) -> dict[str, str]:
    """One row of `AblationResult.comparisons()` as display strings (shared by HTML and text).

    `measures` is `result.measures()`, passed in when rendering many rows (the engine merges every
    record to compute it).
    """
    measures = measure_names(result) if measures is None else measures
    metric = row["measure"] == result.metric_name and row["measure"] not in measures
    value = (lambda x: number(x)) if metric else percent
    digits = 1 if metric else 0
    lo, hi = row["ci_low"], row["ci_high"]
    if not row["n"] or math.isnan(lo) or math.isnan(hi):
        ci = "n/a"
    elif lo == hi:
        ci = "no spread in the differences"
    else:
        ci = f"{signed(lo, digits)} to {signed(hi, digits)}"
    changed = f"{row['up']} rose, {row['down']} fell"
    if row["dropped"]:
        changed += f", {row['dropped']} dropped (missing value)"
    p = row["p_value"]
    return {
        "comparison": f"{row['base']} → {row['setting']}",
        "measure": f"{row['measure']} (metric)" if metric else str(row["measure"]),
        "base": value(row["base_rate"]),
        "setting": value(row["rate"]),
        "difference": "n/a" if not row["n"] else f"{signed(row['diff'], digits)} points",
        "95% CI": ci,
        "n": str(row["n"]),
        "changed": changed,
        "exact p": "n/a" if p is None or (isinstance(p, float) and math.isnan(p)) else f"{p:.2g}",
        "verdict": "distinguishable at this n" if row["distinguishable"]
        else "noise: not distinguishable from noise at this n",
    }


def report_title(result: AblationResult) -> str:
    """'LM Assertions report — 5 settings, 8 dev examples'."""
    n = len(result.settings)
    n_dev = max((r.n for r in result.settings.values()), default=0)
    return (f"LM Assertions report — {n} setting{'s' if n != 1 else ''}, "
            f"{n_dev} dev example{'s' if n_dev != 1 else ''}")


__all__ = [
    "COUNTEREXAMPLE_MODES",
    "ConstraintInfo",
    "FAILURE_LIMIT",
    "SETTING_COLORS",
    "SettingRow",
    "calibration_note",
    "calibration_of",
    "comparison_cells",
    "comparisons_frame",
    "config_text",
    "constraint_infos",
    "counterexample_mode_text",
    "demo_groups",
    "failed_examples",
    "hiding_secrets",
    "measure_infos",
    "measure_names",
    "metric_text",
    "missing_settings",
    "number",
    "percent",
    "rate_parts",
    "rendering_once",
    "report_title",
    "setting_rows",
    "signed",
    "summary_lines",
    "warning_lines",
]
