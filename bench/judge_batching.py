"""Do TweetGen's two LM judges, asked together in one call, give the verdicts they give when asked apart? (issue 16)

`engaging` ("Is this tweet engaging?", sees the tweet) and `faithful` ("Is every claim in the tweet supported by
the context?", sees the context and the tweet) are the quickstart's and the peer benchmark's judges. On every item
of their calibration sets (lmassert_magic.datasets.labelled: engaging_labelled(40) and faithful_labelled(40), 80
items with question, context and tweet), each judge is asked on its own (`lm_judge`, two calls) and both are asked
together (`engine.constraints.ask_together`, one call: the path `batch_judges=True` takes in a run). Reported:

* agreement of batched with separate verdicts, per judge and over both (Wilson 95% intervals, Cohen's kappa);
* each judge's agreement with the labels of its own set, separate and batched, and the paired difference;
* the decision: batching may be on by default only if the lower end of the overall agreement interval is at
  least 85% and neither judge's calibrated accuracy changes distinguishably.

    flock /tmp/lmassert-model.lock .venv/bin/python bench/judge_batching.py [--n 40]

Writes bench/results/judge_batching.json. Runs on the embedded model, from an empty in-memory DSPy cache.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any

import dspy

from lmassert_magic import lm_judge
from lmassert_magic.datasets.labelled import engaging_labelled, faithful_labelled
from lmassert_magic.engine.constraints import JudgeRequest, ask_together
from lmassert_magic.engine.stats import agreement, paired_difference

HERE = Path(__file__).resolve().parent
OUT = HERE / "results" / "judge_batching.json"
ENGAGING = "Is this tweet engaging?"
FAITHFUL = "Is every claim in the tweet supported by the context?"
STEP_FIELDS = ("question", "context", "answer", "tweet")  # GenerateTweet's fields, in order
MIN_AGREEMENT = 0.85


def requests(item: dict[str, Any]) -> dict[str, JudgeRequest]:
    return {"engaging": JudgeRequest(ENGAGING, {"tweet": item["tweet"]}),
            "faithful": JudgeRequest(FAITHFUL, {"context": item["context"], "tweet": item["tweet"]})}


def judge_item(item: dict[str, Any]) -> dict[str, Any]:
    asked = requests(item)
    separate = {name: lm_judge(r.question, **r.fields) for name, r in asked.items()}
    try:
        answers = ask_together(list(asked.values()), order=STEP_FIELDS)
        batched: dict[str, bool | None] = {name: answers[r.key] for name, r in asked.items()}
        error = None
    except Exception as exc:  # the engine then asks each judge apart; here it is an error item
        batched, error = dict.fromkeys(asked), f"{type(exc).__name__}: {exc}"[:200]
    return {"separate": separate, "batched": batched, "error": error}


def rate(r: Any) -> dict[str, float]:
    return {"rate": r.rate, "ci_low": r.ci_low, "ci_high": r.ci_high, "successes": r.successes, "n": r.n}


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def summarise(items: list[tuple[str, dict, bool]], verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    ok = [(s, v) for s, v in zip(items, verdicts) if v["error"] is None]
    out: dict[str, Any] = {"items": len(items), "batched_errors": len(items) - len(ok), "judges": {}}
    pairs_all: tuple[list[bool], list[bool]] = ([], [])
    for name in ("engaging", "faithful"):
        sep = [v["separate"][name] for _, v in ok]
        bat = [v["batched"][name] for _, v in ok]
        pairs_all[0].extend(sep)
        pairs_all[1].extend(bat)
        agr = agreement(sep, bat)
        own = [(label, v) for (set_name, _, label), v in zip(items, verdicts) if set_name == name]
        sep_correct = [float(v["separate"][name] == label) for label, v in own]
        bat_correct = [None if v["error"] else float(v["batched"][name] == label) for label, v in own]
        diff = paired_difference(sep_correct, bat_correct, name_a="separate", name_b="batched")
        sep_cal = agreement([label for label, _ in own], [v["separate"][name] for _, v in own])
        kept = [(label, v["batched"][name]) for label, v in own if not v["error"]]
        bat_cal = agreement([k[0] for k in kept], [k[1] for k in kept])
        out["judges"][name] = {
            "batched_vs_separate": {**rate(agr.agreement), "kappa": agr.kappa, "kappa_low": agr.kappa_low,
                                    "kappa_high": agr.kappa_high, "yes_separate": sum(sep) / len(sep) if sep else None,
                                    "yes_batched": sum(bat) / len(bat) if bat else None},
            "vs_labels_separate": {**rate(sep_cal.agreement), "kappa": sep_cal.kappa},
            "vs_labels_batched": {**rate(bat_cal.agreement), "kappa": bat_cal.kappa},
            "accuracy_diff": {"diff": diff.diff, "ci_low": diff.ci_low, "ci_high": diff.ci_high, "n": diff.n,
                              "distinguishable": diff.distinguishable},
        }
    overall = agreement(*pairs_all)
    out["overall"] = {**rate(overall.agreement), "kappa": overall.kappa}
    changed = [n for n, j in out["judges"].items() if j["accuracy_diff"]["distinguishable"]]
    keep = overall.agreement.ci_low >= MIN_AGREEMENT and not changed and out["batched_errors"] == 0
    out["batch_by_default"] = keep
    return out


def sentences(summary: dict[str, Any]) -> list[str]:
    o = summary["overall"]
    lines = [f"Batched verdicts agree with separate ones on {o['successes']} of {o['n']} verdicts: {pct(o['rate'])} "
             f"(95% CI {pct(o['ci_low'])} to {pct(o['ci_high'])}), kappa {o['kappa']:.2f}."]
    for name, j in summary["judges"].items():
        b, s, t, d = (j["batched_vs_separate"], j["vs_labels_separate"], j["vs_labels_batched"], j["accuracy_diff"])
        lines.append(
            f"{name}: batched agrees with separate {pct(b['rate'])} ({pct(b['ci_low'])}-{pct(b['ci_high'])}, kappa "
            f"{b['kappa']:.2f}; yes {pct(b['yes_separate'])} separate, {pct(b['yes_batched'])} batched); agreement "
            f"with its labels {pct(s['rate'])} separate ({pct(s['ci_low'])}-{pct(s['ci_high'])}) vs "
            f"{pct(t['rate'])} batched ({pct(t['ci_low'])}-{pct(t['ci_high'])}), difference "
            f"{100 * d['diff']:+.1f} points (95% CI {100 * d['ci_low']:+.1f} to {100 * d['ci_high']:+.1f}, "
            f"{'distinguishable' if d['distinguishable'] else 'noise'}).")
    if summary["batched_errors"]:
        lines.append(f"{summary['batched_errors']} of {summary['items']} batched calls failed to parse.")
    off = (f"batching stays off by default (it needs the agreement interval's lower end at {pct(MIN_AGREEMENT)} or "
           "more, unchanged calibrated accuracy and no parse failures).")
    lines.append("Decision: " + ("batching can be on by default." if summary["batch_by_default"] else off))
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="items per calibration set (even; default 40)")
    args = parser.parse_args(argv)
    from lmassert_magic.lm import configure_lm

    configure_lm("local")
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    items = [("engaging", f, label) for f, label in engaging_labelled(args.n)]
    items += [("faithful", f, label) for f, label in faithful_labelled(args.n)]
    verdicts, start = [], time.perf_counter()
    for k, (_, item_fields, _) in enumerate(items, 1):
        verdicts.append(judge_item(item_fields))
        if k % 10 == 0 or k == len(items):
            print(f"{k}/{len(items)} items ({time.perf_counter() - start:.0f} s)", flush=True)
    summary = summarise(items, verdicts)
    summary["sentences"] = sentences(summary)
    summary["run"] = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "n_per_set": args.n,
                      "seconds": round(time.perf_counter() - start, 1), "model": "embedded (SmolLM2-135M-Instruct)",
                      "dspy": version("dspy"), "python": platform.python_version(),
                      "questions": {"engaging": ENGAGING, "faithful": FAITHFUL}}
    summary["verdicts"] = [{"set": s, "label": label, **v} for (s, _, label), v in zip(items, verdicts)]
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
    print("\n".join(summary["sentences"]))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
