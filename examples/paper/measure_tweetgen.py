"""Issue 21's measurement: the paper's TweetGen with imports swapped, against the plain program and DSPy 2.5.43.

    python examples/paper/measure_tweetgen.py [--n 6] [--train 6] [--seed 0] [--dspy25 VENV/bin/python]
    python examples/paper/measure_tweetgen.py --from-json        # regenerate the README section, no model

For DSPy 3 (this package) it runs the plain and the asserted program on the first `--n` dev examples of
the TweetGen study and records, per program, the LM calls (cached or not) and the requests that reached
the model (each program starts from an empty cache), which step made them, and the three judge-free
checks per example; then it bootstraps demos for the plain student from the asserted teacher and from
the plain one (`BootstrapFewShot`, the step `BootstrapFewShotWithRandomSearch` repeats per candidate)
on the first `--train` train examples, recording every teacher trace the metric scored and which checks
its tweet failed. With `--dspy25`, the very same program file runs on DSPy 2.5.43 with its original
imports (`from dspy.predict import Retry`, `dspy.Suggest`, ...), talking to the same embedded model over
its loopback HTTP endpoint, and is measured the same way.

The results go to `tweetgen_measure.json` (commit, date, seed, sizes, versions, per-example records),
and the README section between `<!-- tweetgen-measure -->` markers is regenerated from that file: every
figure and every comparing sentence there comes from the JSON (`render`), so a README edited by hand or
left stale fails `tests/test_paper_programs.py`.

Run it under `flock /tmp/lmassert-model.lock` on a shared machine: it uses the embedded model.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import tweetgen  # noqa: E402

from lmassert_magic.engine import defaults  # noqa: E402
from lmassert_magic.engine.stats import describe_difference, paired_difference, rate_of  # noqa: E402

JSON_PATH = HERE / "tweetgen_measure.json"
README_PATH = HERE / "README.md"
BEGIN, END = "<!-- tweetgen-measure -->", "<!-- /tweetgen-measure -->"
CHECKS = ("no hashtags", "at most 280 characters", "states the answer")
MAX_DEMOS = 2  # the paper's max_bootstrapped_demos
# Issue 21 as filed: the asserted program's LM calls per example and the asserted teacher's demos, on 4 dev
# examples of the embedded model, before the fixes this measurement checks.
ISSUE_21 = {"calls/ex": 21.8, "plain calls/ex": 3.0, "n": 4, "demos": 0}
SYSTEMS = {"dspy3": "this package (DSPy 3)", "dspy25": "DSPy 2.5.43"}


def check_flags(tweet: Any, answer: str) -> dict[str, bool]:
    """The three judge-free checks of a tweet (None: the program raised, every check fails)."""
    if not isinstance(tweet, str):
        return dict.fromkeys(CHECKS, False)
    return {"no hashtags": tweetgen.has_no_hashtags(tweet),
            "at most 280 characters": tweetgen.is_within_length_limit(tweet),
            "states the answer": tweetgen.has_correct_answer(tweet, answer)}


def step_of(messages: Any) -> str:
    """Which step an LM request came from, read off its prompt (the same rule for DSPy 3 and 2.5.43)."""
    text = json.dumps(messages or "")
    if "Write a simple search query" in text:
        return "query"
    if "Generate an engaging tweet" in text:
        return "tweet (retry)" if "past_tweet" in text or "feedback" in text.lower() else "tweet"
    if "Assess the quality of a tweet" in text:
        return "judge"
    return "other"


def program_record(examples: list[dict[str, str]], tweets: list[Any], errors: list[str], calls: int, requests: int,
                   seconds: float, by_step: dict[str, int]) -> dict[str, Any]:
    """One program over the dev examples, in the JSON's shape (shared by both systems)."""
    n = len(examples)
    flags = [check_flags(t, x["answer"]) for t, x in zip(tweets, examples)]
    passed = [all(f.values()) for f in flags]
    rate = rate_of(sum(passed), n)
    return {
        "n": n, "lm_calls": calls, "requests": requests, "calls/ex": round(calls / n, 2),
        "requests/ex": round(requests / n, 2), "calls by step": dict(sorted(by_step.items())),
        "checks passed": {"passed": sum(passed), "n": n, "rate": rate.rate, "ci95": [rate.ci_low, rate.ci_high]},
        "per check passed": {c: sum(f[c] for f in flags) for c in CHECKS},
        "errors": errors, "seconds": round(seconds, 1),
        "examples": [{"question": x["question"], "answer": x["answer"], "tweet": t, "checks": f}
                     for x, t, f in zip(examples, tweets, flags)],
    }


class StepCounter(BaseCallback):
    """Counts the LM calls of a DSPy 3 run by step (cache hits included), read off each call's prompt."""

    def __init__(self) -> None:
        self.by_step: collections.Counter[str] = collections.Counter()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        self.by_step[step_of(inputs.get("messages") or inputs.get("prompt"))] += 1


def fresh_cache() -> None:
    """An empty in-memory cache and no disk cache: each program's requests are counted from cold."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)


def as_dicts(examples: list[dspy.Example]) -> list[dict[str, str]]:
    return [{"question": x.question, "answer": x.answer} for x in examples]


def measure_dspy3(n: int) -> dict[str, Any]:
    _, dev = common.datasets(tweetgen.STUDY, tweetgen.INPUTS, n_dev=n)
    out = {}
    for label, make in (("plain", tweetgen.plain_program), ("asserted", tweetgen.asserted_program)):
        fresh_cache()
        counter = StepCounter()
        with dspy.context(callbacks=[counter]):
            run = common.run_program(make(), dev)
        tweets = [p.generated_tweet if p is not None else None for p in run.predictions]
        out[label] = program_record(as_dicts(dev), tweets, run.errors, run.lm_calls, run.uncached_calls, run.seconds,
                                    dict(counter.by_step))
        out[label]["backtracks"] = run.backtracks
    return out


class RecordingMetric:
    """The compile metric, recording each teacher trace it scores: the tweet, its checks, the score."""

    def __init__(self, metric: Any) -> None:
        self.metric, self.traces = metric, []

    def __call__(self, gold: Any, pred: Any, trace: Any = None) -> Any:
        score = self.metric(gold, pred, trace)
        tweet = getattr(pred, "generated_tweet", None)
        self.traces.append({"question": gold.question, "tweet": tweet, "checks": check_flags(tweet, gold.answer),
                            "score": float(score)})
        return score


def teacher_record(demos: dict[str, int], traces: list[dict[str, Any]], errors: int, seconds: float) -> dict[str, Any]:
    return {"demos": demos, "max demos per predictor": MAX_DEMOS, "traces scored": len(traces),
            "traces passed": sum(1 for t in traces if t["score"]), "errors": errors, "seconds": round(seconds, 1),
            "traces": traces}


def bootstrap_demos(n_train: int) -> dict[str, Any]:
    """Demos the plain student gets from the asserted teacher and from the plain one (the paper's compile step)."""
    train, _ = common.datasets(tweetgen.STUDY, tweetgen.INPUTS, n_train=n_train)
    out = {}
    for label, make in (("asserted teacher", tweetgen.asserted_program), ("plain teacher", tweetgen.plain_program)):
        fresh_cache()
        metric = RecordingMetric(tweetgen.COMPILE_METRIC)
        optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=MAX_DEMOS, max_labeled_demos=0,
                                          max_errors=n_train + 1)
        start = time.perf_counter()
        compiled = optimizer.compile(tweetgen.plain_program(), teacher=make(), trainset=train)
        out[label] = teacher_record(common.demos_of(compiled), metric.traces, optimizer.error_count,
                                    time.perf_counter() - start)
    return out


DSPY25_DRIVER = r'''
import json, sys, time, random, importlib.util
from importlib.metadata import version
task = json.load(open(sys.argv[1]))
random.seed(task["seed"])
import dspy
import dspy.clients.lm as lm_module

calls = {"n": 0}
real = lm_module.litellm_completion
def fresh_cache():
    """2.5.43's LRU cache replaced by an empty one per program; litellm's disk cache never read."""
    memo = {}
    def cached(request, num_retries):
        key = json.dumps(request, sort_keys=True, default=str)
        if key not in memo:
            calls["n"] += 1  # a request that reaches the model
            memo[key] = real(request, num_retries, cache={"no-cache": True, "no-store": True})
        return memo[key]
    lm_module.cached_litellm_completion = cached
    calls["n"] = 0

spec = importlib.util.spec_from_file_location("bm25", task["retrieve_py"])
bm25 = importlib.util.module_from_spec(spec); spec.loader.exec_module(bm25)
index = bm25.BM25Retriever(task["passages"])
from dsp.utils import dotdict
def rm(query, k=None, **_):
    return [dotdict(long_text=p, score=s) for p, s in index.search(query, k)]

lm = dspy.LM("openai/smollm2", api_base=task["url"], api_key="local", temperature=0.0, max_tokens=512,
             seed=task["seed"])
dspy.settings.configure(lm=lm, rm=rm, trace=[], adapter=dspy.JSONAdapter())
source = open(task["program"]).read()
source = source.replace("from dspy.dsp.utils import deduplicate", "from dsp.utils import deduplicate")
source = source.replace(
    "from lmassert_magic.compat import Retry, Suggest, assert_transform_module, backtrack_handler",
    "from dspy.predict import Retry\n"
    "from dspy.primitives.assertions import assert_transform_module, backtrack_handler\n"
    "Suggest = dspy.Suggest",
)
program = {}
exec(compile(source, "tweetgen_dspy25.py", "exec"), program)
out = {"versions": {"dspy": version("dspy"), "litellm": version("litellm")}}
for label, make in (("plain", program["plain_program"]), ("asserted", program["asserted_program"])):
    fresh_cache()
    history_before = len(lm.history)
    prog, errors, tweets = make(), [], []
    start = time.perf_counter()
    for ex in task["examples"]:
        try:
            tweets.append(prog(question=ex["question"], answer=ex["answer"]).generated_tweet)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300]); tweets.append(None)
    seconds = time.perf_counter() - start
    prompts = [json.dumps(e.get("messages") or e.get("prompt")) for e in lm.history[history_before:]]
    out[label] = {"tweets": tweets, "errors": errors, "calls": len(prompts), "requests": calls["n"],
                  "seconds": seconds, "prompts": prompts}

class Recording:
    def __init__(self, metric):
        self.metric, self.traces = metric, []
    def __call__(self, gold, pred, trace=None):
        score = self.metric(gold, pred, trace)
        self.traces.append({"question": gold.question, "answer": gold.answer,
                            "tweet": getattr(pred, "generated_tweet", None), "score": float(score)})
        return score

train = [dspy.Example(**ex).with_inputs("question", "answer") for ex in task["train"]]
for label, make in (("asserted teacher", program["asserted_program"]), ("plain teacher", program["plain_program"])):
    if not train:
        break
    fresh_cache()
    metric = Recording(program["overall_metric"])
    optimizer = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=task["max_demos"], max_labeled_demos=0,
                                      max_errors=len(train) + 1)
    start = time.perf_counter()
    compiled = optimizer.compile(program["plain_program"](), teacher=make(), trainset=train)
    out[label] = {"demos": {name: len(p.demos) for name, p in compiled.named_predictors()}, "traces": metric.traces,
                  "errors": getattr(optimizer, "error_count", 0), "seconds": time.perf_counter() - start}
print(json.dumps(out))
'''


def measure_dspy25(python: str, n: int, n_train: int, seed: int) -> dict[str, Any]:
    from lmassert_magic.datasets import load_study
    from lmassert_magic.lm import local_server_url

    study = load_study(tweetgen.STUDY)
    dev, train = as_dicts(study.dev[:n]), as_dicts(study.train[:n_train])
    retrieve_py = str(Path(common.__file__).resolve().parents[2] / "lmassert_magic" / "retrieve.py")
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "task.json"
        task.write_text(json.dumps({"examples": dev, "train": train, "passages": list(study.passages),
                                    "url": local_server_url(), "seed": seed, "max_demos": MAX_DEMOS,
                                    "program": str(HERE / "tweetgen.py"), "retrieve_py": retrieve_py}))
        env = {**os.environ, "DSP_CACHEDIR": str(Path(tmp) / "c"), "DSPY_CACHEDIR": str(Path(tmp) / "c"),
               "LITELLM_LOG": "ERROR"}
        done = subprocess.run([python, "-c", DSPY25_DRIVER, str(task)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"DSPy 2.5.43 run failed:\n{done.stderr[-3000:]}")
    raw = json.loads(done.stdout.strip().splitlines()[-1])
    out: dict[str, Any] = {"versions": raw["versions"]}
    for label in ("plain", "asserted"):
        r = raw[label]
        out[label] = program_record(dev, r["tweets"], r["errors"], r["calls"], r["requests"], r["seconds"],
                                    dict(collections.Counter(step_of(json.loads(m)) for m in r["prompts"])))
    for label in ("asserted teacher", "plain teacher"):
        if label in raw:
            r = raw[label]
            traces = [{"question": t["question"], "tweet": t["tweet"], "checks": check_flags(t["tweet"], t["answer"]),
                       "score": t["score"]} for t in r["traces"]]
            out[label] = teacher_record(r["demos"], traces, r["errors"], r["seconds"])
    return out


# ---------------------------------------------------------------- the JSON and the README section


def _version(name: str) -> str | None:
    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _commit() -> str:
    root = HERE.parents[1]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def command_of(args: argparse.Namespace) -> str:
    parts = ["python examples/paper/measure_tweetgen.py", f"--n {args.n}", f"--train {args.train}",
             f"--seed {args.seed}"]
    if args.dspy25:
        parts.append("--dspy25 VENV/bin/python")
    return " ".join(parts)


def _per_ex(record: dict[str, Any], key: str) -> str:
    return f"{record[key]:.1f}"


def _steps(record: dict[str, Any]) -> str:
    n, steps = record["n"], record["calls by step"]
    names = (("query", "queries"), ("tweet", "tweet"), ("tweet (retry)", "tweet retries"), ("judge", "judges"),
             ("other", "other"))
    return ", ".join(f"{steps[k] / n:.1f} {label}" for k, label in names if steps.get(k))


def _checks(record: dict[str, Any]) -> str:
    c = record["checks passed"]
    return f"{c['passed']} of {c['n']}: {rate_of(c['passed'], c['n'])}"


def _passed(record: dict[str, Any]) -> list[float]:
    return [float(all(x["checks"].values())) for x in record["examples"]]


def _failed_checks(traces: list[dict[str, Any]]) -> str:
    failing = [t for t in traces if not t["score"]]
    counts = {c: sum(1 for t in failing if not t["checks"][c]) for c in CHECKS}
    said = [f"'{c}' in {k}" for c, k in counts.items() if k]
    judged = sum(1 for t in failing if all(t["checks"].values()))
    if judged:
        said.append(f"both LM judges said no in {judged}")
    return ", ".join(said) if said else "none"


def _demo_sentence(system: str, side: dict[str, Any]) -> str:
    parts = []
    for label in ("asserted teacher", "plain teacher"):
        t = side[label]
        demos = sum(t["demos"].values())
        errors = f"; {t['errors']} raised" if t["errors"] else ""
        parts.append(f"the {label} gave {demos} (at most {t['max demos per predictor']} per predictor): "
                     f"{t['traces passed']} of the {t['traces scored']} traces the metric scored passed{errors}")
    name = SYSTEMS[system]
    return f"{name[0].upper()}{name[1:]}: " + "; ".join(parts) + "."


def render(results: dict[str, Any]) -> str:
    """The README section, generated from the measurement's JSON: every figure and comparison comes from it."""
    meta, dspy3, dspy25 = results["meta"], results["dspy3"], results.get("dspy25")
    n, n_train = meta["n"], meta["train"]
    v = meta["versions"]
    lines = [
        f"Generated by `{meta['command']}` into `examples/paper/tweetgen_measure.json` (commit "
        f"`{meta['commit'][:12]}`, {meta['date']}, seed {meta['seed']}; {meta['model']}, temperature 0, "
        f"{meta['cpu_count']} CPU cores; DSPy {v['dspy']}"
        + (f", DSPy {dspy25['versions']['dspy']} with LiteLLM {dspy25['versions']['litellm']}" if dspy25 else "")
        + f"; {meta['model seconds']:.0f} s of model time). `--from-json` regenerates this section from that file.",
        "",
        f"Dev: the first {n} examples of the TweetGen study; train: the first {n_train}. The DSPy 2.5.43 columns run "
        "the very same file with its original imports, in its own venv, talking to the same model over HTTP with "
        "`dspy.JSONAdapter`; this package gives the embedded model grammar-constrained JSON. \"LM calls\" are the "
        "calls a program made, cached or not; \"requests\" those that reached the model, each program starting "
        "from an empty cache.",
        "",
    ]
    columns = [("plain, DSPy 3", dspy3["plain"]), ("asserted, this package", dspy3["asserted"])]
    if dspy25:
        columns += [("plain, DSPy 2.5.43", dspy25["plain"]), ("asserted, DSPy 2.5.43", dspy25["asserted"])]
    lines += [
        f"| per example (n={n}) | " + " | ".join(label for label, _ in columns) + " |",
        "|---" * (len(columns) + 1) + "|",
        "| LM calls | " + " | ".join(_per_ex(r, "calls/ex") for _, r in columns) + " |",
        "| requests to the model | " + " | ".join(_per_ex(r, "requests/ex") for _, r in columns) + " |",
        "| calls by step | " + " | ".join(_steps(r) for _, r in columns) + " |",
        "| the three judge-free checks passed | " + " | ".join(_checks(r) for _, r in columns) + " |",
        "| programs that raised | " + " | ".join(str(len(r["errors"])) for _, r in columns) + " |",
        "",
    ]
    a3 = dspy3["asserted"]
    calls = (f"**LM calls.** The asserted program made {a3['calls/ex']:.1f} LM calls and {a3['requests/ex']:.1f} "
             f"requests per example on this package (plain: {dspy3['plain']['calls/ex']:.1f}); issue 21 reported "
             f"{ISSUE_21['calls/ex']} calls per example on {ISSUE_21['n']} examples before the fixes.")
    if dspy25:
        a25 = dspy25["asserted"]
        if a3["calls/ex"] <= a25["calls/ex"]:
            calls += (f" DSPy 2.5.43 made {a25['calls/ex']:.1f} calls and {a25['requests/ex']:.1f} requests per "
                      "example on the same examples: this package makes no more calls than 2.5.43 here")
            calls += (", and no more requests." if a3["requests/ex"] <= a25["requests/ex"] else
                      f", but more requests: this package loses on requests by "
                      f"{a3['requests/ex'] - a25['requests/ex']:.1f} per example.")
        else:
            calls += (f" DSPy 2.5.43 made {a25['calls/ex']:.1f} calls and {a25['requests/ex']:.1f} requests per "
                      f"example: this package loses here, by {a3['calls/ex'] - a25['calls/ex']:.1f} calls per example.")
        q3, q25 = (r["calls by step"].get("query", 0) / n for r in (a3, a25))
        j3, j25 = (r["calls by step"].get("judge", 0) / n for r in (a3, a25))
        if q25 > q3 or j25 > j3:
            calls += (f" DSPy 2.5.43 re-runs `forward` from the top on each backtrack: {q25:.1f} query-generator calls "
                      f"and {j25:.1f} judge calls per example where this package makes {q3:.1f} and {j3:.1f}.")
    else:
        calls += " DSPy 2.5.43 was not run for this measurement."
    lines += [calls, ""]

    checks = ["**Checks.** "
              + describe_difference("All three checks, plain vs asserted on this package", paired_difference(
                  _passed(dspy3["plain"]), _passed(a3), name_a="plain", name_b="asserted"))]
    if dspy25:
        diff = paired_difference(_passed(dspy25["asserted"]), _passed(a3), name_a="DSPy 2.5.43",
                                 name_b="this package")
        checks.append(describe_difference("Asserted, DSPy 2.5.43 vs this package", diff))
        if diff.diff < 0:
            checks.append("This package loses here" + ("." if diff.distinguishable else
                                                       ", by a margin this n cannot tell from noise."))
        plain = paired_difference(_passed(dspy25["plain"]), _passed(dspy3["plain"]), name_a="DSPy 2.5.43",
                                  name_b="DSPy 3")
        checks.append(describe_difference("Plain, DSPy 2.5.43 vs DSPy 3", plain))
        if plain.diff < 0 and diff.diff < 0:
            checks.append("The plain programs, which share no assertion code, differ the same way, so the gap "
                          "goes with the adapter and the 135M model (with 2.5.43's schema-free JSON it tends to "
                          "copy a retrieved passage, which may hold the answer) rather than with the assertions.")
    failing = {c: n - a3["per check passed"][c] for c in CHECKS}
    checks.append("Checks the asserted program's final tweets failed on this package: "
                  + ", ".join(f"'{c}' {k} of {n}" for c, k in failing.items()) + ".")
    lost = sum(1 for p, a in zip(_passed(dspy3["plain"]), _passed(a3)) if p and not a)
    won = sum(1 for p, a in zip(_passed(dspy3["plain"]), _passed(a3)) if a and not p)
    if lost or won:
        checks.append(f"Per example on this package, the assertions fixed {won} tweet{'s' * (won != 1)} and broke "
                      f"{lost}.")
    if lost:
        checks.append("The asserted program's first attempt is the plain program's request (same prompt, "
                      "temperature 0), so where the plain tweet passed all three checks, its retries were asked for "
                      "by an LM judge (engaging or faithful); the judges are at chance on this 135M model (main "
                      "README, \"Numbers\").")
    worse = [c for c in CHECKS if a3["per check passed"][c] < dspy3["plain"]["per check passed"][c]]
    if worse:
        named = [f"'{c}'" for c in worse]
        named = ", ".join(named[:-1]) + " and " + named[-1] if len(named) > 1 else named[0]
        checks.append(f"This package loses to its own plain program on {named}"
                      + ": when the retries run out, a `Suggest` lets the last attempt through, as in 2.5, and the "
                      "135M model's last attempt can break a check its first one passed.")
    lines += [" ".join(checks), ""]

    demos = [f"**Bootstrapped demos** (`BootstrapFewShot(metric=overall_metric, max_bootstrapped_demos="
             f"{MAX_DEMOS})`, the step `BootstrapFewShotWithRandomSearch` repeats per candidate, on {n_train} train "
             f"examples; it stops once it has {MAX_DEMOS}). " + _demo_sentence("dspy3", results["demos"])]
    if dspy25 and "asserted teacher" in dspy25:
        demos.append(_demo_sentence("dspy25", dspy25))
    teacher = results["demos"]["asserted teacher"]
    if sum(teacher["demos"].values()) == 0:
        demos.append(
            f"Why none from the asserted teacher on this package: the paper's metric is 0 unless the tweet states "
            f"the gold answer and fits in 280 characters, and of its {teacher['traces scored']} traces the failing "
            f"ones failed {_failed_checks(teacher['traces'])}. The feedback asked for the answer; the 135M model did "
            f"not put it in. With a model that follows the feedback (`tests/test_paper_programs.py`, scripted) the "
            f"asserted teacher bootstraps demos from its fixed traces and the plain teacher none.")
    else:
        if teacher["traces passed"] < teacher["traces scored"]:
            demos.append(f"The asserted teacher's traces that failed the metric failed "
                         f"{_failed_checks(teacher['traces'])}.")
        if dspy25 and "asserted teacher" in dspy25:
            d3, d25 = sum(teacher["demos"].values()), sum(dspy25["asserted teacher"]["demos"].values())
            if d3 < d25:
                demos.append(f"This package loses here: {d3} demos against {d25} on DSPy 2.5.43.")
    plain_teacher = results["demos"]["plain teacher"]
    d_asserted, d_plain = sum(teacher["demos"].values()), sum(plain_teacher["demos"].values())
    failed_plain = {t["question"] for t in plain_teacher["traces"] if not t["score"]}
    fixed = sum(1 for t in teacher["traces"] if t["score"] and t["question"] in failed_plain)
    if fixed:
        demos.append(f"Of the asserted teacher's passing traces, {fixed} {'is' if fixed == 1 else 'are'} on an example "
                     "where the plain teacher's trace failed the metric: the feedback got the answer into the tweet.")
    if d_asserted <= d_plain:
        demos.append(f"On this package the asserted teacher gave no more demos than the plain one ({d_asserted} vs "
                     f"{d_plain}): at this size the assertions did not add demos.")
    lines += [" ".join(demos)]
    return "\n".join(lines) + "\n"


def update_readme(results: dict[str, Any], path: Path = README_PATH) -> None:
    text = path.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{render(results)}{END}{tail}")


def readme_block(path: Path = README_PATH) -> str:
    """The README section as committed, between the markers (without them)."""
    return path.read_text().split(BEGIN, 1)[1].split(END, 1)[0].lstrip("\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=6, help="dev examples")
    parser.add_argument("--train", type=int, default=6, help="train examples to bootstrap demos from")
    parser.add_argument("--seed", type=int, default=defaults.SEED, help="the model's sampling seed (temperature 0)")
    parser.add_argument("--dspy25", default=None, help="python of a venv with dspy==2.5.43 and rank_bm25")
    parser.add_argument("--out", type=Path, default=JSON_PATH, help="where the JSON goes")
    parser.add_argument("--readme", type=Path, default=README_PATH, help="the README whose section is regenerated")
    parser.add_argument("--from-json", nargs="?", type=Path, const=JSON_PATH, default=None,
                        help="regenerate the README section from this JSON (default tweetgen_measure.json), no model")
    args = parser.parse_args()
    if args.from_json is not None:
        update_readme(json.loads(args.from_json.read_text()), args.readme)
        print(f"regenerated {args.readme} from {args.from_json}")
        return

    from lmassert_magic.lm import configure_lm
    from lmassert_magic.lm.local_install import local_model_name

    random.seed(args.seed)
    fresh_cache()
    configure_lm("local", seed=args.seed)
    dspy.configure(rm=common.retriever(tweetgen.STUDY), trace=[])
    start = time.perf_counter()
    meta = {"command": command_of(args), "commit": _commit(), "date": dt.date.today().isoformat(), "seed": args.seed,
            "n": args.n, "train": args.train, "model": local_model_name().removeprefix("local/"),
            "cpu_count": os.cpu_count(),
            "versions": {"python": platform.python_version(), **{k: _version(k) for k in (
                "dspy", "lmassert_magic", "xllamacpp")}}}
    results: dict[str, Any] = {"meta": meta}
    parts = [("dspy3", lambda: measure_dspy3(args.n)), ("demos", lambda: bootstrap_demos(args.train))]
    if args.dspy25:
        parts.append(("dspy25", lambda: measure_dspy25(args.dspy25, args.n, args.train, args.seed)))
    for key, measure in parts:
        began = time.perf_counter()
        results[key] = measure()
        print(f"[{time.perf_counter() - start:6.0f} s] {key} done in {time.perf_counter() - began:.0f} s", flush=True)
    meta["model seconds"] = round(time.perf_counter() - start, 1)
    args.out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    update_readme(results, args.readme)
    print(render(results))


if __name__ == "__main__":
    main()
