"""DSPy 2.5's assertion API, and zero-edit mode for old programs.

Swap the imports (`from lmassert_magic.compat import Suggest, Retry, assert_transform_module,
backtrack_handler`), or leave the program untouched and add one line before it:

    import lmassert_magic.compat
    lmassert_magic.compat.install()   # or `%lmassert compat on` in a notebook

`install()` makes `dspy.Assert`, `dspy.Suggest`, `dspy.Retry`, `dspy.retry`, the handlers,
`dspy.primitives.assertions`, `dspy.predict.Retry` and `dspy.predict.retry.Retry` importable
again, backed by this package (`lmassert_magic.engine.compat` says where it differs from 2.5).
It only adds names the installed DSPy does not define, and `uninstall()` (or `%unload_ext
lmassert_magic`) removes exactly what it added.
"""

from __future__ import annotations

import importlib
import sys
import threading
from typing import Any

from .engine import compat as _engine_compat
from .engine.compat import (
    Assert,
    Constraint,
    Constraint25,
    DSPyAssertionError,
    DSPySuggestionError,
    Retry,
    Suggest,
    assert_no_except_handler,
    assert_transform_module,
    backtrack_handler,
    bypass_assert_handler,
    bypass_suggest_handler,
    default_assertion_handler,
    handle_assert_forward,
    noop_handler,
)

__all__ = [
    "Assert",
    "Constraint",
    "Constraint25",
    "DSPyAssertionError",
    "DSPySuggestionError",
    "Retry",
    "Suggest",
    "assert_no_except_handler",
    "assert_transform_module",
    "backtrack_handler",
    "bypass_assert_handler",
    "bypass_suggest_handler",
    "default_assertion_handler",
    "handle_assert_forward",
    "install",
    "installed",
    "noop_handler",
    "uninstall",
]

#: What DSPy 2.5.43 exported at the top level from `dspy/primitives/assertions.py` (and `Retry`).
ASSERTION_NAMES = (
    "Assert",
    "Suggest",
    "Constraint",
    "DSPyAssertionError",
    "DSPySuggestionError",
    "noop_handler",
    "bypass_suggest_handler",
    "bypass_assert_handler",
    "assert_no_except_handler",
    "backtrack_handler",
    "handle_assert_forward",
    "default_assertion_handler",
    "assert_transform_module",
)
MODULE_NAME = "dspy.primitives.assertions"

_lock = threading.Lock()
# (object, attribute) -> the value we put there; sys.modules entries are recorded as (sys.modules, name).
_added: list[tuple[Any, str, Any]] = []


def _set_if_absent(owner: Any, name: str, value: Any, added: list[str], label: str) -> None:
    if isinstance(owner, dict):
        if name in owner:
            return
        owner[name] = value
    else:
        if hasattr(owner, name):
            return  # DSPy defines it: never shadow
        setattr(owner, name, value)
    _added.append((owner, name, value))
    added.append(label)


def install() -> list[str]:
    """Make DSPy 2.5's assertion names importable from `dspy` again; returns the names added.

    Idempotent. Nothing DSPy itself defines is replaced.
    """
    import dspy
    import dspy.predict
    import dspy.primitives

    retry_module = importlib.import_module("dspy.predict.retry")  # exists in DSPy 3, emptied
    added: list[str] = []
    with _lock:
        for name in ASSERTION_NAMES:
            _set_if_absent(dspy, name, getattr(_engine_compat, name), added, f"dspy.{name}")
            _set_if_absent(dspy.primitives, name, getattr(_engine_compat, name), added, f"dspy.primitives.{name}")
        _set_if_absent(dspy, "Retry", Retry, added, "dspy.Retry")
        _set_if_absent(dspy.predict, "Retry", Retry, added, "dspy.predict.Retry")
        _set_if_absent(retry_module, "Retry", Retry, added, "dspy.predict.retry.Retry")
        _set_if_absent(dspy, "retry", retry_module, added, "dspy.retry")
        _set_if_absent(sys.modules, MODULE_NAME, _engine_compat, added, MODULE_NAME)
        _set_if_absent(dspy.primitives, "assertions", _engine_compat, added, "dspy.primitives.assertions (attribute)")
    return added


def uninstall() -> list[str]:
    """Remove what `install()` added (only where it still holds our object); returns the names removed."""
    removed: list[str] = []
    with _lock:
        while _added:
            owner, name, value = _added.pop()
            if isinstance(owner, dict):
                if owner.get(name) is value:
                    del owner[name]
                    removed.append(name)
            elif getattr(owner, "__dict__", {}).get(name) is value:
                delattr(owner, name)
                removed.append(f"{getattr(owner, '__name__', type(owner).__name__)}.{name}")
    return removed


def installed() -> bool:
    """Whether zero-edit mode is on (some name was added by `install()` and not removed)."""
    return bool(_added)
