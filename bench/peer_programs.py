"""The DSPy 3 side of the peer benchmark: the two studies' programs, the systems built on them, and how one
example's LM calls are counted, the same way for every system.

Counting: every LM call a system makes inside one example is counted by `tally_lm` (DSPy's LM callbacks), a
call the cache answered apart from one that reached the model; LM-judge calls (`lmassert_magic.lm_judge`, the
one judge every system and the scoring use) are counted a second time on their own, so judge calls are part
of `lm_calls` and also reported apart. `cold_cache()` gives each system an empty cache.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

import dspy
import peer_tasks

from lmassert_magic import Constraint, activate_assertions, lm_judge
from lmassert_magic.engine.tally import tally_lm

NONE = "no assertions"
OURS = "lmassert_magic (Infer w/ Assert)"
REFINE = "dspy.Refine (N=3)"
BESTOFN = "dspy.BestOfN (N=3)"
DSPY25 = "DSPy 2.5.43 Suggest"
SYSTEMS = [NONE, OURS, REFINE, BESTOFN, DSPY25]
ASSERTION_SYSTEMS = [OURS, REFINE, BESTOFN, DSPY25]
MAX_BACKTRACKS = 2  # DSPy 2.5's default; N=3 attempts for Refine and BestOfN is the same budget

# ---------------------------------------------------------------- signatures (the DSPy 2.5 harness gets them as specs)


class GenerateAnswer(dspy.Signature):
    """Answer the question with a short phrase taken from the context."""

    context: list[str] = dspy.InputField(desc="passages that may contain the answer")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="a few words")


class GenerateTweet(dspy.Signature):
    """Write an engaging tweet that answers the question, faithful to the context."""

    question: str = dspy.InputField()
    context: list[str] = dspy.InputField()
    answer: str = dspy.InputField()
    tweet: str = dspy.OutputField()


class GenerateSearchQuery(dspy.Signature):
    """Write a simple search query that will help answer the question."""

    context: list[str] = dspy.InputField(desc="may contain relevant facts")
    question: str = dspy.InputField()
    earlier_queries: list[str] = dspy.InputField(desc="queries already tried")
    query: str = dspy.OutputField()


class GenerateFactoid(dspy.Signature):
    """Answer the question with a short factoid answer."""

    context: list[str] = dspy.InputField(desc="may contain relevant facts")
    question: str = dspy.InputField()
    answer: str = dspy.OutputField(desc="often between 1 and 5 words")


SIGNATURES = {s.__name__: s for s in (GenerateAnswer, GenerateTweet, GenerateSearchQuery, GenerateFactoid)}
TARGETS = {"tweetgen": GenerateTweet, "multihop": GenerateSearchQuery}  # the step the constraints check
INPUTS = {"tweetgen": ("question", "context"), "multihop": ("question",)}
HOPS = 2
PASSAGES_PER_HOP = 2


class TweetPipeline(dspy.Module):
    """TweetGen: answer from the retrieved context, then tweet the answer."""

    def __init__(self) -> None:
        super().__init__()
        self.generate_answer = dspy.Predict(GenerateAnswer)
        self.generate_tweet = dspy.Predict(GenerateTweet)

    def forward(self, question: str, context: list[str]) -> dspy.Prediction:
        answer = self.generate_answer(context=context, question=question).answer
        tweet = self.generate_tweet(question=question, context=context, answer=answer).tweet
        return dspy.Prediction(answer=answer, tweet=tweet)


class MultiHopQA(dspy.Module):
    """Multi-hop QA as in case study 2: a query per hop, passages gathered, then a short answer."""

    def __init__(self, retrieve: Callable[[str], list[str]], hops: int = HOPS) -> None:
        super().__init__()
        self.retrieve = retrieve
        self.generate_query = [dspy.Predict(GenerateSearchQuery) for _ in range(hops)]
        self.generate_answer = dspy.Predict(GenerateFactoid)

    def forward(self, question: str) -> dspy.Prediction:
        context: list[str] = []
        queries: list[str] = []
        for generate in self.generate_query:
            query = generate(context=context, question=question, earlier_queries=queries).query
            queries.append(query)
            context = list(dict.fromkeys(context + list(self.retrieve(query))))
        answer = self.generate_answer(context=context, question=question).answer
        return dspy.Prediction(answer=answer, context=context, queries=queries)


# ---------------------------------------------------------------- the judge, counted apart


class CountingJudge:
    """`lmassert_magic.lm_judge`, with the calls it makes counted (they also count in the system's total)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0  # judge calls that reached the LM
        self.cache_hits = 0
        self.tokens = 0

    def __call__(self, question: str, /, **fields: Any) -> bool:
        with tally_lm() as tally:
            verdict = lm_judge(question, **fields)
        with self._lock:
            self.calls += tally.calls - tally.cache_hits
            self.cache_hits += tally.cache_hits
            self.tokens += tally.tokens
        return verdict

    def snapshot(self) -> tuple[int, int, int]:
        """(calls, cache hits, tokens) so far."""
        with self._lock:
            return self.calls, self.cache_hits, self.tokens


def cold_cache() -> None:
    """An empty in-memory DSPy cache and no disk cache: each system starts cold, whatever ran before it."""
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)


# ---------------------------------------------------------------- systems


def constraints_for(study: str, judge: Callable[..., bool]) -> list[Constraint]:
    """The study's checks as soft constraints of this package, on the step they check."""
    return [
        Constraint(name, lambda check=check, **fields: peer_tasks.step_verdict(check, fields, judge),
                   lambda feedback=feedback, **fields: feedback(fields), target=TARGETS[study])
        for name, (check, feedback) in peer_tasks.CHECKS[study].items()
    ]


def program_for(study: str, retrieve: Callable[[str], list[str]] | None = None) -> dspy.Module:
    if study == "tweetgen":
        return TweetPipeline()
    if retrieve is None:
        raise ValueError("the multihop program needs a retriever")
    return MultiHopQA(retrieve)


def build(system: str, study: str, judge: Callable[..., bool], *, seed: int = 0,
          retrieve: Callable[[str], list[str]] | None = None) -> dspy.Module:
    """One DSPy 3 system on the study's program; every assertion system checks the same constraints."""
    program = program_for(study, retrieve)
    if system == NONE:
        return program
    if system == OURS:
        return activate_assertions(program, MAX_BACKTRACKS, constraints=constraints_for(study, judge), seed=seed)

    def reward(args: dict, prediction: Any) -> float:
        return peer_tasks.fraction_passed(study, {**args, **dict(prediction.items())}, judge)

    if system == REFINE:
        return dspy.Refine(module=program, N=MAX_BACKTRACKS + 1, reward_fn=reward, threshold=1.0)
    if system == BESTOFN:
        return dspy.BestOfN(module=program, N=MAX_BACKTRACKS + 1, reward_fn=reward, threshold=1.0)
    raise ValueError(f"{system!r} is not a DSPy 3 system")


def jsonable(value: Any) -> Any:
    """A prediction's fields as plain JSON (the checkpoint stores them)."""
    return json.loads(json.dumps(value, default=str))


def run_example(program: dspy.Module, study: str, example: dict, judge: CountingJudge) -> dict[str, Any]:
    """Run one example and count its LM calls; an exception is recorded (the example then fails everything)."""
    judge_before = judge.snapshot()
    outputs, error = None, None
    start = time.perf_counter()
    with tally_lm() as tally:
        try:
            prediction = program(**{k: example[k] for k in INPUTS[study]})
            outputs = jsonable({k: v for k, v in prediction.items() if not k.startswith("_")})
        except Exception as exc:  # a system that raises on an example loses that example
            error = f"{type(exc).__name__}: {exc}"[:500]
    judge_after = judge.snapshot()
    return {
        "outputs": outputs,
        "error": error,
        "lm_calls": tally.calls - tally.cache_hits,
        "judge_calls": judge_after[0] - judge_before[0],
        "cache_hits": tally.cache_hits,
        "judge_cache_hits": judge_after[1] - judge_before[1],
        "tokens": tally.tokens,
        "seconds": round(time.perf_counter() - start, 3),
    }
