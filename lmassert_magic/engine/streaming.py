"""Streaming an asserted run (`dspy.streamify`): a status message per retry, and field listeners that follow retries.

Why: a streaming UI shows a program's progress; a retry is progress it must show ("retrying:
no_hashtags failed"). DSPy's `StreamListener` streams one field once and then ignores that field for
good, so after a retry it would never show the attempt the run keeps; and it knows only DSPy's Chat,
JSON and XML adapters, by class name, so it refuses the package's `AutoAdapter`.

Here a retry sends, in stream order: a restart chunk to the listeners of the retried step (they start
over, so what they stream next is the new attempt), then a `RetryStatus`, which is a `StatusMessage`
and reaches the caller as one. `AutoAdapter` tells the listeners of the step it formats which DSPy
adapter it speaks as (`follow_listeners`). Listeners are adopted by swapping their class in place,
as activation does with predictors: `dspy.streamify` keeps its references to them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.clients.call_result import attributes
from dspy.clients.engines.streaming import EngineChunk
from dspy.streaming.messages import StatusMessage, sync_send_to_stream
from dspy.streaming.streaming_listener import StreamListener

logger = logging.getLogger("lmassert_magic")

__all__ = ["Notice", "RetryStatus", "announce", "aannounce", "follow_listeners", "retry_status"]


@dataclass
class RetryStatus(StatusMessage):
    """Sent to the stream when a step is retried; a `StatusMessage`, so streaming UIs show `message` as is.

    `predictor` is the retried step, `constraints` the checks that failed, `attempt` the number of the
    attempt that starts now (2 = the first retry), `discarded` the outputs thrown away. Listeners on the
    step's fields start over after it.
    """

    predictor: str = ""
    constraints: tuple[str, ...] = ()
    attempt: int = 0
    discarded: dict[str, Any] = field(default_factory=dict)


def retry_status(predictor: str, constraints: Iterable[str], attempt: int, discarded: dict[str, Any]) -> RetryStatus:
    names = tuple(constraints)
    message = f"retrying: {', '.join(names)} failed ({predictor}, attempt {attempt})"
    return RetryStatus(message, predictor, names, attempt, dict(discarded))


@dataclass
class Notice:
    """A retry a run asks its driver to tell the stream about; `predictors` restart their listeners (None: all)."""

    status: RetryStatus
    predictors: tuple[Any, ...] | None = None


class RestartChunk(EngineChunk):
    """Tells the listeners of one predictor (`predict_id`) that its streamed attempt was discarded."""


class _FollowingListener:
    """A `StreamListener` that starts over on a `RestartChunk` and speaks as the adapter `AutoAdapter` named."""

    def receive(self, chunk: Any) -> Any:
        if isinstance(chunk, RestartChunk):
            self._start_over()
            return None
        adapter = self.__dict__.get("_lmassert_adapter")
        if adapter is None:
            return super().receive(chunk)  # type: ignore[misc]
        with dspy.context(adapter=adapter):
            return super().receive(chunk)  # type: ignore[misc]

    def finalize(self) -> Any:
        adapter = self.__dict__.get("_lmassert_adapter")
        if adapter is None:
            return super().finalize()  # type: ignore[misc]
        with dspy.context(adapter=adapter):
            return super().finalize()  # type: ignore[misc]

    def _start_over(self) -> None:
        # The state DSPy's listener resets itself when `allow_reuse` lets it stream a second time.
        from queue import Queue

        self.stream_start = self.stream_end = self.cache_hit = self.value_started = False
        self.field_start_queue = []
        self.field_end_queue = Queue()
        self.json_adapter_state["field_accumulated_messages"] = ""
        self.held_whitespace = ""


_following: dict[type, type] = {}


def _follow(listener: Any) -> None:
    cls = type(listener)
    if issubclass(cls, _FollowingListener) or not isinstance(listener, StreamListener):
        return
    twin = _following.get(cls)
    if twin is None:
        twin = _following[cls] = type(cls.__name__, (_FollowingListener, cls), {"__module__": cls.__module__})
    listener.__class__ = twin


def follow_listeners(predict: Any, adapter: Any) -> None:
    """Listeners on `predict`'s fields read its stream as `adapter` (a DSPy Chat/JSON/XML adapter) speaks."""
    for listener in dspy.settings.stream_listeners or ():
        if listener.predict is predict:
            _follow(listener)
            listener._lmassert_adapter = adapter


def _items(notice: Notice) -> list[Any]:
    """What goes to the stream for a retry: a restart chunk per listened predictor, then the status."""
    items: list[Any] = []
    restarted: set[int] = set()
    for listener in dspy.settings.stream_listeners or ():
        predict = listener.predict
        if predict is None or id(predict) in restarted:
            continue
        if notice.predictors is not None and not any(predict is p for p in notice.predictors):
            continue
        restarted.add(id(predict))
        choice = attributes({"index": 0, "delta": {"content": None}, "finish_reason": None})
        items.append(RestartChunk(id=None, model="lmassert", predict_id=id(predict), choices=[choice]))
    for listener in dspy.settings.stream_listeners or ():  # every listener of a restarted predictor follows
        if listener.predict is not None and id(listener.predict) in restarted:
            _follow(listener)
    items.append(notice.status)
    return items


def announce(notice: Notice) -> None:
    """Tell the stream, if any, about a retry, from sync code (a streamed sync program runs on a worker thread)."""
    stream = dspy.settings.send_stream
    if stream is None:
        return
    try:
        asyncio.get_running_loop()
        in_loop = True  # sync code inside the stream's own event loop: hand the item over directly
    except RuntimeError:
        in_loop = False
    try:
        for item in _items(notice):
            if in_loop:  # waiting here for the consumer, which runs on this very loop, would never end
                stream.send_nowait(item)
            else:
                sync_send_to_stream(stream, item)
    except Exception as exc:  # a full or closed stream, or a thread it cannot be reached from: the run goes on
        logger.debug("could not send a retry status to the stream: %s", exc)


async def aannounce(notice: Notice) -> None:
    """Tell the stream, if any, about a retry, from async code."""
    stream = dspy.settings.send_stream
    if stream is None:
        return
    try:
        for item in _items(notice):
            await stream.send(item)
    except Exception as exc:  # the consumer stopped listening: the run goes on
        logger.debug("could not send a retry status to the stream: %s", exc)
