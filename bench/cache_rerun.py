"""Re-running the same compile reuses DSPy's LM cache: time of a second identical run / first run.

Runs Compile w/ Assert + C+Infer w/ Assert on a TweetGen slice with the embedded model, twice in
one process, with a fresh on-disk cache directory so the first run is cold.

    python bench/cache_rerun.py [--n 3]
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time

import dspy

from lmassert_magic import Constraint
from lmassert_magic.datasets import answer_in_text, load_study
from lmassert_magic.engine.ablation import run_ablation
from lmassert_magic.lm import configure_lm


class GenerateTweet(dspy.Signature):
    """Write an engaging tweet that answers the question, faithful to the context."""

    question: str = dspy.InputField()
    context: list[str] = dspy.InputField()
    tweet: str = dspy.OutputField()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache_dir:
        dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=cache_dir)
        configure_lm("local")
        study = load_study("tweetgen", limit=args.n)
        retriever = study.retriever(k=3)

        class Tweeter(dspy.Module):
            def __init__(self) -> None:
                super().__init__()
                self.generate = dspy.Predict(GenerateTweet)

            def forward(self, question: str) -> dspy.Prediction:
                return self.generate(question=question, context=retriever(question))

        constraints = [
            Constraint("no_hashtags", lambda tweet: not re.search(r"#\w+", tweet), "Remove hashtags.",
                       target=GenerateTweet),
            Constraint("under_280", lambda tweet: len(tweet) <= 280, "Keep it under 280 characters.",
                       target=GenerateTweet),
        ]

        def quality(example, pred, trace=None):
            return answer_in_text(example.answer, pred.tweet)

        times = []
        for _ in range(2):
            start = time.perf_counter()
            run_ablation(Tweeter(), study.train, study.dev, quality, constraints=constraints,
                         settings="compile_assert,c_infer_assert")
            times.append(time.perf_counter() - start)
    print(f"first run  : {times[0]:.1f}s (cold cache)")
    print(f"second run : {times[1]:.2f}s (same compile, same data)")
    print(f"ratio second / first: {times[1] / times[0]:.3f}")


if __name__ == "__main__":
    main()
