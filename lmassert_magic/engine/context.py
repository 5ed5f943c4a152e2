"""Which run a thread works for: the run's configuration, its context variables, and how it reaches
other threads (DSPy's worker threads through `dspy.settings`, a pool of your own through `carry_run`).

The run's state itself (`run_state.RunState`, `scopes.Branch`) is found through here but defined
there; this module only needs its `root.branch_for_thread` / `root.new_branch` / `root.count_call`.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dspy.dsp.utils.settings import thread_local_overrides

from . import defaults
from .records import RunLog
from .tally import count_judge_calls_with

if TYPE_CHECKING:
    from .scopes import Scope

ENFORCE = "enforce"  # backtrack, then raise on hard failures
OBSERVE = "observe"  # only record outcomes: no retries, nothing raised
OFF = "off"  # constraints neither checked nor enforced (an assertion-free teacher: no judge calls)
MODES = (ENFORCE, OBSERVE, OFF)

SHARED = "shared"  # DSPy 2.5: max_backtracks retries per run, shared by all constraints
PER_CONSTRAINT = "per_constraint"  # each constraint, at each place, gets max_backtracks retries
BUDGETS = (SHARED, PER_CONSTRAINT)

COLLECTORS_KEY = "lmassert_collectors"  # dspy.context key: RunLogs that receive every finished run
RUN_STATE_KEY = "lmassert_run_state"  # dspy.context key: the active run, carried into DSPy's worker threads
PASS_KEY = "lmassert_pass"  # dspy.context key: the pass of the run a worker task was handed out in

#: The scope this thread's predictor calls belong to (the run itself, or a `carry_run` branch).
current_scope: contextvars.ContextVar[Scope | None] = contextvars.ContextVar("lmassert_run", default=None)
#: True while a declared constraint is checked: predictors it calls (LM judges) are not steps of the run.
inside_check: contextvars.ContextVar[bool] = contextvars.ContextVar("lmassert_checking", default=False)
#: The step attempt (`records.Attempt`) this thread's LM calls and tokens count towards, while one runs.
current_attempt: contextvars.ContextVar[Any] = contextvars.ContextVar("lmassert_attempt", default=None)


@dataclass
class RunConfig:
    """How an activated program runs; `engine.runtime`'s docstring gives the semantics."""

    max_backtracks: int = defaults.MAX_BACKTRACKS
    mode: str = ENFORCE
    strict_suggestions: bool = False  # raise DSPySuggestionError instead of continuing (rarely wanted)
    budget: str = defaults.BUDGET
    retry_temperature: float | None = defaults.RETRY_TEMPERATURE
    seed: int = defaults.SEED  # retries sample from rollouts derived from (seed, step, inputs, attempt)
    # A retry that repeats an earlier output of its step is told so; a second repeat stops the step's retries
    # (`RunState.after_repeat`). Off: every retry is spent whatever it returns (as DSPy 2.5 did).
    stop_on_repeat: bool = True
    # Judges of an attempt are asked one at a time and stop at the first that fails once its retry is paid
    # for (DSPy 2.5's Suggests stopped at the first failure too). Off: every judge is asked about every attempt.
    stop_at_failing_judge: bool = True
    # Ask a step's LM judges about one output in one LM call, one verdict per question (`RunState.check_judged`).
    batch_judges: bool = defaults.BATCH_JUDGES
    log: RunLog = field(default_factory=RunLog)
    # Bring predictors created inside `forward` into the run. It needs a DSPy callback on every module
    # call of the run (about 2 ms each), so activation turns it on only when the program's code builds
    # predictors (None: decide at activation; a custom handler's forward is not inspected: on).
    adopt_forward_predictors: bool | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}, got {self.budget!r}")
        defaults.check_max_backtracks(self.max_backtracks)
        if self.retry_temperature is not None and not 0 <= self.retry_temperature <= 2:
            raise ValueError(f"retry_temperature must be between 0 and 2 or None, got {self.retry_temperature}")


# Runs in progress and predictor calls made outside any run meanwhile (threads the run never reached).
_activity_lock = threading.Lock()
_active_runs = 0
_stray_calls = 0


def stray_predictor_calls() -> int:
    """Predictor calls made outside any run while a run was active (e.g. from a raw thread pool).

    Such calls are not checked; `carry_run(fn)` brings a thread into the run. Compare before/after.
    """
    return _stray_calls


def note_stray_call() -> None:
    global _stray_calls
    if _active_runs:
        with _activity_lock:
            _stray_calls += 1


def run_started() -> None:
    global _active_runs
    with _activity_lock:
        _active_runs += 1


def run_ended() -> None:
    global _active_runs
    with _activity_lock:
        _active_runs -= 1


def here() -> tuple[int, Any]:
    """Who is running: this thread, and its asyncio task if one runs (tasks of one loop share a thread).

    Every predictor call asks, mostly on the sync path: `asyncio._get_running_loop` (the low-level twin of
    `get_running_loop` that returns None instead of raising) spares it raising and catching an exception.
    """
    loop = asyncio._get_running_loop()
    return threading.get_ident(), (asyncio.current_task(loop) if loop is not None else None)


def active_scope() -> Scope | None:
    """The scope of the run this thread (or asyncio task) works for, if any.

    In DSPy's worker threads the run arrives through `dspy.settings` (DSPy copies its context into
    each task); each worker thread gets one branch per pass of the run. Context variables also reach
    asyncio tasks started inside `aforward` (`asyncio.gather`) and threads started with a copy of the
    context: those are not the run's own thread and task, so each gets a branch too.
    """
    scope = current_scope.get()
    if scope is not None:
        owner = scope.owner
        if owner is None or owner == here():
            return scope
        root = scope.root
    else:
        root = thread_local_overrides.get().get(RUN_STATE_KEY)
        if root is None:
            return None
    return root.branch_for_thread(thread_local_overrides.get().get(PASS_KEY))


def _count_judge_call() -> None:
    """An LM judge's call counts against the run active on this thread, if any (`tally.note_lm_call`)."""
    scope = active_scope()
    if scope is not None:
        scope.root.count_call(judge=True)


count_judge_calls_with(_count_judge_call)


def carry_run(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`pool.map(carry_run(f), items)`: calls of `f` on other threads join the run active here.

    Without it, predictor calls from a thread pool of your own are not checked (they are counted by
    `stray_predictor_calls()`). DSPy's own threads (`Predict.batch`, `dspy.Parallel`) need nothing.
    """
    scope = active_scope()
    if scope is None:
        return fn
    root = scope.root
    overrides = dict(thread_local_overrides.get())
    pass_id = root.pass_id

    @functools.wraps(fn)
    def carried(*args: Any, **kwargs: Any) -> Any:
        settings_token = thread_local_overrides.set({**overrides, RUN_STATE_KEY: root, PASS_KEY: pass_id})
        scope_token = current_scope.set(root.new_branch(pass_id))
        try:
            return fn(*args, **kwargs)
        finally:
            current_scope.reset(scope_token)
            thread_local_overrides.reset(settings_token)

    return carried
