"""TweetGen: the LM Assertions paper's tweet program for DSPy 2.4/2.5, run on DSPy 3 with the imports swapped.

Original: `examples/tweets/tweets_assertions.ipynb` in the DSPy repository (tag 2.5.43,
https://github.com/stanfordnlp/dspy/blob/2.5.43/examples/tweets/tweets_assertions.ipynb), the program
of section "TweetGen" of "DSPy Assertions: Computational Constraints for Self-Refining Language Model
Pipelines" (Singhvi et al., 2023). Rewritten here following its structure: the same modules
(query generators and the `Retrieve` step created inside `forward`, a `ChainOfThought` tweet writer),
the same signatures, the same five suggestions with their messages (two of them LM judges built
inside `forward` with `dspy.Predict(AssessTweet)`), the same metrics and the same compile calls.

What changed from 2.5, and only this:

* imports: `from dspy.predict import Retry` and `from dspy.primitives.assertions import
  assert_transform_module, backtrack_handler` come from `lmassert_magic.compat`, and so does
  `Suggest` (2.5 wrote `dspy.Suggest`; with `lmassert_magic.compat.install()` that spelling works too);
  `dsp.utils.deduplicate` is `dspy.dsp.utils.deduplicate` in DSPy 3;
* data: the package's offline TweetGen study and its BM25 retriever (`common.offline`) instead of
  HotPotQA and a ColBERTv2 server;
* `is_assessment_yes` does not fail on an empty answer (the 135M model sometimes gives one).
"""

from __future__ import annotations

import re

import dspy
from dspy.dsp.utils import deduplicate

from lmassert_magic.compat import Retry, Suggest, assert_transform_module, backtrack_handler

STUDY = "tweetgen"
INPUTS = ("question", "answer")  # the 2.5 notebook: x.with_inputs('question', 'answer')


class GenerateSearchQuery(dspy.Signature):
    """Write a simple search query that will help answer a complex question."""

    context = dspy.InputField(desc="may contain relevant facts")
    question = dspy.InputField()
    query = dspy.OutputField()


class GenerateTweet(dspy.Signature):
    """Generate an engaging tweet that effectively answers a question staying faithful to the context, is less than 280 characters, and has no hashtags."""  # noqa: E501

    question = dspy.InputField()
    context = dspy.InputField(desc="may contain relevant facts")
    tweet = dspy.OutputField()


class AssessTweet(dspy.Signature):
    """Assess the quality of a tweet along the specified dimension."""

    context = dspy.InputField(desc="ignore if N/A")
    assessed_text = dspy.InputField()
    assessment_question = dspy.InputField()
    assessment_answer = dspy.OutputField(desc="Yes or No")


ENGAGING = "Does the assessed text make for a self-contained, engaging tweet? Say no if it is not engaging."
FAITHFUL = "Is the assessed text grounded in the context? Say no if it includes significant facts not in the context."


def has_no_hashtags(text: str) -> bool:
    return not re.findall(r"#\w+", text)


def is_within_length_limit(text: str, length_limit: int = 280) -> bool:
    return len(text) <= length_limit


def is_assessment_yes(assessment_answer: str) -> bool:
    """Whether the first word of the judge's answer is 'yes'."""
    words = str(assessment_answer).split()
    return bool(words) and words[0].strip(".,!:;").lower() == "yes"


def has_correct_answer(text: str, answer: str) -> bool:
    return answer in text


def _context_and_tweet(question: str, generate_tweet: dspy.Module) -> tuple[list[str], str]:
    """The paper's multi-hop part: two query generators and a retriever, created on each call."""
    context: list[str] = []
    max_hops, passages_per_hop = 2, 3
    generate_query = [dspy.ChainOfThought(GenerateSearchQuery) for _ in range(max_hops)]
    retrieve = dspy.Retrieve(k=passages_per_hop)
    for hop in range(max_hops):
        query = generate_query[hop](context=context, question=question).query
        context = deduplicate(context + retrieve(query).passages)
    return context, generate_tweet(question=question, context=context).tweet


class Tweeter(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generate_tweet = dspy.ChainOfThought(GenerateTweet)

    def forward(self, question: str, answer: str) -> dspy.Prediction:
        context, tweet = _context_and_tweet(question, self.generate_tweet)
        return dspy.Prediction(generated_tweet=tweet, context=context)


class TweeterWithAssertions(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generate_tweet = dspy.ChainOfThought(GenerateTweet)

    def forward(self, question: str, answer: str) -> dspy.Prediction:
        context, tweet = _context_and_tweet(question, self.generate_tweet)
        Suggest(has_no_hashtags(tweet), "Please revise the tweet to remove hashtag phrases following it.",
                target_module=self.generate_tweet)
        Suggest(is_within_length_limit(tweet, 280), f"Please ensure the tweet is within {280} characters.",
                target_module=self.generate_tweet)
        Suggest(has_correct_answer(tweet, answer),
                "The tweet does not include the correct answer to the question. Please revise accordingly.",
                target_module=self.generate_tweet)
        engaging = dspy.Predict(AssessTweet)(context=context, assessed_text=tweet, assessment_question=ENGAGING)
        Suggest(is_assessment_yes(engaging.assessment_answer),
                "The text is not engaging enough. Please revise to make it more captivating.",
                target_module=self.generate_tweet)
        faithful = dspy.Predict(AssessTweet)(context="N/A", assessed_text=tweet, assessment_question=FAITHFUL)
        Suggest(is_assessment_yes(faithful.assessment_answer),
                "The text contains unfaithful elements or significant facts not in the context. "
                "Please revise for accuracy.",
                target_module=self.generate_tweet)
        return dspy.Prediction(generated_tweet=tweet, context=context)


def plain_program() -> dspy.Module:
    return Tweeter()


def asserted_program() -> dspy.Module:
    return assert_transform_module(TweeterWithAssertions().map_named_predictors(Retry), backtrack_handler)


# ---------------------------------------------------------------- metrics (the notebook's)


def _judge(context: object, tweet: str, question: str) -> bool:
    return is_assessment_yes(
        dspy.Predict(AssessTweet)(context=context, assessed_text=tweet, assessment_question=question).assessment_answer
    )


def no_hashtags_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return has_no_hashtags(pred.generated_tweet)


def is_correct_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return has_correct_answer(pred.generated_tweet, gold.answer)


def within_length_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return is_within_length_limit(pred.generated_tweet, 280)


def engaging_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return _judge("N/A", pred.generated_tweet, ENGAGING)


def faithful_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return _judge(pred.context, pred.generated_tweet, FAITHFUL)


def overall_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> float:
    """The paper's quality: the mean of the five checks if the tweet has the answer and fits, else 0."""
    tweet = pred.generated_tweet
    correct, fits = has_correct_answer(tweet, gold.answer), is_within_length_limit(tweet, 280)
    if not (correct and fits):
        return 0.0
    faithful = _judge(pred.context, tweet, FAITHFUL)
    engaging = _judge("N/A", tweet, ENGAGING)
    return (correct + engaging + faithful + has_no_hashtags(tweet) + fits) / 5.0


def deterministic_checks(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    """The three checks that need no judge (no hashtags, at most 280 characters, states the answer)."""
    tweet = pred.generated_tweet
    return has_no_hashtags(tweet) and is_within_length_limit(tweet) and has_correct_answer(tweet, gold.answer)


METRICS = {
    "no hashtags": no_hashtags_metric,
    "has answer": is_correct_metric,
    "concise": within_length_metric,
    "engaging": engaging_metric,
    "faithful": faithful_metric,
    "quality": overall_metric,
}
COMPILE_METRIC = overall_metric
# The paper's TweetGen rows (gpt-3.5-turbo; Vanilla, Infer w/ A, Compile, Compile w/ A, C+Infer w/ A).
PAPER = {"engaging": (32.2, 36.4, 2.0, 73.0, 85.0), "quality": (30.5, 30.6, 32.8, 42.9, 45.0)}
