"""DSPy 2.5.43's own tests of assertions and Retry, run on DSPy 3 through lmassert_magic.

The ported tests are 2.5.43's files with only their imports and the DSPy 3 renames changed; each
change is marked `# CHANGED:`. They run in zero-edit mode: `lmassert_magic.compat.install()`
makes `dspy.Retry`, `dspy.Suggest` and `dspy.primitives.assertions` importable, so even 2.5's
`from dspy.primitives.assertions import ...` line stays as it was.

Zero-edit mode is on while these modules are collected (their imports need it) and around each of
their tests, and off otherwise, so no other test sees it.
"""

from __future__ import annotations

import importlib

import pytest

import lmassert_magic.compat

lmassert_magic.compat.install()  # collection of this directory imports `dspy.primitives.assertions`


def pytest_collection_finish(session):
    lmassert_magic.compat.uninstall()


@pytest.fixture(autouse=True)
def _isolated_dspy_settings():
    """2.5's tests call `dspy.settings.configure(lm=..., trace=[])`: let that work, then restore the settings.

    (Replaces the suite's fixture of the same name, whose `dspy.context(lm=None)` would hide a
    configured LM.)
    """
    config = importlib.import_module("dspy.dsp.utils.settings").main_thread_config
    saved = dict(config)
    try:
        yield
    finally:
        config.clear()
        config.update(saved)


@pytest.fixture(autouse=True)
def _zero_edit_mode():
    lmassert_magic.compat.install()
    try:
        yield
    finally:
        lmassert_magic.compat.uninstall()
