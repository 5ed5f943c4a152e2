"""Overhead of activated assertions when every constraint passes (target: ratio <= 1.10).

A zero-latency scripted LM isolates the cost of the engine itself: the same two-step program
runs plain and activated (three declarative constraints + one inline Suggest, all passing).

How it is timed, so that a busy machine (a model run on both cores) does not decide the figure: the
two programs run in short alternating batches, each timed in this thread's CPU time
(`time.thread_time`, which leaves out the time the OS gave other processes); each round pairs one
plain batch with the activated batch next to it, and the figure is the median of the rounds'
ratios with a 95% bootstrap interval (scipy). Wall-clock batches are printed too, for comparison.

    python bench/overhead.py [--calls 20] [--rounds 150] [--breakdown]

`--breakdown` also prints where the engine's cost comes from: the extra CPU time per program call of
an empty forward (opening and closing a run), of the two predictors without constraints, with the
three declared checks, and with the inline Suggest (the bench's program).
"""

from __future__ import annotations

import argparse
import statistics
import time

import dspy
import numpy as np
from scipy import stats

from lmassert_magic import Constraint, Suggest, activate_assertions
from lmassert_magic.testing import ScriptedLM


class Query(dspy.Signature):
    """Write a search query for the question."""

    question: str = dspy.InputField()
    query: str = dspy.OutputField()


class Answer(dspy.Signature):
    """Answer the question from the query."""

    question: str = dspy.InputField()
    query: str = dspy.InputField()
    answer: str = dspy.OutputField()


class TwoStep(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.make_query = dspy.Predict(Query)
        self.answer = dspy.Predict(Answer)

    def forward(self, question: str) -> dspy.Prediction:
        query = self.make_query(question=question).query
        answer = self.answer(question=question, query=query).answer
        Suggest(len(answer) < 200, "Keep the answer short.")
        return dspy.Prediction(query=query, answer=answer)


class TwoStepNoSuggest(TwoStep):
    def forward(self, question: str) -> dspy.Prediction:
        query = self.make_query(question=question).query
        return dspy.Prediction(query=query, answer=self.answer(question=question, query=query).answer)


class EmptyForward(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.make_query = dspy.Predict(Query)

    def forward(self, question: str) -> dspy.Prediction:
        return dspy.Prediction(answer=question)


def respond(messages: list[dict]) -> dict:
    text = messages[-1]["content"]
    return {"answer": "Velmora"} if "## query ## ]]\n" in text else {"query": "birthplace of the director"}


CONSTRAINTS = [
    Constraint("short_query", lambda query: len(query) < 100, "Keep the query under 100 characters.", target=Query),
    Constraint("no_hashtags", lambda answer: "#" not in answer, "No hashtags.", target=Answer),
    Constraint("not_empty", lambda answer: bool(answer.strip()), "Answer something.", target=Answer, hard=True),
]


def time_calls(program: dspy.Module, calls: int, clock=time.thread_time) -> float:
    start = clock()
    for i in range(calls):
        program(question=f"question {i}")
    return clock() - start


def median_ratio(activated: list[float], plain: list[float], seed: int = 0) -> tuple[float, float, float]:
    """Median of the paired rounds' activated/plain ratios, with its 95% bootstrap interval."""
    ratios = np.array(activated) / np.array(plain)
    res = stats.bootstrap((ratios,), np.median, confidence_level=0.95, method="percentile",
                          random_state=np.random.default_rng(seed))
    return float(np.median(ratios)), float(res.confidence_interval.low), float(res.confidence_interval.high)


def engine_cost(plain: dspy.Module, activated: dspy.Module, calls: int, rounds: int) -> float:
    """Median extra CPU time per program call (microseconds) of `activated` over `plain`, paired by round."""
    time_calls(plain, 30)
    time_calls(activated, 30)
    extra = []
    for _ in range(rounds):
        base = time_calls(plain, calls)
        extra.append((time_calls(activated, calls) - base) / calls * 1e6)
    return statistics.median(extra)


def breakdown(calls: int, rounds: int) -> None:
    cases = [
        ("empty forward (a run opened and closed)", EmptyForward, {}),
        ("two predictors, no constraints", TwoStepNoSuggest, {}),
        ("two predictors + 3 declared checks", TwoStepNoSuggest, {"constraints": CONSTRAINTS}),
        ("+ inline Suggest (the bench's program)", TwoStep, {"constraints": CONSTRAINTS}),
    ]
    for label, program, options in cases:
        cost = engine_cost(program(), activate_assertions(program(), **options), calls, rounds)
        print(f"engine cost, {label:<41}: {cost:.0f} us/call (CPU time, median of {rounds} rounds)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20, help="program calls per batch")
    parser.add_argument("--rounds", type=int, default=150, help="pairs of batches (plain, activated)")
    parser.add_argument("--breakdown", action="store_true", help="also print where the engine's cost comes from")
    args = parser.parse_args()

    lm = ScriptedLM(respond)
    dspy.configure(lm=lm)
    plain = TwoStep()
    asserted = activate_assertions(TwoStep(), constraints=CONSTRAINTS)
    time_calls(plain, 50)  # warm up both paths (signature classes, adapters)
    time_calls(asserted, 50)

    figures = {}
    for label, clock in (("CPU time", time.thread_time), ("wall clock", time.perf_counter)):
        plain_times, asserted_times = [], []
        for _ in range(args.rounds):
            plain_times.append(time_calls(plain, args.calls, clock))
            asserted_times.append(time_calls(asserted, args.calls, clock))
        figures[label] = (plain_times, asserted_times)

    per_call = 1e3 / args.calls
    print(f"batches                  : {args.rounds} rounds x (plain, activated) x {args.calls} calls")
    for label, (plain_times, asserted_times) in figures.items():
        p, a = statistics.median(plain_times), statistics.median(asserted_times)
        ratio, low, high = median_ratio(asserted_times, plain_times)
        print(f"{label:<11} plain       : {p * per_call:.3f} ms/call (median batch)")
        print(f"{label:<11} activated   : {a * per_call:.3f} ms/call; engine {(a - p) * per_call * 1e3:.0f} us/call")
        print(f"{label:<11} ratio       : {ratio:.3f} (95% CI {low:.3f}-{high:.3f}; target <= 1.10)")
    if args.breakdown:
        breakdown(args.calls, args.rounds)


if __name__ == "__main__":
    main()
