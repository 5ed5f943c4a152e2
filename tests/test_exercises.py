"""The notebooks' self-checking exercises: each check can pass, and each can fail for the right reason."""

from __future__ import annotations

import pytest

from lmassert_magic.exercises import EXERCISES, check_exercise

TWEET_SIGNATURE = '''%%signature GenerateTweet
"""Write a tweet."""
question: str = In()
context: list[str] = In()
answer: str = In()
tweet: str = Out()'''

ANSWER_SIGNATURE = '''%%signature GenerateAnswer
"""Answer."""
context: list[str] = In()
question: str = In()
answer: str = Out()'''

PARAGRAPH_SIGNATURE = '''%%signature GenerateCitedParagraph
"""Cite."""
context: list[str] = In()
question: str = In()
paragraph: str = Out()'''

QUIZ_SIGNATURE = '''%%signature GenerateChoices
"""Options."""
question: str = In()
answer: str = In()
candidates: list[str] = In()
option_b: str = Out()
option_c: str = Out()
option_d: str = Out()'''


def test_quickstart_length_exercise_passes_with_a_right_soft_constraint(ip):
    ip.run_cell(TWEET_SIGNATURE)
    ip.run_cell('%%assert GenerateTweet --name under_120\nlen(tweet) < 120\nf"The tweet has {len(tweet)} characters."')
    check = check_exercise("quickstart.under_120")
    assert check.passed, str(check)
    assert "done" in str(check)


@pytest.mark.parametrize(("cell", "complaint"), [
    ('len(tweet) <= 130\nf"It has {len(tweet)} characters."', "a 130-character tweet fails, but yours passes"),
    ('len(tweet) < 100\nf"It has {len(tweet)} characters."', "a 119-character tweet passes, but yours fails"),
    ('len(tweet) < 120\n"Make it shorter."', "the feedback should say '130'"),
])
def test_quickstart_length_exercise_names_what_is_wrong(ip, cell, complaint):
    ip.run_cell(TWEET_SIGNATURE)
    ip.run_cell(f"%%assert GenerateTweet --name short\n{cell}")
    check = check_exercise("quickstart.under_120")
    assert not check.passed
    assert complaint in str(check)


def test_a_new_constraint_must_be_soft_and_must_exist(ip):
    ip.run_cell(TWEET_SIGNATURE)
    assert "no new constraint on GenerateTweet" in str(check_exercise("quickstart.under_120"))
    ip.run_cell('%%assert GenerateTweet --name short --hard\nlen(tweet) < 120\nf"{len(tweet)}"')
    check = check_exercise("quickstart.under_120")
    assert not check.passed and "the task asks for soft" in str(check)


def test_a_condition_that_raises_is_reported_not_raised(ip):
    ip.run_cell(ANSWER_SIGNATURE)
    ip.run_cell('%%assert GenerateAnswer --name words\nlen(answer.split()) <= 5 // 0\n"Shorter."')
    check = check_exercise("multihop.short_answer")
    assert not check.passed and "raised an error" in str(check)


def test_the_last_written_constraint_is_graded(ip):
    ip.run_cell(ANSWER_SIGNATURE)
    ip.run_cell('%%assert GenerateAnswer --name first_try\nlen(answer) < 3\n"Shorter."')
    assert not check_exercise("multihop.short_answer").passed
    ip.run_cell('%%assert GenerateAnswer --name second_try\nlen(answer.split()) <= 5\n"At most 5 words."')
    assert check_exercise("multihop.short_answer").passed


def test_longform_and_quiz_exercises_accept_right_answers_and_reject_wrong_ones(ip):
    ip.run_cell(PARAGRAPH_SIGNATURE)
    ip.run_cell('%%assert GenerateCitedParagraph --name any_citation\n"[" in paragraph\n"Cite."')
    assert not check_exercise("longform.two_passages").passed
    ip.run_cell('import re\nCITE = re.compile(r"\\[(\\d+)\\]")')
    ip.run_cell('%%assert GenerateCitedParagraph --name two_passages\n'
                'len(set(CITE.findall(paragraph))) >= 2\n"Cite two."')
    assert check_exercise("longform.two_passages").passed

    ip.run_cell(QUIZ_SIGNATURE)
    # looking at the first option only misses the question's subject written as option_d
    ip.run_cell('%%assert GenerateChoices --name first_only\n'
                'option_b.lower() not in question.lower()\n"No option from the question."')
    check = check_exercise("quiz.not_from_question")
    assert not check.passed and "an option naming the question's subject fails, but yours passes" in str(check)
    ip.run_cell('%%assert GenerateChoices --name not_from_question\n'
                'not any(o.lower() in question.lower() for o in [option_b, option_c, option_d])\n'
                '"No option from the question."')
    assert check_exercise("quiz.not_from_question").passed


def test_quiz_from_candidates_hard_follows_the_registry(ip):
    ip.run_cell(QUIZ_SIGNATURE)
    assert "no constraint named 'from_candidates'" in str(check_exercise("quiz.from_candidates_hard"))
    cell = "all(o in candidates for o in [option_b, option_c, option_d])\n\"Use the candidates.\""
    ip.run_cell(f"%%assert GenerateChoices --name from_candidates\n{cell}")
    check = check_exercise("quiz.from_candidates_hard")
    assert not check.passed and "still soft: add --hard" in str(check)
    ip.run_cell(f"%%assert GenerateChoices --name from_candidates --hard\n{cell}")
    assert check_exercise("quiz.from_candidates_hard").passed


def test_made_hard_exercise_follows_the_registry_and_the_report(ip):
    ip.run_cell(TWEET_SIGNATURE)
    assert "no constraint named 'no_hashtags'" in str(check_exercise("quickstart.no_hashtags_hard"))
    ip.run_cell('%%assert GenerateTweet --name no_hashtags\n"#" not in tweet\n"No hashtags."')
    check = check_exercise("quickstart.no_hashtags_hard")
    assert not check.passed and "still soft: add --hard" in str(check)
    ip.run_cell('%%assert GenerateTweet --name no_hashtags --hard\n"#" not in tweet\n"No hashtags."')
    assert check_exercise("quickstart.no_hashtags_hard").passed

    from lmassert_magic.engine.constraints import Constraint
    from lmassert_magic.engine.results import AblationResult

    stale = AblationResult(constraints=[Constraint("no_hashtags", lambda tweet: True, hard=False)])
    check = check_exercise("quickstart.no_hashtags_hard", stale)
    assert not check.passed and "used no_hashtags as soft" in str(check)
    missing = AblationResult(constraints=[])
    assert "recompile after defining it" in str(check_exercise("quickstart.no_hashtags_hard", missing))
    fresh = AblationResult(constraints=[Constraint("no_hashtags", lambda tweet: True, hard=True)])
    assert check_exercise("quickstart.no_hashtags_hard", fresh).passed


def test_an_unknown_exercise_lists_the_known_ones():
    with pytest.raises(KeyError, match="quickstart.under_120"):
        check_exercise("quickstart.nope")


def test_every_exercise_has_probes_or_a_constraint_to_harden():
    for exercise in EXERCISES.values():
        assert bool(exercise.probes) != bool(exercise.make_hard), exercise.key
        assert any(not p.should_pass for p in exercise.probes) or exercise.make_hard, exercise.key
