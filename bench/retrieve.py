"""Speed of the BM25 retriever on the shipped corpus (target: well under 1 ms per query, for interactive use).

Builds the index over every passage of the shared corpus, then times queries with the case studies'
dev questions (tweetgen + multihop), several rounds, and prints the median per-query time.
The tests check behaviour only (one index, shared by copies); wall-clock figures live here.

    python bench/retrieve.py [--rounds 5] [--repeat 5] [--k 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from lmassert_magic.datasets import load_corpus, load_study
from lmassert_magic.retrieve import BM25Retriever


def time_queries(retriever: BM25Retriever, questions: list[str], repeat: int) -> float:
    """Seconds per query over `repeat` passes of `questions`."""
    start = time.perf_counter()
    for _ in range(repeat):
        for q in questions:
            retriever(q)
    return (time.perf_counter() - start) / (len(questions) * repeat)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=5, help="passes over the questions per round")
    parser.add_argument("--k", type=int, default=3)
    args = parser.parse_args()

    passages = load_corpus()
    questions = [ex.question for name in ("tweetgen", "multihop") for ex in load_study(name).dev]

    builds = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        retriever = BM25Retriever(passages, k=args.k)
        builds.append(time.perf_counter() - start)

    time_queries(retriever, questions, 1)  # warm up
    copy = retriever.with_k(args.k)
    per_query, copies = [], []
    for _ in range(args.rounds):  # interleaved, so machine noise hits both alike
        per_query.append(time_queries(retriever, questions, args.repeat))
        copies.append(time_queries(copy, questions, args.repeat))

    print(f"corpus                   : {len(passages)} passages")
    print(f"queries per round        : {len(questions) * args.repeat} (x{args.rounds} rounds, median shown)")
    print(f"build index              : {statistics.median(builds) * 1e3:.3f} ms")
    print(f"{f'query, k={args.k}':<25}: {statistics.median(per_query) * 1e3:.3f} ms  (target < 1 ms)")
    print(f"query via with_k copy    : {statistics.median(copies) * 1e3:.3f} ms  (shares the index)")


if __name__ == "__main__":
    main()
