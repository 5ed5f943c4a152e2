"""A scripted LM for tests, benchmarks and offline demos: answers are a Python function of the prompt.

DSPy's `DummyLM` answers from a fixed table; assertion tests need answers that depend on whether
the prompt carries feedback, demos or past outputs, so `respond(messages)` decides.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from dspy.clients.engines.dummy_engine import AsyncDummyEngine, DummyEngine
from dspy.lm15 import Message, Response, TextPart, Usage
from dspy.utils import DummyLM

Respond = Callable[[list[dict[str, Any]]], dict[str, Any]]
#: What DSPy's JSONAdapter puts in its system message: such a prompt gets its answer as a JSON object.
JSON_OUTPUT = "Outputs will be a JSON object"


class _ScriptedEngine(DummyEngine):
    def _complete_messages(self, messages: list[dict[str, Any]]) -> Response:
        owner = self.owner
        if owner.latency:
            time.sleep(owner.latency)
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


class ScriptedLM(DummyLM):
    """`respond(messages) -> dict of output fields`; prompts are kept in `.prompts`.

    `latency` sleeps per call (thread-scaling benchmarks); usage is reported as word counts
    so token tallies are testable. `cache=True` lets DSPy's cache answer repeated prompts, as it
    does for real LMs (DSPy's DummyLM never caches).
    """

    def __init__(self, respond: Respond, latency: float = 0.0, cache: bool = False) -> None:
        super().__init__({})
        self.respond = respond
        self.latency = latency
        self.prompts: list[list[dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._engine_spec = _ScriptedEngine(self)
        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)
        self._cache_responses = cache

    def copy(self, **kwargs: Any) -> ScriptedLM:
        """A copy answering with the same script into the same `.prompts` (dspy.Refine copies its LM per attempt;
        DummyLM's own copy would answer "No more responses")."""
        copied = super().copy(**kwargs)
        copied._engine_spec = _ScriptedEngine(copied)
        copied._async_engine_spec = AsyncDummyEngine(copied._engine_spec)
        return copied

    def __deepcopy__(self, memo: dict) -> ScriptedLM:
        return self  # one script and one `.prompts` for every copy of a program (its lock cannot be copied)

    @staticmethod
    def last_message(messages: list[dict[str, Any]]) -> str:
        return str(messages[-1].get("content", ""))
