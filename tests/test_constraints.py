"""Declarative constraints: field selection, strict bools, feedback, attribution of their own bugs."""

from __future__ import annotations

import time

import pytest

from lmassert_magic.engine import Constraint, ConstraintError, lm_judge


def test_condition_gets_only_the_fields_it_names():
    seen = {}

    def cond(tweet, question):
        seen.update(tweet=tweet, question=question)
        return True

    c = Constraint("c", cond)
    assert c.check({"tweet": "t", "question": "q", "context": ["x"]}) is True
    assert seen == {"tweet": "t", "question": "q"}


def test_condition_with_kwargs_gets_every_field():
    c = Constraint("c", lambda **f: sorted(f) == ["a", "b"])
    assert c.check({"a": 1, "b": 2}) is True


def test_missing_field_is_a_constraint_error_naming_the_field():
    c = Constraint("short", lambda answer: len(answer) < 5)
    with pytest.raises(ConstraintError, match=r"'short'.*needs field\(s\) answer.*tweet"):
        c.check({"tweet": "x"})


def test_non_bool_result_is_reported_against_the_constraint():
    c = Constraint("judge", lambda tweet: "yes")
    with pytest.raises(ConstraintError, match=r"'judge'.*returned str"):
        c.check({"tweet": "x"})


def test_exception_in_condition_is_attributed():
    c = Constraint("broken", lambda tweet: 1 / 0)
    with pytest.raises(ConstraintError) as info:
        c.check({"tweet": "x"})
    assert info.value.constraint == "broken"
    assert isinstance(info.value.cause, ZeroDivisionError)
    assert "ZeroDivisionError" in str(info.value)


def test_slow_condition_hits_the_time_limit():
    c = Constraint("slow", lambda tweet: time.sleep(2) or True, timeout=0.05)
    with pytest.raises(ConstraintError, match=r"'slow'.*within 0.05s"):
        c.check({"tweet": "x"})


def test_feedback_plain_and_formatted():
    assert Constraint("a", lambda t: True, "Remove hashtags.").feedback({"t": "x"}) == "Remove hashtags."
    c = Constraint("b", lambda tweet: True, lambda tweet: f"Tweet has {len(tweet)} chars; keep it under 3.")
    assert c.feedback({"tweet": "abcd"}) == "Tweet has 4 chars; keep it under 3."
    assert "'a'" in Constraint("a", lambda t: True).feedback({})


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"name": "", "condition": lambda: True}, ValueError),
        ({"name": "x", "condition": "not callable"}, TypeError),
        ({"name": "x", "condition": lambda: True, "message": 3}, TypeError),
        ({"name": "x", "condition": lambda: True, "max_backtracks": -1}, ValueError),
    ],
)
def test_bad_constraint_definitions_are_rejected(kwargs, error):
    with pytest.raises(error):
        Constraint(**kwargs)


def test_lm_judge_returns_a_real_bool(scripted_lm):
    lm = scripted_lm(lambda m: {"answer": "exciting" in m[-1]["content"]})
    assert lm_judge("Is the tweet engaging?", tweet="an exciting tweet") is True
    assert lm_judge("Is the tweet engaging?", tweet="dull") is False
    assert len(lm.prompts) == 2


def test_lm_judge_accepts_a_field_named_question(scripted_lm):
    lm = scripted_lm(lambda m: {"answer": True})
    assert lm_judge("Are the options sensible?", question="Which town?", options="A, B") is True
    assert "Which town?" in lm.prompts[0][-1]["content"]
