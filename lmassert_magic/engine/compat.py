"""DSPy 2.5.43's assertion API on DSPy 3, backed by this package's engine.

Every public name of DSPy 2.5.43's `dspy/primitives/assertions.py` and `dspy/predict/retry.py`
is here with the same arguments: `Assert`, `Suggest` (and their base class `Constraint`, also
exported as `Constraint25` so it never clashes with `lmassert_magic.Constraint`),
`DSPyAssertionError`, `DSPySuggestionError`, `noop_handler`, `bypass_suggest_handler`,
`bypass_assert_handler`, `assert_no_except_handler`, `backtrack_handler`,
`handle_assert_forward`, `default_assertion_handler`, `assert_transform_module` and `Retry`.
`lmassert_magic.compat.install()` makes them importable from `dspy` itself (zero-edit mode).

What is the same as 2.5.43:

* `backtrack_handler(func, bypass_suggest=True, max_backtracks=2)`: one budget of
  `max_backtracks` retries per call, shared by every constraint; the retried step gets `feedback`
  (the distinct messages given to it in this call, one per line) and `past_<field>` inputs; when
  the budget is spent a failing `Suggest` lets the output through (with `bypass_suggest=False` the
  call returns None instead, as 2.5 did) and a failing `Assert` raises `DSPyAssertionError`.
* The non-backtracking handlers (`noop_handler`, `bypass_suggest_handler`, `bypass_assert_handler`,
  `assert_no_except_handler`) set and honour `dspy.settings` `bypass_assert` / `bypass_suggest`
  exactly as 2.5 did: under them a failing `Suggest` raises `DSPySuggestionError` unless bypassed.
* `assert_transform_module` maps every predictor to `Retry` (none mapped yet), keeps a mapping
  already made, and refuses a program with some predictors mapped and some not.
* `Retry(module)` has `new_signature` (`past_<field>` and `feedback` inputs added), and
  `forward(past_outputs=..., feedback=..., **inputs)` calls the LM with it.
* `Assert`/`Suggest` insist on a `bool` (a numpy bool too) and raise ValueError otherwise; errors
  are `AssertionError`s with `id`, `msg`, `target_module`, `state` and `is_metric`.

Where this package deliberately differs, and why:

* **No global lock.** 2.5's `backtrack_handler` held `dspy.settings.lock` for the whole call, which
  serialised every parallel evaluation; here the run's state lives in context variables.
* **Upstream steps are not re-sampled.** 2.5 re-ran `forward` from the top, so steps before the
  retried one were sampled again whenever the cache missed. Here they replay their accepted
  outputs; the target is retried and the steps after it run again once.
* **Constraints are re-checked on the final output.** A retry made for one constraint re-checks
  the others on the new output, and a verdict counts on the output the program returns.
* **`target_module` always means something.** In 2.5 a list of modules (MultiHopQA's
  `target_module=self.generate_query`) or a Signature class never matched the trace, so the call
  was re-run from the top with no feedback anywhere (only an error in the log). Here a module
  matches the predictors inside it, a list matches its members, a Signature class matches
  predictors with it, and a target that matches nothing raises `TargetNotFoundError`.
* **A `Suggest` with no handler at all logs and continues** (2.5 raised `DSPySuggestionError`,
  as if assertions were active when they were not); an `Assert` raises, as in 2.5.
* **Identity and state of errors.** `id` is the constraint's name (`name=...`, else its call site
  such as `Suggest@program.py:42`) instead of a fresh uuid, so one check keeps one id across
  calls; after backtracking, `state` holds the attempts, last outputs and predictor name (under
  a non-backtracking handler it is the trace, as in 2.5).
* **`Retry` is a predictor of its own** (a copy of the wrapped predictor's signature, demos, LM
  and config, like the `Predict` 2.5's `Retry` was): the engine drives the retries, so
  `dspy.settings.backtrack_to` does not exist; the wrapped module's own `forward` is not called.
* **`handle_assert_forward`** applies a `bypass_assert` argument of `forward` to that call only
  (2.5 changed the process-wide settings).
* **`is_metric`** failures are added to `_assert_failures` / `_suggest_failures` of the running
  program when it has those attributes (2.5's `Evaluate` did that from `dspy.settings`, which
  DSPy 3 no longer reads).

Extensions (keyword-only, so 2.5 calls are unaffected): `Assert`/`Suggest` take `name=` and
`max_backtracks=` (a cap on this constraint's share of the budget). `Assert(...)`/`Suggest(...)`
evaluate to the outcome (False when a soft failure went through) instead of the constraint object
2.5 returned and no program used.
"""

from __future__ import annotations

import copy
import functools
import inspect
import logging
import os
import sys
import threading
import types
import uuid
from collections.abc import Callable
from typing import Any

import dspy
from dspy.signatures.signature import ensure_signature

from . import activation, defaults
from .activation import AssertedForward
from .context import ENFORCE, RunConfig, active_scope
from .errors import DSPyAssertionError, DSPySuggestionError

logger = logging.getLogger("lmassert_magic")

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
    "noop_handler",
]

#: dspy.context key set by the non-backtracking handlers: under them a failure raises as in 2.5.
HANDLER_KEY = "lmassert_compat_handler"

_metric_lock = threading.Lock()


def _call_site(hard: bool, depth: int = 2) -> str:
    """`Suggest@file.py:42`: an inline constraint's name when it has none (its message may quote the output)."""
    kind = "Assert" if hard else "Suggest"
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return kind
    filename = os.path.basename(frame.f_code.co_filename) or frame.f_code.co_filename
    return f"{kind}@{filename}:{frame.f_lineno}"


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def _count_metric_failure(hard: bool) -> None:
    """2.5's `is_metric`: add one failure to the running program's `_assert_failures`/`_suggest_failures`."""
    attribute = "_assert_failures" if hard else "_suggest_failures"
    for module in reversed(list(dspy.settings.get("caller_modules") or [])):
        if isinstance(getattr(module, attribute, None), int):
            with _metric_lock:
                setattr(module, attribute, getattr(module, attribute) + 1)
            return


# ---------------------------------------------------------------- constraints


class Constraint:
    """DSPy 2.5's constraint base class: the check runs when the object is created.

    `Constraint(result, msg="", target_module=None, is_metric=False)`; `Assert` and `Suggest` are
    its subclasses. Exported as `Constraint25` too (`lmassert_magic.Constraint` is this package's
    declarative constraint, a different thing).
    """

    hard: bool = True

    def __init__(
        self,
        result: Any,
        msg: str = "",
        target_module: Any = None,
        is_metric: bool = False,
        *,
        name: str | None = None,
        max_backtracks: int | None = None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.result = result
        self.msg = msg
        self.target_module = target_module
        self.is_metric = is_metric
        self.name = name or _call_site(self.hard)
        self.max_backtracks = max_backtracks
        self.passed: bool | None = None
        self.__call__()

    def __call__(self) -> bool:
        self.passed = _enforce(self)
        return self.passed

    def __bool__(self) -> bool:
        return bool(self.passed)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, passed={self.passed})"


Constraint25 = Constraint


class _Checked(Constraint):
    """`Assert(...)` / `Suggest(...)` evaluate to the outcome, a bool (2.5 gave the object, never used).

    Subclasses written for 2.5 (with their own `__call__`) still get an object, as in 2.5.
    """

    def __new__(
        cls,
        result: Any = None,
        msg: str = "",
        target_module: Any = None,
        is_metric: bool = False,
        *,
        name: str | None = None,
        max_backtracks: int | None = None,
    ) -> Any:
        if cls not in (Assert, Suggest):
            return super().__new__(cls)
        check = object.__new__(cls)
        check.__init__(result, msg, target_module, is_metric, name=name or _call_site(cls.hard),
                       max_backtracks=max_backtracks)
        return check.passed


class Assert(_Checked):
    """Hard constraint (DSPy 2.5's `dspy.Assert`): backtrack on failure, raise DSPyAssertionError when spent.

    `Assert(result, msg="", target_module=None, is_metric=False, *, name=None, max_backtracks=None)`
    returns True (passed, or bypassed). Named `name`, else by its call site (`Assert@file.py:42`),
    never by its message; `max_backtracks` caps its share of the call's retry budget.
    """

    hard = True


class Suggest(_Checked):
    """Soft constraint (DSPy 2.5's `dspy.Suggest`): backtrack on failure, then let the output through.

    Same arguments as `Assert`; returns False when a failure went through. With no handler at all a
    failure is logged and the program goes on.
    """

    hard = False


def _enforce(c: Constraint) -> bool:
    hard = c.hard
    if not _is_bool(c.result):
        what = "Assertion" if hard else "Suggestion"
        raise ValueError(f"{what} function should always return [bool]")
    passed = bool(c.result)
    if passed:
        scope = active_scope()
        if scope is not None:
            scope.inline_check(True, c.msg, c.target_module, hard, c.name, c.max_backtracks)
        return True
    if dspy.settings.get("bypass_assert" if hard else "bypass_suggest", False):
        if hard:
            logger.error("AssertionError: %s", c.msg)
        else:
            logger.info("SuggestionFailed: %s", c.msg)
        return True
    scope = active_scope()
    if scope is not None:
        if c.is_metric and scope.root.config.mode == ENFORCE:
            _count_metric_failure(hard)
        return scope.inline_check(False, c.msg, c.target_module, hard, c.name, c.max_backtracks)
    if hard or dspy.settings.get(HANDLER_KEY, False):  # 2.5: raise (under a handler, a Suggest too)
        error = DSPyAssertionError if hard else DSPySuggestionError
        if hard:
            logger.error("AssertionError: %s", c.msg)
        else:
            logger.info("SuggestionFailed: %s", c.msg)
        raise error(c.name, c.msg, c.target_module, state=dspy.settings.trace, is_metric=c.is_metric)
    logger.warning("Suggest failed (assertions not activated, continuing): %s", c.msg or c.name)
    return False


# ---------------------------------------------------------------- handlers


def _handler_context(**flags: bool) -> Any:
    return dspy.context(**{HANDLER_KEY: True}, **flags)


def noop_handler(func: Callable[..., Any]) -> Callable[..., Any]:
    """Handler to bypass assertions and suggestions: both become no-ops."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _handler_context(bypass_assert=True, bypass_suggest=True):
            return func(*args, **kwargs)

    return wrapper


def bypass_suggest_handler(func: Callable[..., Any]) -> Callable[..., Any]:
    """Handler to bypass suggestions only: a failing suggestion is logged, a failing assertion raises."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _handler_context(bypass_suggest=True, bypass_assert=False):
            return func(*args, **kwargs)

    return wrapper


def bypass_assert_handler(func: Callable[..., Any]) -> Callable[..., Any]:
    """Handler to bypass assertions only: a failing assertion is logged, a failing suggestion raises."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with _handler_context(bypass_assert=True):
            return func(*args, **kwargs)

    return wrapper


def assert_no_except_handler(func: Callable[..., Any]) -> Callable[..., Any]:
    """Handler that returns None instead of raising DSPyAssertionError."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with _handler_context():
                return func(*args, **kwargs)
        except DSPyAssertionError:
            return None

    return wrapper


class Backtracking(AssertedForward):
    """What `backtrack_handler` returns: `func` run as one asserted run of the engine.

    `assert_transform_module` turns it into an activation of the program (copies stay activated);
    called directly, it runs `func` once with backtracking. With `bypass_suggest=False`, a
    suggestion still failing when the budget is spent makes the call return None (2.5).
    """

    def __init__(self, func: Callable[..., Any], config: RunConfig, none_on_suggestion: bool = False) -> None:
        super().__init__(func, config)
        self.none_on_suggestion = none_on_suggestion

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.none_on_suggestion:
            return super().__call__(*args, **kwargs)
        nested = active_scope() is not None
        try:
            return super().__call__(*args, **kwargs)
        except DSPySuggestionError:
            if nested:  # the outer run decides
                raise
            return None


def backtrack_handler(
    func: Callable[..., Any], bypass_suggest: bool = True, max_backtracks: int = defaults.MAX_BACKTRACKS
) -> Backtracking:
    """Handler for backtracking suggestions and assertions (DSPy 2.5's default handler).

    Re-runs the failing step (the latest predictor call, or `target_module`'s) with `feedback`
    and `past_<field>` inputs; `max_backtracks` retries per call, shared by every constraint.
    """
    config = RunConfig(max_backtracks=max_backtracks, strict_suggestions=not bypass_suggest)
    return Backtracking(func, config, none_on_suggestion=not bypass_suggest)


def handle_assert_forward(assertion_handler: Callable[..., Any], **handler_args: Any) -> Callable[..., Any]:
    """A `forward(self, *args, **kwargs)` that runs `self._forward` through `assertion_handler`.

    A `bypass_assert` argument of `self._forward` applies to that call (2.5 set it process-wide).
    """

    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        args_to_vals = inspect.getcallargs(self._forward, *args, **kwargs)
        wrapped_forward = assertion_handler(self._forward, **handler_args)
        if "bypass_assert" in args_to_vals:
            with dspy.context(bypass_assert=args_to_vals["bypass_assert"]):
                return wrapped_forward(*args, **kwargs)
        return wrapped_forward(*args, **kwargs)

    return forward


default_assertion_handler = backtrack_handler


def _has_forward(module: Any) -> bool:
    # Looked up without `module.forward`, which makes DSPy 3 warn about calling forward directly.
    return callable(module.__dict__.get("forward") if hasattr(module, "__dict__") else None) or callable(
        getattr(type(module), "forward", None)
    )


def _map_retry(module: Any) -> None:
    if isinstance(module, dspy.Predict):
        return  # a bare predictor is its own single step
    named = module.named_predictors()
    wrapped = [isinstance(p, Retry) for _, p in named]
    if all(wrapped):
        return  # the Retry mapping was applied outside
    if any(wrapped):
        raise RuntimeError("Module has mixed predictors, can't apply Retry mapping.")
    module.map_named_predictors(Retry)


def assert_transform_module(
    module: Any, assertion_handler: Callable[..., Any] = default_assertion_handler, **handler_args: Any
) -> Any:
    """Transform a module to handle assertions (DSPy 2.5's entry point); returns the module.

    With `backtrack_handler` (or a `functools.partial` of it) the program is activated by the
    engine; any other handler wraps `forward` as 2.5 did (`module._forward` keeps the original).
    """
    if not _has_forward(module):
        raise ValueError("Module must have a forward method to have assertions handled.")
    if module.__dict__.get("_forward") is not None or activation.is_activated(module):
        logger.info("Module %s already has a _forward method or is activated; transforming again.",
                    type(module).__name__)
    _undo_transform(module)
    _map_retry(module)
    activation.guard_predictors(module)
    original = types.MethodType(type(module).forward, module)
    wrapped = assertion_handler(original, **handler_args)
    if isinstance(wrapped, Backtracking) and not wrapped.none_on_suggestion and wrapped.func == original:
        activation.set_activation(module, wrapped.config)
    else:
        module._forward = original
        module.forward = types.MethodType(handle_assert_forward(assertion_handler, **handler_args), module)
    module._assert_transformed = True
    return module


def _undo_transform(module: Any) -> None:
    """Forget an earlier transform, so transforming twice never stacks two handlers."""
    module.__dict__.pop("_forward", None)
    if isinstance(module.__dict__.get("forward"), (types.MethodType, AssertedForward)):
        del module.__dict__["forward"]
    activation.deactivate_assertions(module)


def activate_assertions(self: Any, handler: Callable[..., Any] = backtrack_handler, **handler_args: Any) -> Any:
    """DSPy 2.5's `Module.activate_assertions(handler=backtrack_handler, **handler_args)`; returns the module."""
    assert_transform_module(self, handler, **handler_args)
    return self


# ---------------------------------------------------------------- Retry


def _single_predictor(module: Any) -> dspy.Predict:
    if isinstance(module, dspy.Predict):
        return module
    inner = module.predictors() if isinstance(module, dspy.Module) else []
    if len(inner) != 1:
        raise TypeError(
            f"Retry needs a predictor or a module with exactly one predictor; {type(module).__name__} has "
            f"{len(inner)}"
        )
    return inner[0]


def _past_desc(name: str, field: Any) -> str:
    extra = field.json_schema_extra or {}
    prefix = str(extra.get("prefix") or name.replace("_", " ").title())
    return f"past {prefix.split(':')[0]} with errors"


class Retry(dspy.Predict):
    """DSPy 2.5's `Retry(module)`: the predictor, able to take `past_<field>` and `feedback` inputs.

    `new_signature` is the signature with a `past_<field>` input per output field and a
    `feedback` input; `forward(past_outputs={...}, feedback="...", **inputs)` calls the LM with
    it, and without them `forward(**inputs)` is the plain prediction. `program.map_named_predictors(Retry)`
    and `assert_transform_module` wrap every predictor; the engine retries through it.

    Unlike 2.5, it is a predictor of its own: a copy of the wrapped predictor's signature, demos,
    LM and config (a `ChainOfThought` gives its inner predictor, reasoning field included), so
    optimizers, `save`/`load` and tracing see it as the step; the wrapped module's `forward` is
    kept as `original_forward` but not called.
    """

    def __init__(self, module: Any) -> None:
        base = _single_predictor(module)
        super().__init__(base.signature, callbacks=list(getattr(base, "callbacks", None) or []), **dict(base.config))
        self.module = module
        self.original_signature = base.signature
        self.original_forward = types.MethodType(type(module).forward, module)  # no DSPy warning
        self.new_signature = self._create_new_signature(self.original_signature)
        self._signature_seen = self.signature
        self.lm = base.lm
        self.demos = list(base.demos)
        self.traces = list(getattr(base, "traces", []))
        self.train = list(getattr(base, "train", []))
        self.fields = copy.deepcopy(getattr(base, "fields", None) or {})
        self._lmassert_wraps = module  # a target naming the wrapped predictor still finds this step
        if getattr(base, "_lmassert_constraints", None):  # declared constraints stay on the step
            self._lmassert_constraints = list(base._lmassert_constraints)

    def _create_new_signature(self, signature: Any) -> Any:
        """`signature` plus a `past_<field>` input for each output field and a `feedback` input."""
        for key, value in signature.output_fields.items():
            if f"past_{key}" in signature.input_fields:
                continue
            signature = signature.append(
                f"past_{key}", dspy.InputField(desc=_past_desc(key, value)),
                type_=value.annotation if value.annotation is not None else str,
            )
        if "feedback" not in signature.input_fields:
            signature = signature.append("feedback", dspy.InputField(desc="Some instructions you must satisfy"),
                                         type_=str)
        return signature

    def _refresh(self) -> None:
        # An optimizer or load_state may have replaced the signature (new instructions, say).
        if self.__dict__.get("_signature_seen") is not self.signature:
            self.original_signature = self.signature
            self.new_signature = self._create_new_signature(self.signature)
            self._signature_seen = self.signature

    def forward(self, *, past_outputs: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        new_signature = kwargs.pop("new_signature", None)
        if new_signature is not None:  # 2.5's TypedPredictor passed its own signature this way
            self.original_signature = ensure_signature(new_signature)
            self.new_signature = self._create_new_signature(self.original_signature)
            self._signature_seen = self.signature
        else:
            self._refresh()
        for key, value in (past_outputs or {}).items():
            past_key = f"past_{key}"
            if past_key in self.new_signature.input_fields:
                kwargs[past_key] = value
        extra = set(self.new_signature.input_fields) - set(self.original_signature.input_fields)
        if extra & set(kwargs):
            kwargs["signature"] = self.new_signature
        elif new_signature is not None:
            kwargs["signature"] = self.original_signature
        return super().forward(**kwargs)
