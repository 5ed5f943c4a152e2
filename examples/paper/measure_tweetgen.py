"""Issue 21's measurement: the paper's TweetGen with imports swapped, against the plain program and DSPy 2.5.43.

    python examples/paper/measure_tweetgen.py [--n 2] [--train 4] [--dspy25 /path/to/venv/bin/python]

For DSPy 3 (this package) it reports, per dev example, the LM calls of the plain and the asserted
program (all calls, and those that reached the model rather than the cache), which step made
them, and the three judge-free checks; then it bootstraps demos for the plain student from the
asserted teacher (`BootstrapFewShot`, the step `BootstrapFewShotWithRandomSearch` repeats per
candidate) and reports how many it kept. With `--dspy25`, the very same program file runs on
DSPy 2.5.43 with its original imports (`from dspy.predict import Retry`, `dspy.Suggest`, ...),
talking to the same embedded model over its loopback HTTP endpoint; requests that reached the
model are counted there.

Run it under `flock /tmp/lmassert-model.lock` on a shared machine: it uses the embedded model.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import common  # noqa: E402
import tweetgen  # noqa: E402


class StepCounter(BaseCallback):
    """Which predictor (by signature; `(retry)` when it carried feedback) each LM call came from."""

    def __init__(self) -> None:
        self.stack: list[str | None] = []
        self.by_step: collections.Counter[str] = collections.Counter()

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        label = None
        if isinstance(instance, dspy.Predict):
            kwargs = inputs.get("kwargs", inputs)
            outputs = [f for f in instance.signature.output_fields if f != "reasoning"]
            label = "->".join(outputs) + (" (retry)" if "feedback" in kwargs else "")
        self.stack.append(label)

    def on_module_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        if self.stack:
            self.stack.pop()

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        label = next((x for x in reversed(self.stack) if x), "?")
        self.by_step[label] += 1


def measure_dspy3(n: int) -> dict[str, Any]:
    _, dev = common.datasets(tweetgen.STUDY, tweetgen.INPUTS, n_dev=n)
    out = {}
    for label, program in (("plain", tweetgen.plain_program()), ("asserted", tweetgen.asserted_program())):
        counter = StepCounter()
        with dspy.context(callbacks=[counter]):
            run = common.run_program(program, dev)
        passed = sum(1 for x, p in zip(dev, run.predictions) if p is not None and tweetgen.deterministic_checks(x, p))
        out[label] = {
            "calls/ex": run.lm_calls / n, "uncached/ex": run.uncached_calls / n, "errors": run.errors,
            "backtracks": run.backtracks, "three checks passed": f"{passed} of {n}", "seconds": round(run.seconds, 1),
            "calls by step": dict(counter.by_step),
            "tweets": [p.generated_tweet if p is not None else None for p in run.predictions],
        }
    return out


def bootstrap_demos(n_train: int) -> dict[str, Any]:
    """Demos the plain student gets from the asserted teacher (and, for comparison, from the plain one)."""
    train, _ = common.datasets(tweetgen.STUDY, tweetgen.INPUTS, n_train=n_train)
    out = {}
    teachers = (("asserted teacher", tweetgen.asserted_program()), ("plain teacher", tweetgen.plain_program()))
    for label, teacher in teachers:
        optimizer = dspy.BootstrapFewShot(metric=tweetgen.COMPILE_METRIC, max_bootstrapped_demos=2,
                                          max_labeled_demos=0, max_errors=n_train)
        start = time.perf_counter()
        compiled = optimizer.compile(tweetgen.plain_program(), teacher=teacher, trainset=train)
        out[label] = {"demos": common.demos_of(compiled), "seconds": round(time.perf_counter() - start, 1)}
    return out


DSPY25_DRIVER = r'''
import json, sys, time, importlib.util
task = json.load(open(sys.argv[1]))
import dspy
import dspy.clients.lm as lm_module

calls = {"n": 0}
real = lm_module.litellm_completion
def counting(request, num_retries, cache={"no-cache": True, "no-store": True}):
    calls["n"] += 1  # an LRU miss: a request that reaches the model
    return real(request, num_retries, cache=cache)
lm_module.litellm_completion = counting

spec = importlib.util.spec_from_file_location("bm25", task["retrieve_py"])
bm25 = importlib.util.module_from_spec(spec); spec.loader.exec_module(bm25)
index = bm25.BM25Retriever(task["passages"])
from dsp.utils import dotdict
def rm(query, k=None, **_):
    return [dotdict(long_text=p, score=s) for p, s in index.search(query, k)]

lm = dspy.LM("openai/smollm2", api_base=task["url"], api_key="local", temperature=0.0, max_tokens=512)
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
import logging
class NotFound(logging.Handler):
    count = 0
    def emit(self, record):
        if "not found in trace" in record.getMessage():
            NotFound.count += 1
logging.getLogger("dspy.primitives.assertions").addHandler(NotFound())
out = {}
for label, make in (("plain", program["plain_program"]), ("asserted", program["asserted_program"])):
    calls["n"] = 0
    history_before, NotFound.count = len(lm.history), 0
    prog, errors, tweets, passed = make(), [], [], 0
    start = time.perf_counter()
    for ex in task["examples"]:
        try:
            pred = prog(question=ex["question"], answer=ex["answer"])
            tweets.append(pred.generated_tweet)
            passed += program["deterministic_checks"](dspy.Example(**ex), pred)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300]); tweets.append(None)
    n = len(task["examples"])
    entries = lm.history[history_before:]
    retries = sum(1 for e in entries if "past_" in json.dumps(e.get("messages") or e.get("prompt") or ""))
    out[label] = {"calls/ex": len(entries) / n, "requests/ex": calls["n"] / n, "retry prompts": retries,
                  "target not found (logged)": NotFound.count, "errors": errors,
                  "three checks passed": f"{passed} of {n}", "seconds": round(time.perf_counter() - start, 1),
                  "tweets": tweets}
if task["train"]:
    for label, make in (("asserted teacher", program["asserted_program"]), ("plain teacher", program["plain_program"])):
        train = [dspy.Example(**ex).with_inputs("question", "answer") for ex in task["train"]]
        optimizer = dspy.BootstrapFewShot(metric=program["overall_metric"], max_bootstrapped_demos=2,
                                          max_labeled_demos=0, max_errors=len(train))
        compiled = optimizer.compile(program["plain_program"](), teacher=make(), trainset=train)
        out[f"demos, {label}"] = {name: len(p.demos) for name, p in compiled.named_predictors()}
print(json.dumps(out))
'''


def measure_dspy25(python: str, n: int, n_train: int = 0) -> dict[str, Any]:
    from lmassert_magic.datasets import load_study
    from lmassert_magic.lm import local_server_url

    study = load_study(tweetgen.STUDY)
    examples = [{"question": x.question, "answer": x.answer} for x in study.dev[:n]]
    train = [{"question": x.question, "answer": x.answer} for x in study.train[:n_train]]
    retrieve_py = str(Path(common.__file__).resolve().parents[2] / "lmassert_magic" / "retrieve.py")
    with tempfile.TemporaryDirectory() as tmp:
        task = Path(tmp) / "task.json"
        task.write_text(json.dumps({"examples": examples, "train": train, "passages": list(study.passages),
                                    "url": local_server_url(), "program": str(HERE / "tweetgen.py"),
                                    "retrieve_py": retrieve_py}))
        env = {**os.environ, "DSP_CACHEDIR": str(Path(tmp) / "c"), "DSPY_CACHEDIR": str(Path(tmp) / "c"),
               "LITELLM_LOG": "ERROR"}
        done = subprocess.run([python, "-c", DSPY25_DRIVER, str(task)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"DSPy 2.5.43 run failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2, help="dev examples")
    parser.add_argument("--train", type=int, default=0, help="train examples to bootstrap demos from (0: skip)")
    parser.add_argument("--dspy25", default=None, help="python of a venv with dspy==2.5.43 and rank_bm25")
    parser.add_argument("--max-tokens", type=int, default=None, help="the embedded model's max_tokens")
    parser.add_argument("--only-dspy25", action="store_true", help="skip the DSPy 3 measurements")
    args = parser.parse_args()

    from lmassert_magic.lm import configure_lm

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)  # cold, like the DSPy 2.5.43 run
    configure_lm("local", **({"max_tokens": args.max_tokens} if args.max_tokens else {}))
    dspy.configure(rm=common.retriever(tweetgen.STUDY), trace=[])
    parts = [] if args.only_dspy25 else [("DSPy 3 + lmassert_magic", lambda: measure_dspy3(args.n))]
    if args.dspy25:
        parts.append(("DSPy 2.5.43", lambda: measure_dspy25(args.dspy25, args.n, args.train)))
    if args.train and not args.only_dspy25:
        parts.append(("bootstrapped demos", lambda: bootstrap_demos(args.train)))
    for title, measure in parts:  # each part printed as soon as it is done
        print(json.dumps({title: measure()}, indent=2, default=str), flush=True)


if __name__ == "__main__":
    main()
