"""The retry timeline of one example as HTML and text, and the static report's timeline section.

Why a view apart from the engine's rows (`engine.timeline`): the rows are data (a DataFrame per
attempt); this lays them out for a reader (the step's previous attempt as a word diff, flips in
words, costs in one line), escaped by the report's templates like every other LM string. The widget
tab (`timeline_widget`), `%lmassert trace` and the static report all render `timeline_html`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine.ablation import AblationResult, ExampleResult, SettingResult
from ..engine.timeline import (
    TimelineRow,
    example_summary,
    find_example,
    find_setting,
    flip_text,
    in_trouble,
    retried,
    timeline_rows,
    trouble_order,
    wdiff,
)
from .environment import BASE_STYLE, TEXT_LIMIT, template_module
from .escape import clean, short, to_text
from .model import hiding_secrets

#: Examples per setting whose timeline the static report shows (the rest are counted).
TIMELINE_LIMIT = 10
#: Words of unchanged text kept on each side of a change in a diff (the middle is elided).
CONTEXT_WORDS = 6

_LABELS = {"first": "first try", "retry": "retry {n}", "rerun": "rerun {n}"}


@dataclass
class AttemptView:
    """One attempt as a reader sees it: the values the template lays out."""

    seq: int
    step: str
    label: str
    kept: bool
    inputs: dict[str, Any] | None  # None: the same as the step's previous attempt
    feedback: list[str]
    outputs: dict[str, Any]
    error: str | None
    diff: list[tuple[str, list[tuple[str, str]]]]
    first: bool
    verdicts: list[tuple[str, bool, bool | None]]  # (constraint, passed, verdict before a flip or None)
    cost: str
    flipped: list[str] = field(default_factory=list)


def _compact(ops: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """Long unchanged runs elided to their ends; long changes cut to TEXT_LIMIT characters."""
    out = []
    for kind, words in ops:
        if kind == "equal":
            w = words.split()
            if len(w) > 2 * CONTEXT_WORDS:
                words = " ".join([*w[:CONTEXT_WORDS], "…", *w[-CONTEXT_WORDS:]])
        elif len(words) > TEXT_LIMIT:
            words = words[:TEXT_LIMIT] + f"… (+{len(words) - TEXT_LIMIT} chars)"
        out.append((kind, words))
    return out


def cost_text(row: TimelineRow) -> str:
    """'1 LM call · 2 judge calls · 85 tokens · from the cache · 0.01 s'."""
    a = row.attempt
    parts = [f"{a.lm_calls} LM call{'s' if a.lm_calls != 1 else ''}"]
    if a.judge_calls:
        parts.append(f"{a.judge_calls} judge call{'s' if a.judge_calls != 1 else ''}")
    parts.append(f"{a.tokens:,} tokens")
    if a.cache_hits:
        parts.append("from the cache" if a.cache_hits == a.lm_calls + a.judge_calls else f"{a.cache_hits} cached")
    parts.append(f"{a.seconds:.2f} s")
    return " · ".join(parts)


def attempt_view(row: TimelineRow) -> AttemptView:
    a, before = row.attempt, row.previous
    flips = {name: old for name, old, _ in row.flipped}
    label = _LABELS.get(a.reason, a.reason).format(n=a.attempt)
    if a.repeat_of is not None:
        label += f" · same output as attempt {a.repeat_of}"
    if a.stopped:
        label += f" · stopped: {a.stopped}"
    return AttemptView(
        seq=a.seq, step=a.step, label=label, kept=a.kept,
        inputs=None if before is not None and before.inputs == a.inputs else dict(a.inputs),
        feedback=list(a.feedback), outputs=dict(a.outputs), error=a.error,
        diff=[(name, _compact(ops)) for name, ops in row.diff.items()], first=before is None,
        verdicts=[(name, ok, flips.get(name)) for name, ok in a.verdicts.items()], cost=cost_text(row),
        flipped=[flip_text(f) for f in row.flipped],
    )


@dataclass
class TimelineView:
    """One example's timeline in one setting: shown as HTML in a notebook, as text in a terminal."""

    setting: str
    summary: str
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    error: str | None
    rows: list[TimelineRow]

    @classmethod
    def of(cls, setting: SettingResult, example: ExampleResult) -> TimelineView:
        return cls(setting.label, example_summary(example), dict(example.inputs), dict(example.outputs),
                   example.error, timeline_rows(example.record))

    @hiding_secrets
    def html(self) -> str:
        """The timeline as a static HTML fragment (every value cleaned and escaped)."""
        return str(_TIMELINE.timeline(_view_dict(self)))

    def _repr_html_(self) -> str:
        return f'<div class="lmassert-report" style="{BASE_STYLE}">{self.html()}</div>'

    @hiding_secrets
    def text(self) -> str:
        """The timeline as plain text (keys blanked, hidden characters shown)."""

        def shown(value: Any) -> str:
            return short(clean(to_text(value)), TEXT_LIMIT)

        def pairs(values: dict[str, Any]) -> str:
            return "; ".join(f"{clean(str(k))}: {shown(v)}" for k, v in values.items()) or "none"

        lines = [f"{clean(self.setting)} · {clean(self.summary)}", f"inputs: {pairs(self.inputs)}"]
        lines.append(f"error: {shown(self.error)}" if self.error else f"returned: {pairs(self.outputs)}")
        for row in self.rows:
            v = attempt_view(row)
            lines.append(f"[{v.seq}] {clean(v.step)} · {v.label}" + (" · kept" if v.kept else ""))
            if v.inputs is not None:
                lines.append(f"    inputs: {pairs(v.inputs)}")
            for message in v.feedback:
                lines.append(f"    feedback: {shown(message)}")
            lines.append(f"    error: {shown(v.error)}" if v.error else f"    outputs: {pairs(v.outputs)}")
            for name, ops in row.diff.items():
                lines.append(f"    change: {clean(name)}: {short(clean(wdiff(ops)), 2 * TEXT_LIMIT)}")
            if v.verdicts:
                verdicts = (f"{'ok' if ok else 'FAIL'} {clean(n)}" for n, ok, _ in v.verdicts)
                lines.append("    checks: " + ", ".join(verdicts))
            if v.flipped:
                lines.append("    flipped: " + ", ".join(clean(f) for f in v.flipped))
            lines.append(f"    cost: {v.cost}")
        return "\n".join(lines)

    def __repr__(self) -> str:
        return self.text()


def trace(result: AblationResult, example: Any = None, setting: str | None = None) -> TimelineView:
    """The timeline of `example` (index or inputs; None: the first failing) in `setting` (None: with assertions)."""
    res = find_setting(result, setting)
    return TimelineView.of(res, find_example(res, example))


@hiding_secrets
def timelines_html(result: AblationResult, limit: int = TIMELINE_LIMIT) -> str:
    """Per setting, the timelines of the examples in trouble or retried (failing first), `limit` of them."""
    groups = []
    for res in result.settings.values():
        wanted = [e for e in trouble_order(res) if in_trouble(e) or retried(e)]
        items = [(example_summary(e), _view_dict(TimelineView.of(res, e))) for e in wanted[:limit]]
        groups.append((res.label, items, len(wanted), res.n - len(items)))
    return str(_TIMELINE.timeline_groups(groups))


def _view_dict(view: TimelineView) -> dict[str, Any]:
    return {"setting": view.setting, "summary": view.summary, "inputs": view.inputs, "outputs": view.outputs,
            "error": view.error, "rows": [attempt_view(r) for r in view.rows]}


_TIMELINE = template_module("timeline.html")

__all__ = ["CONTEXT_WORDS", "TIMELINE_LIMIT", "AttemptView", "TimelineView", "cost_text", "timelines_html", "trace"]
