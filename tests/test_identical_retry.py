"""A retry that returns an output identical to an earlier one is told so, and a second repeat stops (issue 16).

Scripted LMs that repeat themselves whatever the prompt says: the engine no longer spends its whole budget on
them. Every path that retries is covered: a declared constraint (sync and async) and an inline Suggest/Assert.
"""

from __future__ import annotations

import asyncio

import dspy
import pytest

from lmassert_magic import DSPyAssertionError, Suggest, activate_assertions
from lmassert_magic.engine import run_record_of
from lmassert_magic.engine.records import IDENTICAL_OUTPUT
from lmassert_magic.engine.retry import REPEAT_NOTE
from lmassert_magic.engine.timeline import timeline_frame, timeline_rows

from helpers import FIX, Tweet, TweetStep, hashtag_constraint, no_hashtags

BUDGET = 5  # room for six attempts: a repeating LM must not get them all


def always(tweet: str):
    return lambda messages: {"tweet": tweet}


def feedback_of(prompt) -> str:
    text = prompt[-1]["content"]
    return text.split("[[ ## feedback ## ]]", 1)[1] if "[[ ## feedback ## ]]" in text else ""


def test_a_repeated_output_is_named_in_the_next_feedback_and_a_second_repeat_stops(scripted_lm):
    lm = scripted_lm(always("same #tag"))
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=[hashtag_constraint()])

    prediction = program(question="q")
    assert prediction.tweet == "same #tag"  # soft: the run goes on with the last output
    assert len(lm.prompts) == 3  # first try, a retry that repeats it, a retry told so that repeats it again
    assert REPEAT_NOTE not in feedback_of(lm.prompts[1]) and FIX in feedback_of(lm.prompts[1])
    assert REPEAT_NOTE in feedback_of(lm.prompts[2]) and FIX in feedback_of(lm.prompts[2])
    record = run_record_of(prediction)
    assert [a.repeat_of for a in record.attempts] == [None, 0, 0]
    assert [a.stopped for a in record.attempts] == [None, None, IDENTICAL_OUTPUT]
    stats = record.constraints["no_hashtags"]
    assert stats.final_failures == 1 and stats.backtracks == 2  # the stop spends no retry


def test_a_retry_that_changes_after_being_told_goes_on(scripted_lm):
    def respond(messages):
        feedback = feedback_of(messages)
        if REPEAT_NOTE in feedback:
            return {"tweet": "clean tweet"}
        return {"tweet": "same #tag"}

    lm = scripted_lm(respond)
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=[hashtag_constraint()])
    prediction = program(question="q")
    assert prediction.tweet == "clean tweet" and len(lm.prompts) == 3
    assert run_record_of(prediction).constraints["no_hashtags"].passed_final == 1


def test_the_note_is_given_once_per_repeat_not_carried_on(scripted_lm):
    # a, a (repeat: told), b, c, ...: retries that change are not told anything about repeating
    answers = iter(["a #1", "a #1", "b #2", "c #3", "d #4", "e #5"])
    lm = scripted_lm(lambda m: {"tweet": next(answers)})
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=[hashtag_constraint()])
    prediction = program(question="q")
    assert prediction.tweet == "e #5" and len(lm.prompts) == 6
    assert [REPEAT_NOTE in feedback_of(p) for p in lm.prompts] == [False, False, True, False, False, False]
    assert [a.stopped for a in run_record_of(prediction).attempts] == [None] * 6


def test_a_hard_constraint_raises_when_a_retry_repeats_twice(scripted_lm):
    lm = scripted_lm(always("still #bad"))
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=[hashtag_constraint(hard=True)])
    with pytest.raises(DSPyAssertionError, match="no_hashtags") as info:
        program(question="q")
    assert len(lm.prompts) == 3 and info.value.attempts == 3
    assert info.value.run_record.attempts[-1].stopped == IDENTICAL_OUTPUT


def test_the_async_path_stops_alike(scripted_lm):
    class AsyncTweet(TweetStep):
        def forward(self, question):
            return self.gen(question=question)

        async def aforward(self, question):
            return await self.gen.acall(question=question)

    lm = scripted_lm(always("same #tag"))
    program = activate_assertions(AsyncTweet(), BUDGET, constraints=[hashtag_constraint()])
    prediction = asyncio.run(program.acall(question="q"))
    assert len(lm.prompts) == 3 and REPEAT_NOTE in feedback_of(lm.prompts[2])
    sync = run_record_of(program(question="q"))
    assert [(a.repeat_of, a.stopped) for a in run_record_of(prediction).attempts] == \
        [(a.repeat_of, a.stopped) for a in sync.attempts]


def test_an_inline_suggest_stops_alike(scripted_lm):
    lm = scripted_lm(always("same #tag"))

    class Program(TweetStep):
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Suggest(no_hashtags(tweet), FIX + ".")
            return dspy.Prediction(tweet=tweet)

    prediction = activate_assertions(Program(), BUDGET)(question="q")
    assert len(lm.prompts) == 3 and REPEAT_NOTE in feedback_of(lm.prompts[2])
    record = run_record_of(prediction)
    assert record.attempts[-1].stopped == IDENTICAL_OUTPUT
    (stats,) = record.constraints.values()
    assert stats.backtracks == 2 and stats.final_failures == 1


def test_the_timeline_says_why_retrying_stopped(scripted_lm):
    scripted_lm(always("same #tag"))
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=[hashtag_constraint()])
    frame = timeline_frame(timeline_rows(run_record_of(program(question="q"))))
    assert list(frame["stopped"].isna()) == [True, True, False] and frame["stopped"].iloc[-1] == IDENTICAL_OUTPUT


def test_the_timeline_view_says_it_in_words(scripted_lm):
    from lmassert_magic.report.timeline import attempt_view

    scripted_lm(always("same #tag"))
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=[hashtag_constraint()])
    labels = [attempt_view(r).label for r in timeline_rows(run_record_of(program(question="q")))]
    assert labels == ["first try", "retry 1 · same output as attempt 0",
                      "retry 2 · same output as attempt 0 · stopped: identical output"]


def test_with_stop_on_repeat_off_every_retry_is_spent(scripted_lm):
    lm = scripted_lm(always("same #tag"))
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=[hashtag_constraint()],
                                  stop_on_repeat=False)
    program(question="q")
    assert len(lm.prompts) == BUDGET + 1
    assert not any(REPEAT_NOTE in feedback_of(p) for p in lm.prompts)


def test_the_output_kept_after_a_stop_is_judged(scripted_lm):
    # a judge is skipped on outputs that will be retried; the output a stop lets through is judged once
    from lmassert_magic import Constraint, lm_judge

    def respond(messages):
        if "## answer ## ]]" in messages[-1]["content"].split("Respond with")[-1]:
            return {"answer": True}
        return {"tweet": "same #tag"}

    lm = scripted_lm(respond)
    judged: list[str] = []

    def engaging(tweet):
        judged.append(tweet)
        return lm_judge("Is the tweet engaging?", tweet=tweet)

    constraints = [Constraint("engaging", engaging, "Be lively."), hashtag_constraint()]
    program = activate_assertions(dspy.Predict(Tweet), BUDGET, constraints=constraints)
    program(question="warm-up")  # learns that `engaging` asks an LM
    judged.clear()
    before = len(lm.prompts)
    record = run_record_of(program(question="q"))
    assert judged == ["same #tag"] and len(lm.prompts) - before == 3 + 1  # three attempts, one judge call
    assert record.attempts[-1].stopped == IDENTICAL_OUTPUT
    assert record.constraints["engaging"].passed_final == 1 and record.constraints["no_hashtags"].final_failures == 1
