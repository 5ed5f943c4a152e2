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

from helpers import FIX, Query, Tweet, TweetStep, activated_tweeter, fixes_on_feedback, hashtag_constraint, no_hashtags

# ---------------------------------------------------------------- retry prompt


def test_retry_prompt_shows_feedback_and_past_output(scripted_lm):
    lm = scripted_lm(fixes_on_feedback)
    program = activated_tweeter()
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

    class Program(TweetStep):
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Suggest(no_hashtags(tweet), FIX + ".")
            return dspy.Prediction(tweet=tweet)

    program = activate_assertions(Program())
    assert program(question="q").tweet == "clean tweet"
    assert FIX in lm.prompts[1][-1]["content"] and "great #news" in lm.prompts[1][-1]["content"]
    (name, stats), = assertion_log(program).constraint_stats().items()
    assert name.startswith("Suggest@test_runtime.py:")
    assert (stats.checks, stats.first_try_passes, stats.passes_after_backtrack, stats.final_failures) == (1, 0, 1, 0)
    assert stats.backtracks == 1


def test_retry_bypasses_cache_with_distinct_rollouts(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "always #same"})
    program = activated_tweeter(max_backtracks=2)
    program(question="q")
    assert len(lm.prompts) == 3
    configs = [entry["kwargs"] for entry in lm.history]
    rollouts = [c.get("rollout_id") for c in configs]
    assert rollouts[0] is None and None not in rollouts[1:] and len(set(rollouts[1:])) == 2
    assert all(c.get("temperature", 0) > 0 for c in configs[1:])
    # the second retry lists the accumulated feedback once (distinct messages only)
    assert lm.prompts[2][-1]["content"].count(FIX) == 1


# ---------------------------------------------------------------- budget spent


def test_suggest_continues_with_last_output_after_budget(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activated_tweeter(max_backtracks=2)
    out = program(question="q")
    assert out.tweet == "still #bad"
    assert len(lm.prompts) == 3
    record = run_record_of(out)
    stats = record.constraints["no_hashtags"]
    assert (stats.checks, stats.final_failures, stats.backtracks) == (1, 1, 2)
    assert [c.fixed for c in record.counterexamples] == [False, False]


def test_assert_raises_after_budget_naming_everything(scripted_lm):
    scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activated_tweeter(hashtag_constraint(hard=True), max_backtracks=1)
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

    class Program(TweetStep):
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Assert(no_hashtags(tweet), "no hashtags please")
            return dspy.Prediction(tweet=tweet)

    with pytest.raises(DSPyAssertionError, match="3 attempt.*no hashtags please"):
        activate_assertions(Program())(question="q")


def test_without_activation_suggest_never_raises_and_assert_does():
    assert Suggest(False, "soft") is False
    assert Suggest(True, "soft") is True
    with pytest.raises(DSPyAssertionError, match="hard"):
        Assert(False, "hard")


def test_per_constraint_budget_overrides_the_default(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activated_tweeter(hashtag_constraint(max_backtracks=0), max_backtracks=3)
    program(question="q")
    assert len(lm.prompts) == 1


def test_observe_mode_records_without_retrying(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "#bad"})
    program = activated_tweeter(hashtag_constraint(hard=True), mode=OBSERVE)
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
    program = activated_tweeter(max_backtracks=2)
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

    class Program(TweetStep):
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
        program = activated_tweeter()
        outs = program.batch(examples, num_threads=threads)
        return [o.tweet for o in outs], assertion_log(program).constraint_stats()["no_hashtags"]

    one, stats1 = run(1)
    eight, stats8 = run(8)
    assert one == eight
    assert stats1 == stats8
    assert stats8.checks == 40 and stats8.passes_after_backtrack == 14


def test_evaluate_with_threads(scripted_lm):
    scripted_lm(fixes_on_feedback)
    program = activated_tweeter()
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
    program = activated_tweeter()
    program.demos = [dspy.Example(question="a", tweet="b")]
    path = tmp_path / "p.json"
    program.save(str(path))
    fresh = dspy.Predict(Tweet)
    fresh.load(str(path))
    assert [dict(d) for d in fresh.demos] == [{"question": "a", "tweet": "b"}]
    deactivate_assertions(program)
    assert program(question="q").tweet == "#bad"


# ================================================================ DSPy 2.5 semantics (issue 14)


class Plan(dspy.Signature):
    """Plan a card."""

    topic: str = dspy.InputField()
    plan: str = dspy.OutputField()


class Card(dspy.Signature):
    """Write a card from the plan."""

    plan: str = dspy.InputField()
    card: str = dspy.OutputField()


class PlanThenCard(dspy.Module):
    """Two steps, `make_plan` then `make_card`; subclasses write `forward`, so inline checks stay in this file."""

    def __init__(self):
        super().__init__()
        self.make_plan = dspy.Predict(Plan)
        self.make_card = dspy.Predict(Card)


def _field_of(messages):
    """Which signature a prompt is for (Plan or Card), from its last message."""
    tail = messages[-1]["content"].split("Respond with")[-1]
    return "card" if "card" in tail else "plan"


def test_shared_budget_five_soft_constraints_spend_max_backtracks_in_all(scripted_lm):
    """DSPy 2.5: at most max_backtracks + 1 attempts per forward call, all constraints sharing them."""
    lm = scripted_lm(lambda m: {"tweet": "always bad"})
    constraints = [
        Constraint(f"c{i}", lambda tweet: False, f"fix {i}", target=Tweet) for i in range(5)
    ]
    program = activate_assertions(dspy.Predict(Tweet), max_backtracks=2, constraints=constraints)
    out = program(question="q")
    assert len(lm.prompts) == 3
    record = run_record_of(out)
    assert record.backtracks == 2
    assert all(record.constraints[f"c{i}"].final_failures == 1 for i in range(5))


def test_shared_budget_spans_inline_and_declared_and_steps(scripted_lm):
    lm = scripted_lm(lambda m: {"plan": "bad plan"} if _field_of(m) == "plan" else {"card": "bad card"})

    class PlanCard(PlanThenCard):
        def forward(self, topic):
            plan = self.make_plan(topic=topic).plan
            Suggest("good" in plan, "Make the plan good.", name="good_plan")
            card = self.make_card(plan=plan).card
            return dspy.Prediction(plan=plan, card=card)

    good_card = Constraint("good_card", lambda card: "good" in card, "Make the card good.", target=Card)
    program = activate_assertions(PlanCard(), max_backtracks=3, constraints=[good_card])
    out = program(topic="t")
    # 3 retries in all (plan twice or more, card the rest), never more than max_backtracks + 1 attempts per step
    assert run_record_of(out).backtracks == 3
    assert len(lm.prompts) == 2 + 3


def test_message_quoting_the_output_cannot_retry_without_end(scripted_lm):
    counter = iter(range(10_000))
    lm = scripted_lm(lambda m: {"tweet": "x" * (300 + next(counter))})

    class Program(TweetStep):
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Suggest(len(tweet) <= 280, f"{len(tweet)} chars is too long")
            return dspy.Prediction(tweet=tweet)

    activate_assertions(Program(), max_backtracks=2)(question="q")
    assert len(lm.prompts) == 3


def test_declared_message_quoting_the_output_is_bounded_too(scripted_lm):
    counter = iter(range(10_000))
    lm = scripted_lm(lambda m: {"tweet": "x" * (300 + next(counter))})
    long = Constraint("short", lambda tweet: len(tweet) <= 280, lambda tweet: f"{len(tweet)} chars", target=Tweet)
    activate_assertions(dspy.Predict(Tweet), max_backtracks=2, constraints=[long])(question="q")
    assert len(lm.prompts) == 3


def test_per_constraint_cap_limits_one_constraint_within_the_shared_budget(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "bad"})
    capped = Constraint("capped", lambda tweet: False, "capped fix", target=Tweet, max_backtracks=1)
    other = Constraint("other", lambda tweet: "good" in tweet, "other fix", target=Tweet)
    program = activate_assertions(dspy.Predict(Tweet), max_backtracks=4, constraints=[capped])
    program(question="q")
    assert len(lm.prompts) == 2  # one retry for the capped constraint, not four
    lm.prompts.clear()
    program = activate_assertions(dspy.Predict(Tweet), max_backtracks=4, constraints=[capped, other],
                                  stop_on_repeat=False)  # the LM repeats itself: count the budget, not repeats
    program(question="q2")
    assert len(lm.prompts) == 5  # 'other' keeps spending the shared budget after 'capped' is spent


def test_per_constraint_budgets_are_an_explicit_option(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "always bad"})
    constraints = [Constraint(f"c{i}", lambda tweet: False, f"fix {i}", target=Tweet) for i in range(3)]
    program = activate_assertions(
        dspy.Predict(Tweet), max_backtracks=2, constraints=constraints, budget="per_constraint",
        stop_on_repeat=False,  # the LM repeats itself: count the budget, not repeats
    )
    program(question="q")
    assert len(lm.prompts) == 1 + 3 * 2


def test_feedback_lists_the_distinct_messages_given_to_that_step(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "bad"})
    a = Constraint("a", lambda tweet: False, "fix A", target=Tweet)
    b = Constraint("b", lambda tweet: False, "fix B", target=Tweet)
    activate_assertions(dspy.Predict(Tweet), max_backtracks=2, constraints=[a, b])(question="q")
    last = lm.prompts[-1][-1]["content"]
    feedback = last.split("[[ ## feedback ## ]]")[1].split("[[ ##")[0]
    assert feedback.count("fix A") == 1 and feedback.count("fix B") == 1


# ---------------------------------------------------------------- counted on the final output


def test_constraint_rechecked_after_a_retry_for_another_counts_as_final_failure(scripted_lm):
    """A passes first, a retry for B breaks it: A is a final failure, and first/final are kept apart."""

    def respond(messages):
        return {"tweet": "long tweet with no tag at all" if "add a tag" in messages[-1]["content"] else "short"}

    scripted_lm(respond)
    a = Constraint("short", lambda tweet: len(tweet) < 10, "keep it short", target=Tweet)
    b = Constraint("tagged", lambda tweet: "tag" in tweet, "add a tag", target=Tweet)
    out = activate_assertions(dspy.Predict(Tweet), max_backtracks=1, constraints=[a, b])(question="q")
    record = run_record_of(out)
    short, tagged = record.constraints["short"], record.constraints["tagged"]
    assert short.first_try_passes == 1 or short.passed_first == 1
    assert short.passed_final == 0 and short.final_failures == 1
    assert tagged.passed_first == 0 and tagged.passed_final == 1


def test_inline_check_upstream_retry_rechecks_downstream_declared(scripted_lm):
    """Plan is re-run for an inline check; card is re-run and its declared check counts on the new card only."""

    def respond(messages):
        text = messages[-1]["content"]
        if _field_of(messages) == "plan":
            return {"plan": "good plan" if "better plan" in text else "meh plan"}
        return {"card": "card for good plan" if "good plan" in text else "card #tag"}

    lm = scripted_lm(respond)

    class PlanCard(PlanThenCard):
        def forward(self, topic):
            plan = self.make_plan(topic=topic).plan
            card = self.make_card(plan=plan).card
            Suggest("good" in plan, "better plan", target_module=self.make_plan, name="good_plan")
            return dspy.Prediction(plan=plan, card=card)

    no_tag = Constraint("no_tag", lambda card: "#" not in card, "no tags", target=Card, max_backtracks=0)
    out = activate_assertions(PlanCard(), constraints=[no_tag])(topic="t")
    assert out.card == "card for good plan"
    assert [_field_of(p) for p in lm.prompts] == ["plan", "card", "plan", "card"]
    stats = run_record_of(out).constraints["no_tag"]
    assert (stats.passed_first, stats.passed_final) == (0, 1)


def test_check_from_an_abandoned_pass_does_not_count(scripted_lm):
    """A step that the final pass no longer calls leaves no verdict behind."""

    def respond(messages):
        text = messages[-1]["content"]
        if _field_of(messages) == "plan":
            return {"plan": "skip" if "try again" in text else "go"}
        return {"card": "#bad card"}

    scripted_lm(respond)

    class Branchy(PlanThenCard):
        def forward(self, topic):
            plan = self.make_plan(topic=topic).plan
            if plan == "skip":
                return dspy.Prediction(plan=plan, card="")
            card = self.make_card(plan=plan).card
            Suggest(False, "try again", target_module=self.make_plan, name="again")
            return dspy.Prediction(plan=plan, card=card)

    no_tag = Constraint("no_tag", lambda card: "#" not in card, "no tags", target=Card, max_backtracks=0)
    out = activate_assertions(Branchy(), max_backtracks=1, constraints=[no_tag])(topic="t")
    assert out.plan == "skip"
    record = run_record_of(out)
    assert record.constraints["no_tag"].checks == 0  # the returned output never went through a card step
    assert record.constraints["no_tag"].examples == 0


# ---------------------------------------------------------------- no re-sampling of fixed work


def test_a_retried_earlier_step_is_not_resampled_when_a_later_one_retries(scripted_lm):
    def respond(messages):
        text = messages[-1]["content"]
        if _field_of(messages) == "plan":
            return {"plan": "good plan" if "better plan" in text else "meh plan"}
        return {"card": "clean card" if "no tags" in text else "card #tag"}

    lm = scripted_lm(respond)

    class PlanCard(PlanThenCard):
        def forward(self, topic):
            plan = self.make_plan(topic=topic).plan
            Suggest("good" in plan, "better plan", name="good_plan")
            card = self.make_card(plan=plan).card
            Suggest("#" not in card, "no tags", name="no_tag")
            return dspy.Prediction(plan=plan, card=card)

    out = activate_assertions(PlanCard(), max_backtracks=3)(topic="t")
    assert out.card == "clean card" and out.plan == "good plan"
    assert [_field_of(p) for p in lm.prompts] == ["plan", "plan", "card", "card"]


# ---------------------------------------------------------------- inline names


def test_inline_constraints_are_named_by_call_site_not_message(scripted_lm):
    counter = iter(range(100))
    scripted_lm(lambda m: {"tweet": "x" * (300 + next(counter))})

    class Program(TweetStep):
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Suggest(len(tweet) <= 280, f"{len(tweet)} chars is too long")
            Assert(len(tweet) < 10_000, "way too long", name="sane_length")
            return dspy.Prediction(tweet=tweet)

    out = activate_assertions(Program())(question="q")
    names = set(run_record_of(out).constraints)
    assert "sane_length" in names
    site = [n for n in names if n != "sane_length"]
    assert len(site) == 1 and site[0].startswith("Suggest@test_runtime.py:") and "chars" not in site[0]


# ---------------------------------------------------------------- errors as in DSPy 2.5


def test_errors_subclass_assertion_error_and_carry_dspy25_attributes(scripted_lm):
    scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activated_tweeter(hashtag_constraint(hard=True), max_backtracks=1)
    with pytest.raises(AssertionError) as info:
        program(question="q")
    err = info.value
    assert isinstance(err, DSPyAssertionError)
    assert err.id == "no_hashtags" and err.msg == FIX + "."
    assert err.target_module is program
    assert err.state is not None and err.state["attempts"] == 2
    assert "still #bad" in str(err) and FIX in str(err)


# ---------------------------------------------------------------- worker threads


def _batch_program(num_threads):
    class Batched(TweetStep):
        def forward(self, questions):
            examples = [dspy.Example(question=q).with_inputs("question") for q in questions]
            outs = self.gen.batch(examples, num_threads=num_threads)
            return dspy.Prediction(tweets=[o.tweet for o in outs])

    return Batched()


@pytest.mark.parametrize("num_threads", [1, 3])
def test_predictors_called_through_batch_are_checked_and_counted(scripted_lm, num_threads):
    lm = scripted_lm(fixes_on_feedback)
    # one run: the budget is shared by the whole forward call, batch included
    program = activate_assertions(_batch_program(num_threads), max_backtracks=3, constraints=[hashtag_constraint()])
    out = program(questions=["a", "b", "c"])
    assert out.tweets == ["clean tweet"] * 3
    record = run_record_of(out)
    assert record.lm_calls == len(lm.prompts) == 6
    stats = record.constraints["no_hashtags"]
    assert stats.checks == 3 and stats.passes_after_backtrack == 3


def test_inline_assert_in_a_parallel_worker_is_retried(scripted_lm):
    lm = scripted_lm(fixes_on_feedback)

    class Worker(TweetStep):
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Assert(no_hashtags(tweet), FIX + ".", name="no_hashtags_inline")
            return dspy.Prediction(tweet=tweet)

    class Fan(dspy.Module):
        def __init__(self):
            super().__init__()
            self.worker = Worker()

        def forward(self, questions):
            pairs = [(self.worker, {"question": q}) for q in questions]
            outs = dspy.Parallel(num_threads=2)(pairs)
            return dspy.Prediction(tweets=[o.tweet for o in outs])

    out = activate_assertions(Fan(), max_backtracks=2)(questions=["a", "b"])
    assert out.tweets == ["clean tweet", "clean tweet"]
    stats = run_record_of(out).constraints["no_hashtags_inline"]
    assert stats.checks == 2 and stats.passed_final == 1
    # a, b, then both retried; a call still in flight when another thread's backtrack unwinds the pass is
    # made again (a first attempt for b, or a retry whose plan is kept for the next pass)
    assert 4 <= len(lm.prompts) <= 6


def test_carry_run_joins_a_raw_thread_pool_to_the_run(scripted_lm):
    from concurrent.futures import ThreadPoolExecutor

    from lmassert_magic.engine import carry_run

    scripted_lm(fixes_on_feedback)

    class Pool(TweetStep):
        def forward(self, questions):
            with ThreadPoolExecutor(2) as pool:
                tweets = list(pool.map(carry_run(lambda q: self.gen(question=q).tweet), questions))
            return dspy.Prediction(tweets=tweets)

    out = activate_assertions(Pool(), constraints=[hashtag_constraint()])(questions=["a", "b"])
    assert out.tweets == ["clean tweet", "clean tweet"]
    assert run_record_of(out).constraints["no_hashtags"].checks == 2


def test_calls_outside_any_run_while_one_is_active_are_counted(scripted_lm):
    from concurrent.futures import ThreadPoolExecutor

    from lmassert_magic.engine import stray_predictor_calls

    lm = scripted_lm(fixes_on_feedback)

    class Pool(TweetStep):
        def __init__(self):
            super().__init__()
            self.gen.set_lm(lm)  # a raw thread does not see dspy.context's settings

        def forward(self, questions):
            with ThreadPoolExecutor(2) as pool:
                tweets = list(pool.map(lambda q: self.gen(question=q).tweet, questions))
            return dspy.Prediction(tweets=tweets)

    before = stray_predictor_calls()
    activate_assertions(Pool(), constraints=[hashtag_constraint()])(questions=["a", "b"])
    assert stray_predictor_calls() - before == 2


# ---------------------------------------------------------------- composition


def test_activated_module_exposes_the_signature_of_its_forward():
    import inspect

    class Step(TweetStep):
        def forward(self, question, style="plain"):
            return self.gen(question=question)

    program = activate_assertions(Step())
    params = list(inspect.signature(program.forward).parameters)
    assert params == ["question", "style"]


# ---------------------------------------------------------------- knobs


def test_retry_temperature_is_an_option(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "#bad"})
    program = activated_tweeter(max_backtracks=1, retry_temperature=0.3)
    program(question="q")
    assert lm.history[-1]["kwargs"]["temperature"] == 0.3


def test_retry_sampling_is_derived_from_the_seed_and_differs_per_attempt(scripted_lm):
    def rollouts(seed, question="q"):
        lm = scripted_lm(lambda m: {"tweet": "#bad"})
        program = activated_tweeter(max_backtracks=2, seed=seed)
        program(question=question)
        assert all(e["kwargs"].get("seed") == e["kwargs"].get("rollout_id") for e in lm.history[1:])
        return [entry["kwargs"].get("rollout_id") for entry in lm.history]

    first = rollouts(0)
    assert first[0] is None and len(set(first[1:])) == 2
    assert rollouts(0) == first
    assert rollouts(1) != first
    assert rollouts(0, "another question")[1:] != first[1:]
