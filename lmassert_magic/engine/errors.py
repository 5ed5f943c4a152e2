"""Errors raised by LM Assertions; names match DSPy 2.5 so old `except` clauses keep working."""

from __future__ import annotations

from typing import Any


class AssertionFailed(AssertionError):
    """A constraint still failed after its backtracking budget was spent.

    As in DSPy 2.5 it is an `AssertionError` and carries `id` (the constraint's name), `msg` (the
    feedback the LM was given), `target_module` (the predictor retried) and `state` (attempts,
    last outputs, predictor name), so `except AssertionError` and 2.5 handlers keep working.
    """

    hard: bool = True

    def __init__(
        self,
        id: str,  # noqa: A002 - DSPy 2.5's parameter names, so keyword calls keep working
        msg: str = "",
        target_module: Any = None,
        state: Any = None,
        is_metric: bool = False,
        *,
        attempts: int = 1,
        last_outputs: dict[str, Any] | None = None,
        predictor: str | None = None,
    ) -> None:
        self.constraint = id
        self.id = id
        self.msg = msg
        self.target_module = target_module
        self.is_metric = is_metric
        self.attempts = attempts
        self.last_outputs = dict(last_outputs or {})
        self.predictor = predictor
        self.state = state if state is not None else {
            "attempts": attempts, "last_outputs": dict(self.last_outputs), "predictor": predictor,
        }
        super().__init__(self._describe())

    def __reduce__(self) -> tuple:
        return (_rebuild, (type(self), self.constraint, self.msg, self.attempts, self.last_outputs, self.predictor))

    def _describe(self) -> str:
        kind = "assertion" if self.hard else "suggestion"
        where = f" on {self.predictor}" if self.predictor else ""
        outputs = ", ".join(f"{k}={_short(v)}" for k, v in self.last_outputs.items()) or "none"
        return (
            f"{kind} {self.constraint!r}{where} failed after {self.attempts} attempt(s); "
            f"feedback given: {self.msg or '(no message)'} | last outputs: {outputs}"
        )


def _rebuild(cls: type, constraint: str, msg: str, attempts: int, outputs: dict, predictor: str | None) -> Any:
    return cls(constraint, msg, attempts=attempts, last_outputs=outputs, predictor=predictor)


class DSPyAssertionError(AssertionFailed):
    """A hard `Assert` failed after backtracking."""

    hard = True


class DSPySuggestionError(AssertionFailed):
    """A soft `Suggest` failed; only raised when a caller asks for strict suggestions."""

    hard = False


class ConstraintError(Exception):
    """The constraint's own code raised, timed out or returned a non-bool.

    Kept distinct from AssertionFailed: the program is fine, the check is broken.
    """

    def __init__(self, constraint: str, problem: str, cause: BaseException | None = None) -> None:
        self.constraint = constraint
        self.problem = problem
        self.cause = cause
        super().__init__(f"constraint {constraint!r} is broken: {problem}")


class TargetNotFoundError(ValueError):
    """A constraint's target matches no predictor: an error, never a silent no-op."""


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
