"""Constraints as the signals DSPy 3's optimizers take: a reward for `dspy.Refine` / `dspy.BestOfN` and a
feedback metric for `dspy.GEPA`.

Why: DSPy 3 dropped `Assert`/`Suggest`; its optimizers take one reward or metric from outside the program.
These turn the same constraints (from `%%assert` cells or built in Python) into those inputs, so one
definition drives backtracking, Refine and GEPA alike, and GEPA's reflection reads the constraints'
own feedback messages instead of a bare score.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from . import defaults
from .activation import run_record_of
from .constraints import Constraint
from .context import inside_check
from .errors import ConstraintError
from .targets import matches_target

__all__ = [
    "Verdict",
    "check_fields",
    "constraint_reward",
    "constraint_verdicts",
    "describe_constraints",
    "gepa_accepts_objectives",
    "gepa_metric",
    "reward_of",
]

Reward = Callable[[Mapping[str, Any], Any], float]


@dataclass(frozen=True)
class Verdict:
    """One constraint on one example: passed or not, and the feedback its check gave when it failed."""

    name: str
    hard: bool
    passed: bool
    message: str = ""


def _outputs(prediction: Any) -> dict[str, Any]:
    try:
        return {k: v for k, v in prediction.items() if not k.startswith("_")}
    except AttributeError:
        return {}


def _message(constraint: Constraint, fields: Mapping[str, Any]) -> str:
    """The constraint's feedback on these fields; its static text if the message itself cannot be built."""
    try:
        return constraint.feedback(fields)
    except ConstraintError:
        if isinstance(constraint.message, str) and constraint.message:
            return constraint.message
        return f"The output failed the constraint {constraint.name!r}."


def _check(constraint: Constraint, fields: Mapping[str, Any]) -> Verdict:
    """A broken check (it raised, timed out, lacks a field) is a failure that says why, never a crash:
    an optimizer must keep going, and the broken check must not look passed."""
    token = inside_check.set(True)  # an LM judge inside the check is no step of an active run
    try:
        passed = constraint.check(fields)
        message = "" if passed else _message(constraint, fields)
    except ConstraintError as exc:
        passed, message = False, f"the check could not run: {exc.problem}"
    finally:
        inside_check.reset(token)
    return Verdict(constraint.name, constraint.hard, passed, message)


def check_fields(constraints: Iterable[Constraint], fields: Mapping[str, Any]) -> list[Verdict]:
    """Every constraint checked on one step's fields (inputs and outputs)."""
    return [_check(c, fields) for c in constraints]


def reward_of(verdicts: Sequence[Verdict]) -> float:
    """The share of constraints passed; 0 when a hard one failed (a hard constraint is a gate); 1 with none."""
    if not verdicts:
        return 1.0
    if any(v.hard and not v.passed for v in verdicts):
        return 0.0
    return sum(v.passed for v in verdicts) / len(verdicts)


def describe_constraints(constraints: Iterable[Constraint]) -> str:
    """The constraints in words: what `dspy.Refine` shows its advice step as the reward's "code"."""
    lines = ["reward = share of these checks passed; 0 if a hard one fails:"]
    for c in constraints:
        message = c.message if isinstance(c.message, str) else "(a message built from the output)"
        lines.append(f"- {c.name} ({c.kind}): on failure the feedback is: {message}")
    return "\n".join(lines)


def constraint_reward(constraints: Iterable[Constraint]) -> Reward:
    """`reward(args, prediction)` for `dspy.Refine` / `dspy.BestOfN`: the constraints checked on the module's
    inputs and outputs; the share passed, 0 when a hard one fails.

    The reward carries `.constraints`, and its docstring describes them (Refine shows it to its advice step).
    """
    constraints = list(constraints)

    def reward(args: Mapping[str, Any], prediction: Any) -> float:
        return reward_of(check_fields(constraints, {**dict(args), **_outputs(prediction)}))

    reward.constraints = constraints  # type: ignore[attr-defined]
    reward.__doc__ = describe_constraints(constraints)
    return reward


# ---------------------------------------------------------------- GEPA


@functools.lru_cache(maxsize=1)
def gepa_accepts_objectives() -> bool:
    """Whether the installed DSPy/GEPA take several scores per example (`objective_scores`)."""
    try:
        import gepa
        from dspy.teleprompt.gepa.gepa_utils import ScoreWithFeedback
    except ImportError:
        return False
    return ("objective_scores" in getattr(ScoreWithFeedback, "__annotations__", {})
            and "frontier_type" in inspect.signature(gepa.optimize).parameters)


def _entry_fields(entry: Any) -> dict[str, Any]:
    _, inputs, outputs = entry
    return {**dict(inputs), **_outputs(outputs)}


def _entries_for(constraint: Constraint, trace: Sequence[Any]) -> list[dict[str, Any]]:
    """Fields of the trace's calls of the predictors a constraint is on (attached, or named by its target)."""
    if constraint.target is None:
        return [_entry_fields(trace[-1])] if trace else []
    found = []
    for entry in trace:
        predictor = entry[0]
        attached = constraint in getattr(predictor, "_lmassert_constraints", ())
        name = getattr(predictor, "_lmassert_name", "") or ""
        if attached or matches_target(predictor, name, constraint.target):
            found.append(_entry_fields(entry))
    return found


def _program_fields(gold: Any, prediction: Any) -> dict[str, Any]:
    try:
        inputs = dict(gold.inputs())
    except (AttributeError, ValueError):
        inputs = {}
    return {**inputs, **_outputs(prediction)}


def _places(constraint: Constraint, gold: Any, prediction: Any, trace: Sequence[Any] | None) -> list[dict[str, Any]]:
    if trace:
        return _entries_for(constraint, trace)
    fields = _program_fields(gold, prediction)
    return [fields] if constraint.applies_to(fields) else []


def constraint_verdicts(
    constraints: Iterable[Constraint], gold: Any, prediction: Any, trace: Sequence[Any] | None = None,
) -> list[Verdict]:
    """Each constraint's verdict on one example; one not checked anywhere is left out.

    From the prediction's run record when the program is activated (the engine's verdicts on the returned
    output, so nothing is checked twice); else checked on each traced call of the predictors it is on
    (passed only if every call passes); else on the program's outputs and the example's inputs.
    Messages are built from the fields of the failing call.
    """
    constraints = list(constraints)
    record = run_record_of(prediction)
    if record is None:
        verdicts = []
        for c in constraints:
            checked = [_check(c, fields) for fields in _places(c, gold, prediction, trace)]
            if checked:
                failed = [v for v in checked if not v.passed]
                verdicts.append(failed[-1] if failed else checked[-1])
        return verdicts
    by_name = {c.name: c for c in constraints}
    verdicts = []
    for name, stats in record.constraints.items():
        passed = record.passed(name)
        if passed is None:
            continue
        message = ""
        constraint = by_name.get(name)
        if not passed and constraint is not None:
            places = _places(constraint, gold, prediction, trace)
            message = _message(constraint, places[-1]) if places else _message(constraint, {})
        elif not passed:  # an inline Assert/Suggest: its message is in the record when it was retried
            message = next((c.feedback for c in reversed(record.counterexamples) if c.constraint == name),
                           f"The output failed the check {name!r}.")
        verdicts.append(Verdict(name, stats.hard, bool(passed), message))
    return verdicts


def _call_metric(metric: Callable[..., Any], gold: Any, prediction: Any, trace: Any) -> float:
    return float(metric(gold, prediction, trace) if trace is not None else metric(gold, prediction))


def _score(verdicts: Sequence[Verdict], base: float | None, constraint_weight: float) -> float:
    if any(v.hard and not v.passed for v in verdicts):
        return 0.0
    reward = reward_of(verdicts)
    return reward if base is None else (1 - constraint_weight) * base + constraint_weight * reward


def _feedback(verdicts: Sequence[Verdict], base: float | None, metric_name: str, error: str | None) -> str:
    lines = []
    if error:
        lines.append(f"The program raised an error: {error}")
    if base is not None:
        lines.append(f"The task metric {metric_name} scored {base:g}.")
    failed = [v for v in verdicts if not v.passed]
    if failed:
        lines.append("The output failed these constraints; fix each:")
        lines.extend(f"- {v.name} ({'hard' if v.hard else 'soft'}): {v.message}" for v in failed)
    elif verdicts:
        lines.append(f"The output passed all {len(verdicts)} constraints.")
    return "\n".join(lines) or "No constraint was checked on this output."


def gepa_metric(
    constraints: Iterable[Constraint] = (),
    metric: Callable[..., Any] | None = None,
    *,
    constraint_weight: float = defaults.GEPA_CONSTRAINT_WEIGHT,
    objectives: bool | None = None,
) -> Callable[..., Any]:
    """A `dspy.GEPA` metric: a score, and feedback made of the messages of the constraints that failed.

    Score: the reward (share of constraints passed, 0 when a hard one fails); with `metric`, the mean of the
    metric and the reward weighted by `constraint_weight`, still 0 on a hard failure. Why not the metric
    minus a penalty, as bootstrapping scores demos: a small model often scores 0 on the metric, and GEPA
    would then see no difference between a candidate that fixes the constraints and one that does not.
    Feedback names exactly the constraints that failed, each with its message. `objective_scores` hold one
    0/1 score per checked constraint (and the metric) when the installed GEPA takes several objectives
    (`objectives=None`: find out). The feedback is the program's, whichever predictor GEPA asks about.
    """
    constraints = list(constraints)
    metric_name = getattr(metric, "__name__", "metric") if metric is not None else ""
    metric_key = "metric" if "metric" not in {c.name for c in constraints} else "metric_score"

    def constraint_feedback(gold: Any, pred: Any, trace: Any = None, pred_name: str | None = None,
                            pred_trace: Any = None) -> dspy.Prediction:
        verdicts = constraint_verdicts(constraints, gold, pred, trace)
        base = _call_metric(metric, gold, pred, trace) if metric is not None else None
        record = run_record_of(pred)
        error = record.error if record is not None else None
        score = 0.0 if error else _score(verdicts, base, constraint_weight)
        out = dspy.Prediction(score=score, feedback=_feedback(verdicts, base, metric_name, error))
        if objectives if objectives is not None else gepa_accepts_objectives():
            scores = {v.name: float(v.passed) for v in verdicts}
            if base is not None:
                scores[metric_key] = base
            out["objective_scores"] = scores
        return out

    constraint_feedback.__name__ = f"constraint_feedback_{metric_name}" if metric_name else "constraint_feedback"
    return constraint_feedback
