"""Backtracking at run time: guarded predictors, the per-call run state, and activation.

One call of an activated program is one *run*, with DSPy 2.5's semantics:

* A failing constraint retries its target step with two extra inputs: `feedback` (the distinct
  messages given to that step in this run) and `past_<field>` (its last failing outputs).
* Retries come out of one budget per run: `max_backtracks` (default 2) shared by every
  constraint, declared or inline, so a run makes at most `max_backtracks + 1` attempts in all.
  A constraint may cap its own share further. When the budget is spent, soft failures go
  through and a hard one raises `DSPyAssertionError`. `budget="per_constraint"` gives each
  constraint at each place its own `max_backtracks` instead (this package's older behaviour).
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

State lives in context variables (no global lock): any number of threads run asserted programs
at once. A guarded predictor behaves like a plain `dspy.Predict` when no run is active.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import logging
import threading
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import dspy
from dspy.dsp.utils.settings import thread_local_overrides
from dspy.utils.callback import BaseCallback
from dspy.utils.usage_tracker import UsageTracker

from .constraints import Constraint
from .errors import (
    ConstraintError,
    DSPyAssertionError,
    DSPySuggestionError,
    TargetNotFoundError,
)
from .records import ConstraintStats, Counterexample, RunLog, RunRecord

logger = logging.getLogger("lmassert_magic")

ENFORCE = "enforce"  # backtrack, then raise on hard failures
OBSERVE = "observe"  # only record outcomes: no retries, nothing raised
OFF = "off"  # constraints neither checked nor enforced (an assertion-free teacher: no judge calls)
MODES = (ENFORCE, OBSERVE, OFF)

SHARED = "shared"  # DSPy 2.5: max_backtracks retries per run, shared by all constraints
PER_CONSTRAINT = "per_constraint"  # each constraint, at each place, gets max_backtracks retries
BUDGETS = (SHARED, PER_CONSTRAINT)

#: Temperature of a retry when the LM's own is 0 or unset: a deterministic model would otherwise
#: often answer the retry prompt as before. A positive LM temperature is kept as it is.
DEFAULT_RETRY_TEMPERATURE = 0.7

COLLECTORS_KEY = "lmassert_collectors"  # dspy.context key: RunLogs that receive every finished run
RUN_STATE_KEY = "lmassert_run_state"  # dspy.context key: the active run, carried into DSPy's worker threads
_PASS_KEY = "lmassert_pass"  # dspy.context key: the pass of the run a worker task was handed out in

_current_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("lmassert_run", default=None)
_checking: contextvars.ContextVar[bool] = contextvars.ContextVar("lmassert_checking", default=False)

FEEDBACK_DESC = "Instructions to fix your previous answer. Follow them."


@dataclass
class RunConfig:
    """How an activated program runs; see the module docstring for the semantics."""

    max_backtracks: int = 2
    mode: str = ENFORCE
    strict_suggestions: bool = False  # raise DSPySuggestionError instead of continuing (rarely wanted)
    budget: str = SHARED
    retry_temperature: float | None = DEFAULT_RETRY_TEMPERATURE
    seed: int = 0  # retries sample from rollouts derived from (seed, step, inputs, attempt)
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
        if self.max_backtracks < 0:
            raise ValueError("max_backtracks must be >= 0")
        if self.retry_temperature is not None and not 0 <= self.retry_temperature <= 2:
            raise ValueError(f"retry_temperature must be between 0 and 2 or None, got {self.retry_temperature}")


# ---------------------------------------------------------------- extended signature for retries


@functools.lru_cache(maxsize=512)
def retry_signature(signature: type[dspy.Signature]) -> type[dspy.Signature]:
    """The signature plus `past_<output>` and `feedback` inputs (DSPy 3 drops unknown inputs)."""
    extended = signature
    for name, info in signature.output_fields.items():
        extended = extended.append(
            f"past_{name}",
            dspy.InputField(desc=f"your previous {name}, which failed a check"),
            type_=info.annotation if info.annotation is not None else str,
        )
    return extended.append("feedback", dspy.InputField(desc=FEEDBACK_DESC), type_=str)


def rollout_id(seed: int, step: str, inputs: dict[str, Any], attempt: int) -> int:
    """The rollout of one retry: distinct per step, inputs and attempt, the same in every run with `seed`.

    DSPy puts the rollout id in its cache key, so a retry never gets an earlier answer back, while a
    repeated run asks for exactly the same rollouts.
    """
    text = repr((seed, step, sorted((k, repr(v)) for k, v in inputs.items()), attempt))
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8", "replace"), digest_size=4).digest(), "big") >> 1


# ---------------------------------------------------------------- bookkeeping helpers


@dataclass
class _CallRecord:
    """One accepted predictor call of a pass; replayed as it is when a later step backtracks."""

    predictor: Any
    name: str
    inputs: dict[str, Any]
    key: tuple
    trace_inputs: dict[str, Any] = field(default_factory=dict)
    prediction: Any = None
    checks: tuple = ()  # keys of the declared checks made on the accepted output
    main_index: int = 0  # calls of the main scope made before this one (branch calls)


@dataclass
class _RetryPlan:
    feedback: list[str]
    past: dict[str, Any]
    attempt: int


@dataclass
class _Check:
    """One place a constraint is checked: its first verdict and its latest one."""

    name: str
    hard: bool
    first: bool | None = None
    last: bool | None = None
    error: bool = False


def _outputs_of(predictor: Any, prediction: Any) -> dict[str, Any]:
    out = {}
    for name in predictor.signature.output_fields:
        try:
            out[name] = prediction[name]
        except (KeyError, AttributeError):
            out[name] = None
    return out


def _sendable(value: Any) -> Any:
    """The failing output as a retry input an LM client accepts: half an emoji (a lone surrogate, from a
    JSON escape cut in two) makes DSPy refuse the whole request, so every retry of that step would fail."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if isinstance(value, (list, tuple)):
        return type(value)(_sendable(v) for v in value)
    return value


def _drop_trace_entry(predictor: Any, prediction: Any) -> bool:
    """Remove a rejected attempt from the bootstrap trace (found by identity: threads share the list).

    False when a trace is being recorded but the attempt is not in it (it would then become a demo).
    """
    trace = dspy.settings.trace
    if trace is None:
        return True
    for i in range(len(trace) - 1, -1, -1):
        entry = trace[i]
        if entry[0] is predictor and entry[2] is prediction:
            del trace[i]
            return True
    return False


class _TokenSink(UsageTracker):
    """Adds each uncached call's usage to `add` and forwards the entry to any tracker the caller had.

    `add_cached_usage` receives the usage a cached response carried (see `_UsageRecallingCache`),
    so token counts do not depend on whether an earlier setting warmed the cache. Shared, not
    copied, when DSPy hands trackers to worker threads: the tally must stay one.
    """

    def __init__(
        self, add: Callable[[dict[str, Any]], None], parent: UsageTracker | None,
        add_cached: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self._add = add
        self._add_cached = add_cached
        self._parent = parent

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        self._add(usage_entry or {})
        if self._parent is not None:
            self._parent.add_usage(lm, usage_entry)

    def add_cached_usage(self, usage_entry: dict[str, Any]) -> None:
        if self._add_cached is not None:
            self._add_cached(usage_entry)
        forward = getattr(self._parent, "add_cached_usage", None)
        if forward is not None:
            forward(usage_entry)

    def __deepcopy__(self, memo: dict) -> _TokenSink:
        return self


class _UsageRecallingCache:
    """DSPy's cache, unchanged, except that a hit tells the active usage tracker the tokens it saved.

    DSPy reports no usage for a cached response, so a setting that runs after another one (and hits
    its cache) would look cheaper in tokens. Installed around `dspy.cache` while runs and tallies are
    active; every other attribute goes to the real cache.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        record = self._inner.get(*args, **kwargs)
        if record is not None:
            recall = getattr(dspy.settings.usage_tracker, "add_cached_usage", None)
            if recall is not None:
                usage = record.get("usage") if isinstance(record, dict) else getattr(record, "usage", None)
                recall(dict(usage or {}))
        return record


def _recall_cached_usage() -> None:
    if not isinstance(dspy.cache, _UsageRecallingCache):
        dspy.cache = _UsageRecallingCache(dspy.cache)


def _usage_numbers(entry: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, total) tokens of one usage entry; providers name them differently."""
    prompt = int(entry.get("prompt_tokens") or entry.get("input_tokens") or 0)
    completion = int(entry.get("completion_tokens") or entry.get("output_tokens") or 0)
    total = entry.get("total_tokens")
    return prompt, completion, int(total) if total is not None else prompt + completion


class _Backtrack(BaseException):
    """Unwinds `forward` to re-run it with a retry planned; BaseException so user `except Exception` can't eat it.

    `index` is how many main-scope calls replay; None means the pass was abandoned by another thread.
    """

    def __init__(self, index: int | None) -> None:
        super().__init__(index)
        self.index = index


# Runs in progress and predictor calls made outside any run meanwhile (threads the run never reached).
_activity_lock = threading.Lock()
_active_runs = 0
_stray_calls = 0


def stray_predictor_calls() -> int:
    """Predictor calls made outside any run while a run was active (e.g. from a raw thread pool).

    Such calls are not checked; `carry_run(fn)` brings a thread into the run. Compare before/after.
    """
    return _stray_calls


def _note_stray_call() -> None:
    global _stray_calls
    if _active_runs:
        with _activity_lock:
            _stray_calls += 1


# ---------------------------------------------------------------- scopes: the run and its branches


class _Scope:
    """Where predictor calls and inline checks of one thread of a run are ordered.

    The run itself is the main scope; each DSPy worker task (or `carry_run` call) is a branch
    that shares the run's budget, verdicts and record but keeps its own list of calls.
    """

    root: _RunState
    calls: list[_CallRecord]
    occurrence: Counter

    # -- predictor calls --------------------------------------------------------------------
    def predictor_call(self, predictor: Any, kwargs: dict[str, Any], call: Callable[..., Any]) -> Any:
        root = self.root
        self._ensure_current()
        name = root.name_of(predictor)
        input_names = predictor.signature.input_fields
        inputs = {k: v for k, v in kwargs.items() if k in input_names}
        index = len(self.calls)
        key = self._step_key(index, name, inputs)

        previous = self._replayed(index, key, predictor, inputs)
        if previous is not None:
            trace = dspy.settings.trace
            if trace is not None:
                trace.append((predictor, dict(previous.trace_inputs), previous.prediction))
            self._accept(previous)
            root.mark_live(previous.checks)
            return previous.prediction

        plan = root.take_plan(key)
        root.count_call()
        try:
            if plan is None:
                prediction, trace_inputs = call(**kwargs), kwargs
            else:
                prediction, trace_inputs = root.retry(predictor, name, inputs, kwargs, plan, call)
        except Exception:
            root.count_failed_call()
            raise
        if plan is not None and not self._is_current():
            root.set_plan(key, plan)  # a retry abandoned in flight by another thread's backtrack: redo it
        self._ensure_current()
        record = _CallRecord(predictor, name, inputs, key, main_index=len(root.calls))
        constraints = getattr(predictor, "_lmassert_constraints", ()) if root.config.mode != OFF else ()
        if constraints:
            attempt = plan.attempt if plan else 0
            prediction, trace_inputs = self._check_declared(record, kwargs, prediction, trace_inputs, constraints,
                                                            call, attempt)
        record.prediction, record.trace_inputs = prediction, dict(trace_inputs)
        self._accept(record)
        return prediction

    def _check_declared(
        self,
        record: _CallRecord,
        kwargs: dict[str, Any],
        prediction: Any,
        trace_inputs: dict[str, Any],
        constraints: Sequence[Constraint],
        call: Callable[..., Any],
        attempt: int,
    ) -> tuple[Any, dict[str, Any]]:
        root = self.root
        predictor, key = record.predictor, record.key
        record.checks = tuple((c.name, key) for c in constraints)
        while True:
            outputs = _outputs_of(predictor, prediction)
            fields = {**record.inputs, **outputs}
            failing = [c for c in constraints if not root.check_declared(c, (c.name, key), fields, outputs)]
            root.mark_live(record.checks)
            if not failing or root.config.mode == OBSERVE:
                return prediction, trace_inputs
            messages = [root.feedback_text(c, fields) for c in failing]
            charged = next((c for c in failing if root.take_budget(c.name, (c.name, key), c.max_backtracks)), None)
            if charged is None:
                root.give_up(failing, messages, predictor, record.name, outputs, attempt + 1)
                return prediction, trace_inputs
            feedback = root.add_feedback(key, messages)
            for constraint, message in zip(failing, messages):
                root.add_counterexample(constraint.name, constraint.hard, (constraint.name, key), record, outputs,
                                        message)
            attempt += 1
            if not _drop_trace_entry(predictor, prediction):  # the trace keeps only the accepted attempt
                root.warn(f"a rejected attempt of {record.name} was not found in the trace to remove")
            root.count_call()
            prediction, trace_inputs = root.retry(predictor, record.name, record.inputs, dict(kwargs),
                                                  _RetryPlan(feedback, outputs, attempt), call)
            self._ensure_current()

    # -- inline Assert / Suggest ------------------------------------------------------------------
    def inline_check(
        self, passed: bool, message: str, target: Any, hard: bool, name: str, cap: int | None
    ) -> bool:
        root = self.root
        self._ensure_current()
        if root.config.mode == OFF:
            return passed
        occurrence = self.occurrence[name]
        self.occurrence[name] += 1
        check_key = (name, self._inline_place(occurrence))
        root.record_verdict(check_key, name, hard, passed, kind="inline")
        root.mark_live((check_key,))
        index = self._target_index(target)
        call = self.calls[index] if index is not None else None
        outputs = _outputs_of(call.predictor, call.prediction) if call else {}
        if passed:
            root.resolve_pending(check_key, outputs)
            return True
        if root.config.mode == OBSERVE:
            return False
        text = message or f"The output failed the check {name!r}."
        if call is not None and root.take_budget(name, check_key, cap):
            feedback = root.add_feedback(call.key, [text])
            root.set_plan(call.key, _RetryPlan(feedback, outputs, root.attempts_of(call.key) + 1))
            root.add_counterexample(name, hard, check_key, call, outputs, text)
            self._backtrack(index, call)
        attempts = 1 + (root.attempts_of(call.key) if call else 0)
        where = call.name if call else None
        module = call.predictor if call else None
        if hard:
            raise DSPyAssertionError(name, text, module, attempts=attempts, last_outputs=outputs, predictor=where)
        if root.config.strict_suggestions:
            raise DSPySuggestionError(name, text, module, attempts=attempts, last_outputs=outputs, predictor=where)
        logger.info("suggestion %r still fails after %d attempt(s)", name, attempts)
        return False

    def _target_index(self, target: Any) -> int | None:
        if not self.calls:
            return None
        if target is None:
            return len(self.calls) - 1
        for i in range(len(self.calls) - 1, -1, -1):
            if _matches(self.calls[i].predictor, self.calls[i].name, target):
                return i
        raise TargetNotFoundError(
            f"target_module {_describe_target(target)} matches none of the predictors called so far: "
            f"{', '.join(dict.fromkeys(c.name for c in self.calls))}"
        )

    # -- what differs between the main scope and a branch -------------------------------------------
    def _is_current(self) -> bool:
        return True

    def _ensure_current(self) -> None:
        pass

    def _step_key(self, index: int, name: str, inputs: dict[str, Any]) -> tuple:
        raise NotImplementedError

    def _inline_place(self, occurrence: int) -> tuple:
        raise NotImplementedError

    def _replayed(self, index: int, key: tuple, predictor: Any, inputs: dict[str, Any]) -> _CallRecord | None:
        raise NotImplementedError

    def _accept(self, record: _CallRecord) -> None:
        self.calls.append(record)

    def _backtrack(self, index: int, call: _CallRecord) -> NoReturn:
        raise NotImplementedError


class _RunState(_Scope):
    """One run (one top-level call of an activated program), which is also its main scope."""

    def __init__(self, config: RunConfig) -> None:
        self.root = self
        self.config = config
        self.record = RunRecord()
        self.lock = threading.Lock()
        self.checks: dict[tuple, _Check] = {}
        self.kinds: dict[str, str] = {}
        self.used = 0
        self.by_constraint: Counter[str] = Counter()
        self.by_place: Counter[tuple] = Counter()
        self.feedback: dict[tuple, list[str]] = {}  # step -> distinct messages given to it in this run
        self.attempts: Counter[tuple] = Counter()  # step -> retries made
        self.plans: dict[tuple, _RetryPlan] = {}
        self.pending: dict[tuple, list[Counterexample]] = {}
        self.uncached = 0
        self.failed_calls = 0
        self.pass_id = 0
        self.calls: list[_CallRecord] = []
        self.replay: list[_CallRecord] = []
        self.branch_calls: dict[tuple, _CallRecord] = {}
        self.branch_replay: dict[tuple, _CallRecord] = {}
        self.live: set[tuple] = set()
        self.occurrence: Counter[str] = Counter()
        self.branch_occurrence: Counter[tuple] = Counter()
        self.branches: dict[int, _Branch] = {}

    # -- driving forward ------------------------------------------------------------------
    def run(self, fn: Callable[[], Any]) -> Any:
        trace = dspy.settings.trace
        mark = len(trace) if trace is not None else 0
        while True:
            self._begin_pass()
            try:
                return fn()
            except _Backtrack as bt:
                if trace is not None:
                    del trace[mark:]
                with self.lock:
                    self.replay = self.calls[: bt.index] if bt.index is not None else list(self.calls)
                    self.branch_replay = dict(self.branch_calls)

    def _begin_pass(self) -> None:
        with self.lock:
            self.pass_id += 1
            self.calls = []
            self.branch_calls = {}
            self.live = set()
            self.occurrence = Counter()
            self.branch_occurrence = Counter()
            self.branches = {}
            self.record.passes += 1
        overrides = thread_local_overrides.get()
        if overrides.get(RUN_STATE_KEY) is self:  # the run's own dspy.context: worker tasks learn the pass
            overrides[_PASS_KEY] = self.pass_id

    def branch_for_thread(self, pass_id: int | None) -> _Branch:
        """This worker thread's branch in the pass its task was handed out in (tasks of a thread run in turn).

        A task handed out in an abandoned pass gets a stale branch, which stops at its next step.
        """
        ident = threading.get_ident()
        with self.lock:
            if pass_id is not None and pass_id != self.pass_id:
                return _Branch(self, pass_id)
            branch = self.branches.get(ident)
            if branch is None:
                branch = self.branches[ident] = _Branch(self, self.pass_id)
            return branch

    def _step_key(self, index: int, name: str, inputs: dict[str, Any]) -> tuple:
        return ("main", index)

    def _inline_place(self, occurrence: int) -> tuple:
        return ("inline", occurrence)

    def _replayed(self, index: int, key: tuple, predictor: Any, inputs: dict[str, Any]) -> _CallRecord | None:
        if index < len(self.replay) and key not in self.plans:
            previous = self.replay[index]
            if _same_step(previous.predictor, predictor) and previous.inputs == inputs:
                return previous
            self.replay = []  # diverged: nothing further can be replayed
        return None

    def _backtrack(self, index: int, call: _CallRecord) -> NoReturn:
        raise _Backtrack(index)

    # -- shared bookkeeping (also used by branches, hence the lock) ----------------------------------
    def name_of(self, predictor: Any) -> str:
        return getattr(predictor, "_lmassert_name", None) or _predictor_label(predictor)

    def count_call(self, judge: bool = False) -> None:
        with self.lock:
            if judge and self.config.mode == OBSERVE:
                self.record.observe_lm_calls += 1
            else:
                self.record.lm_calls += 1

    def warn(self, message: str) -> None:
        with self.lock:
            self.record.warnings.append(message)
        logger.warning(message)

    def count_failed_call(self) -> None:
        with self.lock:
            self.failed_calls += 1

    def add_usage(self, entry: dict[str, Any], cached: bool = False) -> None:
        prompt, completion, total = _usage_numbers(entry)
        with self.lock:
            if not cached:
                self.uncached += 1
            self.record.prompt_tokens += prompt
            self.record.completion_tokens += completion
            self.record.tokens += total

    def add_cached_usage(self, entry: dict[str, Any]) -> None:
        self.add_usage(entry, cached=True)

    def take_plan(self, key: tuple) -> _RetryPlan | None:
        with self.lock:
            return self.plans.pop(key, None)

    def set_plan(self, key: tuple, plan: _RetryPlan) -> None:
        with self.lock:
            self.plans[key] = plan

    def attempts_of(self, key: tuple) -> int:
        return self.attempts[key]

    def take_budget(self, name: str, place: tuple, cap: int | None) -> bool:
        """Spend one retry for constraint `name` at `place`, if the budget allows it."""
        config = self.config
        with self.lock:
            if config.budget == SHARED:
                if self.used >= config.max_backtracks:
                    return False
                if cap is not None and self.by_constraint[name] >= cap:
                    return False
            else:
                limit = cap if cap is not None else config.max_backtracks
                if self.by_place[(name, place)] >= limit:
                    return False
            self.used += 1
            self.by_constraint[name] += 1
            self.by_place[(name, place)] += 1
            return True

    def add_feedback(self, step: tuple, messages: Iterable[str]) -> list[str]:
        with self.lock:
            given = self.feedback.setdefault(step, [])
            for message in messages:
                if message not in given:
                    given.append(message)
            self.attempts[step] += 1
            return list(given)

    def feedback_text(self, constraint: Constraint, fields: dict[str, Any]) -> str:
        token = _checking.set(True)
        try:
            return constraint.feedback(fields)
        except ConstraintError:
            self._note_error(constraint.name, constraint.hard)
            raise
        finally:
            _checking.reset(token)

    def check_declared(self, constraint: Constraint, key: tuple, fields: dict[str, Any],
                       outputs: dict[str, Any]) -> bool:
        token = _checking.set(True)  # predictors a check calls (LM judges) are not steps of the run
        try:
            passed = constraint.check(fields)
        except ConstraintError:
            with self.lock:
                check = self.checks.setdefault(key, _Check(constraint.name, constraint.hard))
                check.error = True
            raise
        finally:
            _checking.reset(token)
        self.record_verdict(key, constraint.name, constraint.hard, passed, kind="declared")
        if passed:
            self.resolve_pending(key, outputs)
        return passed

    def record_verdict(self, key: tuple, name: str, hard: bool, passed: bool, kind: str) -> None:
        with self.lock:
            check = self.checks.get(key)
            if check is None:
                check = self.checks[key] = _Check(name, hard)
            if check.first is None:
                check.first = passed
            check.last = passed
            self.kinds.setdefault(name, kind)

    def mark_live(self, keys: Iterable[tuple]) -> None:
        with self.lock:
            self.live.update(keys)

    def add_counterexample(self, name: str, hard: bool, check_key: tuple, call: _CallRecord,
                           outputs: dict[str, Any], message: str) -> None:
        cx = Counterexample(name, hard, call.name, dict(call.inputs), dict(outputs), message)
        with self.lock:
            self.record.counterexamples.append(cx)
            self.pending.setdefault(check_key, []).append(cx)

    def resolve_pending(self, check_key: tuple, outputs: dict[str, Any]) -> None:
        with self.lock:
            fixed = self.pending.pop(check_key, [])
        for cx in fixed:
            cx.fixed_outputs = dict(outputs)

    def _note_error(self, name: str, hard: bool) -> None:
        with self.lock:
            stats = self.record.constraints.setdefault(name, ConstraintStats(name, hard))
            stats.errors += 1

    def retry(
        self, predictor: Any, name: str, inputs: dict[str, Any], kwargs: dict[str, Any], plan: _RetryPlan,
        call: Callable[..., Any],
    ) -> tuple[Any, dict[str, Any]]:
        signature = retry_signature(predictor.signature)
        extra = {f"past_{k}": _sendable(v) for k, v in plan.past.items()}
        extra["feedback"] = _sendable("\n".join(plan.feedback))
        kwargs = dict(kwargs)
        config = dict(kwargs.pop("config", None) or {})
        lm = kwargs.get("lm") or predictor.lm or dspy.settings.lm
        temperature = config.get("temperature", getattr(lm, "kwargs", {}).get("temperature"))
        rollout = rollout_id(self.config.seed, name, inputs, plan.attempt)
        config["rollout_id"] = rollout  # a distinct cache entry per retry...
        config.setdefault("seed", rollout)  # ...sampled the same way in every run (DSPy drops it where unsupported)
        if (not temperature or temperature <= 0) and self.config.retry_temperature is not None:
            config["temperature"] = self.config.retry_temperature
        call_kwargs = {**kwargs, **extra}
        prediction = call(signature=signature, config=config, **call_kwargs)
        return prediction, call_kwargs

    def give_up(
        self, failing: Sequence[Constraint], messages: Sequence[str], predictor: Any, name: str,
        outputs: dict[str, Any], attempts: int,
    ) -> None:
        for constraint, message in zip(failing, messages):
            if constraint.hard:
                raise DSPyAssertionError(constraint.name, message, predictor, attempts=attempts,
                                         last_outputs=outputs, predictor=name)
        if self.config.strict_suggestions:
            raise DSPySuggestionError(failing[0].name, messages[0], predictor, attempts=attempts,
                                      last_outputs=outputs, predictor=name)
        for constraint in failing:
            logger.info("suggestion %r on %s still fails after %d attempt(s)", constraint.name, name, attempts)

    # -- end of run ---------------------------------------------------------------------------
    def finish(self, error: BaseException | None) -> RunRecord:
        record = self.record
        verdicts: dict[str, list[_Check]] = {}
        for key, check in self.checks.items():
            stats = record.constraints.get(check.name)
            if stats is None:
                stats = record.constraints[check.name] = ConstraintStats(check.name, check.hard)
            if check.error:  # the condition itself raised, timed out or gave a non-bool
                stats.errors += 1
            if key not in self.live or check.first is None:
                continue  # checked only in an abandoned pass: not a verdict on the returned output
            verdicts.setdefault(check.name, []).append(check)
            stats.checks += 1
            if not check.last:
                stats.final_failures += 1  # passing first and failing at the end is a failure
            elif check.first:
                stats.first_try_passes += 1
            else:
                stats.passes_after_backtrack += 1
        for name, checks in verdicts.items():
            stats = record.constraints[name]
            stats.examples = 1
            stats.passed_first = int(all(c.first for c in checks))
            stats.passed_final = int(all(c.last for c in checks))
        for name, used in self.by_constraint.items():
            record.constraints.setdefault(name, ConstraintStats(name, False)).backtracks += used
        record.kinds = dict(self.kinds)
        record.cache_hits = max(0, record.lm_calls + record.observe_lm_calls - self.uncached - self.failed_calls)
        if error is not None:
            record.error = f"{type(error).__name__}: {error}"
        return record


class _Branch(_Scope):
    """A worker thread's part of a run: its own call order, the run's budget, verdicts and record.

    Steps are keyed by predictor and inputs (thread order is not reproducible); an inline check
    that fails here unwinds the whole run, whose next pass replays every branch call but the target.
    """

    def __init__(self, root: _RunState, pass_id: int) -> None:
        self.root = root
        self.pass_id = pass_id
        self.calls: list[_CallRecord] = []
        self.occurrence: Counter[str] = Counter()

    def _is_current(self) -> bool:
        return self.pass_id == self.root.pass_id

    def _ensure_current(self) -> None:
        if not self._is_current():
            raise _Backtrack(None)  # the run moved on without this thread: stop spending its budget

    def _step_key(self, index: int, name: str, inputs: dict[str, Any]) -> tuple:
        identity = (name, repr(sorted((k, repr(v)) for k, v in inputs.items())))
        root = self.root
        with root.lock:
            occurrence = root.branch_occurrence[identity]
            root.branch_occurrence[identity] += 1
        return ("branch", identity, occurrence)

    def _inline_place(self, occurrence: int) -> tuple:
        last = self.calls[-1].key if self.calls else None
        return ("inline", last, occurrence)

    def _replayed(self, index: int, key: tuple, predictor: Any, inputs: dict[str, Any]) -> _CallRecord | None:
        root = self.root
        with root.lock:
            if key in root.plans:
                return None
            previous = root.branch_replay.get(key)
        if previous is not None and _same_step(previous.predictor, predictor):
            return previous
        return None

    def _accept(self, record: _CallRecord) -> None:
        self.calls.append(record)
        with self.root.lock:
            self.root.branch_calls[record.key] = record

    def _backtrack(self, index: int, call: _CallRecord) -> NoReturn:
        raise _Backtrack(call.main_index)


def _active_scope() -> _Scope | None:
    """The scope of the run this thread works for, if any.

    In DSPy's worker threads the run arrives through `dspy.settings` (DSPy copies its context into
    each task); each worker thread gets one branch per pass of the run.
    """
    scope = _current_scope.get()
    if scope is not None:
        return scope
    overrides = thread_local_overrides.get()
    root = overrides.get(RUN_STATE_KEY)
    if root is None:
        return None
    return root.branch_for_thread(overrides.get(_PASS_KEY))


def note_lm_call() -> None:
    """Count one LM call against the current run (predictor calls count themselves; judges call this)."""
    scope = _active_scope()
    if scope is not None:
        scope.root.count_call(judge=True)


def carry_run(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`pool.map(carry_run(f), items)`: calls of `f` on other threads join the run active here.

    Without it, predictor calls from a thread pool of your own are not checked (they are counted by
    `stray_predictor_calls()`). DSPy's own threads (`Predict.batch`, `dspy.Parallel`) need nothing.
    """
    scope = _active_scope()
    if scope is None:
        return fn
    root = scope.root
    overrides = dict(thread_local_overrides.get())
    pass_id = root.pass_id

    @functools.wraps(fn)
    def carried(*args: Any, **kwargs: Any) -> Any:
        settings_token = thread_local_overrides.set({**overrides, RUN_STATE_KEY: root, _PASS_KEY: pass_id})
        scope_token = _current_scope.set(_Branch(root, pass_id))
        try:
            return fn(*args, **kwargs)
        finally:
            _current_scope.reset(scope_token)
            thread_local_overrides.reset(settings_token)

    return carried


# ---------------------------------------------------------------- target matching


def _predictor_label(predictor: Any) -> str:
    sig = getattr(predictor, "signature", None)
    return f"{type(predictor).__name__}({getattr(sig, '__name__', 'signature')})"


def _signature_matches(candidate: Any, target: type[dspy.Signature]) -> bool:
    if candidate is None:
        return False
    if candidate is target:
        return True
    try:
        same_instructions = (candidate.instructions or "").strip() == (target.instructions or "").strip()
        fields_in = set(target.input_fields) <= set(candidate.input_fields)
        fields_out = set(target.output_fields) <= set(candidate.output_fields)
    except AttributeError:
        return False
    return same_instructions and fields_in and fields_out


def _is_signature_class(obj: Any) -> bool:
    return isinstance(obj, type) and issubclass(obj, dspy.Signature)


def _matches(predictor: Any, name: str, target: Any) -> bool:
    if target is predictor or (target is not None and getattr(predictor, "_lmassert_wraps", None) is target):
        return True  # the predictor, or the one a DSPy 2.5 `Retry` wraps
    if isinstance(target, (list, tuple)):  # DSPy 2.5 programs pass lists (`target_module=self.generate_query`)
        return any(_matches(predictor, name, t) for t in target)
    if isinstance(target, dspy.Module) and not isinstance(target, dspy.Predict):
        return any(p is predictor for p in target.predictors())
    if _is_signature_class(target):
        return _signature_matches(getattr(predictor, "signature", None), target)
    if isinstance(target, str):
        sig = getattr(predictor, "signature", None)
        return (
            name == target
            or name.startswith(target + ".")
            or getattr(predictor, "_lmassert_origin", None) == target
            or getattr(sig, "__name__", None) == target
        )
    return False


def _describe_target(target: Any) -> str:
    if isinstance(target, (list, tuple)):
        return "[" + ", ".join(_describe_target(t) for t in target) + "]"
    if _is_signature_class(target):
        return f"signature {target.__name__}"
    if isinstance(target, str):
        return repr(target)
    return _predictor_label(target) if isinstance(target, dspy.Predict) else type(target).__name__


def resolve_target(program: dspy.Module, target: Any) -> list[tuple[str, dspy.Predict]]:
    """The predictors of `program` a target names; an empty match is an error."""
    named = list(program.named_predictors())
    if target is None:
        if len(named) == 1:
            return named
        raise TargetNotFoundError(
            f"a constraint without a target needs a program with exactly one predictor; this one has "
            f"{len(named)}: {', '.join(n for n, _ in named)}"
        )
    if isinstance(target, dspy.Module) and not isinstance(target, dspy.Predict):
        inner = target.predictors()
        if len(inner) != 1:
            raise TargetNotFoundError(
                f"target module {type(target).__name__} contains {len(inner)} predictors; name one of them"
            )
    hits = [(n, p) for n, p in named if _matches(p, n, target)]
    if not hits:
        raise TargetNotFoundError(
            f"target {_describe_target(target)} matches no predictor of {type(program).__name__}; "
            f"predictors: {', '.join(n for n, _ in named) or 'none'}"
        )
    return hits


# ---------------------------------------------------------------- guarded predictors


class _GuardMixin:
    """Routes a predictor's calls through the active run; a plain predictor otherwise."""

    def forward(self, **kwargs: Any) -> Any:
        scope = _active_scope() if not _checking.get() else None
        parent = super().forward  # type: ignore[misc]
        if scope is None:
            _note_stray_call()
            return parent(**kwargs)
        return scope.predictor_call(self, kwargs, parent)


_guard_classes: dict[type, type] = {}


def _same_step(previous: Any, predictor: Any) -> bool:
    """Whether a predictor called in this pass is the step `previous` was in an earlier pass.

    The same object, or, for predictors created inside `forward` (a new object on every pass), an
    equal one: same class, signature, demos, LM and config.
    """
    if previous is predictor:
        return True
    if not (getattr(previous, "_lmassert_ephemeral", False) and getattr(predictor, "_lmassert_ephemeral", False)):
        return False
    try:
        return (
            type(previous) is type(predictor)
            and previous.signature.equals(predictor.signature)
            and previous.demos == predictor.demos
            and previous.lm is predictor.lm
            and previous.config == predictor.config
        )
    except Exception:  # an exotic signature or demo that cannot be compared: not provably the same step
        return False


class _AdoptPredictors(BaseCallback):
    """Brings a predictor created inside `forward` into the run on its first call (DSPy calls this first).

    Such a predictor is no attribute of the program, so activation never guarded it; without this its
    calls would escape the run (unchecked, and sampled again on every backtrack).
    """

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if (isinstance(instance, dspy.Predict) and not isinstance(instance, _GuardMixin)
                and not _checking.get() and _active_scope() is not None):
            instance.__class__ = _guard_class(type(instance))
            instance._lmassert_ephemeral = True


_ADOPT = _AdoptPredictors()


def _guard_class(cls: type) -> type:
    if issubclass(cls, _GuardMixin):
        return cls
    guarded = _guard_classes.get(cls)
    if guarded is None:
        guarded = _twin(cls, _GuardMixin, "Guarded")
        _guard_classes[cls] = guarded
    return guarded


def _twin(cls: type, mixin: type, prefix: str, namespace: dict[str, Any] | None = None) -> type:
    """A subclass with `mixin` that still calls itself `cls.__name__` (reprs and user code see no change).

    Its qualified name is unique and registered here, so pickle finds it.
    """
    qualname = f"_{prefix}_{cls.__module__.replace('.', '_')}_{cls.__qualname__.replace('.', '_')}"
    while qualname in globals() and globals()[qualname].__mro__[2] is not cls:
        qualname += "_"
    twin = type(cls.__name__, (mixin, cls), {"__module__": __name__, "__qualname__": qualname, **(namespace or {})})
    globals()[qualname] = twin
    return twin


GuardedPredict = _guard_class(dspy.Predict)


def guard_predictors(program: dspy.Module) -> dict[int, str]:
    """Swap each predictor's class for its guarded twin, in place (identity, names and state unchanged)."""
    names = {}
    for name, predictor in program.named_predictors():
        predictor.__class__ = _guard_class(type(predictor))
        predictor._lmassert_name = name  # copies and pickles along with the predictor
        names[id(predictor)] = name
    return names


def attach_constraints(program: dspy.Module, constraints: Iterable[Constraint]) -> dict[str, list[str]]:
    """Attach declarative constraints to the predictors their targets name; returns name -> predictors."""
    constraints = list(constraints)
    seen: set[str] = set()
    plan: list[tuple[Constraint, list[tuple[str, Any]]]] = []
    for constraint in constraints:
        if constraint.name in seen:
            raise ValueError(f"two constraints are named {constraint.name!r}; names must be unique")
        seen.add(constraint.name)
        plan.append((constraint, resolve_target(program, constraint.target)))  # may raise: nothing changed yet
    for _, predictor in program.named_predictors():
        predictor._lmassert_constraints = []
    where: dict[str, list[str]] = {}
    for constraint, hits in plan:
        for name, predictor in hits:
            predictor._lmassert_constraints.append(constraint)
            where.setdefault(constraint.name, []).append(name)
    return where


# ---------------------------------------------------------------- activation


class AssertedForward:
    """What `backtrack_handler` returns: a forward function plus the run config to apply to it.

    `assert_transform_module` reads the config and activates the program by class swap; called
    directly, it runs `func` as one asserted run.
    """

    def __init__(self, func: Callable[..., Any], config: RunConfig) -> None:
        self.func = func
        self.config = config

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _active_scope() is not None:  # a nested asserted module joins the outer run
            return self.func(*args, **kwargs)
        return run_asserted(lambda: self.func(*args, **kwargs), self.config)


class _AssertedMixin:
    """Runs `forward` as an asserted run when `_lmassert_config` is set.

    Activation swaps the program's class for a subclass with this mixin (like guarded
    predictors), so every kind of copy (deepcopy, DSPy's attribute-wise fallback, pickle)
    stays activated and bound to itself.
    """

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        parent = super().forward  # type: ignore[misc]
        config = self.__dict__.get("_lmassert_config")
        if config is None or _active_scope() is not None:  # inactive, or nested in an outer run
            return parent(*args, **kwargs)
        return run_asserted(lambda: parent(*args, **kwargs), config)


def _asserted_forward(cls: type) -> Callable[..., Any]:
    """`cls.forward` run as an asserted run, with its own signature (pipelines read it to pass arguments)."""
    original = cls.forward

    @functools.wraps(original)
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        config = self.__dict__.get("_lmassert_config")
        if config is None or _active_scope() is not None:  # inactive, or nested in an outer run
            return original(self, *args, **kwargs)
        return run_asserted(lambda: original(self, *args, **kwargs), config)

    return forward


_asserted_classes: dict[type, type] = {}


def _asserted_class(cls: type) -> type:
    if issubclass(cls, _AssertedMixin):
        return cls
    asserted = _asserted_classes.get(cls)
    if asserted is None:
        asserted = _twin(cls, _AssertedMixin, "Asserted", {"forward": _asserted_forward(cls)})
        _asserted_classes[cls] = asserted
    return asserted


def _base_class(cls: type) -> type:
    for base in cls.__mro__[1:]:
        if base is not _AssertedMixin and not issubclass(base, _AssertedMixin):
            return base
    return cls


def run_asserted(fn: Callable[[], Any], config: RunConfig) -> Any:
    """Run `fn` as one asserted run; its RunRecord goes to `config.log` and any active collectors."""
    global _active_runs
    state = _RunState(config)
    token = _current_scope.set(state)
    with _activity_lock:
        _active_runs += 1
    error: BaseException | None = None
    try:
        _recall_cached_usage()
        usage = _TokenSink(state.add_usage, dspy.settings.get("usage_tracker"), state.add_cached_usage)
        extra: dict[str, Any] = {}
        if config.adopt_forward_predictors is not False:
            extra["callbacks"] = [*list(dspy.settings.get("callbacks") or []), _ADOPT]
        with dspy.context(usage_tracker=usage, **extra, **{RUN_STATE_KEY: state}):
            result = state.run(fn)
        _attach_record(result, state.record)
        return result
    except BaseException as exc:
        error = exc
        if isinstance(exc, Exception):
            try:
                exc.run_record = state.record  # type: ignore[attr-defined]
            except AttributeError:
                state.record.warnings.append(f"could not attach the run record to {type(exc).__name__}")
        raise
    finally:
        _current_scope.reset(token)
        with _activity_lock:
            _active_runs -= 1
        record = state.finish(error)
        config.log.add(record)
        for collector in dspy.settings.get(COLLECTORS_KEY) or ():
            collector.add(record)


def _attach_record(result: Any, record: RunRecord) -> None:
    """Let the prediction carry its record; a result that cannot (a str, a tuple) is noted, not hidden.

    Collectors (`COLLECTORS_KEY`) receive every record whatever the result, so evaluations never
    depend on this.
    """
    try:
        object.__setattr__(result, "_lmassert_record", record)
    except (AttributeError, TypeError):
        message = f"the run's result ({type(result).__name__}) cannot carry its record; use a RunLog or collector"
        record.warnings.append(message)
        logger.debug(message)


def run_record_of(prediction: Any) -> RunRecord | None:
    """The RunRecord of the asserted run that produced `prediction`, if any."""
    return getattr(prediction, "_lmassert_record", None)


_PREDICTOR_NAMES = frozenset(
    name for name, obj in vars(dspy).items() if isinstance(obj, type) and issubclass(obj, dspy.Module)
) - {"Module"}


def _code_objects(code: types.CodeType) -> Iterator[types.CodeType]:
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def builds_predictors(program: dspy.Module) -> bool:
    """Whether the code of `program` (or of a sub-module) names a DSPy module class inside a method,
    e.g. `dspy.Predict(AssessTweet)(...)` in `forward`: such predictors are made at run time."""
    modules = [program, *(m for _, m in program.named_sub_modules())]
    for module in modules:
        for cls in type(module).__mro__:
            if cls.__module__.startswith(("dspy.", "lmassert_magic.")) or cls is object:
                continue
            for attr in vars(cls).values():
                func = getattr(attr, "__func__", attr)
                code = getattr(func, "__code__", None)
                if code is None or func is getattr(cls, "__init__", None):
                    continue
                if any(_PREDICTOR_NAMES.intersection(c.co_names) for c in _code_objects(code)):
                    return True
    return False


def _set_activation(program: dspy.Module, config: RunConfig) -> dspy.Module:
    if config.adopt_forward_predictors is None:
        config.adopt_forward_predictors = builds_predictors(program)
    guard_predictors(program)
    if isinstance(program.__dict__.get("forward"), AssertedForward):
        del program.__dict__["forward"]
    program.__class__ = _asserted_class(type(program))
    program._lmassert_config = config
    return program


def activate_assertions(
    program: dspy.Module,
    max_backtracks: int = 2,
    *,
    constraints: Iterable[Constraint] = (),
    mode: str = ENFORCE,
    strict_suggestions: bool = False,
    budget: str = SHARED,
    retry_temperature: float | None = DEFAULT_RETRY_TEMPERATURE,
    seed: int = 0,
) -> dspy.Module:
    """Activate backtracking on `program` in place and return it (DSPy 2.5's contract).

    `max_backtracks` retries per call, shared by all constraints (`budget="per_constraint"`: per
    constraint and place). `constraints` are declarative checks attached to the predictors their
    targets name; a target that names nothing raises TargetNotFoundError here, before anything is
    changed. Retries sample at `retry_temperature` when the LM's temperature is 0, from rollouts
    derived from `seed`, so a repeated run repeats exactly.
    """
    config = RunConfig(max_backtracks=max_backtracks, mode=mode, strict_suggestions=strict_suggestions,
                       budget=budget, retry_temperature=retry_temperature, seed=seed)
    constraints = list(constraints)
    if constraints:
        attach_constraints(program, constraints)
    previous = program.__dict__.get("_lmassert_config")
    if isinstance(previous, RunConfig):
        config.log = previous.log  # re-activation keeps the log
    return _set_activation(program, config)


def deactivate_assertions(program: dspy.Module) -> dspy.Module:
    """Undo `activate_assertions`: the program runs as plain DSPy again (constraints are kept but idle)."""
    program.__dict__.pop("_lmassert_config", None)
    if isinstance(program.__dict__.get("forward"), AssertedForward):
        del program.__dict__["forward"]
    if isinstance(program, _AssertedMixin):
        program.__class__ = _base_class(type(program))
    return program


def is_activated(program: Any) -> bool:
    return isinstance(getattr(program, "__dict__", {}).get("_lmassert_config"), RunConfig) or isinstance(
        getattr(program, "__dict__", {}).get("forward"), AssertedForward
    )


def assertion_log(program: dspy.Module) -> RunLog:
    """The RunLog an activated program writes each call's record to."""
    config = program.__dict__.get("_lmassert_config")
    if isinstance(config, RunConfig):
        return config.log
    forward = program.__dict__.get("forward")
    if isinstance(forward, AssertedForward):
        return forward.config.log
    raise ValueError(f"{type(program).__name__} is not activated; call activate_assertions(program) first")


def constraints_of(program: dspy.Module) -> list[Constraint]:
    seen: dict[str, Constraint] = {}
    for _, predictor in program.named_predictors():
        for c in getattr(predictor, "_lmassert_constraints", ()):
            seen.setdefault(c.name, c)
    return list(seen.values())


# ---------------------------------------------------------------- LM tallies outside a single run


class LMTally(BaseCallback):
    """Counts LM calls and tokens across many runs and threads (a compile, an evaluation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.uncached = 0
        self.failed = 0
        self.tokens = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def cache_hits(self) -> int:
        """Calls the cache answered: neither sent to the LM (usage reported) nor failed."""
        return max(0, self.calls - self.uncached - self.failed)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self.calls += 1

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        if exception is not None:
            with self._lock:
                self.failed += 1

    def add_usage(self, entry: dict[str, Any], cached: bool = False) -> None:
        prompt, completion, total = _usage_numbers(entry)
        with self._lock:
            if not cached:
                self.uncached += 1
            self.tokens += total
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def add_cached_usage(self, entry: dict[str, Any]) -> None:
        self.add_usage(entry, cached=True)


@contextlib.contextmanager
def tally_lm() -> Iterator[LMTally]:
    """`with tally_lm() as t: ...` counts every LM call and token inside, in any thread DSPy spawns."""
    tally = LMTally()
    callbacks = [*list(dspy.settings.get("callbacks") or []), tally]
    _recall_cached_usage()
    usage = _TokenSink(tally.add_usage, dspy.settings.get("usage_tracker"), tally.add_cached_usage)
    with dspy.context(callbacks=callbacks, usage_tracker=usage):
        yield tally
