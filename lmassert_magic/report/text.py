"""The plain-text report: what a terminal IPython and a notebook's text/plain output show.

Why text too: a terminal has no HTML, and the text/plain output is what an exported notebook's
diff, a log and a screen reader get. Same numbers and words as the HTML (from `report.model`),
tables laid out by pandas.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..engine.ablation import COMPILE, AblationResult
from ..engine.records import Counterexample
from .escape import clean, short
from .model import (
    FAILURE_LIMIT,
    SettingRow,
    calibration_note,
    comparison_cells,
    comparisons_frame,
    config_text,
    counterexample_mode_text,
    demo_groups,
    failed_examples,
    hiding_secrets,
    measure_infos,
    metric_text,
    missing_settings,
    number,
    setting_rows,
    summary_lines,
    warning_lines,
)


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
            shown = [short(clean(f), 120) for f in c.failures[:FAILURE_LIMIT]]
            more = max(c.n_failed, len(c.failures)) - len(shown)
            line += " (" + "; ".join(shown) + (f"; and {more} more" if more > 0 else "") + ")"
        if c.notes:  # GEPA or Refine: what it did instead of bootstrapping demos
            line += "".join(f"; {clean(note)}" for note in c.notes)
        elif r.key == COMPILE and not c.dropped_soft_failures:
            line += "; no trace dropped (constraints are off while compiling the baseline)"
        elif c.keep_soft_failures:
            line += "; traces failing a soft constraint kept as demos (keep_soft_failures)"
        else:
            line += f"; {c.dropped_soft_failures} trace(s) dropped as demos for still failing a soft constraint"
        if not c.notes:
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
                "lm_calls/ex": number(r.per_example(r.lm_calls), 2),
                "cache_hits/ex": number(r.per_example(r.cache_hits), 2),
                "observe_calls/ex": number(r.per_example(r.observe_lm_calls), 2),
                "prompt_tokens/ex": number(r.per_example(r.prompt_tokens), 0),
                "completion_tokens/ex": number(r.per_example(r.completion_tokens), 0),
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
            out.append(f"  {setting} #{e.index}: {short(clean(str(e.error)), 200)}")  # blank keys, then cut
        if len(failures) > row_limit:
            out.append(f"  ... {len(failures) - row_limit} more in report.tables['failures']")
    return "\n".join(out)


__all__ = ["compile_lines", "render_text"]


def describe_backtrack(backtrack: Counterexample) -> str:
    """One backtrack with every field in full: the lesson a notebook shows of what a retry does."""
    kind = "hard" if backtrack.hard else "soft"
    lines = [f"{backtrack.predictor}: {backtrack.constraint} ({kind}) failed", "inputs:"]
    lines += [f"  {k}: {v}" for k, v in backtrack.inputs.items()]
    lines.append("failing output:")
    lines += [f"  {k}: {v}" for k, v in backtrack.failing_outputs.items()]
    lines.append(f"feedback given: {backtrack.feedback}")
    if backtrack.fixed_outputs is None:
        lines.append("not fixed: the retry budget ran out")
    else:
        lines.append("output after the retry:")
        lines += [f"  {k}: {v}" for k, v in backtrack.fixed_outputs.items()]
    return "\n".join(lines)
