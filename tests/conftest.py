"""Shared fixtures: a testing IPython shell that re-raises cell errors, and scripted LMs."""

from __future__ import annotations

import dspy
import pytest
from IPython.core.interactiveshell import InteractiveShell


class TestingShell(InteractiveShell):
    """An InteractiveShell whose `run_cell` re-raises the cell's error instead of printing it.

    Tests see the real exception type (UsageError, DSPyAssertionError, ...) and can assert on it.
    """

    def run_cell(self, raw_cell, *args, **kwargs):  # type: ignore[override]
        result = super().run_cell(raw_cell, *args, **kwargs)
        result.raise_error()
        return result


@pytest.fixture
def ip():
    """A fresh testing shell with the extension loaded; unloaded and cleared afterwards."""
    shell = TestingShell.instance()
    shell.run_cell("%load_ext lmassert_magic")
    try:
        yield shell
    finally:
        shell.run_cell("%unload_ext lmassert_magic")
        from lmassert_magic.registry import get_registry

        get_registry().reset()
        shell.user_ns.clear()
        shell.init_user_ns()


@pytest.fixture
def bare_ip():
    """A testing shell without the extension loaded."""
    shell = TestingShell.instance()
    yield shell
    shell.user_ns.clear()
    shell.init_user_ns()


@pytest.fixture(autouse=True)
def _isolated_dspy_settings():
    """Each test configures its own LM; nothing leaks between tests."""
    with dspy.context(lm=None, adapter=None):
        yield


# ---------------------------------------------------------------- scripted LMs

import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from dspy.clients.engines.dummy_engine import DummyEngine  # noqa: E402
from dspy.lm15 import Message, Response, TextPart, Usage  # noqa: E402
from dspy.utils import DummyLM  # noqa: E402


class _ScriptedEngine(DummyEngine):
    def _complete_messages(self, messages):
        owner = self.owner
        if owner.latency:
            time.sleep(owner.latency)
        with owner._lock:
            owner.prompts.append(messages)
        output = owner._format_answer_fields(owner.respond(messages))
        prompt_tokens = sum(len(m["content"].split()) for m in messages)
        completion_tokens = len(output.split())
        return Response(
            id=None,
            model="scripted",
            message=Message.assistant([TextPart(output)]),
            finish_reason="stop",
            usage=Usage(
                input_tokens=prompt_tokens, output_tokens=completion_tokens,
                total_tokens=prompt_tokens + completion_tokens,
            ),
        )


class ScriptedLM(DummyLM):
    """A DSPy LM whose answer is a Python function of the prompt messages.

    `respond(messages) -> dict of output fields`; every prompt is kept in `.prompts`;
    `latency` sleeps per call (for thread-scaling checks); usage is reported as word counts.
    """

    def __init__(self, respond: Callable[[list[dict[str, Any]]], dict[str, Any]], latency: float = 0.0):
        super().__init__({})
        self.respond = respond
        self.latency = latency
        self.prompts: list[list[dict[str, Any]]] = []
        self._lock = threading.Lock()
        self._engine_spec = _ScriptedEngine(self)
        from dspy.clients.engines.dummy_engine import AsyncDummyEngine

        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)

    @staticmethod
    def last_user(messages: list[dict[str, Any]]) -> str:
        return messages[-1]["content"]


@pytest.fixture
def scripted_lm():
    """Factory: `scripted_lm(respond, latency=0)` -> a ScriptedLM configured as dspy's LM for the test."""
    made: list[Any] = []
    stack = []

    def make(respond, latency: float = 0.0):
        lm = ScriptedLM(respond, latency)
        ctx = dspy.context(lm=lm)
        ctx.__enter__()
        stack.append(ctx)
        made.append(lm)
        return lm

    yield make
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
