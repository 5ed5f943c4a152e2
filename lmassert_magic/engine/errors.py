"""Errors raised by LM Assertions; names match DSPy 2.5 so old `except` clauses keep working."""

from __future__ import annotations

from typing import Any


class AssertionFailed(Exception):
    """A constraint still failed after its backtracking budget was spent."""

    hard: bool = True

    def __init__(
        self,
        constraint: str,
        message: str = "",
        *,
        attempts: int = 1,
        last_outputs: dict[str, Any] | None = None,
        predictor: str | None = None,
    ) -> None:
        self.constraint = constraint
        self.msg = message
        self.attempts = attempts
        self.last_outputs = dict(last_outputs or {})
        self.predictor = predictor
        super().__init__(self._describe())

    def _describe(self) -> str:
        kind = "assertion" if self.hard else "suggestion"
        where = f" on {self.predictor}" if self.predictor else ""
        outputs = ", ".join(f"{k}={_short(v)}" for k, v in self.last_outputs.items()) or "none"
        return (
            f"{kind} {self.constraint!r}{where} failed after {self.attempts} attempt(s): "
            f"{self.msg or '(no message)'} | last outputs: {outputs}"
        )


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
