"""Backtracking semantics of the engine, with scripted LMs."""

from __future__ import annotations

import functools
import re

import dspy
import pytest

from lmassert_magic import (
    Assert,
    Constraint,
    ConstraintError,
    DSPyAssertionError,
    Retry,
    Suggest,
    TargetNotFoundError,
    activate_assertions,
    assert_transform_module,
    backtrack_handler,
)
from lmassert_magic.engine import OBSERVE, assertion_log, deactivate_assertions, run_record_of

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


def fixes_on_feedback(messages):
    """Hashtags unless the prompt carries the feedback."""
    return {"tweet": "clean tweet" if FIX in messages[-1]["content"] else "great #news"}


def hashtag_constraint(**kw):
    return Constraint("no_hashtags", no_hashtags, FIX + ".", target=kw.pop("target", Tweet), **kw)


# ---------------------------------------------------------------- retry prompt


def test_retry_prompt_shows_feedback_and_past_output(scripted_lm):
    lm = scripted_lm(fixes_on_feedback)
    program = activate_assertions(dspy.Predict(Tweet), constraints=[hashtag_constraint()])
    out = program(question="What's new?")
    assert out.tweet == "clean tweet"
    assert len(lm.prompts) == 2
    retry_prompt = lm.prompts[1][-1]["content"]
    assert "[[ ## feedback ## ]]" in retry_prompt and FIX in retry_prompt
    assert "[[ ## past_tweet ## ]]" in retry_prompt and "great #news" in retry_prompt
    first_prompt = lm.prompts[0][-1]["content"]
    assert "feedback" not in first_prompt


def test_inline_suggest_retry_prompt_and_counts(scripted_lm):
    lm = scripted_lm(fixes_on_feedback)

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.gen = dspy.Predict(Tweet)

        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Suggest(no_hashtags(tweet), FIX + ".")
            return dspy.Prediction(tweet=tweet)

    program = activate_assertions(Program())
    assert program(question="q").tweet == "clean tweet"
    assert FIX in lm.prompts[1][-1]["content"] and "great #news" in lm.prompts[1][-1]["content"]
    stats = assertion_log(program).constraint_stats()[FIX + "."]
    assert (stats.checks, stats.first_try_passes, stats.passes_after_backtrack, stats.final_failures) == (1, 0, 1, 0)
    assert stats.backtracks == 1


def test_retry_bypasses_cache_with_distinct_rollouts(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "always #same"})
    program = activate_assertions(dspy.Predict(Tweet), max_backtracks=2, constraints=[hashtag_constraint()])
    program(question="q")
    assert len(lm.prompts) == 3
    configs = [entry["kwargs"] for entry in lm.history]
    assert [c.get("rollout_id") for c in configs] == [None, 1, 2]
    assert all(c.get("temperature", 0) > 0 for c in configs[1:])
    # the second retry lists the accumulated feedback once (distinct messages only)
    assert lm.prompts[2][-1]["content"].count(FIX) == 1


# ---------------------------------------------------------------- budget spent


def test_suggest_continues_with_last_output_after_budget(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activate_assertions(dspy.Predict(Tweet), max_backtracks=2, constraints=[hashtag_constraint()])
    out = program(question="q")
    assert out.tweet == "still #bad"
    assert len(lm.prompts) == 3
    record = run_record_of(out)
    stats = record.constraints["no_hashtags"]
    assert (stats.checks, stats.final_failures, stats.backtracks) == (1, 1, 2)
    assert [c.fixed for c in record.counterexamples] == [False, False]


def test_assert_raises_after_budget_naming_everything(scripted_lm):
    scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activate_assertions(
        dspy.Predict(Tweet), max_backtracks=1, constraints=[hashtag_constraint(hard=True)]
    )
    with pytest.raises(DSPyAssertionError) as info:
        program(question="q")
    err = info.value
    assert err.constraint == "no_hashtags" and err.attempts == 2
    assert err.last_outputs == {"tweet": "still #bad"}
    text = str(err)
    assert "no_hashtags" in text and FIX in text and "2 attempt" in text and "still #bad" in text
    assert err.run_record.constraints["no_hashtags"].final_failures == 1


def test_inline_assert_raises_after_budget(scripted_lm):
    scripted_lm(lambda m: {"tweet": "still #bad"})

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.gen = dspy.Predict(Tweet)

        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Assert(no_hashtags(tweet), "no hashtags please")
            return dspy.Prediction(tweet=tweet)

    with pytest.raises(DSPyAssertionError, match="no hashtags please.*3 attempt"):
        activate_assertions(Program())(question="q")


def test_without_activation_suggest_never_raises_and_assert_does():
    assert Suggest(False, "soft") is False
    assert Suggest(True, "soft") is True
    with pytest.raises(DSPyAssertionError, match="hard"):
        Assert(False, "hard")


def test_per_constraint_budget_overrides_the_default(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activate_assertions(
        dspy.Predict(Tweet), max_backtracks=3, constraints=[hashtag_constraint(max_backtracks=0)]
    )
    program(question="q")
    assert len(lm.prompts) == 1


def test_observe_mode_records_without_retrying(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "#bad"})
    program = activate_assertions(dspy.Predict(Tweet), constraints=[hashtag_constraint(hard=True)], mode=OBSERVE)
    out = program(question="q")
    assert out.tweet == "#bad" and len(lm.prompts) == 1
    assert run_record_of(out).constraints["no_hashtags"].final_failures == 1


# ---------------------------------------------------------------- counts


def test_counts_are_exact_over_many_runs(scripted_lm):
    # questions containing "x" fail twice, "y" fail once then pass, others pass at once
    def respond(messages):
        text = messages[-1]["content"]
        attempts = text.count(FIX)
        q = re.search(r"## question ## \]\]\n(\w+)", text).group(1)
        if q.startswith("x"):
            return {"tweet": "#bad"}
        if q.startswith("y") and attempts == 0:
            return {"tweet": "#bad"}
        return {"tweet": "fine"}

    lm = scripted_lm(respond)
    program = activate_assertions(dspy.Predict(Tweet), max_backtracks=2, constraints=[hashtag_constraint()])
    questions = ["x1", "y1", "y2", "ok1", "ok2", "ok3"]
    for q in questions:
        program(question=q)
    stats = assertion_log(program).constraint_stats()["no_hashtags"]
    assert stats.checks == 6
    assert stats.first_try_passes == 3
    assert stats.passes_after_backtrack == 2
    assert stats.final_failures == 1
    assert stats.backtracks == 2 + 1 + 1
    records = assertion_log(program).records
    assert sum(r.lm_calls for r in records) == len(lm.prompts) == 3 + 2 + 2 + 3
    assert sum(r.tokens for r in records) > 0
    cx = assertion_log(program).counterexamples()
    assert len(cx) == 4 and sum(c.fixed for c in cx) == 2


# ---------------------------------------------------------------- structure


def test_earlier_steps_are_not_resampled(scripted_lm):
    def respond(messages):
        text = messages[-1]["content"]
        if "query" in text.split("Respond with")[-1]:
            return {"query": "the query"}
        return fixes_on_feedback(messages)

    lm = scripted_lm(respond)

    class TwoStep(dspy.Module):
        def __init__(self):
            super().__init__()
            self.query = dspy.Predict(Query)
            self.tweet = dspy.Predict(Tweet)

        def forward(self, question):
            q = self.query(question=question).query
            t = self.tweet(question=q).tweet
            Suggest(no_hashtags(t), FIX + ".", target_module=self.tweet)
            return dspy.Prediction(query=q, tweet=t)

    out = activate_assertions(TwoStep())(question="q")
    assert out.tweet == "clean tweet"
    assert len(lm.prompts) == 3  # query once, tweet twice


def test_nested_modules_and_chain_of_thought_target(scripted_lm):
    def respond(messages):
        return {"reasoning": "r", **fixes_on_feedback(messages)}

    lm = scripted_lm(respond)

    class Inner(dspy.Module):
        def __init__(self):
            super().__init__()
            self.write = dspy.ChainOfThought(Tweet)

        def forward(self, question):
            return self.write(question=question)

    class Outer(dspy.Module):
        def __init__(self):
            super().__init__()
            self.inner = Inner()

        def forward(self, question):
            return self.inner(question=question)

    program = Outer()
    activate_assertions(program.inner)  # an activated module nested in another one joins its run
    activate_assertions(program, constraints=[hashtag_constraint(target=program.inner.write)])
    out = program(question="q")
    assert out.tweet == "clean tweet"
    assert "past_reasoning" in lm.prompts[1][-1]["content"]
    assert run_record_of(out).constraints["no_hashtags"].passes_after_backtrack == 1


@pytest.mark.parametrize("target_kind", ["predictor", "module", "signature", "name"])
def test_target_forms(scripted_lm, target_kind):
    scripted_lm(lambda m: {"reasoning": "r", **fixes_on_feedback(m)})

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.write = dspy.ChainOfThought(Tweet)
            self.other = dspy.Predict(Query)

        def forward(self, question):
            return self.write(question=question)

    program = Program()
    target = {
        "predictor": program.write.predict,
        "module": program.write,
        "signature": Tweet,
        "name": "write",
    }[target_kind]
    activate_assertions(program, constraints=[hashtag_constraint(target=target)])
    assert program(question="q").tweet == "clean tweet"


def test_target_matching_nothing_is_an_error_at_activation():
    program = dspy.Predict(Query)
    with pytest.raises(TargetNotFoundError, match="Tweet"):
        activate_assertions(program, constraints=[hashtag_constraint()])
    assert not getattr(program, "_lmassert_constraints", [])


def test_inline_target_matching_nothing_is_an_error_at_first_use(scripted_lm):
    scripted_lm(lambda m: {"tweet": "#x"})

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.gen = dspy.Predict(Tweet)

        def forward(self, question):
            t = self.gen(question=question).tweet
            Suggest(False, "x", target_module=Query)
            return dspy.Prediction(tweet=t)

    with pytest.raises(TargetNotFoundError, match="signature Query"):
        activate_assertions(Program())(question="q")


def test_constraint_bug_is_reported_as_that_constraint(scripted_lm):
    scripted_lm(lambda m: {"tweet": "t"})
    bad = Constraint("typo", lambda tweet: tweet.nonexistent(), target=Tweet)
    program = activate_assertions(dspy.Predict(Tweet), constraints=[bad])
    with pytest.raises(ConstraintError, match="'typo'.*AttributeError"):
        program(question="q")


def test_unique_constraint_names_required():
    with pytest.raises(ValueError, match="two constraints"):
        activate_assertions(dspy.Predict(Tweet), constraints=[hashtag_constraint(), hashtag_constraint()])


# ---------------------------------------------------------------- threads


def test_eight_threads_match_one_thread(scripted_lm):
    def respond(messages):
        text = messages[-1]["content"]
        n = int(re.search(r"q(\d+)", text).group(1))
        if n % 3 == 0 and FIX not in text:
            return {"tweet": f"tweet {n} #tag"}
        return {"tweet": f"tweet {n}"}

    scripted_lm(respond, latency=0.002)
    examples = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(40)]

    def run(threads):
        program = activate_assertions(dspy.Predict(Tweet), constraints=[hashtag_constraint()])
        outs = program.batch(examples, num_threads=threads)
        return [o.tweet for o in outs], assertion_log(program).constraint_stats()["no_hashtags"]

    one, stats1 = run(1)
    eight, stats8 = run(8)
    assert one == eight
    assert stats1 == stats8
    assert stats8.checks == 40 and stats8.passes_after_backtrack == 14


def test_evaluate_with_threads(scripted_lm):
    scripted_lm(fixes_on_feedback)
    program = activate_assertions(dspy.Predict(Tweet), constraints=[hashtag_constraint()])
    devset = [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(16)]
    result = dspy.Evaluate(devset=devset, metric=lambda e, p, t=None: no_hashtags(p.tweet), num_threads=8)(program)
    assert result.score == 100.0
    assert len(assertion_log(program)) == 16


# ---------------------------------------------------------------- DSPy 2.5 compatibility


class LegacyProgram(dspy.Module):
    """Written for DSPy 2.5; only the assertion imports changed."""

    def __init__(self):
        super().__init__()
        self.generate = dspy.Predict(Tweet)

    def forward(self, question):
        tweet = self.generate(question=question).tweet
        Suggest(no_hashtags(tweet), FIX + ".", target_module=self.generate)
        Assert(len(tweet) < 280, "Keep it under 280 characters.")
        return dspy.Prediction(tweet=tweet)


@pytest.mark.parametrize("style", ["transform", "method", "handler_partial"])
def test_dspy25_program_runs_with_changed_imports(scripted_lm, style):
    lm = scripted_lm(fixes_on_feedback)
    if style == "transform":
        program = assert_transform_module(LegacyProgram().map_named_predictors(Retry), backtrack_handler)
    elif style == "method":
        program = LegacyProgram().activate_assertions()
    else:
        program = assert_transform_module(
            LegacyProgram().map_named_predictors(Retry), functools.partial(backtrack_handler, max_backtracks=1)
        )
    assert program(question="q").tweet == "clean tweet"
    assert len(lm.prompts) == 2


def test_deactivated_program_is_plain_and_saves_like_the_original(scripted_lm, tmp_path):
    scripted_lm(lambda m: {"tweet": "#bad"})
    program = activate_assertions(dspy.Predict(Tweet), constraints=[hashtag_constraint()])
    program.demos = [dspy.Example(question="a", tweet="b")]
    path = tmp_path / "p.json"
    program.save(str(path))
    fresh = dspy.Predict(Tweet)
    fresh.load(str(path))
    assert [dict(d) for d in fresh.demos] == [{"question": "a", "tweet": "b"}]
    deactivate_assertions(program)
    assert program(question="q").tweet == "#bad"
