"""Thread scaling of an activated program: 1 vs 8 threads, this package vs DSPy 2.5.43 (target >= 6x).

A scripted LM with a fixed latency per call stands in for a remote model; 64 examples, every
third failing a Suggest once (so backtracking is exercised). DSPy 2.5.43 runs in its own venv
(created on first use: bench/_venv25, `pip install dspy==2.5.43`), because its assertions were
removed in 2.6.

    python bench/threads.py [--latency 0.05] [--examples 64] [--skip-dspy25]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import dspy

from lmassert_magic import Constraint, activate_assertions
from lmassert_magic.testing import ScriptedLM

HERE = Path(__file__).resolve().parent
VENV25 = HERE / "_venv25"
FIX = "Please remove hashtags"


class Tweet(dspy.Signature):
    """Write a tweet answering the question."""

    question: str = dspy.InputField()
    tweet: str = dspy.OutputField()


def respond(messages: list[dict]) -> dict:
    text = messages[-1]["content"]
    n = int(re.search(r"q(\d+)", text).group(1))
    bad = n % 3 == 0 and FIX not in text
    return {"tweet": f"tweet {n}" + (" #tag" if bad else "")}


def run_ours(threads: int, examples: list[dspy.Example]) -> float:
    program = activate_assertions(
        dspy.Predict(Tweet),
        constraints=[Constraint("no_hashtags", lambda tweet: "#" not in tweet, FIX + ".", target=Tweet)],
    )
    start = time.perf_counter()
    outputs = program.batch(examples, num_threads=threads, disable_progress_bar=True)
    seconds = time.perf_counter() - start
    assert all("#" not in o.tweet for o in outputs)
    return seconds


DSPY25_SCRIPT = textwrap.dedent(
    r'''
    import json, re, sys, time
    import dspy
    from dspy.primitives.assertions import assert_transform_module, backtrack_handler
    from dspy.utils.dummies import DummyLM

    LATENCY, N, THREADS = float(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    FIX = "Please remove hashtags"

    class LatencyLM(DummyLM):
        def __init__(self):
            super().__init__({})
        def __call__(self, prompt=None, messages=None, **kwargs):
            time.sleep(LATENCY)
            text = (messages or [{"content": prompt}])[-1]["content"]
            n = int(re.search(r"q(\d+)", text).group(1))
            bad = n % 3 == 0 and FIX not in text
            out = "[[ ## tweet ## ]]\ntweet %d%s\n\n[[ ## completed ## ]]" % (n, " #tag" if bad else "")
            return [out]

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.gen = dspy.Predict("question -> tweet")
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            dspy.Suggest("#" not in tweet, FIX + ".", target_module=self.gen)
            return dspy.Prediction(tweet=tweet)

    dspy.settings.configure(lm=LatencyLM())
    program = assert_transform_module(Program().map_named_predictors(dspy.Retry), backtrack_handler)
    devset = [dspy.Example(question="q%d" % i).with_inputs("question") for i in range(N)]
    evaluate = dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: "#" not in p.tweet,
                             num_threads=THREADS, display_progress=False)
    start = time.perf_counter()
    score = evaluate(program)
    print(json.dumps({"seconds": time.perf_counter() - start, "score": score}))
    '''
)


def ensure_dspy25() -> Path:
    python = VENV25 / "bin" / "python"
    if not python.exists():
        print("creating bench/_venv25 with dspy==2.5.43 (about 2 minutes, once)...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV25)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "dspy==2.5.43"], check=True)
    return python


def run_dspy25(python: Path, threads: int, latency: float, n: int) -> tuple[float, float]:
    out = subprocess.run(
        [str(python), "-c", DSPY25_SCRIPT, str(latency), str(n), str(threads)],
        capture_output=True, text=True, check=True,
    )
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return data["seconds"], data["score"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--examples", type=int, default=64)
    parser.add_argument("--skip-dspy25", action="store_true")
    args = parser.parse_args()

    dspy.configure(lm=ScriptedLM(respond, latency=args.latency))
    examples = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(args.examples)]
    calls = args.examples + (args.examples + 2) // 3
    print(f"{args.examples} examples, {calls} LM calls of {args.latency * 1000:.0f} ms each")
    one, eight = run_ours(1, examples), run_ours(8, examples)
    print(
        f"lmassert_magic : 1 thread {one:6.2f}s | 8 threads {eight:6.2f}s | speedup {one / eight:4.1f}x "
        "(target >= 6x)"
    )
    if args.skip_dspy25:
        return
    python = ensure_dspy25()
    (one25, s1), (eight25, s8) = run_dspy25(python, 1, args.latency, args.examples), run_dspy25(
        python, 8, args.latency, args.examples
    )
    print(
        f"DSPy 2.5.43    : 1 thread {one25:6.2f}s | 8 threads {eight25:6.2f}s | speedup {one25 / eight25:4.1f}x "
        f"(suggestion pass: {s1:.0f}% / {s8:.0f}%)"
    )
    print(f"8-thread wall time, DSPy 2.5.43 / lmassert_magic: {eight25 / eight:.1f}x")


if __name__ == "__main__":
    main()
