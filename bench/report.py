"""Render time of the compile report for a large result (target: about a second).

Builds a five-setting result with 1,000 bootstrapped demos and 1,000 counterexamples (plus
long outputs that need expand controls) and times each view: the static HTML, the plain text,
the widget, the full display bundle, paging and filtering the widget, and the DataFrames.

    python bench/report.py [--demos 1000] [--counterexamples 1000] [--dev 200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

from lmassert_magic import Constraint
from lmassert_magic.engine.ablation import SETTINGS, AblationResult, ExampleResult, SettingResult
from lmassert_magic.engine.records import ConstraintStats, Counterexample, RunRecord
from lmassert_magic.report import CompileReport

NAMES = [("no_hashtags", False), ("under_280_chars", False), ("contains_answer", True), ("engaging", False),
         ("faithful", False)]


def big_result(n_demos: int, n_cx: int, n_dev: int) -> AblationResult:
    """A synthetic result with the requested counts, counterexamples spread over settings and constraints."""
    result = AblationResult(constraints=[Constraint(n, lambda **k: True, hard=h) for n, h in NAMES],
                            metric_name="quality")
    long_text = "A long passage about the question. " * 40
    asserted = [k for k in SETTINGS if k in ("infer_assert", "c_infer_assert")]
    per_example = -(-n_cx // (len(asserted) * n_dev))
    made = 0
    for key in SETTINGS:
        res = SettingResult(key, lm_calls=3 * n_dev, tokens=900 * n_dev, eval_seconds=12.0)
        for i in range(n_dev):
            cxs = []
            if key in asserted:
                for j in range(per_example):
                    if made >= n_cx:
                        break
                    name, hard = NAMES[(i + j) % len(NAMES)]
                    cxs.append(Counterexample(
                        name, hard, "generate_tweet", {"question": f"question {i}?", "context": [long_text] * 3},
                        {"tweet": f"#tweet {i} {j} " + "words " * 30}, f"Please fix {name}.",
                        {"tweet": f"fixed tweet {i}"} if j % 3 else None,
                    ))
                    made += 1
            record = RunRecord(
                constraints={n: ConstraintStats(n, h, 1, int(i % 4 != 0), int(key in asserted and i % 4 == 0), 0)
                             for n, h in NAMES},
                counterexamples=cxs,
            )
            error = "LMFault: connection reset" if i % 50 == 7 else None
            res.examples.append(ExampleResult(i, {"question": f"question {i}?"}, {"tweet": f"tweet {i}"},
                                              float(i % 2), record, error))
        result.settings[key] = res
    half = n_demos // 2
    for key, count in (("compile", half), ("compile_assert", n_demos - half)):
        result.demos[key] = {"generate_tweet": [
            {"augmented": True, "question": f"q{i}", "context": [long_text], "tweet": f"demo tweet {i}",
             **({"feedback": "Please remove hashtags.", "past_tweet": f"#bad {i}"} if key == "compile_assert" and i % 2
                else {})}
            for i in range(count)
        ]}
    return result


def timed(fn: Callable[[], Any], rounds: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demos", type=int, default=1000)
    parser.add_argument("--counterexamples", type=int, default=1000)
    parser.add_argument("--dev", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    result = big_result(args.demos, args.counterexamples, args.dev)
    n_demos = sum(len(d) for p in result.demos.values() for d in p.values())
    print(f"result: {len(result.settings)} settings x {args.dev} dev examples, {n_demos} demos, "
          f"{len(result.all_counterexamples())} counterexamples")

    import ipywidgets  # noqa: F401  (import cost is not the report's)

    rows = []

    def fresh_widget() -> Any:
        return CompileReport(result).widget()

    t_html, html = timed(lambda: CompileReport(result).html(), args.rounds)
    rows.append(("static HTML", t_html, f"{len(html) / 1e6:.2f} MB"))
    t_text, text = timed(lambda: CompileReport(result).text(), args.rounds)
    rows.append(("plain text", t_text, f"{len(text)} chars"))
    t_widget, widget = timed(fresh_widget, args.rounds)
    rows.append(("widget built", t_widget, f"{len(widget.tabs.children)} tabs"))
    t_bundle, bundle = timed(lambda: CompileReport(result, widgets=True)._repr_mimebundle_(), args.rounds)
    rows.append(("display bundle (text + HTML + widget)", t_bundle, ", ".join(sorted(bundle))))

    def page_and_filter() -> None:
        for _ in range(10):
            widget.cx_pager.next_button.click()
        for _, value in widget.constraint_filter.options:
            widget.constraint_filter.value = value
        for _, value in widget.demo_filter.options:
            widget.demo_filter.value = value

    t_click, _ = timed(page_and_filter, args.rounds)
    n_actions = 10 + len(widget.constraint_filter.options) + len(widget.demo_filter.options)
    rows.append((f"widget: {n_actions} page/filter changes", t_click, f"{1000 * t_click / n_actions:.1f} ms each"))
    t_tables, tables = timed(lambda: CompileReport(result).tables, args.rounds)
    rows.append(("all DataFrames", t_tables, ", ".join(f"{k} {len(v)}" for k, v in tables.items())))

    width = max(len(r[0]) for r in rows)
    for name, seconds, note in rows:
        print(f"{name:<{width}}  {seconds:7.3f} s   {note}")


if __name__ == "__main__":
    main()
