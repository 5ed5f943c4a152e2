"""Streaming keeps the constraints (issue 22): `dspy.streamify(activated_program)` yields the checked
prediction, a status message per retry, and field listeners that work with the package's adapter and
hear about a discarded attempt before the kept one streams."""

from __future__ import annotations

import asyncio

import dspy
import pytest
from dspy.adapters.json_adapter import JSONAdapter
from dspy.streaming import StatusMessage, StreamListener, StreamResponse

from lmassert_magic import Suggest, activate_assertions
from lmassert_magic.engine.streaming import RetryStatus
from lmassert_magic.lm.adapter import AutoAdapter

from helpers import (
    FIX,
    GENERATE_TWEET_CELL,
    NO_HASHTAGS_CELL,
    TweetStep,
    feedback_dummy_lm,
    fixes_on_feedback,
    hashtag_constraint,
    no_hashtags,
    tweet_data_cell,
)


class AsyncTweet(TweetStep):
    def forward(self, question):
        return self.gen(question=question)

    async def aforward(self, question):
        return await self.gen.acall(question=question)


class InlineTweet(TweetStep):
    """The check written inline: a failure unwinds the forward pass and runs it again."""

    def forward(self, question):
        tweet = self.gen(question=question).tweet
        Suggest(no_hashtags(tweet), FIX + ".", name="no_hashtags")
        return dspy.Prediction(tweet=tweet)

    async def aforward(self, question):
        tweet = (await self.gen.acall(question=question)).tweet
        Suggest(no_hashtags(tweet), FIX + ".", name="no_hashtags")
        return dspy.Prediction(tweet=tweet)


def stream_all(program, *, is_async: bool, listeners=None, **inputs):
    streamed = dspy.streamify(program, stream_listeners=listeners, is_async_program=is_async)

    async def main():
        return [item async for item in streamed(**inputs)]

    return asyncio.run(main())


def split_at_retry(items):
    """Field chunks streamed before the (single) retry notice, and after it."""
    (index,) = [i for i, item in enumerate(items) if isinstance(item, RetryStatus)]
    before = "".join(x.chunk for x in items[:index] if isinstance(x, StreamResponse))
    after = "".join(x.chunk for x in items[index:] if isinstance(x, StreamResponse))
    return before, after


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("program_class", [AsyncTweet, InlineTweet], ids=["declared", "inline"])
def test_streamify_yields_the_checked_prediction_and_a_status_per_retry(scripted_lm, is_async, program_class):
    scripted_lm(fixes_on_feedback)
    constraints = [hashtag_constraint()] if program_class is AsyncTweet else []
    program = activate_assertions(program_class(), constraints=constraints)
    items = stream_all(program, is_async=is_async, question="q")
    assert isinstance(items[-1], dspy.Prediction) and items[-1].tweet == "clean tweet"
    statuses = [item for item in items if isinstance(item, RetryStatus)]
    assert len(statuses) == 1
    status = statuses[0]
    assert isinstance(status, StatusMessage)  # what a streaming UI already shows
    assert status.message.startswith("retrying: no_hashtags failed") and "gen" in status.message
    assert (status.predictor, status.constraints, status.attempt) == ("gen", ("no_hashtags",), 2)
    assert status.discarded == {"tweet": "great #news"}


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("adapter", [None, "auto"], ids=["chat", "package-adapter"])
@pytest.mark.parametrize("program_class", [AsyncTweet, InlineTweet], ids=["declared", "inline"])
def test_a_field_listener_hears_the_discard_then_streams_the_kept_attempt(scripted_lm, is_async, adapter,
                                                                          program_class):
    scripted_lm(fixes_on_feedback)
    constraints = [hashtag_constraint()] if program_class is AsyncTweet else []
    program = activate_assertions(program_class(), constraints=constraints)
    listener = StreamListener(signature_field_name="tweet")
    with dspy.context(adapter=AutoAdapter() if adapter else None):
        items = stream_all(program, is_async=is_async, listeners=[listener], question="q")
    assert split_at_retry(items) == ("great #news", "clean tweet")
    last = [x for x in items if isinstance(x, StreamResponse)][-1]
    assert last.predict_name == "gen"
    assert items[-1].tweet == "clean tweet"


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
def test_field_streaming_through_the_package_adapter_on_a_json_schema_model(scripted_lm, is_async):
    lm = scripted_lm(fixes_on_feedback)
    lm.constrain_json_schema = True  # as the embedded model: AutoAdapter sends a schema and reads JSON
    lm.adapter = JSONAdapter()  # the scripted answers are written as JSON objects
    program = activate_assertions(AsyncTweet(), constraints=[hashtag_constraint()])
    with dspy.context(adapter=AutoAdapter()):
        items = stream_all(program, is_async=is_async, listeners=[StreamListener(signature_field_name="tweet")],
                           question="q")
    before, after = split_at_retry(items)  # DSPy's JSON listener streams a string value with its quotes
    assert (before.strip().strip('"'), after.strip().strip('"')) == ("great #news", "clean tweet")
    assert items[-1].tweet == "clean tweet"


def test_a_plain_program_streams_through_the_package_adapter(scripted_lm):
    scripted_lm(lambda m: {"tweet": "hello there world"})
    with dspy.context(adapter=AutoAdapter()):
        items = stream_all(dspy.Predict("question -> tweet"), is_async=True,
                           listeners=[StreamListener(signature_field_name="tweet")], question="q")
    assert "".join(x.chunk for x in items if isinstance(x, StreamResponse)) == "hello there world"


def test_a_retry_without_listeners_still_reaches_the_stream_in_order(scripted_lm):
    scripted_lm(fixes_on_feedback)
    program = activate_assertions(AsyncTweet(), constraints=[hashtag_constraint()])
    items = stream_all(program, is_async=True, question="q")
    kinds = [type(item).__name__ for item in items]
    status = kinds.index("RetryStatus")
    assert "EngineChunk" in kinds[:status] and "EngineChunk" in kinds[status:]  # raw chunks of both attempts


def test_assert_cell_constraints_hold_on_the_streaming_path(ip):
    ip.run_cell(tweet_data_cell(2, 2, train_prefix="q", fact="fact about ", answer="a"))
    ip.run_cell(GENERATE_TWEET_CELL)
    ip.run_cell(NO_HASHTAGS_CELL)
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell("%%compile tweeter --train trainset --dev devset --metric quality --settings infer_assert\n"
                    "retrieve >> GenerateTweet\n")
        ip.run_cell("import asyncio, dspy\n"
                    "async def run():\n"
                    "    return [x async for x in dspy.streamify(tweeter)(question='cats')]\n"
                    "items = asyncio.run(run())\n")
    items = ip.user_ns["items"]
    assert items[-1].tweet == "clean tweet"
    (status,) = [x for x in items if isinstance(x, RetryStatus)]
    assert status.constraints == ("no_hashtags",) and status.predictor == "GenerateTweet"


def test_a_sync_predictor_call_inside_aforward_tells_the_stream_without_blocking_its_loop(scripted_lm):
    scripted_lm(lambda m: {"summary": "s"} if "summary" in m[0]["content"] else fixes_on_feedback(m))

    class SyncStep(TweetStep):
        def __init__(self):
            super().__init__()
            self.summarize = dspy.Predict("tweet -> summary")

        async def aforward(self, question):
            tweet = self.gen(question=question).tweet  # a blocking call on the stream's own event loop
            return await self.summarize.acall(tweet=tweet)

    program = activate_assertions(SyncStep(), constraints=[hashtag_constraint()])
    items = stream_all(program, is_async=True, listeners=[StreamListener(signature_field_name="summary")],
                       question="q")
    assert items[-1].summary == "s"
    assert [x.constraints for x in items if isinstance(x, RetryStatus)] == [("no_hashtags",)]
