"""A scripted LM for tests, benchmarks and offline demos: answers are a Python function of the prompt.

DSPy's `DummyLM` answers from a fixed table; assertion tests need answers that depend on whether
the prompt carries feedback, demos or past outputs, so `respond(messages)` decides.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from dspy.clients.engines.base import validate_request
from dspy.clients.engines.dummy_engine import DummyEngine
from dspy.lm15 import Message, Request, Response, TextPart, Usage, response_to_events
from dspy.utils import DummyLM

Respond = Callable[[list[dict[str, Any]]], dict[str, Any]]
#: What DSPy's JSONAdapter puts in its system message: such a prompt gets its answer as a JSON object.
JSON_OUTPUT = "Outputs will be a JSON object"


def _messages(request: Request) -> list[dict[str, Any]]:
    """The request as the chat messages `respond` reads (what DSPy's DummyEngine hands its script)."""
    validate_request(request)
    messages = []
    if request.system is not None:
        system = request.system if isinstance(request.system, str) else "".join(p.text for p in request.system)
        messages.append({"role": "system", "content": system})
    messages.extend({"role": m.role, "content": m.text or ""} for m in request.messages)
    return messages


def _word_by_word(events: Iterator[Any]) -> Iterator[Any]:
    """A response's stream events with its text cut into words, as an LM streams it (one chunk would
    look like a cache hit to DSPy's field listeners)."""
    for event in events:
        delta = getattr(event, "delta", None)
        if getattr(delta, "type", None) != "text":
            yield event
            continue
        for i, piece in enumerate(re.findall(r"\s*\S+\s*|\s+", delta.text) or [""]):
            part = dataclasses.replace(delta, text=piece) if i == 0 else dataclasses.replace(delta, text=piece,
                                                                                                 logprobs=())
            yield dataclasses.replace(event, delta=part)


class _ScriptedEngine(DummyEngine):
    """DSPy's canonical engine path (`complete`, and `stream` while a stream is open), not its legacy shortcut:
    DSPy then streams the answer to `dspy.streamify` itself."""

    complete_legacy = None

    def complete(self, request: Request) -> Response:
        if self.owner.latency:
            time.sleep(self.owner.latency)
        return self._complete_messages(_messages(request))

    def stream(self, request: Request) -> Iterator[Any]:
        return _word_by_word(response_to_events(self.complete(request)))

    def _complete_messages(self, messages: list[dict[str, Any]]) -> Response:
        owner = self.owner
        with owner._lock:
            owner.prompts.append(messages)
        answer = owner.respond(messages)
        if JSON_OUTPUT in str(messages[0].get("content", "")):  # a JSONAdapter prompt (GEPA's proposer uses one)
            output = json.dumps(answer, default=str)
        else:
            output = owner._format_answer_fields(answer)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in messages)
        completion_tokens = len(output.split())
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart(output)]),
            finish_reason="stop",
            usage=Usage(
                input_tokens=prompt_tokens,
                output_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )


class _AsyncScriptedEngine:
    """The async path: the latency is an `asyncio.sleep`, so a waiting call never blocks the event loop."""

    def __init__(self, sync: _ScriptedEngine) -> None:
        self.sync = sync

    async def complete(self, request: Request) -> Response:
        messages = _messages(request)
        if self.sync.owner.latency:
            await asyncio.sleep(self.sync.owner.latency)
        return self.sync._complete_messages(messages)

    async def stream(self, request: Request) -> AsyncIterator[Any]:
        for event in _word_by_word(response_to_events(await self.complete(request))):
            yield event

    async def aclose(self) -> None:
        pass


class ScriptedLM(DummyLM):
    """`respond(messages) -> dict of output fields`; prompts are kept in `.prompts`.

    `latency` waits per call (thread-scaling benchmarks; an `asyncio.sleep` on the async path, so concurrent
    async calls overlap as with a real LM); an open `dspy.streamify` stream gets the answer word by word.
    Usage is reported as word counts so token tallies are testable. `cache=True` lets DSPy's cache answer
    repeated prompts, as it does for real LMs (DSPy's DummyLM never caches).
    """

    def __init__(self, respond: Respond, latency: float = 0.0, cache: bool = False) -> None:
        super().__init__({})
        self.respond = respond
        self.latency = latency
        self.prompts: list[list[dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._engine_spec = _ScriptedEngine(self)
        self._async_engine_spec = _AsyncScriptedEngine(self._engine_spec)
        self._cache_responses = cache

    def copy(self, **kwargs: Any) -> ScriptedLM:
        """A copy answering with the same script into the same `.prompts` (dspy.Refine copies its LM per attempt;
        DummyLM's own copy would answer "No more responses")."""
        copied = super().copy(**kwargs)
        copied._engine_spec = _ScriptedEngine(copied)
        copied._async_engine_spec = _AsyncScriptedEngine(copied._engine_spec)
        return copied

    def __deepcopy__(self, memo: dict) -> ScriptedLM:
        return self  # one script and one `.prompts` for every copy of a program (its lock cannot be copied)

    @staticmethod
    def last_message(messages: list[dict[str, Any]]) -> str:
        return str(messages[-1].get("content", ""))
