"""Backtracking at run time: guarded predictors, the per-call run state, and activation.

State lives in a context variable (one `_RunState` per top-level call), so any number of
threads run asserted programs at once with no global lock. A guarded predictor behaves like
a plain `dspy.Predict` when no run is active.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import logging
import threading
import types
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
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
MODES = (ENFORCE, OBSERVE)

COLLECTORS_KEY = "lmassert_collectors"  # dspy.context key: RunLogs that receive every finished run

_current_run: contextvars.ContextVar[_RunState | None] = contextvars.ContextVar("lmassert_run", default=None)

FEEDBACK_DESC = "Instructions to fix your previous answer. Follow them."


@dataclass
class RunConfig:
    max_backtracks: int = 2
    mode: str = ENFORCE
    strict_suggestions: bool = False  # raise DSPySuggestionError instead of continuing (rarely wanted)
    log: RunLog = field(default_factory=RunLog)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.max_backtracks < 0:
            raise ValueError("max_backtracks must be >= 0")


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


# ---------------------------------------------------------------- bookkeeping helpers


@dataclass
class _CallRecord:
    predictor: Any
    name: str
    inputs: dict[str, Any]
    trace_inputs: dict[str, Any]
    prediction: Any


@dataclass
class _RetryPlan:
    feedback: list[str]
    past: dict[str, Any]
    attempt: int


@dataclass
class _Outcome:
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


class _TokenSink(UsageTracker):
    """Adds each uncached call's tokens to `add` and forwards the entry to any tracker the caller had.

    Shared, not copied, when DSPy hands trackers to worker threads: the tally must stay one.
    """

    def __init__(self, add: Callable[[int], None], parent: UsageTracker | None) -> None:
        super().__init__()
        self._add = add
        self._parent = parent

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        total = usage_entry.get("total_tokens")
        if total is None:
            total = (usage_entry.get("prompt_tokens") or 0) + (usage_entry.get("completion_tokens") or 0)
        self._add(int(total or 0))
        if self._parent is not None:
            self._parent.add_usage(lm, usage_entry)

    def __deepcopy__(self, memo: dict) -> _TokenSink:
        return self


def note_lm_call() -> None:
    """Count one LM call against the current run (predictor calls count themselves; judges call this)."""
    state = _current_run.get()
    if state is None:
        state = dspy.settings.get("lmassert_run_state")
    if state is not None:
        state.record.lm_calls += 1


class _Backtrack(BaseException):
    """Unwinds `forward` to re-run it with a retry planned; BaseException so user `except Exception` can't eat it."""

    def __init__(self, target_index: int) -> None:
        super().__init__(target_index)
        self.target_index = target_index


# ---------------------------------------------------------------- the run


class _RunState:
    def __init__(self, config: RunConfig) -> None:
        self.config = config
        self.record = RunRecord()
        self.calls: list[_CallRecord] = []
        self.replay: list[_CallRecord] = []
        self.retry_plan: dict[int, _RetryPlan] = {}
        self.outcomes: dict[tuple[str, Any], _Outcome] = {}
        self.backtracks: Counter[tuple[str, Any]] = Counter()
        self.occurrence: Counter[str] = Counter()
        self.pending: dict[tuple[str, Any], list[Counterexample]] = {}

    # -- driving forward ------------------------------------------------------------------
    def run(self, fn: Callable[[], Any]) -> Any:
        trace = dspy.settings.trace
        mark = len(trace) if trace is not None else 0
        while True:
            self.calls = []
            self.occurrence = Counter()
            try:
                return fn()
            except _Backtrack as bt:
                if trace is not None:
                    del trace[mark:]
                self.replay = self.calls[: bt.target_index]

    def add_tokens(self, n: int) -> None:
        self.record.tokens += n

    # -- predictor calls --------------------------------------------------------------------
    def name_of(self, predictor: Any) -> str:
        return getattr(predictor, "_lmassert_name", None) or _predictor_label(predictor)

    def predictor_call(self, predictor: Any, kwargs: dict[str, Any], call: Callable[..., Any]) -> Any:
        index = len(self.calls)
        name = self.name_of(predictor)
        input_names = predictor.signature.input_fields
        inputs = {k: v for k, v in kwargs.items() if k in input_names}

        if index < len(self.replay) and index not in self.retry_plan:
            previous = self.replay[index]
            if previous.predictor is predictor and previous.inputs == inputs:
                trace = dspy.settings.trace
                if trace is not None:
                    trace.append((predictor, dict(previous.trace_inputs), previous.prediction))
                self.calls.append(previous)
                return previous.prediction
            self.replay = []  # diverged: nothing further can be replayed

        plan = self.retry_plan.get(index)
        self.record.lm_calls += 1
        if plan is None:
            prediction, trace_inputs = call(**kwargs), kwargs
        else:
            prediction, trace_inputs = self._retry(predictor, kwargs, plan, call)

        constraints = getattr(predictor, "_lmassert_constraints", ())
        if constraints:
            prediction, trace_inputs = self._check_declared(
                predictor, name, index, kwargs, prediction, trace_inputs, constraints, call
            )
        self.calls.append(_CallRecord(predictor, name, inputs, dict(trace_inputs), prediction))
        return prediction

    def _retry(
        self, predictor: Any, kwargs: dict[str, Any], plan: _RetryPlan, call: Callable[..., Any]
    ) -> tuple[Any, dict[str, Any]]:
        signature = retry_signature(predictor.signature)
        extra = {f"past_{k}": _sendable(v) for k, v in plan.past.items()}
        extra["feedback"] = _sendable("\n".join(plan.feedback))
        config = dict(kwargs.pop("config", None) or {})
        lm = kwargs.get("lm") or predictor.lm or dspy.settings.lm
        temperature = config.get("temperature", getattr(lm, "kwargs", {}).get("temperature"))
        # A distinct rollout with temperature > 0 bypasses DSPy's cache: a retry never gets the same answer back.
        config["rollout_id"] = plan.attempt
        if not temperature or temperature <= 0:
            config["temperature"] = 0.7
        call_kwargs = {**kwargs, **extra}
        prediction = call(signature=signature, config=config, **call_kwargs)
        return prediction, call_kwargs

    def _check_declared(
        self,
        predictor: Any,
        name: str,
        index: int,
        kwargs: dict[str, Any],
        prediction: Any,
        trace_inputs: dict[str, Any],
        constraints: Sequence[Constraint],
        call: Callable[..., Any],
    ) -> tuple[Any, dict[str, Any]]:
        input_names = predictor.signature.input_fields
        base_inputs = {k: v for k, v in kwargs.items() if k in input_names}
        feedback: list[str] = []
        attempt = self.retry_plan[index].attempt if index in self.retry_plan else 0
        while True:
            outputs = _outputs_of(predictor, prediction)
            fields = {**base_inputs, **outputs}
            failing: list[Constraint] = []
            for constraint in constraints:
                key = (constraint.name, ("step", index))
                passed = self._evaluate(constraint, key, fields)
                if passed:
                    for cx in self.pending.pop(key, []):
                        cx.fixed_outputs = dict(outputs)
                else:
                    failing.append(constraint)
            if not failing or self.config.mode == OBSERVE:
                return prediction, trace_inputs
            retryable = [
                c for c in failing if self.backtracks[(c.name, ("step", index))] < self._budget(c)
            ]
            if not retryable:
                self._give_up(failing, predictor, name, outputs, attempt + 1)
                return prediction, trace_inputs
            for constraint in failing:
                message = self._feedback(constraint, fields)
                if message not in feedback:
                    feedback.append(message)
            for constraint in retryable:
                key = (constraint.name, ("step", index))
                self.backtracks[key] += 1
                cx = Counterexample(
                    constraint.name, constraint.hard, name, dict(base_inputs), dict(outputs),
                    self._feedback(constraint, fields),
                )
                self.record.counterexamples.append(cx)
                self.pending.setdefault(key, []).append(cx)
            attempt += 1
            trace = dspy.settings.trace
            if trace and trace[-1][0] is predictor:
                trace.pop()  # the trace keeps only the accepted attempt of a step
            plan = _RetryPlan(list(feedback), outputs, attempt)
            self.record.lm_calls += 1
            prediction, trace_inputs = self._retry(predictor, dict(kwargs), plan, call)

    def _budget(self, constraint: Constraint) -> int:
        if constraint.max_backtracks is not None:
            return constraint.max_backtracks
        return self.config.max_backtracks

    def _feedback(self, constraint: Constraint, fields: dict[str, Any]) -> str:
        try:
            return constraint.feedback(fields)
        except ConstraintError as exc:
            self._note_error(constraint.name, constraint.hard)
            raise exc

    def _evaluate(self, constraint: Constraint, key: tuple[str, Any], fields: dict[str, Any]) -> bool:
        outcome = self.outcomes.get(key)
        if outcome is None:
            outcome = self.outcomes[key] = _Outcome(constraint.name, constraint.hard)
        try:
            passed = constraint.check(fields)
        except ConstraintError:
            outcome.error = True
            raise
        if outcome.first is None:
            outcome.first = passed
        outcome.last = passed
        return passed

    def _note_error(self, name: str, hard: bool) -> None:
        stats = self.record.constraints.setdefault(name, ConstraintStats(name, hard))
        stats.errors += 1

    def _give_up(
        self, failing: Sequence[Constraint], predictor: Any, name: str, outputs: dict[str, Any], attempts: int
    ) -> None:
        if self.config.mode == OBSERVE:
            return
        hard = [c for c in failing if c.hard]
        if hard:
            c = hard[0]
            raise DSPyAssertionError(
                c.name, self._safe_feedback(c, outputs), attempts=attempts, last_outputs=outputs, predictor=name
            )
        if self.config.strict_suggestions:
            c = failing[0]
            raise DSPySuggestionError(
                c.name, self._safe_feedback(c, outputs), attempts=attempts, last_outputs=outputs, predictor=name
            )
        for c in failing:
            logger.info("suggestion %r on %s still fails after %d attempt(s)", c.name, name, attempts)

    @staticmethod
    def _safe_feedback(constraint: Constraint, outputs: dict[str, Any]) -> str:
        try:
            return constraint.feedback(outputs)
        except Exception:
            return constraint.message if isinstance(constraint.message, str) else constraint.name

    # -- inline Assert / Suggest --------------------------------------------------------------------
    def inline_check(self, passed: bool, message: str, target: Any, hard: bool, name: str) -> bool:
        occurrence = self.occurrence[name]
        self.occurrence[name] += 1
        key = (name, ("inline", occurrence))
        outcome = self.outcomes.get(key)
        if outcome is None:
            outcome = self.outcomes[key] = _Outcome(name, hard)
        if outcome.first is None:
            outcome.first = passed
        outcome.last = passed
        if passed:
            for cx in self.pending.pop(key, []):
                index = getattr(cx, "_target_index", None)
                if index is not None and index < len(self.calls):
                    cx.fixed_outputs = _outputs_of(self.calls[index].predictor, self.calls[index].prediction)
            return True
        if self.config.mode == OBSERVE:
            return False
        index = self._target_index(target)
        call = self.calls[index] if index is not None else None
        outputs = _outputs_of(call.predictor, call.prediction) if call else {}
        if index is not None and self.backtracks[key] < self.config.max_backtracks:
            self.backtracks[key] += 1
            plan = self.retry_plan.get(index)
            feedback = list(plan.feedback) if plan else []
            if message and message not in feedback:
                feedback.append(message)
            elif not feedback:
                feedback.append(f"The output failed the check {name!r}.")
            self.retry_plan[index] = _RetryPlan(feedback, outputs, (plan.attempt if plan else 0) + 1)
            cx = Counterexample(name, hard, call.name, dict(call.inputs), dict(outputs), message)
            cx._target_index = index  # type: ignore[attr-defined]
            self.record.counterexamples.append(cx)
            self.pending.setdefault(key, []).append(cx)
            raise _Backtrack(index)
        attempts = 1 + self.backtracks[key]
        label = call.name if call else None
        if hard:
            raise DSPyAssertionError(name, message, attempts=attempts, last_outputs=outputs, predictor=label)
        if self.config.strict_suggestions:
            raise DSPySuggestionError(name, message, attempts=attempts, last_outputs=outputs, predictor=label)
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

    # -- end of run ---------------------------------------------------------------------------
    def finish(self, error: BaseException | None) -> RunRecord:
        record = self.record
        for (name, _), outcome in self.outcomes.items():
            stats = record.constraints.get(name)
            if stats is None:
                stats = record.constraints[name] = ConstraintStats(name, outcome.hard)
            if outcome.error:  # the condition itself raised, timed out or gave a non-bool
                stats.errors += 1
            if outcome.first is None:
                continue
            stats.checks += 1
            if outcome.first:
                stats.first_try_passes += 1
            elif outcome.last:
                stats.passes_after_backtrack += 1
            else:
                stats.final_failures += 1
        for (name, _), used in self.backtracks.items():
            record.constraints[name].backtracks += used
        if error is not None:
            record.error = f"{type(error).__name__}: {error}"
        return record


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
    if target is predictor:
        return True
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
        state = _current_run.get()
        parent = super().forward  # type: ignore[misc]
        if state is None:
            return parent(**kwargs)
        return state.predictor_call(self, kwargs, parent)


_guard_classes: dict[type, type] = {}


def _guard_class(cls: type) -> type:
    if issubclass(cls, _GuardMixin):
        return cls
    guarded = _guard_classes.get(cls)
    if guarded is None:
        guarded = _twin(cls, _GuardMixin, "Guarded")
        _guard_classes[cls] = guarded
    return guarded


def _twin(cls: type, mixin: type, prefix: str) -> type:
    """A subclass with `mixin` that still calls itself `cls.__name__` (reprs and user code see no change).

    Its qualified name is unique and registered here, so pickle finds it.
    """
    qualname = f"_{prefix}_{cls.__module__.replace('.', '_')}_{cls.__qualname__.replace('.', '_')}"
    while qualname in globals() and globals()[qualname].__mro__[2] is not cls:
        qualname += "_"
    twin = type(cls.__name__, (mixin, cls), {"__module__": __name__, "__qualname__": qualname})
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
        if _current_run.get() is not None:  # a nested asserted module joins the outer run
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
        if config is None or _current_run.get() is not None:  # inactive, or nested in an outer run
            return parent(*args, **kwargs)
        return run_asserted(lambda: parent(*args, **kwargs), config)


_asserted_classes: dict[type, type] = {}


def _asserted_class(cls: type) -> type:
    if issubclass(cls, _AssertedMixin):
        return cls
    asserted = _asserted_classes.get(cls)
    if asserted is None:
        asserted = _twin(cls, _AssertedMixin, "Asserted")
        _asserted_classes[cls] = asserted
    return asserted


def _base_class(cls: type) -> type:
    for base in cls.__mro__[1:]:
        if base is not _AssertedMixin and not issubclass(base, _AssertedMixin):
            return base
    return cls


def run_asserted(fn: Callable[[], Any], config: RunConfig) -> Any:
    """Run `fn` as one asserted run; its RunRecord goes to `config.log` and any active collectors."""
    state = _RunState(config)
    token = _current_run.set(state)
    error: BaseException | None = None
    try:
        usage = _TokenSink(state.add_tokens, dspy.settings.get("usage_tracker"))
        with dspy.context(usage_tracker=usage, lmassert_run_state=state):
            result = state.run(fn)
        _attach_record(result, state.record)
        return result
    except BaseException as exc:
        error = exc
        if isinstance(exc, Exception):
            try:
                exc.run_record = state.record  # type: ignore[attr-defined]
            except AttributeError:
                pass
        raise
    finally:
        _current_run.reset(token)
        record = state.finish(error)
        config.log.add(record)
        for collector in dspy.settings.get(COLLECTORS_KEY) or ():
            collector.add(record)


def _attach_record(result: Any, record: RunRecord) -> None:
    try:
        object.__setattr__(result, "_lmassert_record", record)
    except (AttributeError, TypeError):
        pass


def run_record_of(prediction: Any) -> RunRecord | None:
    """The RunRecord of the asserted run that produced `prediction`, if any."""
    return getattr(prediction, "_lmassert_record", None)


def _set_activation(program: dspy.Module, config: RunConfig) -> dspy.Module:
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
) -> dspy.Module:
    """Activate backtracking on `program` in place and return it (DSPy 2.5's contract).

    `constraints` are declarative checks attached to the predictors their targets name; a target
    that names nothing raises TargetNotFoundError here, before anything is changed.
    """
    config = RunConfig(max_backtracks=max_backtracks, mode=mode, strict_suggestions=strict_suggestions)
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


# ---------------------------------------------------------------- DSPy 2.5 compatible API


def _inline(result: Any, msg: str, target_module: Any, hard: bool, name: str | None) -> bool:
    passed = bool(result)
    label = name or msg or ("assertion" if hard else "suggestion")
    state = _current_run.get()
    if state is None:
        if passed:
            return True
        if hard:
            raise DSPyAssertionError(label, msg)
        logger.warning("Suggest failed (assertions not activated, continuing): %s", msg or label)
        return False
    return state.inline_check(passed, msg, target_module, hard, label)


def Assert(result: Any, msg: str = "", target_module: Any = None, *, name: str | None = None) -> bool:  # noqa: N802
    """Hard constraint: backtrack on failure, raise DSPyAssertionError when the budget is spent."""
    return _inline(result, msg, target_module, True, name)


def Suggest(result: Any, msg: str = "", target_module: Any = None, *, name: str | None = None) -> bool:  # noqa: N802
    """Soft constraint: backtrack on failure, then record it and continue. Never raises when inactive."""
    return _inline(result, msg, target_module, False, name)


def backtrack_handler(
    func: Callable[..., Any], bypass_suggest: bool = True, max_backtracks: int = 2
) -> AssertedForward:
    """DSPy 2.5's handler: wrap a forward function with backtracking."""
    return AssertedForward(func, RunConfig(max_backtracks=max_backtracks, strict_suggestions=not bypass_suggest))


def assert_transform_module(
    program: dspy.Module, assertion_handler: Callable[..., Any] = backtrack_handler, **handler_args: Any
) -> dspy.Module:
    """DSPy 2.5's entry point: `assert_transform_module(program, functools.partial(backtrack_handler, ...))`."""
    if is_activated(program):
        raise RuntimeError(f"{type(program).__name__} already has assertions activated")
    guard_predictors(program)
    original = types.MethodType(type(program).forward, program)  # `program.forward` would make DSPy warn
    wrapped = assertion_handler(original, **handler_args)
    if isinstance(wrapped, AssertedForward) and getattr(wrapped.func, "__func__", None) is type(program).forward:
        _set_activation(program, wrapped.config)
    else:  # a custom handler: keep its wrapper as the instance's forward, inside an asserted run
        program.forward = wrapped if isinstance(wrapped, AssertedForward) else AssertedForward(wrapped, RunConfig())
    program._assert_transformed = True
    return program


def Retry(module: Any) -> Any:  # noqa: N802
    """DSPy 2.5 wrapped predictors in `Retry`; here every activated predictor retries, so it is the identity."""
    return module


# ---------------------------------------------------------------- LM tallies outside a single run


class LMTally(BaseCallback):
    """Counts LM calls and tokens across many runs and threads (a compile, an evaluation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.tokens = 0

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self.calls += 1

    def add_tokens(self, n: int) -> None:
        with self._lock:
            self.tokens += n


@contextlib.contextmanager
def tally_lm() -> Iterator[LMTally]:
    """`with tally_lm() as t: ...` counts every LM call and token inside, in any thread DSPy spawns."""
    tally = LMTally()
    callbacks = [*list(dspy.settings.get("callbacks") or []), tally]
    usage = _TokenSink(tally.add_tokens, dspy.settings.get("usage_tracker"))
    with dspy.context(callbacks=callbacks, usage_tracker=usage):
        yield tally
