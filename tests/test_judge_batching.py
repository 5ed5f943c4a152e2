"""Several LM-judge criteria of one output asked in one LM call (issue 16), when `batch_judges` is on.

A scripted LM answers single judge prompts (one `answer` field) and batched ones (`answer_1`, `answer_2`, ...)
by reading each question; the step's output decides the verdicts, so batched and separate calls agree, and
the tests count calls and check the per-criterion verdicts, feedback, memo and records.
"""

from __future__ import annotations

import asyncio
import re

import dspy
import pytest

from lmassert_magic import Constraint, activate_assertions, lm_judge
from lmassert_magic.engine import run_record_of
from lmassert_magic.engine.constraints import JudgeRequest, ask_together, uses_lm

from helpers import Tweet, TweetStep

ENGAGING, ANSWERS = "Is the tweet engaging?", "Does the tweet answer the question?"
BE_LIVELY, ANSWER_IT = "Make it lively!", "Answer the question."


def judge_kind(messages) -> str | None:
    """'single', 'batched' or None (a step's prompt), from the output fields the prompt asks for."""
    asked = messages[-1]["content"].split("Respond with")[-1]
    if "## answer_1 ## ]]" in asked:
        return "batched"
    if "## answer ## ]]" in asked:
        return "single"
    return None


def verdict(question: str, text: str) -> bool:
    if question == ENGAGING:
        return "!" in text
    if question == ANSWERS:
        return "42" in text
    raise AssertionError(f"unexpected judge question {question!r}")


def field_value(content: str, name: str) -> str:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?=\n\n(?:\[\[ ## |Respond with)|\Z)", content, re.S)
    assert match, f"no field {name} in the prompt"
    return match.group(1)


def judge(messages, tweets):
    """Answer a judge prompt (single or batched) from its questions; a step prompt gets the next tweet."""
    kind, content = judge_kind(messages), messages[-1]["content"]
    if kind == "single":
        return {"answer": verdict(field_value(content, "question"), field_value(content, "text"))}
    if kind == "batched":
        text = field_value(content, "text")
        n = len(re.findall(r"\[\[ ## question_\d+ ## \]\]", content))
        return {f"answer_{i}": verdict(field_value(content, f"question_{i}"), text) for i in range(1, n + 1)}
    return {"tweet": tweets(content)}


def two_judges() -> list[Constraint]:
    return [Constraint("engaging", lambda tweet: lm_judge(ENGAGING, tweet=tweet), BE_LIVELY),
            Constraint("answers", lambda question, tweet: lm_judge(ANSWERS, question=question, tweet=tweet),
                       ANSWER_IT)]


def lively_when_told(content: str) -> str:
    return "It is 42!" if BE_LIVELY in content else "It is 42."


def warmed(program, constraints):
    """Run once so the engine learns which checks ask an LM (it learns on a check's first run)."""
    program(question="warm-up")
    assert all(uses_lm(c) for c in constraints)
    return program


def test_two_criteria_of_one_output_are_asked_in_one_call(scripted_lm):
    lm = scripted_lm(lambda m: judge(m, lively_when_told))
    constraints = two_judges()
    program = warmed(activate_assertions(dspy.Predict(Tweet), constraints=constraints, batch_judges=True),
                     constraints)
    before = len(lm.prompts)

    prediction = program(question="q")
    kinds = [judge_kind(p) for p in lm.prompts[before:]]
    # the dull tweet: one batched judge call, a retry, the lively tweet: one batched judge call
    assert kinds == [None, "batched", None, "batched"]
    assert prediction.tweet == "It is 42!"
    retry = lm.prompts[before + 2][-1]["content"]
    assert BE_LIVELY in retry and ANSWER_IT not in retry  # feedback from the failing criterion only
    record = run_record_of(prediction)
    assert [a.verdicts for a in record.attempts] == [{"engaging": False, "answers": True},
                                                      {"engaging": True, "answers": True}]
    assert [a.judge_calls for a in record.attempts] == [1, 1]
    assert record.lm_calls == 4
    stats = record.constraints
    assert (stats["engaging"].passed_first, stats["engaging"].passed_final, stats["engaging"].backtracks) == (0, 1, 1)
    assert (stats["answers"].passed_first, stats["answers"].passed_final) == (1, 1)


def test_separate_calls_when_batching_is_off(scripted_lm):
    lm = scripted_lm(lambda m: judge(m, lively_when_told))
    constraints = two_judges()
    # every judge of every attempt asked (test_judge_economy covers stopping at the first failing one)
    program = warmed(activate_assertions(dspy.Predict(Tweet), constraints=constraints, stop_at_failing_judge=False),
                     constraints)
    before = len(lm.prompts)
    prediction = program(question="q")
    assert [judge_kind(p) for p in lm.prompts[before:]] == [None, "single", "single", None, "single", "single"]
    assert [a.judge_calls for a in run_record_of(prediction).attempts] == [2, 2]


def test_a_batched_verdict_is_remembered_for_an_unchanged_output(scripted_lm):
    # the tweet never changes: its criteria are asked once (one call), and the repeat stops the retries
    lm = scripted_lm(lambda m: judge(m, lambda content: "dull"))
    constraints = two_judges()
    program = warmed(activate_assertions(dspy.Predict(Tweet), 3, constraints=constraints, batch_judges=True),
                     constraints)
    before = len(lm.prompts)
    prediction = program(question="q")
    kinds = [judge_kind(p) for p in lm.prompts[before:]]
    assert kinds.count("batched") == 1 and "single" not in kinds
    record = run_record_of(prediction)
    assert all(a.verdicts == {"engaging": False, "answers": False} for a in record.attempts)
    assert [a.judge_calls for a in record.attempts] == [1] + [0] * (len(record.attempts) - 1)


def test_a_batched_answer_that_fails_falls_back_to_separate_calls(scripted_lm):
    def respond(messages):
        if judge_kind(messages) == "batched":
            return {"unexpected": "field"}  # does not parse as the batched signature
        return judge(messages, lively_when_told)

    lm = scripted_lm(respond)
    constraints = two_judges()
    program = warmed(activate_assertions(dspy.Predict(Tweet), constraints=constraints, batch_judges=True),
                     constraints)
    before = len(lm.prompts)
    prediction = program(question="q")
    assert prediction.tweet == "It is 42!"
    record = run_record_of(prediction)
    assert [a.verdicts for a in record.attempts] == [{"engaging": False, "answers": True},
                                                      {"engaging": True, "answers": True}]
    kinds = [judge_kind(p) for p in lm.prompts[before:]]
    assert kinds.count("single") == 4 and kinds.count("batched") == 2  # (DSPy also retries each as JSON)
    assert record.lm_calls == 2 + 2 + 4  # two steps, two failed batched calls (one per output), four single ones


def test_the_async_path_batches_alike(scripted_lm):
    class AsyncTweet(TweetStep):
        def forward(self, question):
            return self.gen(question=question)

        async def aforward(self, question):
            return await self.gen.acall(question=question)

    lm = scripted_lm(lambda m: judge(m, lively_when_told))
    constraints = two_judges()
    program = warmed(activate_assertions(AsyncTweet(), constraints=constraints, batch_judges=True), constraints)
    before = len(lm.prompts)
    prediction = asyncio.run(program.acall(question="q"))
    assert [judge_kind(p) for p in lm.prompts[before:]] == [None, "batched", None, "batched"]
    assert [a.judge_calls for a in run_record_of(prediction).attempts] == [1, 1]


def test_ask_together_answers_each_question_about_the_union_of_fields(scripted_lm):
    lm = scripted_lm(lambda m: judge(m, lively_when_told))
    requests = [JudgeRequest(ENGAGING, {"tweet": "Wow 42!"}, None),
                JudgeRequest(ANSWERS, {"question": "q", "tweet": "Wow 42!"}, None)]
    answers = ask_together(requests, order=("question", "tweet"))
    assert [answers[r.key] for r in requests] == [True, True]
    assert len(lm.prompts) == 1
    assert field_value(lm.prompts[0][-1]["content"], "text") == "question: q\ntweet: Wow 42!"


def test_ask_together_needs_two_distinct_questions(scripted_lm):
    scripted_lm(lambda m: judge(m, lively_when_told))
    with pytest.raises(ValueError):
        ask_together([JudgeRequest(ENGAGING, {"tweet": "x"}, None)] * 2)
