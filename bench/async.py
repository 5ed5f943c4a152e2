"""Async vs threaded throughput of an activated program on a scripted LM with a fixed latency (target:
async at 32 calls in flight >= the 8-thread figure).

The LM stands in for a remote model: each call waits `--latency` seconds (`time.sleep` on the sync
path, `asyncio.sleep` on the async one) and answers from a script; every third example fails its
`no_hashtags` constraint once and is retried with feedback, so the retry path is part of the figure.
Both runs use the package's evaluation (`evaluate_program`: threads, or `concurrency=N` in one event
loop) and must measure the same results. One run each, timed in one process; the ratio is the figure.

    python bench/async.py [--latency 0.05] [--examples 128] [--threads 8] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import re
import time

import dspy

from lmassert_magic import Constraint, activate_assertions
from lmassert_magic.engine.evaluation import evaluate_program
from lmassert_magic.testing import ScriptedLM

FIX = "Please remove hashtags"


class Tweet(dspy.Signature):
    """Write a tweet answering the question."""

    question: str = dspy.InputField()
    tweet: str = dspy.OutputField()


class Tweeter(dspy.Module):
    """One step, called with `Predict.acall` on the async path."""

    def __init__(self) -> None:
        super().__init__()
        self.gen = dspy.Predict(Tweet)

    def forward(self, question: str) -> dspy.Prediction:
        return self.gen(question=question)

    async def aforward(self, question: str) -> dspy.Prediction:
        return await self.gen.acall(question=question)


def respond(messages: list[dict]) -> dict:
    text = messages[-1]["content"]
    n = int(re.search(r"q(\d+)", text).group(1))
    bad = n % 3 == 0 and FIX not in text
    return {"tweet": f"tweet {n}" + (" #tag" if bad else "")}


def metric(example: dspy.Example, prediction: dspy.Prediction, trace: object = None) -> float:
    return float("#" not in prediction.tweet)


def measure(examples: list[dspy.Example], latency: float, **how: int) -> tuple[float, float, int, list]:
    """(seconds, CPU seconds of the process, LM calls, per-example outcomes) of one evaluation run with a
    fresh LM and program. CPU over wall says how much of a core the run got: on a shared machine a run
    that gets little is CPU-bound whatever its concurrency."""
    lm = ScriptedLM(respond, latency=latency)
    program = activate_assertions(
        Tweeter(), constraints=[Constraint("no_hashtags", lambda tweet: "#" not in tweet, FIX + ".")]
    )
    with dspy.context(lm=lm):
        start, cpu = time.perf_counter(), time.process_time()
        evaluation = evaluate_program(program, examples, metric, **how)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    outcomes = [(e.outputs.get("tweet"), e.score, e.record.lm_calls if e.record else None)
                for e in evaluation.examples]
    return seconds, cpu, len(lm.prompts), outcomes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05, help="seconds per LM call (default 0.05)")
    parser.add_argument("--examples", type=int, default=128, help="dev examples (default 128)")
    parser.add_argument("--threads", type=int, default=8, help="threads of the threaded run (default 8)")
    parser.add_argument("--concurrency", type=int, default=32, help="calls in flight of the async run (default 32)")
    args = parser.parse_args()
    examples = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(args.examples)]

    threaded_s, threaded_cpu, threaded_calls, threaded = measure(examples, args.latency, num_threads=args.threads)
    async_s, async_cpu, async_calls, async_ = measure(examples, args.latency, concurrency=args.concurrency)
    if async_ != threaded or async_calls != threaded_calls:
        raise SystemExit("the async run measured other results than the threaded one")

    n = args.examples
    print(f"{n} examples, {threaded_calls} LM calls each run ({n // 3 + (n % 3 > 0)} retried once), "
          f"{args.latency * 1000:.0f} ms per call; one run each")
    print(f"threaded, {args.threads:>2} threads : {threaded_s:6.2f} s  {n / threaded_s:7.1f} examples/s  "
          f"{threaded_calls / threaded_s:7.1f} LM calls/s  CPU {threaded_cpu:5.2f} s "
          f"({100 * threaded_cpu / threaded_s:3.0f}% of wall, {1000 * threaded_cpu / threaded_calls:.1f} ms/call)")
    print(f"async, {args.concurrency:>2} in flight: {async_s:6.2f} s  {n / async_s:7.1f} examples/s  "
          f"{async_calls / async_s:7.1f} LM calls/s  CPU {async_cpu:5.2f} s "
          f"({100 * async_cpu / async_s:3.0f}% of wall, {1000 * async_cpu / async_calls:.1f} ms/call)")
    ratio = threaded_s / async_s
    verdict = "meets" if ratio >= 1 else "misses"
    print(f"async / threaded throughput: {ratio:.2f}x ({verdict} the target: async at {args.concurrency} "
          f">= {args.threads} threads)")


if __name__ == "__main__":
    main()
