"""Activation: turning a program into one whose calls are asserted runs, and its predictors into steps.

Activation swaps classes in place (identity, names and state unchanged): each predictor becomes a
guarded twin that routes its calls through the active run, and the program a twin whose `forward`
runs as one run (`run_asserted`). Predictors created inside `forward` are brought in on their first
call by a DSPy callback. Declared constraints are attached to the predictors their targets name.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import types
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from typing import Any

import dspy
from dspy.dsp.utils.settings import main_thread_config, thread_local_overrides
from dspy.dsp.utils.utils import dotdict
from dspy.utils.callback import BaseCallback

from . import defaults
from .constraints import Constraint
from .context import (
    COLLECTORS_KEY,
    ENFORCE,
    RUN_STATE_KEY,
    RunConfig,
    active_scope,
    current_scope,
    inside_check,
    note_stray_call,
    run_ended,
    run_started,
)
from .records import RunLog, RunRecord
from .run_state import RunState
from .tally import TokenSink, recall_cached_usage
from .targets import resolve_target

logger = logging.getLogger("lmassert_magic")


class _GuardMixin:
    """Routes a predictor's calls (`forward`, and `aforward` behind `acall`) through the active run; a plain
    predictor otherwise."""

    def forward(self, **kwargs: Any) -> Any:
        scope = active_scope() if not inside_check.get() else None
        parent = super().forward  # type: ignore[misc]
        if scope is None:
            note_stray_call()
            return parent(**kwargs)
        return scope.predictor_call(self, kwargs, parent)

    async def aforward(self, **kwargs: Any) -> Any:
        scope = active_scope() if not inside_check.get() else None
        parent = super().aforward  # type: ignore[misc]
        if scope is None:
            note_stray_call()
            return await parent(**kwargs)
        return await scope.apredictor_call(self, kwargs, parent)


_guard_classes: dict[type, type] = {}


class _AdoptPredictors(BaseCallback):
    """Brings a predictor created inside `forward` into the run on its first call (DSPy calls this first).

    Such a predictor is no attribute of the program, so activation never guarded it; without this its
    calls would escape the run (unchecked, and sampled again on every backtrack).
    """

    def on_module_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        if (isinstance(instance, dspy.Predict) and not isinstance(instance, _GuardMixin)
                and not inside_check.get() and active_scope() is not None):
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


# Made at import, not on first use, so that a pickled guarded `dspy.Predict` loads in a fresh process.
_guard_class(dspy.Predict)


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

class AssertedForward:
    """What `backtrack_handler` returns: a forward function plus the run config to apply to it.

    `assert_transform_module` reads the config and activates the program by class swap; called
    directly, it runs `func` as one asserted run.
    """

    def __init__(self, func: Callable[..., Any], config: RunConfig) -> None:
        self.func = func
        self.config = config

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if active_scope() is not None:  # a nested asserted module joins the outer run
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
        if config is None or active_scope() is not None:  # inactive, or nested in an outer run
            return parent(*args, **kwargs)
        return run_asserted(lambda: parent(*args, **kwargs), config)


def _asserted_aforward(cls: type) -> Callable[..., Any]:
    """`cls.aforward` run as an asserted run (what `await program.acall(...)` calls), signature kept."""
    original = cls.aforward

    @functools.wraps(original)
    async def aforward(self: Any, *args: Any, **kwargs: Any) -> Any:
        config = self.__dict__.get("_lmassert_config")
        if config is None or active_scope() is not None:  # inactive, or nested in an outer run
            return await original(self, *args, **kwargs)
        return await arun_asserted(lambda: original(self, *args, **kwargs), config)

    return aforward


def _asserted_forward(cls: type) -> Callable[..., Any]:
    """`cls.forward` run as an asserted run, with its own signature (pipelines read it to pass arguments)."""
    original = cls.forward

    @functools.wraps(original)
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        config = self.__dict__.get("_lmassert_config")
        if config is None or active_scope() is not None:  # inactive, or nested in an outer run
            return original(self, *args, **kwargs)
        return run_asserted(lambda: original(self, *args, **kwargs), config)

    return forward


_asserted_classes: dict[type, type] = {}


def _asserted_class(cls: type) -> type:
    if issubclass(cls, _AssertedMixin):
        return cls
    asserted = _asserted_classes.get(cls)
    if asserted is None:
        namespace = {}  # a program gets only the methods it has (DSPy 3 programs may be async only)
        if callable(getattr(cls, "forward", None)):
            namespace["forward"] = _asserted_forward(cls)
        if callable(getattr(cls, "aforward", None)):
            namespace["aforward"] = _asserted_aforward(cls)
        asserted = _twin(cls, _AssertedMixin, "Asserted", namespace)
        _asserted_classes[cls] = asserted
    return asserted


def _base_class(cls: type) -> type:
    for base in cls.__mro__[1:]:
        if base is not _AssertedMixin and not issubclass(base, _AssertedMixin):
            return base
    return cls


def run_asserted(fn: Callable[[], Any], config: RunConfig) -> Any:
    """Run `fn` as one asserted run; its RunRecord goes to `config.log` and any active collectors."""
    state, scope_token = _open_run(config)
    settings_token = error = None
    try:
        settings_token = _run_settings(state, config)
        result = state.run(fn)
        _attach_record(result, state.record)
        return result
    except BaseException as exc:
        error = exc
        _attach_error_record(exc, state)
        raise
    finally:
        _close_run(state, config, scope_token, settings_token, error)


async def arun_asserted(afn: Callable[[], Awaitable[Any]], config: RunConfig) -> Any:
    """`run_asserted` for async code: `afn()` is awaited, once per pass; the run is this task's alone."""
    state, scope_token = _open_run(config)
    settings_token = error = None
    try:
        settings_token = _run_settings(state, config)
        result = await state.arun(afn)
        _attach_record(result, state.record)
        return result
    except BaseException as exc:
        error = exc
        _attach_error_record(exc, state)
        raise
    finally:
        _close_run(state, config, scope_token, settings_token, error)


# A run's context (usage counting, adopting predictors, the run itself for DSPy's worker threads) is what
# `dspy.context(...)` around it would give, set and reset directly: every call of an activated program opens
# and closes one, and the generator machinery of two nested context managers was a measurable part of it.


def _open_run(config: RunConfig) -> tuple[RunState, contextvars.Token]:
    state = RunState(config)
    token = current_scope.set(state)
    run_started()
    return state, token


def _run_settings(state: RunState, config: RunConfig) -> contextvars.Token:
    """`dspy.context(usage_tracker=..., callbacks=..., RUN_STATE_KEY=state)` entered; reset its token to leave."""
    recall_cached_usage()
    settings = {**main_thread_config, **thread_local_overrides.get()}
    settings["usage_tracker"] = TokenSink(state.add_usage, settings.get("usage_tracker"), state.add_cached_usage)
    if config.adopt_forward_predictors is not False:
        settings["callbacks"] = [*list(settings.get("callbacks") or []), _ADOPT]
    settings[RUN_STATE_KEY] = state
    return thread_local_overrides.set(dotdict(settings))


def _attach_error_record(exc: BaseException, state: RunState) -> None:
    if isinstance(exc, Exception):
        try:
            exc.run_record = state.record  # type: ignore[attr-defined]
        except AttributeError:
            state.record.warnings.append(f"could not attach the run record to {type(exc).__name__}")


def _close_run(state: RunState, config: RunConfig, scope_token: contextvars.Token,
               settings_token: contextvars.Token | None, error: BaseException | None) -> None:
    if settings_token is not None:
        thread_local_overrides.reset(settings_token)
    current_scope.reset(scope_token)
    run_ended()
    record = state.finish(error)
    config.log.add(record)
    overrides = thread_local_overrides.get()  # `dspy.settings.get(COLLECTORS_KEY)`, without raising when unset
    for collector in overrides.get(COLLECTORS_KEY, main_thread_config.get(COLLECTORS_KEY)) or ():
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


def set_activation(program: dspy.Module, config: RunConfig) -> dspy.Module:
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
    max_backtracks: int = defaults.MAX_BACKTRACKS,
    *,
    constraints: Iterable[Constraint] = (),
    mode: str = ENFORCE,
    strict_suggestions: bool = False,
    budget: str = defaults.BUDGET,
    retry_temperature: float | None = defaults.RETRY_TEMPERATURE,
    seed: int = defaults.SEED,
    stop_on_repeat: bool = True,
    batch_judges: bool = defaults.BATCH_JUDGES,
    stop_at_failing_judge: bool = True,
) -> dspy.Module:
    """Activate backtracking on `program` in place and return it (DSPy 2.5's contract).

    `max_backtracks` retries per call, shared by all constraints (`budget="per_constraint"`: per
    constraint and place). `constraints` are declarative checks attached to the predictors their
    targets name; a target that names nothing raises TargetNotFoundError here, before anything is
    changed. Retries sample at `retry_temperature` when the LM's temperature is 0, from rollouts
    derived from `seed`, so a repeated run repeats exactly. A retry that repeats an earlier output of its
    step is told so in its next feedback, and a second repeat stops that step's retries (`stop_on_repeat`;
    `RunState.after_repeat` gives the semantics). `batch_judges` asks a step's LM judges about one output in
    one LM call (`defaults.BATCH_JUDGES` says why it is off by default). `stop_at_failing_judge` asks the
    judges of an attempt one at a time and stops at the first that fails once its retry is paid for.
    """
    config = RunConfig(max_backtracks=max_backtracks, mode=mode, strict_suggestions=strict_suggestions,
                       budget=budget, retry_temperature=retry_temperature, seed=seed,
                       stop_on_repeat=stop_on_repeat, batch_judges=batch_judges,
                       stop_at_failing_judge=stop_at_failing_judge)
    constraints = list(constraints)
    if constraints:
        attach_constraints(program, constraints)
    previous = program.__dict__.get("_lmassert_config")
    if isinstance(previous, RunConfig):
        config.log = previous.log  # re-activation keeps the log
    return set_activation(program, config)


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


def activated_copy(
    program: dspy.Module, constraints: Sequence[Constraint], max_backtracks: int = defaults.MAX_BACKTRACKS,
    **config: Any,
) -> dspy.Module:
    """A deep copy of `program` with the constraints attached and backtracking on (`config`: budget, seed...).

    The original stays as it was: a report keeps the programs it measured.
    """
    return activate_assertions(program.deepcopy(), max_backtracks, constraints=list(constraints), **config)
