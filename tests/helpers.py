"""Plain objects shared by several test modules: the tweet task for the engine, and the tweet notebook's cells.

Fixtures live in conftest.py. These are classes, functions and strings a test module imports, because
they are needed at import time (a base class, a parametrize table) or called with arguments.
"""

from __future__ import annotations

import re

import dspy
from dspy.utils import DummyLM

from lmassert_magic import Constraint, activate_assertions
from lmassert_magic.engine.compile import compile_program

# ---------------------------------------------------------------- the tweet task (engine tests)

#: The feedback of the hashtag constraint; scripted LMs fix their tweet when a prompt carries it.
FIX = "Please remove hashtags"


class Tweet(dspy.Signature):
    """Write a tweet answering the question."""

    question: str = dspy.InputField()
    tweet: str = dspy.OutputField()


class Query(dspy.Signature):
    """Write a search query."""

    question: str = dspy.InputField()
    query: str = dspy.OutputField()


def no_hashtags(tweet: str) -> bool:
    return not re.search(r"#\w+", tweet)


def hashtag_constraint(**options) -> Constraint:
    """The declared `no_hashtags` constraint on `Tweet` (or on `target=`), with feedback `FIX`."""
    return Constraint("no_hashtags", no_hashtags, FIX + ".", target=options.pop("target", Tweet), **options)


def question_of(messages) -> str:
    """The question a scripted LM is asked, read from the last message of the prompt."""
    return re.search(r"## question ## \]\]\n(\S+)", messages[-1]["content"]).group(1)


def metric(example, pred, trace=None) -> float:
    """1.0 when the tweet carries the answer the scripted LMs write for its question (`answer-<question>`)."""
    return float(f"answer-{example.question}" in pred.tweet)


def fixes_on_feedback(messages) -> dict[str, str]:
    """A scripted LM's answer: a tweet with a hashtag, clean once the prompt carries the feedback."""
    return {"tweet": "clean tweet" if FIX in messages[-1]["content"] else "great #news"}


def activated_tweeter(constraint: Constraint | None = None, **options) -> dspy.Module:
    """`Predict(Tweet)` activated with one constraint (the hashtag one unless given) and these options."""
    constraint = hashtag_constraint() if constraint is None else constraint
    return activate_assertions(dspy.Predict(Tweet), constraints=[constraint], **options)


def compile_tweeter(examples, **options):
    """`compile_program` on `Predict(Tweet)` with `metric` and the hashtag constraint, bootstrapped demos only."""
    return compile_program(dspy.Predict(Tweet), examples, metric, constraints=[hashtag_constraint()],
                           max_labeled_demos=0, **options)


class TweetStep(dspy.Module):
    """A program with one `Predict(Tweet)` step, `gen`.

    Subclasses write only `forward`: an inline Suggest/Assert stays in the test file, whose name the
    check's call-site name carries.
    """

    def __init__(self):
        super().__init__()
        self.gen = dspy.Predict(Tweet)


# ---------------------------------------------------------------- the tweet notebook (magic tests)

#: The `GenerateTweet` signature cell of the magic tests.
GENERATE_TWEET_CELL = '''%%signature GenerateTweet
"""Generate an engaging tweet that answers the question, faithful to the context."""
question: str = In()
context: list[str] = In(desc="facts that may be relevant")
tweet: str = Out()
'''

#: The `no_hashtags` constraint cell; its feedback contains "remove hashtag", which `feedback_dummy_lm` reacts to.
NO_HASHTAGS_CELL = '''%%assert GenerateTweet --name no_hashtags
not re.search(r"#\\w+", tweet)
"Please revise the tweet to remove hashtag phrases."
'''


def tweet_data_cell(n_train: int, n_dev: int, *, train_prefix: str = "t", fact: str = "a fact about ",
                    answer: str | None = None, extra: str = "") -> str:
    """The notebook cell defining `retrieve`, `quality`, `trainset` and `devset` for `%%compile ... retrieve >> ...`.

    `answer` labels every example; `extra` is more code placed right after the imports.
    """
    label = "" if answer is None else f', answer="{answer}"'
    return f'''
import re
import dspy
{extra}
def retrieve(question):
    return ["{fact}" + question]

def quality(example, pred, trace=None):
    return float("#" not in pred.tweet)

trainset = [dspy.Example(question=f"{train_prefix}{{i}}"{label}).with_inputs("question") for i in range({n_train})]
devset = [dspy.Example(question=f"d{{i}}"{label}).with_inputs("question") for i in range({n_dev})]
'''


def feedback_dummy_lm() -> DummyLM:
    """Answers with a hashtag unless the prompt carries the no_hashtags feedback."""
    return DummyLM({"remove hashtag": {"tweet": "clean tweet"}, "question": {"tweet": "#bad tweet"}})
