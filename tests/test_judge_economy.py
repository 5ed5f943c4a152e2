"""Declared checks that ask an LM run last and are spent only on outputs that can be kept (issue 16).

Two mechanisms, each against a scripted LM whose judge calls are counted: a check that asks an LM is
skipped on an attempt that already fails a check without one and will be retried; and within a run
an output with the same fields is judged once.
"""

from __future__ import annotations

import dspy

from lmassert_magic import Constraint, activate_assertions, lm_judge
from lmassert_magic.engine import run_record_of
from lmassert_magic.engine.constraints import uses_lm

from helpers import FIX, Tweet, no_hashtags


def is_judge_prompt(messages) -> bool:
    return "## answer ## ]]" in messages[-1]["content"].split("Respond with")[-1]


def judged_and_plain(calls: list[str]) -> list[Constraint]:
    """A judge declared first (as a notebook might), then a check without an LM."""
    def engaging(tweet):
        calls.append(tweet)
        return lm_judge("Is the tweet engaging?", tweet=tweet)

    return [Constraint("engaging", engaging, "Be lively.", target=Tweet),
            Constraint("no_hashtags", no_hashtags, FIX, target=Tweet)]


def fixes_hashtags(messages):
    if is_judge_prompt(messages):
        return {"answer": True}
    return {"tweet": "clean tweet" if FIX in messages[-1]["content"] else "tweet #tag"}


def test_a_judge_is_not_asked_about_an_attempt_that_a_plain_check_already_rejects(scripted_lm):
    scripted_lm(fixes_hashtags)
    judged: list[str] = []
    constraints = judged_and_plain(judged)
    program = activate_assertions(dspy.Predict(Tweet), constraints=constraints)

    assert program(question="q1").tweet == "clean tweet"
    # unknown yet: the first check of the judge learns that it asks an LM
    assert judged == ["tweet #tag", "clean tweet"] and uses_lm(constraints[0])
    assert not uses_lm(constraints[1])

    judged.clear()
    prediction = program(question="q2")
    assert prediction.tweet == "clean tweet"
    assert judged == ["clean tweet"]  # the rejected "tweet #tag" was never judged
    stats = run_record_of(prediction).constraints
    assert stats["engaging"].passed_final == 1 and stats["no_hashtags"].passed_final == 1


def test_the_returned_output_is_always_judged_even_when_the_budget_is_spent(scripted_lm):
    lm = scripted_lm(lambda m: {"answer": True} if is_judge_prompt(m) else {"tweet": "tweet #tag"})
    judged: list[str] = []
    constraints = judged_and_plain(judged)
    program = activate_assertions(dspy.Predict(Tweet), 2, constraints=constraints)
    program(question="warm-up")  # learns that `engaging` asks an LM
    judged.clear()
    n_before = len(lm.prompts)

    prediction = program(question="q")
    assert prediction.tweet == "tweet #tag"  # soft: let through after 3 attempts
    assert judged == ["tweet #tag"]  # judged once: on the output returned, not on the two retried ones
    assert len(lm.prompts) - n_before == 3 + 1  # three attempts, one judge call
    stats = run_record_of(prediction).constraints
    assert stats["no_hashtags"].final_failures == 1 and stats["engaging"].passed_final == 1


def test_an_unchanged_output_is_judged_once_per_run(scripted_lm):
    # the judge says no: every attempt is retried, and the LM repeats itself
    lm = scripted_lm(lambda m: {"answer": False} if is_judge_prompt(m) else {"tweet": "same tweet"})
    judged: list[str] = []
    constraints = judged_and_plain(judged)[:1]
    program = activate_assertions(dspy.Predict(Tweet), 2, constraints=constraints)

    prediction = program(question="q")
    assert prediction.tweet == "same tweet"
    judge_prompts = [p for p in lm.prompts if is_judge_prompt(p)]
    assert len(lm.prompts) - len(judge_prompts) == 3  # three attempts...
    assert judged == ["same tweet"] and len(judge_prompts) == 1  # ...one judge call: the fields never changed
    stats = run_record_of(prediction).constraints["engaging"]
    assert stats.final_failures == 1 and stats.backtracks == 2


def two_judges(asked: list[tuple[str, str]]) -> list[Constraint]:
    """Two checks that each ask an LM judge, recording which was asked about which tweet."""
    def engaging(tweet):
        asked.append(("engaging", tweet))
        return lm_judge("Is the tweet engaging?", tweet=tweet)

    def faithful(tweet):
        asked.append(("faithful", tweet))
        return lm_judge("Is the tweet faithful?", tweet=tweet)

    return [Constraint("engaging", engaging, "Be lively.", target=Tweet),
            Constraint("faithful", faithful, "Stay true.", target=Tweet)]


def lively_after_feedback(messages):
    """Judges pass only "lively tweet"; the writer gives it once told "Be lively."."""
    text = messages[-1]["content"]
    if is_judge_prompt(messages):
        return {"answer": "lively tweet" in text}
    return {"tweet": "lively tweet" if "Be lively." in text else "dull tweet"}


def test_judging_stops_at_the_first_failing_judge_of_an_attempt_that_will_be_retried(scripted_lm):
    # DSPy 2.5 stops at the first failing Suggest: the later judges of a retried attempt were wasted calls
    lm = scripted_lm(lively_after_feedback)
    asked: list[tuple[str, str]] = []
    program = activate_assertions(dspy.Predict(Tweet), 2, constraints=two_judges(asked))
    program(question="warm-up")  # learns that both checks ask an LM
    asked.clear()
    n_before = len(lm.prompts)

    prediction = program(question="q")
    assert prediction.tweet == "lively tweet"
    assert asked == [("engaging", "dull tweet"), ("engaging", "lively tweet"), ("faithful", "lively tweet")]
    assert len(lm.prompts) - n_before == 2 + 3  # two attempts, three judge calls
    stats = run_record_of(prediction).constraints
    assert stats["engaging"].passed_final == 1 and stats["faithful"].passed_final == 1
    assert stats["engaging"].backtracks == 1


def test_every_judge_is_asked_about_an_output_that_cannot_be_retried(scripted_lm):
    scripted_lm(lambda m: {"answer": False} if is_judge_prompt(m) else {"tweet": "dull tweet"})
    asked: list[tuple[str, str]] = []
    program = activate_assertions(dspy.Predict(Tweet), 0, constraints=two_judges(asked))
    program(question="warm-up")
    asked.clear()

    prediction = program(question="q")
    assert asked == [("engaging", "dull tweet"), ("faithful", "dull tweet")]  # no budget: both verdicts recorded
    stats = run_record_of(prediction).constraints
    assert stats["engaging"].final_failures == 1 and stats["faithful"].final_failures == 1


def test_without_short_circuit_every_judge_is_asked_about_every_attempt(scripted_lm):
    scripted_lm(lively_after_feedback)
    asked: list[tuple[str, str]] = []
    program = activate_assertions(dspy.Predict(Tweet), 2, constraints=two_judges(asked), stop_at_failing_judge=False)
    program(question="warm-up")
    asked.clear()

    assert program(question="q").tweet == "lively tweet"
    assert [a for a in asked if a[1] == "dull tweet"] == [("engaging", "dull tweet"), ("faithful", "dull tweet")]
