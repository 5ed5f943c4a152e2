"""LM calls per example of this package's Infer w/ Assert on TweetGen, and what its retries repeat (issue 16).

The peer benchmark's TweetGen program and constraints (bench/peer_programs.py, bench/peer_tasks.py: no_hashtags,
under_280, has_answer, engaging, faithful; 2 backtracks, shared budget) on the first N dev examples, from a cold
cache, on the embedded model. Per example: every LM call (judge calls included, also counted apart) and, from
the run's attempt records, each retry whose outputs equal an earlier attempt's of the same step (same inputs)
and what the next retry of that step returned.

    flock /tmp/lmassert-model.lock .venv/bin/python bench/retry_economy.py --n 8 --label after
    ... --no-stop-on-repeat     # the engine as it was: every retry spent whatever it returns
    ... --batch-judges          # a step's LM judges asked in one call
    ... --retry-temperature 0   # retries at temperature 0: a repeated prompt gets the same answer

Writes bench/results/retry_economy_<label>.json and prints a summary. `--report` runs nothing: it writes the
section between the `economies` markers of bench/RESULTS.md from those JSONs and bench/results/judge_batching.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import peer_programs as programs  # noqa: E402

from lmassert_magic.engine import run_record_of  # noqa: E402
from lmassert_magic.engine.tally import tally_lm  # noqa: E402


def dev_examples(n: int) -> list[dict[str, Any]]:
    from peers import load_examples

    return [ex for ex in load_examples("tweetgen") if ex["id"].startswith("dev-")][:n]


def repeats(record: Any) -> list[dict[str, Any]]:
    """Retries whose (inputs, outputs) equal an earlier attempt's of the same step, and the step's next attempt."""
    found = []
    by_step: dict[str, list[Any]] = {}
    for attempt in record.attempts:
        by_step.setdefault(attempt.step, []).append(attempt)
    for step, attempts in by_step.items():
        for i, attempt in enumerate(attempts):
            if attempt.reason != "retry" or attempt.error:
                continue
            key = repr((sorted(attempt.inputs.items()), sorted(attempt.outputs.items())))
            earlier = [a for a in attempts[:i]
                       if repr((sorted(a.inputs.items()), sorted(a.outputs.items()))) == key]
            if not earlier:
                continue
            nxt = attempts[i + 1] if i + 1 < len(attempts) else None
            found.append({
                "step": step, "attempt": attempt.attempt, "same_as_attempt": earlier[-1].attempt,
                "same_as_previous": attempts[i - 1] is earlier[-1],
                "feedback": attempt.feedback,
                "next": None if nxt is None else {
                    "reason": nxt.reason,
                    "identical_again": repr((sorted(nxt.inputs.items()), sorted(nxt.outputs.items()))) == key,
                    "passed": all(nxt.verdicts.values()) if nxt.verdicts else None,
                },
                "stopped": getattr(attempt, "stopped", None),
            })
    return found


RESULTS_MD = HERE / "RESULTS.md"
BEGIN, END = "<!-- economies:begin -->", "<!-- economies:end -->"
RUNS = (("before", "the engine before these economies (2927bfa)"),
        ("batched", "identical-retry stop on, batch_judges on"),
        ("t0_nostop", "retries at temperature 0, identical-retry stop off"),
        ("t0_stop", "retries at temperature 0, identical-retry stop on"))


def report_section() -> str:
    """The RESULTS.md section, every number read from the committed JSONs."""
    lines = [BEGIN, "## Engine call economies on TweetGen (`bench/retry_economy.py`, `bench/judge_batching.py`)", ""]
    lines += ["Infer w/ Assert on the first TweetGen dev examples (the peer benchmark's program and five constraints, "
              "2 backtracks, shared budget), embedded model, cold cache. A repeated retry returns the step's inputs "
              "and outputs of an earlier attempt.", "",
              "| run | n | LM calls / example | judge calls / example | retries | repeated retries | stopped on a "
              "repeat | all constraints pass |", "|---|---|---|---|---|---|---|---|"]
    found = {}
    for label, what in RUNS:
        path = HERE / "results" / f"retry_economy_{label}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        s, rows = data["summary"], data["examples"]
        stopped = sum(1 for r in rows for a in r["attempts"] if a.get("stopped"))
        found[label] = s
        lines.append(f"| {what} | {s['n']} | {s['lm_calls_per_example']:.2f} | {s['judge_calls_per_example']:.2f} | "
                     f"{s['retries']} | {s['repeated_retries']} | {stopped} | {s['all_passed']} of {s['n']} |")
    lines.append("")
    for label, what in RUNS:
        if label in found and found[label]["repeated_retries"]:
            path = HERE / "results" / f"retry_economy_{label}.json"
            rows = json.loads(path.read_text(encoding="utf-8"))["examples"]
            reps = [rep for r in rows for rep in r["repeats"]]
            told = [rep for rep in reps if rep["next"] is not None]
            changed = sum(1 for rep in told if not rep["next"]["identical_again"])
            lines.append(f"* {what}: {len(reps)} of {found[label]['retries']} retries repeated an earlier output; "
                         f"{len(told)} of them had a retry after them (told of the repeat when the stop was on), "
                         f"which changed the output {changed} time(s); the others were on the last retry the "
                         f"budget allowed.")
    lines.append("* With 2 backtracks and one constrained step, a stop cannot save a call: the first repeat can come "
                 "no earlier than the first retry, is retried with the note, and a second repeat comes when the "
                 "budget is spent anyway. The stop saves calls with larger or per-constraint budgets, or where "
                 "several steps share the budget.")
    if "before" in found and "batched" in found:
        b, a = found["before"], found["batched"]
        lines.append(f"* Asking both judges in one call cut judge calls from {b['judge_calls_per_example']:.2f} to "
                     f"{a['judge_calls_per_example']:.2f} per example but examples passing every constraint fell "
                     f"from {b['all_passed']} to {a['all_passed']} of {b['n']}: batching stays off by default.")
    if "t0_nostop" in found and "t0_stop" in found:
        o, n = found["t0_nostop"], found["t0_stop"]
        lines.append(f"* With retries at temperature 0, the identical-retry stop changed LM calls per example from "
                     f"{o['lm_calls_per_example']:.2f} to {n['lm_calls_per_example']:.2f} and examples passing every "
                     f"constraint from {o['all_passed']} to {n['all_passed']} of {o['n']}.")
    judges = HERE / "results" / "judge_batching.json"
    if judges.exists():
        lines += [f"* {line}" for line in json.loads(judges.read_text(encoding="utf-8"))["sentences"]]
    lines.append(END)
    return "\n".join(lines)


def write_report() -> None:
    text = RESULTS_MD.read_text(encoding="utf-8")
    section = report_section()
    if BEGIN in text and END in text:
        text = text[: text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS_MD.write_text(text, encoding="utf-8")
    print(f"wrote the economies section of {RESULTS_MD}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8)
    parser.add_argument("--label", default="run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-stop-on-repeat", action="store_true")
    parser.add_argument("--batch-judges", action="store_true")
    parser.add_argument("--report", action="store_true", help="only write the RESULTS.md section from the JSONs")
    parser.add_argument("--retry-temperature", type=float, default=None,
                        help="temperature of retries (default: the engine's, 0.7); 0 makes a repeated prompt repeat")
    args = parser.parse_args(argv)
    if args.report:
        write_report()
        return

    from lmassert_magic.lm import configure_lm

    configure_lm("local")
    programs.cold_cache()
    judge = programs.CountingJudge()
    program = programs.build(programs.OURS, "tweetgen", judge, seed=args.seed)
    config = program._lmassert_config
    options = {"stop_on_repeat": not args.no_stop_on_repeat, "batch_judges": args.batch_judges}
    if args.retry_temperature is not None:
        config.retry_temperature = args.retry_temperature
    for name, value in options.items():
        if hasattr(config, name):
            setattr(config, name, value)
        else:
            print(f"note: this engine has no option {name}; running without it", flush=True)
            options[name] = None
    rows = []
    started = time.perf_counter()
    for k, example in enumerate(dev_examples(args.n), 1):
        with tally_lm() as tally:
            error, outputs, record = None, None, None
            try:
                prediction = program(question=example["question"], context=example["context"])
                outputs = {"answer": prediction.answer, "tweet": prediction.tweet}
                record = run_record_of(prediction)
            except Exception as exc:  # a hard failure loses the example
                error = f"{type(exc).__name__}: {exc}"[:300]
                record = getattr(exc, "record", None)
        attempts = record.attempts if record is not None else []
        row = {
            "id": example["id"], "error": error, "outputs": outputs,
            "lm_calls": tally.calls, "cache_hits": tally.cache_hits,
            "judge_calls": sum(a.judge_calls for a in attempts),
            "step_calls": sum(a.lm_calls for a in attempts),
            "verdicts": {n: s.passed_final for n, s in (record.constraints.items() if record else [])},
            "repeats": repeats(record) if record is not None else [],
            "attempts": [{"step": a.step, "attempt": a.attempt, "reason": a.reason, "outputs": a.outputs,
                          "feedback": a.feedback, "verdicts": a.verdicts, "judge_calls": a.judge_calls,
                          "stopped": getattr(a, "stopped", None)} for a in attempts],
        }
        rows.append(row)
        print(f"{k}/{args.n} {example['id']}: {row['lm_calls']} calls ({row['judge_calls']} judge), "
              f"{len(row['repeats'])} repeated retries{'; ' + error if error else ''}", flush=True)
    seconds = time.perf_counter() - started
    calls = [r["lm_calls"] for r in rows]
    summary = {
        "label": args.label, "n": len(rows), "options": options, "retry_temperature": config.retry_temperature,
        "seed": args.seed, "seconds": round(seconds, 1),
        "lm_calls_per_example": statistics.mean(calls) if calls else None,
        "judge_calls_per_example": statistics.mean(r["judge_calls"] for r in rows) if rows else None,
        "repeated_retries": sum(len(r["repeats"]) for r in rows),
        "retries": sum(1 for r in rows for a in r["attempts"] if a["reason"] == "retry"),
        "all_passed": sum(1 for r in rows if r["verdicts"] and all(r["verdicts"].values())),
    }
    out = HERE / "results" / f"retry_economy_{args.label}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"summary": summary, "examples": rows}, indent=1, default=str), encoding="utf-8")
    print(json.dumps(summary, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
