"""GEPA with constraint feedback against BootstrapFewShot with assertions, on TweetGen (issue #18).

The quickstart's pipeline, constraints, metric and seed (notebooks/01_quickstart.ipynb: retrieve >>
GenerateAnswer >> GenerateTweet; no_hashtags, under_280 (hard), has_answer, engaging, faithful, grounded;
quality) on its first N train and N dev examples. Each optimizer compiles with the constraints on, and the
compiled program is measured on the dev set twice: Compile w/ Assert (constraints observed) and C+Infer w/
Assert (backtracking on). GEPA's metric is the constraints' feedback metric (engine/signals.py) and GEPA
reflects with the same model; BootstrapFewShot's teacher backtracks (assertion-driven bootstrapping).

    LMASSERT_THREADS=1 flock /tmp/lmassert-model.lock taskset -c 0 .venv/bin/python bench/optimizers.py --n 40

Prints progress; writes bench/results/optimizers_n{N}.json and replaces the section between the
`optimizers` markers of bench/RESULTS.md with tables and sentences generated from that JSON
(`--from-json FILE` regenerates the section without running anything).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

from lmassert_magic.engine import defaults  # noqa: E402
from lmassert_magic.engine.five_settings import ALL_CONSTRAINTS, C_INFER_ASSERT, COMPILE_ASSERT, LABELS  # noqa: E402
from lmassert_magic.engine.stats import describe_difference, paired_difference  # noqa: E402

QUICKSTART = ROOT / "notebooks" / "01_quickstart.ipynb"
RESULTS_MD = HERE / "RESULTS.md"
BEGIN, END = "<!-- optimizers:begin -->", "<!-- optimizers:end -->"
SETTINGS = (COMPILE_ASSERT, C_INFER_ASSERT)
OPTIMIZERS = ("bootstrap", "gepa")
NAMES = {"bootstrap": "BootstrapFewShot with assertions", "gepa": "GEPA with constraint feedback"}
SKIPPED = ("%lmassert calibrate",)  # judge calibration is measured elsewhere; it only annotates the report


def quickstart_cells() -> tuple[list[str], str, str]:
    """(code cells before the quickstart's %%compile, minus calibration; its flags; its pipeline body)."""
    import nbformat

    cells = [c.source for c in nbformat.read(QUICKSTART, as_version=4).cells if c.cell_type == "code"]
    index = next(i for i, c in enumerate(cells) if c.startswith("%%compile"))
    first, body = cells[index].split("\n", 1)
    flags = first.split(None, 2)[2]
    kept = [c for c in cells[:index] if not c.startswith(SKIPPED)]
    return kept, flags, body


def compile_cell(optimizer: str, flags: str, body: str, max_metric_calls: int, time_cap: float) -> str:
    flags = flags.replace("-o report", f"-o rep_{optimizer}")
    extra = ""
    if optimizer == "gepa":
        extra = f" --optimizer gepa --max-metric-calls {max_metric_calls} --time-cap {time_cap:g}"
    settings = ",".join(SETTINGS)
    return f"%%compile tweeter_{optimizer} {flags} --settings {settings}{extra}\n{body}"


def _setting_figures(setting: Any, result: Any) -> dict[str, Any]:
    measures = {}
    for name in result.measures():
        rate = setting.rate(name)
        measures[name] = {"passed": rate.successes, "n": rate.n, "rate": 100 * rate.rate,
                          "ci_low": 100 * rate.ci_low, "ci_high": 100 * rate.ci_high,
                          "verdicts": setting.verdicts(name)}
    low, high = setting.metric_interval(result.seed)
    return {
        "n": setting.n, "failed": setting.n_failed, "measures": measures,
        "metric": {"name": result.metric_name, "mean": 100 * setting.metric, "ci_low": 100 * low,
                   "ci_high": 100 * high, "scores": setting.scores()},
        "lm_calls": setting.lm_calls, "lm_calls_per_example": setting.per_example(setting.lm_calls),
        "observe_calls_per_example": setting.per_example(setting.observe_lm_calls),
        "tokens_per_example": setting.per_example(setting.tokens), "eval_seconds": setting.eval_seconds,
        "compile_lm_calls": setting.compile_lm_calls, "compile_seconds": setting.compile_seconds,
    }


def figures_of(result: Any, seconds: float) -> dict[str, Any]:
    """What one optimizer's run measured, as plain JSON (per-example verdicts kept for paired differences)."""
    compiled = result.settings[COMPILE_ASSERT].compile
    return {
        "seconds": seconds,
        "compile": {"lm_calls": result.settings[COMPILE_ASSERT].compile_lm_calls,
                    "seconds": result.settings[COMPILE_ASSERT].compile_seconds,
                    "notes": list(compiled.notes), "instructions": dict(compiled.instructions),
                    "examples_run": compiled.n_examples, "failed": compiled.n_failed,
                    "demos": {k: len(v) for k, v in result.demos.get(COMPILE_ASSERT, {}).items()}},
        "settings": {key: _setting_figures(result.settings[key], result) for key in SETTINGS},
    }


def differences(runs: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """GEPA minus BootstrapFewShot per setting and measure, paired by dev example."""
    out = []
    base, other = runs["bootstrap"], runs["gepa"]
    for key in SETTINGS:
        a, b = base["settings"][key], other["settings"][key]
        pairs = [(m, a["measures"][m]["verdicts"], b["measures"][m]["verdicts"]) for m in a["measures"]]
        pairs.append((a["metric"]["name"], a["metric"]["scores"], b["metric"]["scores"]))
        for measure, x, y in pairs:
            x = [None if v is None else float(v) for v in x]
            y = [None if v is None else float(v) for v in y]
            diff = paired_difference(x, y, seed=seed, name_a=NAMES["bootstrap"], name_b=NAMES["gepa"])
            out.append({"setting": key, "measure": measure, "diff": 100 * diff.diff, "ci_low": 100 * diff.ci_low,
                        "ci_high": 100 * diff.ci_high, "n": diff.n, "distinguishable": diff.distinguishable,
                        "sentence": describe_difference(measure, diff)})
    return out


def run(n: int, max_metric_calls: int, time_cap: float, *, seed: int = defaults.SEED, shell: Any = None,
        lm_configured: bool = False, say: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the quickstart's cells, then one %%compile per optimizer; return the JSON payload.

    `lm_configured` (tests: a scripted LM is dspy's LM already): the `%lm local` line is not run.
    """
    from IPython.core.interactiveshell import InteractiveShell

    saved = {name: os.environ.get(name) for name in ("LMASSERT_SMALL", "LMASSERT_WIDGETS")}
    os.environ["LMASSERT_SMALL"] = str(n)  # the quickstart's first cell reads it
    os.environ.setdefault("LMASSERT_WIDGETS", "0")
    try:
        return _run(n, max_metric_calls, time_cap, seed, shell or InteractiveShell.instance(), lm_configured, say)
    finally:  # a caller's environment (a test's) is left as it was
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _run(n: int, max_metric_calls: int, time_cap: float, seed: int, shell: Any, lm_configured: bool,
         say: Callable[[str], None]) -> dict[str, Any]:
    start = time.perf_counter()

    def cell(source: str) -> None:
        if lm_configured and source.startswith("%load_ext"):
            source = "%load_ext lmassert_magic"
        result = shell.run_cell(source, silent=True)
        if not result.success:
            raise SystemExit(f"cell failed: {source[:80]!r}: {result.error_in_exec or result.error_before_exec}")

    cells, flags, body = quickstart_cells()
    flags = flags.replace("--seed 0", f"--seed {seed}")
    say(f"[{time.perf_counter() - start:6.0f} s] quickstart cells ({len(cells)}), N = {n} train and dev examples")
    for source in cells:
        cell(source)
    import dspy

    runs = {}
    for optimizer in OPTIMIZERS:
        say(f"[{time.perf_counter() - start:6.0f} s] {NAMES[optimizer]}: compile, then "
            f"{' and '.join(LABELS[k] for k in SETTINGS)} on {n} dev examples")
        began = time.perf_counter()
        cell(compile_cell(optimizer, flags, body, max_metric_calls, time_cap))
        report = shell.user_ns[f"rep_{optimizer}"]
        runs[optimizer] = figures_of(getattr(report, "result", report), time.perf_counter() - began)
        say(f"[{time.perf_counter() - start:6.0f} s] {NAMES[optimizer]} done in {runs[optimizer]['seconds']:.0f} s")
    lm_used = dspy.settings.lm
    return {
        "meta": {
            "date": dt.date.today().isoformat(), "n_train": n, "n_dev": n, "seed": seed,
            "max_metric_calls": max_metric_calls, "time_cap": time_cap,
            "lm": getattr(lm_used, "model", type(lm_used).__name__), "threads": os.environ.get("LMASSERT_THREADS"),
            "dspy": version("dspy-ai") if _installed("dspy-ai") else version("dspy"), "gepa": version("gepa"),
            "python": platform.python_version(), "seconds": time.perf_counter() - start,
        },
        "runs": runs,
        "differences": differences(runs, seed),
    }


def _installed(name: str) -> bool:
    try:
        version(name)
    except Exception:
        return False
    return True


# ---------------------------------------------------------------- the RESULTS.md section


def _cell(m: dict[str, Any]) -> str:
    return f"{m['rate']:.1f} [{m['ci_low']:.0f}, {m['ci_high']:.0f}]"


def command(meta: dict[str, Any]) -> str:
    """The command that made a run (its options other than the defaults spelled out)."""
    parts = [f"python bench/optimizers.py --n {meta['n_dev']}"]
    if meta["max_metric_calls"] != defaults.GEPA_MAX_METRIC_CALLS:
        parts.append(f"--max-metric-calls {meta['max_metric_calls']}")
    if meta["time_cap"] != defaults.GEPA_TIME_CAP_SECONDS:
        parts.append(f"--time-cap {meta['time_cap']:g}")
    if meta["seed"] != defaults.SEED:
        parts.append(f"--seed {meta['seed']}")
    return " ".join(parts)


def markdown(payload: dict[str, Any]) -> str:
    """The RESULTS.md section: every figure and sentence comes from the payload."""
    meta, runs = payload["meta"], payload["runs"]
    first = runs[OPTIMIZERS[0]]["settings"][SETTINGS[0]]
    measures = list(first["measures"])
    metric = first["metric"]["name"]
    lines = [
        BEGIN,
        f"## GEPA with constraint feedback vs BootstrapFewShot with assertions (TweetGen, {meta['n_dev']} dev "
        f"examples)",
        "",
        f"The quickstart's pipeline, constraints and `{metric}` metric on the embedded model ({meta['lm']}), "
        f"{meta['n_train']} train and {meta['n_dev']} dev examples, seed {meta['seed']}, run of {meta['date']} "
        f"(dspy {meta['dspy']}, gepa {meta['gepa']}). GEPA's budget: {meta['max_metric_calls']} metric calls, "
        f"time cap {meta['time_cap']:g} s. Rates are % of dev examples with 95% Wilson intervals; "
        f"`{command(meta)}` regenerates this section.",
        "",
    ]
    for key in SETTINGS:
        lines += [f"### {LABELS[key]}", "",
                  "| optimizer | " + " | ".join(measures) + f" | {metric} | LM calls/ex | compile LM calls | "
                  "compile s | eval s |",
                  "|---" * (len(measures) + 6) + "|"]
        for optimizer in OPTIMIZERS:
            s = runs[optimizer]["settings"][key]
            m = s["metric"]
            row = [NAMES[optimizer], *(_cell(s["measures"][x]) for x in measures),
                   f"{m['mean']:.1f} [{m['ci_low']:.0f}, {m['ci_high']:.0f}]", f"{s['lm_calls_per_example']:.2f}",
                   f"{s['compile_lm_calls']:,}", f"{s['compile_seconds']:.0f}", f"{s['eval_seconds']:.0f}"]
            lines.append("| " + " | ".join(row) + " |")
        lines.append("")
    lines += ["GEPA minus BootstrapFewShot, paired by dev example (95% interval on the difference):", ""]
    for key in SETTINGS:
        wanted = [d for d in payload["differences"]
                  if d["setting"] == key and d["measure"] in (ALL_CONSTRAINTS, metric)]
        lines += [f"* {LABELS[key]}: " + " ".join(d["sentence"] for d in wanted)]
    gepa = runs["gepa"]["compile"]
    lines += ["", "What each compile did:", ""]
    for optimizer in OPTIMIZERS:
        c = runs[optimizer]["compile"]
        what = "; ".join(c["notes"]) or f"{c['examples_run']} training examples run, demos per step {c['demos']}"
        lines.append(f"* {NAMES[optimizer]}: {what}; {c['lm_calls']:,} LM calls in {c['seconds']:.0f} s.")
    for step, text in gepa["instructions"].items():
        lines.append(f"* GEPA's instruction for {step}: {' '.join(str(text).split())[:300]!r}")
    lines += ["", END]
    return "\n".join(lines)


def replace_section(text: str, section: str) -> str:
    """The file with its optimizers section replaced (or appended when it has none)."""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        return head + section + rest.split(END, 1)[1]
    return text.rstrip("\n") + "\n\n" + section + "\n"


def write(payload: dict[str, Any], json_path: Path, results_md: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(payload, indent=1, default=str) + "\n", encoding="utf-8")
    old = results_md.read_text(encoding="utf-8") if results_md.exists() else ""
    results_md.write_text(replace_section(old, markdown(payload)), encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="train and dev examples (TweetGen has 40 of each)")
    parser.add_argument("--max-metric-calls", type=int, default=defaults.GEPA_MAX_METRIC_CALLS)
    parser.add_argument("--time-cap", type=float, default=defaults.GEPA_TIME_CAP_SECONDS)
    parser.add_argument("--seed", type=int, default=defaults.SEED)
    parser.add_argument("--json", type=Path, default=None, help="default: bench/results/optimizers_n{N}.json")
    parser.add_argument("--results-md", type=Path, default=RESULTS_MD)
    parser.add_argument("--from-json", type=Path, default=None, help="only regenerate RESULTS.md from this JSON")
    args = parser.parse_args()
    if args.from_json is not None:
        payload = json.loads(args.from_json.read_text(encoding="utf-8"))
        args.results_md.write_text(replace_section(args.results_md.read_text(encoding="utf-8"), markdown(payload)),
                                   encoding="utf-8")
        print(f"regenerated the optimizers section of {args.results_md}")
        return
    payload = run(args.n, args.max_metric_calls, args.time_cap, seed=args.seed,
                  say=lambda line: print(line, flush=True))
    json_path = args.json or HERE / "results" / f"optimizers_n{args.n}.json"
    write(payload, json_path, args.results_md)
    print(f"wrote {json_path} and the optimizers section of {args.results_md}")
    print(markdown(payload))


if __name__ == "__main__":
    main()
