"""Assertion-aware compilation: failures made visible, demos that pass, assertion-free baselines."""

from __future__ import annotations

import dspy
import pytest

from lmassert_magic import Assert, Suggest
from lmassert_magic.engine.compile import CompileError, compile_program

from helpers import FIX, Tweet, TweetStep, compile_tweeter, metric, no_hashtags, question_of


def train(n=6, prefix="t"):
    return [dspy.Example(question=f"{prefix}{i}").with_inputs("question") for i in range(n)]


# ---------------------------------------------------------------- failures are visible


def test_failed_training_examples_are_counted_with_their_errors(scripted_lm):
    def respond(messages):
        q = question_of(messages)
        if q.startswith("boom"):
            raise RuntimeError(f"LM down for {q}")
        return {"tweet": f"answer-{q}"}

    scripted_lm(respond)
    data = train(4) + train(2, prefix="boom")
    outcome = compile_tweeter(data, max_bootstrapped_demos=8)
    assert outcome.n_examples == 6
    assert outcome.n_failed == 2
    assert len(outcome.failures) == 2 and all("LM down for boom" in f for f in outcome.failures)
    assert all("boom" not in d["question"] for d in outcome.demos["self"])
    assert len(outcome.demos["self"]) == 4
    assert outcome.cache_hits == 0  # a failed call is not a cache hit


def test_max_errors_stops_the_compile_with_a_clear_error(scripted_lm):
    def respond(messages):
        q = question_of(messages)
        if q.startswith("boom"):
            raise RuntimeError("LM down")
        return {"tweet": f"answer-{q}"}

    scripted_lm(respond)
    data = train(2, prefix="boom") + train(4)
    with pytest.raises(CompileError, match=r"2 of 6 training examples failed.*max_errors=2.*Error: .*LM down"):
        compile_tweeter(data, max_errors=2, max_bootstrapped_demos=8)


# ---------------------------------------------------------------- demos that pass


def _stubborn_on_odd(messages):
    """Odd questions keep their hashtag whatever the feedback; even ones fix it."""
    q = question_of(messages)
    odd = int(q[1:]) % 2 == 1
    if FIX in messages[-1]["content"] and not odd:
        return {"tweet": f"answer-{q}"}
    return {"tweet": f"answer-{q} #tag"}


def test_traces_still_failing_a_soft_constraint_are_not_demos_by_default(scripted_lm):
    scripted_lm(_stubborn_on_odd)
    outcome = compile_tweeter(train(6), max_bootstrapped_demos=8)
    demos = outcome.demos["self"]
    assert demos and all(no_hashtags(d["tweet"]) for d in demos)
    assert outcome.dropped_soft_failures == 3


def test_keep_soft_failures_keeps_them_as_dspy25_did(scripted_lm):
    scripted_lm(_stubborn_on_odd)
    outcome = compile_tweeter(train(6), max_bootstrapped_demos=8, keep_soft_failures=True)
    assert len(outcome.demos["self"]) == 6 and outcome.dropped_soft_failures == 0


# ---------------------------------------------------------------- assertion-free baseline


class InlineProgram(TweetStep):
    def forward(self, question):
        tweet = self.gen(question=question).tweet
        Suggest(no_hashtags(tweet), FIX + ".", name="inline_no_hashtags")
        Assert(len(tweet) < 5, "Shorter.", name="tiny")  # always fails: a baseline must not raise or retry
        return dspy.Prediction(tweet=tweet)


def test_compile_without_assertions_runs_inline_constraints_off(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": f"answer-{question_of(m)} #tag"})
    outcome = compile_program(InlineProgram(), train(4), metric, with_assertions=False,
                              max_bootstrapped_demos=8, max_labeled_demos=0)
    assert len(lm.prompts) == 4  # no retries
    assert outcome.n_failed == 0
    assert len(outcome.demos["gen"]) == 4


# ---------------------------------------------------------------- where counterexamples show up


def _fixes_on_feedback(messages):
    q = question_of(messages)
    if FIX in messages[-1]["content"]:
        return {"tweet": f"answer-{q}"}
    return {"tweet": f"answer-{q} #tag"}


def test_counterexamples_appear_in_retry_prompts_only_by_default(scripted_lm):
    scripted_lm(_fixes_on_feedback)
    outcome = compile_tweeter(train(3), max_bootstrapped_demos=2)
    assert outcome.counterexample_mode == "retry"
    lm = scripted_lm(lambda m: {"tweet": "fine"})
    outcome.program(question="z")
    assert FIX not in lm.prompts[0][0]["content"] + lm.prompts[0][-1]["content"]


def test_counterexamples_can_be_put_in_the_normal_prompt(scripted_lm):
    scripted_lm(_fixes_on_feedback)
    outcome = compile_tweeter(train(3), max_bootstrapped_demos=2, counterexamples="prompt")
    assert outcome.counterexample_mode == "prompt"
    lm = scripted_lm(lambda m: {"tweet": "fine"})
    outcome.program(question="z")
    system = lm.prompts[0][0]["content"]
    assert FIX in system and "#tag" in system


def test_unknown_counterexample_mode_is_an_error():
    with pytest.raises(ValueError, match="counterexamples"):
        compile_program(dspy.Predict(Tweet), train(1), metric, counterexamples="everywhere")
