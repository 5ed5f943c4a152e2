"""Benchmark of the embedded model: cold start, package vs raw llama.cpp throughput, parse rate.

Prints figures and asserts nothing on time (the machine is shared; timings vary). Run:

    python bench/local_lm.py                 # 12 throughput questions, 100 parse-rate questions
    python bench/local_lm.py --throughput 6 --parse 30

* cold start: importing DSPy and the package, starting the llama.cpp server (model load), first answer.
* throughput: the same questions through a DSPy predictor (the package's path: AutoAdapter, JSON
  schema, EmbeddedEngine) and as raw chat completions with the very same messages and
  response_format (in-process `handle_chat_completions`, and over HTTP); completion tokens per
  second of wall time, interleaved so both arms see the same machine load and prompt cache.
* parse rate: N varied questions through a two-output signature (`answer: str, confidence: int`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import urllib.request
import uuid

T0 = time.perf_counter()
import dspy  # noqa: E402 - timed on purpose

from lmassert_magic.lm import (  # noqa: E402
    AutoAdapter,
    EmbeddedEngine,
    get_local_server,
    local_lm,
    local_server_running,
)

IMPORT_SECONDS = time.perf_counter() - T0


class QA(dspy.Signature):
    """Answer the question with a short factual answer."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()
    confidence: int = dspy.OutputField(desc="how sure you are, 0-100")


COUNTRIES = ["France", "Japan", "Italy", "Spain", "Germany", "Canada", "Egypt", "Brazil", "Kenya", "India",
             "Norway", "Peru", "Chile", "Greece", "Poland", "Mexico", "Turkey", "Portugal", "Argentina", "Sweden"]
FACTS = [
    "Who wrote Romeo and Juliet?", "How many legs does a spider have?", "What color is the sky on a clear day?",
    "Which planet is known as the Red Planet?", "What gas do plants absorb from the air?",
    "What is the largest ocean on Earth?", "In which country are the pyramids of Giza?",
    "What is the boiling point of water in Celsius?", "Who painted the Mona Lisa?",
    "What is the chemical symbol for gold?", "How many days are in a leap year?", "What is the tallest mountain?",
    "Who was the first person to walk on the Moon?", "What is the largest mammal?", "How many continents are there?",
    "What language is spoken in Brazil?", "What is the freezing point of water in Fahrenheit?",
    "Who discovered penicillin?", "What is the hardest natural substance?", "How many strings does a violin have?",
    "What is the smallest prime number?", "Which organ pumps blood through the body?", "What do bees make?",
    "What is the main ingredient of guacamole?", "Which animal is known as the king of the jungle?",
    "What is the currency of Japan?", "How many hours are in a day?", "What is H2O commonly called?",
    "Which instrument has 88 keys?", "What is the capital city of Australia?",
    "Who developed the theory of relativity?", "What is the longest river in Africa?",
    "Is the Sun a star?", "Can penguins fly?", "Is a tomato a fruit?", "Do fish breathe with gills?",
    "What shape has three sides?", "What is the opposite of hot?", "How many minutes are in an hour?",
    "What do caterpillars turn into?",
]
OPEN = [
    "Why do leaves change color in autumn?", "What makes a good friend?", "Why is exercise healthy?",
    "How do airplanes stay in the air?", "Why should we recycle?", "What is the best way to learn a language?",
    "Why do we need sleep?", "How does a rainbow form?", "What is photosynthesis?", "Why is the ocean salty?",
]
SUMS = [(2, 3), (7, 5), (12, 9), (40, 2), (15, 15), (100, 1), (8, 13), (21, 4), (6, 6), (33, 11)]
PRODUCTS = [(3, 4), (7, 8), (9, 9), (12, 5), (6, 7), (11, 3), (5, 5), (2, 10), (4, 8), (10, 10)]


def questions(n: int) -> list[str]:
    """`n` varied questions: capitals, arithmetic, facts, yes/no and open-ended ones."""
    out = [f"What is the capital of {c}?" for c in COUNTRIES]
    out += [f"What is {a} plus {b}?" for a, b in SUMS] + [f"What is {a} times {b}?" for a, b in PRODUCTS]
    out += FACTS + OPEN
    k = 0
    while len(out) < n:
        out.append(f"Name a famous city in {COUNTRIES[k % len(COUNTRIES)]}.")
        k += 1
    return out[:n]


def raw_inprocess(body: dict) -> tuple[int, float]:
    started = time.perf_counter()
    reply = get_local_server().chat(body)
    return reply["usage"]["completion_tokens"], time.perf_counter() - started


def raw_http(url: str, body: dict) -> tuple[int, float]:
    data = json.dumps(body).encode()
    request = urllib.request.Request(f"{url}/chat/completions", data=data, headers={"Content-Type": "application/json"})
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=300) as response:
        reply = json.loads(response.read())
    return reply["usage"]["completion_tokens"], time.perf_counter() - started


def cold_start() -> None:
    assert not local_server_running()
    lm = local_lm(cache=False)
    program = dspy.Predict(QA)
    started = time.perf_counter()
    with dspy.context(lm=lm, adapter=AutoAdapter()):
        program(question="What is the capital of France?")
    first_call = time.perf_counter() - started
    server = get_local_server()
    started = time.perf_counter()
    with dspy.context(lm=lm, adapter=AutoAdapter()):
        program(question="What is the capital of Spain?")
    warm_call = time.perf_counter() - started
    print("== cold start")
    print(f"import dspy + lmassert_magic.lm      {IMPORT_SECONDS:6.2f} s")
    print(f"server start (model load)            {server.start_seconds:6.2f} s   ({server})")
    print(f"first response after start           {first_call - server.start_seconds:6.2f} s")
    print(f"cold start (start + first response)  {first_call:6.2f} s")
    print(f"a warm call, for comparison          {warm_call:6.2f} s")


class _RecordingEngine(EmbeddedEngine):
    """The package's engine, keeping the last request body so the raw arms can replay it exactly."""

    last_body: dict | None = None

    def _body(self, request):  # type: ignore[override]
        body = super()._body(request)
        self.last_body = body
        return body


def throughput(n: int, rounds: int = 3) -> None:
    engine = _RecordingEngine()
    lm = local_lm(cache=False).copy(engine=engine)
    program = dspy.Predict(QA)
    url = get_local_server().url

    def package(question: str) -> tuple[int, float]:
        with dspy.context(lm=lm, adapter=AutoAdapter()):
            started = time.perf_counter()
            program(question=question)
            elapsed = time.perf_counter() - started
        return lm.history[-1]["usage"]["completion_tokens"], elapsed

    # Per question and arm: the median of `rounds` timings taken in separate passes over all questions, so a
    # burst of load from another process on this shared machine does not decide the ratio. Before every
    # timed call an untimed 1-token request puts the same prompt in llama.cpp's cache: all arms start warm.
    arms = ("package", "raw in-process", "raw HTTP")
    qs = questions(n)
    bodies = []
    for question in qs:
        package(question)  # untimed: records the exact request body the package sends
        bodies.append(dict(engine.last_body or {}))
    times: dict[tuple[int, str], list[float]] = {(i, arm): [] for i in range(n) for arm in arms}
    counts: dict[tuple[int, str], int] = {}
    for r in range(rounds):
        for i, question in enumerate(qs):
            body = bodies[i]
            calls = {
                "package": lambda q=question: package(q),
                "raw in-process": lambda b=body: raw_inprocess(b),
                "raw HTTP": lambda b=body: raw_http(url, b),
            }
            for arm in arms if (i + r) % 2 == 0 else tuple(reversed(arms)):
                raw_inprocess({**body, "max_tokens": 1})
                counts[(i, arm)], elapsed = calls[arm]()
                times[(i, arm)].append(elapsed)
    tokens = {arm: sum(counts[(i, arm)] for i in range(n)) for arm in arms}
    seconds = {arm: sum(statistics.median(times[(i, arm)]) for i in range(n)) for arm in arms}
    ratios = [
        (counts[(i, "package")] / statistics.median(times[(i, "package")]))
        / (counts[(i, "raw in-process")] / statistics.median(times[(i, "raw in-process")]))
        for i in range(n)
    ]
    rate = {arm: tokens[arm] / seconds[arm] for arm in arms}
    print(f"== throughput ({n} questions x {rounds} rounds; completion tokens per wall second, median per question;"
          " same requests, prompt cached)")
    print(f"package (DSPy Predict -> EmbeddedEngine)  {rate['package']:7.1f} tok/s  ({tokens['package']} tokens)")
    print(f"raw llama.cpp, in-process                 {rate['raw in-process']:7.1f} tok/s")
    print(f"raw llama.cpp, HTTP                       {rate['raw HTTP']:7.1f} tok/s")
    print(f"ratio package / raw in-process            {rate['package'] / rate['raw in-process']:7.3f}"
          f"   (median per question {statistics.median(ratios):.3f}; target >= 0.9)")
    print(f"ratio package / raw HTTP                  {rate['package'] / rate['raw HTTP']:7.3f}")
    overhead = (seconds["package"] - seconds["raw in-process"]) / n * 1000
    print(f"package overhead per call                 {overhead:7.1f} ms")


def parse_rate(n: int) -> None:
    lm = local_lm(cache=False)
    program = dspy.Predict(QA)
    failures = []
    started = time.perf_counter()
    with dspy.context(lm=lm, adapter=AutoAdapter()), dspy.track_usage() as usage:
        for question in questions(n):
            try:
                result = program(question=question)
                if not isinstance(result.answer, str) or not isinstance(result.confidence, int):
                    failures.append((question, "wrong types"))
            except Exception as exc:  # any failure to produce typed outputs counts
                failures.append((question, f"{type(exc).__name__}: {str(exc).splitlines()[0][:100]}"))
    elapsed = time.perf_counter() - started
    tokens = usage.get_total_tokens().get(lm.model, {})
    print(f"== parse rate ({n} calls, signature: question -> answer: str, confidence: int)")
    print(f"parsed {n - len(failures)}/{n} = {100 * (n - len(failures)) / n:.1f}%   failures: {len(failures)}")
    for question, reason in failures:
        print(f"   FAILED {question!r}: {reason}")
    print(f"time {elapsed:.1f} s, {elapsed / n:.2f} s/call, tokens {tokens}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--throughput", type=int, default=12, help="questions for the throughput comparison")
    parser.add_argument("--rounds", type=int, default=3, help="timings per question and arm (median kept)")
    parser.add_argument("--parse", type=int, default=100, help="calls for the parse-rate measurement (0: skip)")
    args = parser.parse_args()
    print(f"run {uuid.uuid4().hex[:8]}; dspy {dspy.__version__}")
    cold_start()
    if args.throughput:
        throughput(args.throughput, args.rounds)
    if args.parse:
        parse_rate(args.parse)


if __name__ == "__main__":
    main()
