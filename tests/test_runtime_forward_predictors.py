"""Predictors created inside `forward` are steps of the run (issue 21; DSPy 2.5 programs build them there).

The paper's TweetGen builds its query generators and LM judges inside `forward`. Before, such a
predictor escaped the run: every backtrack asked it again (sampled anew whenever the cache
missed), against "a retry never re-samples earlier steps".
"""

from __future__ import annotations

import dspy
import pytest

from lmassert_magic import Constraint, Suggest, activate_assertions
from lmassert_magic.engine import run_record_of

from helpers import Query

FIX = "Remove the hashtag."


class Tweet(dspy.Signature):
    """Write a tweet."""  # from the question and a query: not the shared `helpers.Tweet`

    question: str = dspy.InputField()
    query: str = dspy.InputField()
    tweet: str = dspy.OutputField()


class Judge(dspy.Signature):
    """Is the text engaging?"""

    text: str = dspy.InputField()
    verdict: str = dspy.OutputField()


def respond(messages):
    system, user = messages[0]["content"], messages[-1]["content"]
    if "Write a search query" in system:
        return {"query": "q"}
    if "Is the text engaging" in system:
        return {"verdict": "yes"}
    return {"tweet": "clean" if FIX in user else "#bad"}


def calls(lm, instruction):
    return sum(1 for m in lm.prompts if instruction in m[0]["content"])


class BuiltInForward(dspy.Module):
    """The 2.5 shape: the upstream step and the judge are created on each call."""

    def __init__(self):
        super().__init__()
        self.tweet = dspy.Predict(Tweet)

    def forward(self, question):
        query = dspy.Predict(Query)(question=question).query
        tweet = self.tweet(question=question, query=query).tweet
        Suggest("#" not in tweet, FIX, target_module=self.tweet)
        verdict = dspy.Predict(Judge)(text=tweet).verdict
        Suggest(verdict == "yes", "Make it engaging.", target_module=self.tweet)
        return dspy.Prediction(tweet=tweet)


def test_an_upstream_predictor_built_in_forward_is_replayed_not_asked_again(scripted_lm):
    lm = scripted_lm(respond)  # no cache: asking again would reach the LM
    out = activate_assertions(BuiltInForward())(question="news?")
    assert out.tweet == "clean"
    assert calls(lm, "Write a search query") == 1
    assert calls(lm, "Write a tweet") == 2
    assert calls(lm, "Is the text engaging") == 1  # judged once, on the returned tweet
    record = run_record_of(out)
    assert record.lm_calls == 4 and record.backtracks == 1 and record.all_passed


def test_a_judge_built_in_forward_runs_again_on_the_new_output(scripted_lm):
    verdicts = iter(["no", "yes"])

    def judge_says_no_first(messages):
        if "Is the text engaging" in messages[0]["content"]:
            return {"verdict": next(verdicts)}
        return {"tweet": "fine", "query": "q"} if "Write a tweet" in messages[0]["content"] else {"query": "q"}

    lm = scripted_lm(judge_says_no_first)
    out = activate_assertions(BuiltInForward())(question="news?")
    assert calls(lm, "Write a search query") == 1
    assert calls(lm, "Write a tweet") == 2
    assert calls(lm, "Is the text engaging") == 2
    assert run_record_of(out).all_passed


def test_a_predictor_built_in_forward_with_other_demos_is_a_different_step(scripted_lm):
    class Changing(dspy.Module):
        def __init__(self):
            super().__init__()
            self.tweet = dspy.Predict(Tweet)
            self.passes = 0

        def forward(self, question):
            self.passes += 1
            step = dspy.Predict(Query)
            step.demos = [dspy.Example(question="x", query=f"pass {self.passes}")]
            query = step(question=question).query
            tweet = self.tweet(question=question, query=query).tweet
            Suggest("#" not in tweet, FIX, target_module=self.tweet)
            return dspy.Prediction(tweet=tweet)

    lm = scripted_lm(respond)
    activate_assertions(Changing())(question="news?")
    assert calls(lm, "Write a search query") == 2  # not the same step: asked again


def test_a_judge_inside_a_declared_check_is_not_a_step(scripted_lm):
    judged = []

    def engaging(tweet):
        judged.append(tweet)
        return dspy.Predict(Judge)(text=tweet).verdict == "yes"

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.tweet = dspy.Predict(Tweet)

        def forward(self, question):
            tweet = self.tweet(question=question, query="q").tweet
            Suggest("#" not in tweet, FIX)  # no target: the latest step, which must be the tweet, not the judge
            return dspy.Prediction(tweet=tweet)

    lm = scripted_lm(respond)
    program = activate_assertions(Program(), constraints=[Constraint("engaging", engaging, "Be engaging.",
                                                                     target=Tweet)])
    out = program(question="news?")
    assert out.tweet == "clean"
    assert calls(lm, "Write a tweet") == 2 and len(judged) == 2
    assert run_record_of(out).lm_calls == 2  # the judge's calls are the check's, not the program's steps


def test_an_adopted_predictor_is_plain_outside_runs(scripted_lm):
    scripted_lm(respond)
    step = dspy.Predict(Query)

    class Program(dspy.Module):
        def forward(self, question):
            return step(question=question)

    activate_assertions(Program())(question="a")
    assert type(step).__name__ == "Predict"
    assert step(question="b").query == "q"


@pytest.mark.parametrize("threads", [1, 3])
def test_predictors_built_in_forward_and_batched_belong_to_the_run(scripted_lm, threads):
    lm = scripted_lm(respond)

    class Batched(dspy.Module):
        def __init__(self):
            super().__init__()
            self.tweet = dspy.Predict(Tweet)

        def forward(self, question):
            queries = dspy.Predict(Query).batch([dspy.Example(question=f"{question} {i}").with_inputs("question")
                                                 for i in range(3)], num_threads=threads)
            tweet = self.tweet(question=question, query=queries[0].query).tweet
            Suggest("#" not in tweet, FIX, target_module=self.tweet)
            return dspy.Prediction(tweet=tweet)

    out = activate_assertions(Batched())(question="news")
    assert out.tweet == "clean"
    assert calls(lm, "Write a search query") == 3  # replayed on the retry, not asked again
