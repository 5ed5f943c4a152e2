"""Overhead of activated assertions when every constraint passes (target: ratio <= 1.10).

A zero-latency scripted LM isolates the cost of the engine itself: the same two-step program
runs plain and activated (three declarative constraints + one inline Suggest, all passing),
interleaved in one process so machine noise hits both alike.

    python bench/overhead.py [--calls 400] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import dspy

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


def respond(messages: list[dict]) -> dict:
    text = messages[-1]["content"]
    return {"answer": "Velmora"} if "## query ## ]]\n" in text else {"query": "birthplace of the director"}


CONSTRAINTS = [
    Constraint("short_query", lambda query: len(query) < 100, "Keep the query under 100 characters.", target=Query),
    Constraint("no_hashtags", lambda answer: "#" not in answer, "No hashtags.", target=Answer),
    Constraint("not_empty", lambda answer: bool(answer.strip()), "Answer something.", target=Answer, hard=True),
]


def time_calls(program: dspy.Module, calls: int) -> float:
    start = time.perf_counter()
    for i in range(calls):
        program(question=f"question {i}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    lm = ScriptedLM(respond)
    dspy.configure(lm=lm)
    plain = TwoStep()
    asserted = activate_assertions(TwoStep(), constraints=CONSTRAINTS)
    time_calls(plain, 50)  # warm up both paths (signature classes, adapters)
    time_calls(asserted, 50)

    plain_times, asserted_times = [], []
    for _ in range(args.rounds):
        plain_times.append(time_calls(plain, args.calls))
        asserted_times.append(time_calls(asserted, args.calls))
    p, a = statistics.median(plain_times), statistics.median(asserted_times)
    per_call = 1e3 / args.calls
    print(f"calls per round          : {args.calls} (x{args.rounds} rounds, median shown)")
    print(f"plain program            : {p * per_call:.3f} ms/call")
    print(f"activated, all passing   : {a * per_call:.3f} ms/call")
    print(f"ratio activated / plain  : {a / p:.3f}  (target <= 1.10)")


if __name__ == "__main__":
    main()
