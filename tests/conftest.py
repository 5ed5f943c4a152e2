"""Shared fixtures: a testing IPython shell that re-raises cell errors, and scripted LMs.

Shared plain objects (the tweet task, one-step program bases, the tweet notebook's cells) are in helpers.py.
"""

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

from lmassert_magic.testing import ScriptedLM  # noqa: E402


@pytest.fixture
def scripted_lm():
    """Factory: `scripted_lm(respond, latency=0, cache=False)` -> a ScriptedLM configured as dspy's LM for the test."""
    made: list[ScriptedLM] = []
    stack = []

    def make(respond, latency: float = 0.0, cache: bool = False):
        lm = ScriptedLM(respond, latency, cache)
        ctx = dspy.context(lm=lm)
        ctx.__enter__()
        stack.append(ctx)
        made.append(lm)
        return lm

    yield make
    for ctx in reversed(stack):
        ctx.__exit__(None, None, None)
