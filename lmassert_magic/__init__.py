"""lmassert_magic: LM Assertions (Assert / Suggest with backtracking) for DSPy 3, in notebooks.

`%load_ext lmassert_magic` registers the magics; the Python API works without IPython.
"""

from __future__ import annotations

from typing import Any

from . import compat
from .engine import (
    Assert,
    AssertionFailed,
    Constraint,
    ConstraintError,
    DSPyAssertionError,
    DSPySuggestionError,
    Retry,
    Suggest,
    TargetNotFoundError,
    activate_assertions,
    assert_transform_module,
    backtrack_handler,
    carry_run,
    constraint_reward,
    deactivate_assertions,
    gepa_metric,
    lm_judge,
    refine_program,
)
from .engine.calibration import calibrate_judge

__version__ = "0.1.0"

__all__ = [
    "Assert",
    "AssertionFailed",
    "Constraint",
    "ConstraintError",
    "DSPyAssertionError",
    "DSPySuggestionError",
    "Retry",
    "Suggest",
    "TargetNotFoundError",
    "activate_assertions",
    "assert_transform_module",
    "backtrack_handler",
    "calibrate_judge",
    "carry_run",
    "compat",
    "constraint_reward",
    "deactivate_assertions",
    "gepa_metric",
    "lm_judge",
    "load_ipython_extension",
    "refine_program",
    "unload_ipython_extension",
]


def _install_module_method() -> None:
    """DSPy 2.5 programs call `program.activate_assertions()`; DSPy 3 dropped the method."""
    import dspy

    from .engine.compat import activate_assertions as _activate

    if not hasattr(dspy.Module, "activate_assertions"):
        dspy.Module.activate_assertions = _activate


_install_module_method()


def load_ipython_extension(ipython: Any) -> None:
    from .magics import load_ipython_extension as _load

    _load(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    from .magics import unload_ipython_extension as _unload

    _unload(ipython)
