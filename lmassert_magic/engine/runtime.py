"""Backtracking at run time: what one call of an activated program does, and where each part lives.

One call of an activated program is one *run*, with DSPy 2.5's semantics:

* A failing constraint retries its target step with two extra inputs: `feedback` (the distinct
  messages given to that step in this run) and `past_<field>` (its last failing outputs).
* Retries come out of one budget per run: `max_backtracks` (`defaults.MAX_BACKTRACKS`) shared by every
  constraint, declared or inline, so a run makes at most `max_backtracks + 1` attempts in all.
  A constraint may cap its own share further. When the budget is spent, soft failures go
  through and a hard one raises `DSPyAssertionError`. `budget="per_constraint"` gives each
  constraint at each place its own `max_backtracks` instead (this package's older behaviour).
* A retry that returns what its step returned before (the same inputs and outputs) would be sent the
  same prompt again: its next retry's feedback starts with `retry.REPEAT_NOTE` instead, and at the
  step's second such repeat in the run its retries stop as if the budget were spent, the attempt
  recording why (`Attempt.stopped`; `stop_on_repeat=False` spends every retry).
* Checks that ask an LM judge run after the others and only on an output that can be kept, one at a
  time until one fails and its retry is paid for (`stop_at_failing_judge`); an output seen before in
  the run is not judged again; `batch_judges=True` asks a step's judges in one call.
* A declared constraint (attached to a predictor) is checked as soon as its predictor returns
  and retried in place. An inline `Assert`/`Suggest` unwinds `forward` and runs it again: steps
  before the target replay their accepted outputs (never re-sampled, retried or not), the
  target is retried, steps after it run again once.
* Verdicts count on the output the run returns: every constraint on a step is re-checked on each
  new output of that step, checks made in an abandoned pass are dropped, and first-try and final
  verdicts are kept apart.
* Predictors called from DSPy's worker threads inside `forward` (`Predict.batch`, `dspy.Parallel`)
  belong to the run; `carry_run(fn)` does the same for a thread pool of your own.
* Predictors created inside `forward` (DSPy 2.5 programs build query generators and LM judges
  there) are steps of the run too: they are brought in on their first call, and a later pass
  replays the accepted output of an equal predictor (same class, signature, demos, LM and config)
  called with the same inputs instead of sampling it again. Predictors called inside a declared
  constraint's check (LM judges) are not steps.

* Async programs run the same way: `await program.acall(...)` runs `aforward` as one run, a guarded
  predictor's `acall` is checked and retried like its sync call, and asyncio tasks started inside
  `aforward` are branches. Under `dspy.streamify` each retry sends a `streaming.RetryStatus`, and field
  listeners of the retried step start over.

State lives in context variables (no global lock): any number of threads, or asyncio tasks of one
event loop, run asserted programs at once. A guarded predictor behaves like a plain `dspy.Predict`
when no run is active.

Where each part lives (this module only re-exports their public names):

* `context`: `RunConfig`, modes and budgets, which run a thread works for, `carry_run`.
* `activation`: guarding predictors, attaching constraints, `activate_assertions`, `run_asserted`
  (and `arun_asserted`).
* `streaming`: what a retry tells a `dspy.streamify` stream, and listeners that follow retries.
* `scopes`: a thread's ordered calls of a run, replay, declared and inline checks.
* `run_state`: one run's budget, feedback, verdicts and record.
* `retry`: the retry signature and rollouts; `targets`: what a constraint's target names.
* `tally`: LM calls, tokens and cache hits (`tally_lm`, `LMTally`).
"""

from __future__ import annotations

from .activation import (
    AssertedForward,
    activate_assertions,
    assertion_log,
    attach_constraints,
    builds_predictors,
    constraints_of,
    deactivate_assertions,
    guard_predictors,
    is_activated,
    run_asserted,
    run_record_of,
)
from .context import (
    BUDGETS,
    COLLECTORS_KEY,
    ENFORCE,
    MODES,
    OBSERVE,
    OFF,
    PER_CONSTRAINT,
    RUN_STATE_KEY,
    SHARED,
    RunConfig,
    carry_run,
    stray_predictor_calls,
)
from .retry import FEEDBACK_DESC, retry_signature, rollout_id
from .tally import LMTally, note_lm_call, tally_lm
from .targets import resolve_target

__all__ = [
    "BUDGETS",
    "COLLECTORS_KEY",
    "ENFORCE",
    "FEEDBACK_DESC",
    "MODES",
    "OBSERVE",
    "OFF",
    "PER_CONSTRAINT",
    "RUN_STATE_KEY",
    "SHARED",
    "AssertedForward",
    "LMTally",
    "RunConfig",
    "activate_assertions",
    "assertion_log",
    "attach_constraints",
    "builds_predictors",
    "carry_run",
    "constraints_of",
    "deactivate_assertions",
    "guard_predictors",
    "is_activated",
    "note_lm_call",
    "resolve_target",
    "retry_signature",
    "rollout_id",
    "run_asserted",
    "run_record_of",
    "stray_predictor_calls",
    "tally_lm",
]
