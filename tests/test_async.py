"""Async calling paths keep their constraints (issue 22): `acall`/`aforward`, `Predict.acall` inside
`aforward`, `dspy.asyncify`, many concurrent calls in one event loop, the async evaluation and
`%%compile --async N`. Each runs with the same constraints, budget, feedback and records as the sync path.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re

import dspy
import pytest

from lmassert_magic import Assert, Constraint, DSPyAssertionError, Suggest, activate_assertions
from lmassert_magic.engine import assertion_log, run_record_of
from lmassert_magic.engine.ablation import run_ablation
from lmassert_magic.engine.evaluation import evaluate_program
from lmassert_magic.registry import get_registry
from lmassert_magic.testing import ScriptedLM

from helpers import (
    FIX,
    GENERATE_TWEET_CELL,
    NO_HASHTAGS_CELL,
    TweetStep,
    feedback_dummy_lm,
    fixes_on_feedback,
    hashtag_constraint,
    metric,
    no_hashtags,
    question_of,
    tweet_data_cell,
)


class AsyncTweet(TweetStep):
    """`gen` called with `Predict.acall` in `aforward` (and plainly in `forward`, to compare)."""

    def forward(self, question):
        return self.gen(question=question)

    async def aforward(self, question):
        return await self.gen.acall(question=question)


def comparable(record) -> dict:
    """A run record without its timings (the only fields that may differ between two equal runs)."""
    data = dataclasses.asdict(record)
    for attempt in data.get("attempts", []):
        attempt.pop("seconds", None)
    return data


def answers_by_question(messages):
    """Odd questions tweet a hashtag until told to remove it; multiples of 3 never fix it; even ones are clean."""
    user = messages[-1]["content"]
    question = question_of(messages)
    number = int(question[1:])
    if number % 3 == 0 and number % 2:
        return {"tweet": f"{question} #stuck"}
    if "Remove the hashtag from:" in user:
        return {"tweet": f"fixed {question}"}
    return {"tweet": f"{question} #tag" if number % 2 else f"clean {question}"}


def quoting_constraint() -> Constraint:
    """The hashtag check whose feedback quotes the failing tweet (so a mixed-up retry would show it)."""
    return Constraint("no_hashtags", no_hashtags, lambda tweet: f"Remove the hashtag from: {tweet}")


# ---------------------------------------------------------------- acall / aforward


def test_acall_retries_a_declared_constraint_with_feedback_and_past_output(scripted_lm):
    lm = scripted_lm(fixes_on_feedback)
    program = activate_assertions(AsyncTweet(), constraints=[hashtag_constraint()])
    out = asyncio.run(program.acall(question="What's new?"))
    assert out.tweet == "clean tweet"
    assert len(lm.prompts) == 2
    retry = lm.prompts[1][-1]["content"]
    assert FIX in retry and "[[ ## past_tweet ## ]]" in retry and "great #news" in retry
    stats = run_record_of(out).constraints["no_hashtags"]
    assert (stats.checks, stats.passes_after_backtrack, stats.backtracks) == (1, 1, 1)


def test_an_activated_predictor_is_checked_when_awaited(scripted_lm):
    scripted_lm(fixes_on_feedback)
    program = activate_assertions(dspy.Predict(AsyncTweet().gen.signature), constraints=[hashtag_constraint()])
    assert asyncio.run(program.acall(question="q")).tweet == "clean tweet"


def test_async_and_sync_runs_leave_the_same_record(scripted_lm):
    scripted_lm(fixes_on_feedback)
    program = activate_assertions(AsyncTweet(), constraints=[hashtag_constraint()])
    sync = run_record_of(program(question="q"))
    async_ = run_record_of(asyncio.run(program.acall(question="q")))
    assert comparable(async_) == comparable(sync)
    assert len(assertion_log(program).records) == 2


def test_inline_suggest_in_aforward_backtracks_with_feedback(scripted_lm):
    lm = scripted_lm(fixes_on_feedback)

    class Program(TweetStep):
        async def aforward(self, question):
            tweet = (await self.gen.acall(question=question)).tweet
            Suggest(no_hashtags(tweet), FIX + ".")
            return dspy.Prediction(tweet=tweet)

    program = activate_assertions(Program())
    out = asyncio.run(program.acall(question="q"))
    assert out.tweet == "clean tweet"
    assert FIX in lm.prompts[1][-1]["content"] and "great #news" in lm.prompts[1][-1]["content"]
    (name, stats), = run_record_of(out).constraints.items()
    assert name.startswith("Suggest@test_async.py:") and stats.backtracks == 1


def test_inline_assert_in_aforward_raises_after_the_budget(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "still #bad"})

    class Program(TweetStep):
        async def aforward(self, question):
            tweet = (await self.gen.acall(question=question)).tweet
            Assert(no_hashtags(tweet), FIX + ".")
            return dspy.Prediction(tweet=tweet)

    program = activate_assertions(Program(), max_backtracks=2)
    with pytest.raises(DSPyAssertionError) as info:
        asyncio.run(program.acall(question="q"))
    assert info.value.attempts == 3 and len(lm.prompts) == 3
    assert info.value.run_record.constraints[info.value.id].final_failures == 1


def test_declared_hard_constraint_raises_after_the_budget_when_awaited(scripted_lm):
    lm = scripted_lm(lambda m: {"tweet": "still #bad"})
    program = activate_assertions(AsyncTweet(), max_backtracks=1, constraints=[hashtag_constraint(hard=True)])
    with pytest.raises(DSPyAssertionError, match="no_hashtags"):
        asyncio.run(program.acall(question="q"))
    assert len(lm.prompts) == 2


def test_asyncify_keeps_the_constraints(scripted_lm):
    scripted_lm(fixes_on_feedback)
    program = activate_assertions(AsyncTweet(), constraints=[hashtag_constraint()])
    out = asyncio.run(dspy.asyncify(program)(question="q"))
    assert out.tweet == "clean tweet" and run_record_of(out).constraints["no_hashtags"].backtracks == 1


# ---------------------------------------------------------------- many runs in one event loop


def test_fifty_concurrent_acalls_keep_their_own_feedback_budget_and_records(scripted_lm):
    lm = scripted_lm(answers_by_question, latency=0.002)
    program = activate_assertions(AsyncTweet(), max_backtracks=2, constraints=[quoting_constraint()])
    questions = [f"q{i}" for i in range(50)]

    async def main():
        return await asyncio.gather(*(program.acall(question=q) for q in questions))

    outs = asyncio.run(main())
    for i, (question, out) in enumerate(zip(questions, outs)):
        record = run_record_of(out)
        stats = record.constraints["no_hashtags"]
        if i % 2 == 0:
            assert out.tweet == f"clean {question}" and stats.backtracks == 0
        elif i % 3 == 0:
            assert out.tweet == f"{question} #stuck" and stats.backtracks == 2 and stats.final_failures == 1
        else:
            assert out.tweet == f"fixed {question}" and stats.backtracks == 1 and stats.passes_after_backtrack == 1
        assert {cx.inputs["question"] for cx in record.counterexamples} <= {question}
        assert all(question in cx.feedback for cx in record.counterexamples)
    for messages in lm.prompts:  # every retry's feedback quotes its own question's tweets only
        user = messages[-1]["content"]
        quoted = set(re.findall(r"Remove the hashtag from: (q\d+)", user))
        assert quoted <= {question_of(messages)}
    assert len(assertion_log(program).records) == 50


def test_subtasks_gathered_inside_aforward_are_steps_of_the_run(scripted_lm):
    lm = scripted_lm(fixes_on_feedback, latency=0.002)

    class Both(TweetStep):
        async def aforward(self, question):
            a, b = await asyncio.gather(self.gen.acall(question=question + "1"),
                                        self.gen.acall(question=question + "2"))
            return dspy.Prediction(tweets=[a.tweet, b.tweet])

    program = activate_assertions(Both(), constraints=[hashtag_constraint()])
    out = asyncio.run(program.acall(question="q"))
    assert out.tweets == ["clean tweet", "clean tweet"]
    stats = run_record_of(out).constraints["no_hashtags"]
    assert (stats.checks, stats.backtracks, stats.passes_after_backtrack) == (2, 2, 2)
    assert len(lm.prompts) == 4


# ---------------------------------------------------------------- the scripted LM


def test_scripted_lm_latency_does_not_block_the_event_loop():
    seen = []

    async def main():
        ran = []

        async def other():  # needs many turns of the loop: more than the awaits inside one LM call
            for _ in range(50):
                await asyncio.sleep(0)
            ran.append(True)

        lm = ScriptedLM(lambda m: seen.append(bool(ran)) or {"answer": "a"}, latency=0.01)
        task = asyncio.ensure_future(other())
        with dspy.context(lm=lm):
            await dspy.Predict("question -> answer").acall(question="q")
        await task

    asyncio.run(main())
    assert seen == [True]  # the other task ran while the LM call waited


# ---------------------------------------------------------------- the async evaluation


def examples(n):
    return [dspy.Example(question=f"q{i}").with_inputs("question") for i in range(n)]


def test_async_evaluation_measures_what_the_threaded_one_does(scripted_lm):
    scripted_lm(answers_by_question)
    program = activate_assertions(AsyncTweet(), constraints=[quoting_constraint()])
    devset = examples(12)
    threaded = evaluate_program(program, devset, metric, num_threads=3)
    async_ = evaluate_program(program, devset, metric, concurrency=5)
    assert [(e.index, e.inputs, e.outputs, e.score, e.error) for e in async_.examples] == [
        (e.index, e.inputs, e.outputs, e.score, e.error) for e in threaded.examples
    ]
    assert [comparable(e.record) for e in async_.examples] == [comparable(e.record) for e in threaded.examples]
    assert (async_.lm_calls, async_.tokens, async_.cache_hits) == (threaded.lm_calls, threaded.tokens,
                                                                   threaded.cache_hits)


def test_async_evaluation_runs_from_inside_a_running_event_loop(scripted_lm):
    scripted_lm(answers_by_question)
    program = activate_assertions(AsyncTweet(), constraints=[quoting_constraint()])

    async def notebook_cell():  # a kernel runs cells inside its own event loop
        return evaluate_program(program, examples(4), metric, concurrency=2)

    evaluation = asyncio.run(notebook_cell())
    assert [e.outputs["tweet"] for e in evaluation.examples] == ["clean q0", "fixed q1", "clean q2", "q3 #stuck"]


def test_async_evaluation_of_a_program_without_aforward_runs_it_on_threads(scripted_lm):
    scripted_lm(answers_by_question)

    class SyncOnly(TweetStep):
        def forward(self, question):
            return self.gen(question=question)

    program = activate_assertions(SyncOnly(), constraints=[quoting_constraint()])
    evaluation = evaluate_program(program, examples(4), metric, concurrency=2)
    assert [e.record.constraints["no_hashtags"].backtracks for e in evaluation.examples] == [0, 1, 0, 2]


@pytest.mark.parametrize("concurrency", [0, -1])
def test_async_evaluation_refuses_a_concurrency_below_one(scripted_lm, concurrency):
    scripted_lm(answers_by_question)
    with pytest.raises(ValueError, match="concurrency"):
        evaluate_program(AsyncTweet(), examples(1), metric, concurrency=concurrency)


def _tables(result):
    summary = result.summary().drop(columns=["seconds"])
    return summary, result.pass_rates(), result.comparisons()


def test_five_settings_async_give_the_threaded_tables(scripted_lm):
    scripted_lm(answers_by_question)
    trainset, devset = examples(4), examples(8)
    options = dict(constraints=[quoting_constraint()])
    threaded = run_ablation(AsyncTweet(), trainset, devset, metric, num_threads=2, **options)
    async_ = run_ablation(AsyncTweet(), trainset, devset, metric, concurrency=6, **options)
    for a, b in zip(_tables(async_), _tables(threaded)):
        assert a.equals(b), (a, b)
    assert async_.config["concurrency"] == 6 and "concurrency" not in threaded.config


# ---------------------------------------------------------------- the notebook: %%compile --async, %%assert


@pytest.fixture
def tweet(ip):
    ip.run_cell(tweet_data_cell(3, 4, train_prefix="q", fact="fact about ", answer="a"))
    ip.run_cell(GENERATE_TWEET_CELL)
    ip.run_cell(NO_HASHTAGS_CELL)
    return ip


COMPILE = "%%compile tweeter --train trainset --dev devset --metric quality -o rep {flags}\nretrieve >> GenerateTweet\n"


def test_compile_async_gives_the_threaded_report(tweet):
    ip = tweet
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.format(flags="--threads 2"))
        threaded = ip.user_ns["rep"].result
        ip.run_cell(COMPILE.format(flags="--async 4"))
        async_ = ip.user_ns["rep"].result
    for a, b in zip(_tables(async_), _tables(threaded)):
        assert a.equals(b), (a, b)
    assert async_.summary().loc["Infer w/ Assert", "no_hashtags"] == 100.0
    assert dict(get_registry().programs["tweeter"].options)["concurrency"] == 4


def test_compile_refuses_an_async_limit_below_one(tweet):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="--async must be 1 or more"):
        tweet.run_cell(COMPILE.format(flags="--async 0"))


def test_assert_cell_constraints_hold_when_the_compiled_program_is_awaited(tweet):
    ip = tweet
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.format(flags="--settings infer_assert"))
        ip.run_cell("import asyncio\nprediction = asyncio.run(tweeter.acall(question='cats'))")
    prediction = ip.user_ns["prediction"]
    assert prediction.tweet == "clean tweet"
    assert run_record_of(prediction).constraints["no_hashtags"].passes_after_backtrack == 1


def test_the_report_warns_about_parallel_async_requests_as_about_threads(scripted_lm):
    from lmassert_magic.report.model import warning_lines

    scripted_lm(answers_by_question)
    result = run_ablation(AsyncTweet(), [], examples(3), metric, constraints=[quoting_constraint()],
                          settings="infer_assert", concurrency=4)
    (warning,) = [w for w in warning_lines(result) if "parallel requests" in w]
    assert warning.startswith("4 async evaluation calls at a time")
    serial = run_ablation(AsyncTweet(), [], examples(3), metric, constraints=[quoting_constraint()],
                          settings="infer_assert", concurrency=1)
    assert not [w for w in warning_lines(serial) if "parallel requests" in w]


def test_a_check_with_a_time_limit_runs_off_the_event_loop(scripted_lm):
    """`%%assert` checks (they have a time limit, and may call an LM judge) must not stall other runs' tasks."""
    import threading

    scripted_lm(lambda m: {"tweet": "clean tweet"})
    checking, other_ran = threading.Event(), threading.Event()

    def waits_for_the_loop(tweet):  # passes only if another task of the loop runs while it waits
        checking.set()
        return other_ran.wait(timeout=3) and "#" not in tweet

    program = activate_assertions(AsyncTweet(), constraints=[
        Constraint("no_hashtags", waits_for_the_loop, FIX + ".", timeout=10)])

    async def main():
        async def other():
            while not checking.is_set():
                await asyncio.sleep(0.001)
            other_ran.set()

        return (await asyncio.gather(program.acall(question="q"), other()))[0]

    out = asyncio.run(main())
    stats = run_record_of(out).constraints["no_hashtags"]
    assert (stats.first_try_passes, stats.backtracks) == (1, 0)
