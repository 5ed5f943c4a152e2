"""One run's attempts as a timeline: each attempt beside the step's previous one, as a word diff and the
constraints whose verdict flipped; and which example of which setting to look at first.

Why here and not in the report: the DataFrame (`timeline_frame`), the widget, the static HTML and
`%lmassert trace` must show the same rows, and the rows are numbers and words about the run, read
from the `Attempt`s the engine recorded (`records.Attempt`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from .five_settings import C_INFER_ASSERT, INFER_ASSERT, LABELS
from .records import Attempt, RunRecord
from .results import AblationResult, ExampleResult, SettingResult

#: Columns of `timeline_frame`, one row per attempt (index: `seq`, the attempt's place in the run).
COLUMNS = ("step", "attempt", "reason", "kept", "inputs", "feedback", "outputs", "diff", "flipped", "passed",
           "failed", "lm_calls", "judge_calls", "cache_hits", "tokens", "prompt_tokens", "completion_tokens",
           "seconds", "error", "stopped")

Ops = list[tuple[str, str]]  # ("equal" | "delete" | "insert", words)


def _words(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [w for v in value for w in _words(v)]
    return str(value).split()


def word_diff(before: Any, after: Any) -> Ops:
    """What changed from `before` to `after`, word by word (difflib's longest matching blocks)."""
    a, b = _words(before), _words(after)
    ops: Ops = []
    for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if tag in ("equal", "delete", "replace") and i2 > i1:
            ops.append(("equal" if tag == "equal" else "delete", " ".join(a[i1:i2])))
        if tag in ("insert", "replace") and j2 > j1:
            ops.append(("insert", " ".join(b[j1:j2])))
    return ops


def wdiff(ops: Ops) -> str:
    """The diff as one line of text, wdiff's way: `[-removed-]` and `{+added+}`."""
    marks = {"equal": "{}", "delete": "[-{}-]", "insert": "{{+{}+}}"}
    return " ".join(marks[kind].format(words) for kind, words in ops)


@dataclass
class TimelineRow:
    """An attempt, the step's attempt before it (None for a first one), and what changed between them."""

    attempt: Attempt
    previous: Attempt | None = None
    diff: dict[str, Ops] = field(default_factory=dict)  # output field -> word diff (fields that changed)
    flipped: list[tuple[str, bool, bool]] = field(default_factory=list)  # (constraint, before, after)

    @property
    def passed(self) -> list[str]:
        return [n for n, ok in self.attempt.verdicts.items() if ok]

    @property
    def failed(self) -> list[str]:
        return [n for n, ok in self.attempt.verdicts.items() if not ok]


def timeline_rows(record: RunRecord | None) -> list[TimelineRow]:
    """Every attempt of the run in the order they started, each compared with its step's previous attempt."""
    rows = []
    last: dict[str, Attempt] = {}
    for attempt in record.attempts if record is not None else ():
        previous = last.get(attempt.step)
        row = TimelineRow(attempt, previous)
        if previous is not None:
            for name in dict.fromkeys([*previous.outputs, *attempt.outputs]):
                before, after = previous.outputs.get(name), attempt.outputs.get(name)
                if before != after:
                    row.diff[name] = word_diff(before, after)
            row.flipped = [(n, previous.verdicts[n], ok) for n, ok in attempt.verdicts.items()
                           if n in previous.verdicts and previous.verdicts[n] != ok]
        last[attempt.step] = attempt
        rows.append(row)
    return rows


def flip_text(flip: tuple[str, bool, bool]) -> str:
    """'no_hashtags: fail -> pass'."""
    name, before, after = flip
    return f"{name}: {'pass' if before else 'fail'} -> {'pass' if after else 'fail'}"


def timeline_frame(rows: Sequence[TimelineRow]) -> pd.DataFrame:
    """One row per attempt (see COLUMNS); `diff` is wdiff text per changed field, `flipped` in words."""
    records = []
    for row in rows:
        a = row.attempt
        records.append({
            "seq": a.seq, "step": a.step, "attempt": a.attempt, "reason": a.reason, "kept": a.kept,
            "inputs": dict(a.inputs), "feedback": list(a.feedback), "outputs": dict(a.outputs),
            "diff": "\n".join(f"{name}: {wdiff(ops)}" for name, ops in row.diff.items()),
            "flipped": [flip_text(f) for f in row.flipped], "passed": row.passed, "failed": row.failed,
            "lm_calls": a.lm_calls, "judge_calls": a.judge_calls, "cache_hits": a.cache_hits, "tokens": a.tokens,
            "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens, "seconds": a.seconds,
            "error": a.error, "stopped": a.stopped,
        })
    return pd.DataFrame(records, columns=["seq", *COLUMNS]).set_index("seq")


# ------------------------------------------------------------------------------------------- which run


def retried(example: ExampleResult) -> bool:
    return example.record is not None and any(a.reason == "retry" for a in example.record.attempts)


def in_trouble(example: ExampleResult) -> bool:
    """The example raised, or its returned output fails a constraint."""
    return not example.ok or (example.record is not None and example.record.all_passed is False)


def trouble_order(setting: SettingResult) -> list[ExampleResult]:
    """The setting's examples, failing ones first, then those that were retried, then the rest (each by index)."""
    return sorted(setting.examples, key=lambda e: (0 if in_trouble(e) else 1 if retried(e) else 2, e.index))


def example_summary(example: ExampleResult) -> str:
    """'#3 · fails no_hashtags · 2 retries': what a picker lists for an example."""
    parts = [f"#{example.index}"]
    record = example.record
    if not example.ok:
        parts.append("error")
    failed = record.final_failures() if record is not None else []
    if failed:
        parts.append("fails " + ", ".join(failed))
    retries = sum(a.reason == "retry" for a in record.attempts) if record is not None else 0
    parts.append(f"{retries} retr{'y' if retries == 1 else 'ies'}" if retries else "no retry")
    return " · ".join(parts)


def default_setting(result: AblationResult) -> str:
    """The setting a timeline opens on: the first that ran with assertions at inference, else the first."""
    for key in (C_INFER_ASSERT, INFER_ASSERT):
        if key in result.settings:
            return key
    if not result.settings:
        raise ValueError("no setting ran, so there is no timeline to show")
    return next(iter(result.settings))


def find_setting(result: AblationResult, setting: str | None = None) -> SettingResult:
    """A setting by key ('infer_assert') or label ('Infer w/ Assert'), any case; None: `default_setting`."""
    key = default_setting(result) if setting is None else str(setting)
    for k, res in result.settings.items():
        if key.lower() in (k.lower(), LABELS.get(k, k).lower()):
            return res
    ran = ", ".join(LABELS.get(k, k) for k in result.settings) or "none"
    raise ValueError(f"no setting {setting!r} in this run; it ran: {ran}")


def find_example(setting: SettingResult, example: Any = None) -> ExampleResult:
    """A dev example by its index, or by its inputs (a dspy.Example or a dict); None: the first in trouble."""
    if not setting.examples:
        raise ValueError(f"{setting.label} has no examples")
    if example is None:
        return trouble_order(setting)[0]
    if isinstance(example, int) and not isinstance(example, bool):
        for e in setting.examples:
            if e.index == example:
                return e
        raise ValueError(f"example {example} is out of range: the run has {setting.n} dev examples "
                         f"(0-{setting.n - 1})")
    inputs = example.inputs() if hasattr(example, "inputs") and callable(example.inputs) else example
    if hasattr(inputs, "toDict"):  # a dspy.Example's inputs are an Example too
        inputs = inputs.toDict()
    if not isinstance(inputs, Mapping):
        raise ValueError(f"an example is an index or a dspy.Example / dict of inputs, not a {type(example).__name__}")
    wanted = dict(inputs)
    for e in setting.examples:
        if e.inputs == wanted:
            return e
    raise ValueError(f"no dev example has the inputs {wanted!r}")


def timeline(result: AblationResult, example: Any = None, setting: str | None = None) -> pd.DataFrame:
    """The timeline of one example of one setting as a DataFrame, one row per attempt (see `timeline_frame`)."""
    return timeline_frame(timeline_rows(find_example(find_setting(result, setting), example).record))


__all__ = [
    "COLUMNS",
    "TimelineRow",
    "default_setting",
    "example_summary",
    "find_example",
    "find_setting",
    "flip_text",
    "in_trouble",
    "retried",
    "timeline",
    "timeline_frame",
    "timeline_rows",
    "trouble_order",
    "wdiff",
    "word_diff",
]
