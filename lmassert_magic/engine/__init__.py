"""The engine: LM Assertions on DSPy 3 (no IPython here).

Drop-in for DSPy 2.5 assertion code: `Assert`, `Suggest`, `activate_assertions`,
`assert_transform_module`, `backtrack_handler`, `DSPyAssertionError`, `DSPySuggestionError`.
"""

from .constraints import Constraint, lm_judge
from .errors import (
    AssertionFailed,
    ConstraintError,
    DSPyAssertionError,
    DSPySuggestionError,
    TargetNotFoundError,
)
from .records import ConstraintStats, Counterexample, RunLog, RunRecord
from .runtime import (
    COLLECTORS_KEY,
    ENFORCE,
    OBSERVE,
    Assert,
    Retry,
    RunConfig,
    Suggest,
    activate_assertions,
    assert_transform_module,
    assertion_log,
    attach_constraints,
    backtrack_handler,
    constraints_of,
    deactivate_assertions,
    is_activated,
    resolve_target,
    retry_signature,
    run_asserted,
    run_record_of,
)

__all__ = [
    "COLLECTORS_KEY",
    "ENFORCE",
    "OBSERVE",
    "Assert",
    "AssertionFailed",
    "Constraint",
    "ConstraintError",
    "ConstraintStats",
    "Counterexample",
    "DSPyAssertionError",
    "DSPySuggestionError",
    "Retry",
    "RunConfig",
    "RunLog",
    "RunRecord",
    "Suggest",
    "TargetNotFoundError",
    "activate_assertions",
    "assert_transform_module",
    "assertion_log",
    "attach_constraints",
    "backtrack_handler",
    "constraints_of",
    "deactivate_assertions",
    "is_activated",
    "lm_judge",
    "resolve_target",
    "retry_signature",
    "run_asserted",
    "run_record_of",
]
