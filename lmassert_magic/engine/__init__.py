"""The engine: LM Assertions on DSPy 3 (no IPython here).

Drop-in for DSPy 2.5 assertion code: `Assert`, `Suggest`, `Retry`, `assert_transform_module`,
`backtrack_handler`, `DSPyAssertionError`, `DSPySuggestionError` come from `engine.compat`, which
holds the whole DSPy 2.5.43 assertion API (handlers included); `activate_assertions` is this
package's own entry point.
"""

from .activation import (
    activate_assertions,
    assertion_log,
    attach_constraints,
    constraints_of,
    deactivate_assertions,
    is_activated,
    run_asserted,
    run_record_of,
)
from .compat import Assert, Retry, Suggest, assert_transform_module, backtrack_handler
from .constraints import Constraint, lm_judge
from .context import (
    COLLECTORS_KEY,
    ENFORCE,
    OBSERVE,
    OFF,
    PER_CONSTRAINT,
    SHARED,
    RunConfig,
    carry_run,
    stray_predictor_calls,
)
from .errors import (
    AssertionFailed,
    ConstraintError,
    DSPyAssertionError,
    DSPySuggestionError,
    TargetNotFoundError,
)
from .optimizers import refine_program
from .records import ConstraintStats, Counterexample, RunLog, RunRecord
from .retry import retry_signature, rollout_id
from .signals import constraint_reward, gepa_metric
from .targets import resolve_target

__all__ = [
    "COLLECTORS_KEY",
    "ENFORCE",
    "OBSERVE",
    "OFF",
    "PER_CONSTRAINT",
    "SHARED",
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
    "carry_run",
    "constraint_reward",
    "rollout_id",
    "stray_predictor_calls",
    "assert_transform_module",
    "assertion_log",
    "attach_constraints",
    "backtrack_handler",
    "constraints_of",
    "deactivate_assertions",
    "gepa_metric",
    "is_activated",
    "lm_judge",
    "refine_program",
    "resolve_target",
    "retry_signature",
    "run_asserted",
    "run_record_of",
]
