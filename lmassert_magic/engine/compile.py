"""Assertion-aware compilation on top of DSPy's own optimizers.

The teacher runs with backtracking (assertion-driven bootstrapping); retried steps land in
the trace with their `feedback` and `past_<field>` inputs, so BootstrapFewShot keeps them as
demos that show what a fix looks like (counterexample bootstrapping).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy

from .constraints import Constraint
from .records import Counterexample, RunLog
from .runtime import (
    COLLECTORS_KEY,
    ENFORCE,
    OBSERVE,
    activate_assertions,
    deactivate_assertions,
    run_record_of,
    tally_lm,
)

Metric = Callable[..., Any]
OPTIMIZERS = ("bootstrap", "random_search")


def prepare_program(
    program: dspy.Module,
    constraints: Iterable[Constraint] = (),
    *,
    mode: str = ENFORCE,
    max_backtracks: int = 2,
) -> dspy.Module:
    """A fresh copy of `program` with the constraints attached and assertions in `mode`."""
    copy = program.deepcopy()
    deactivate_assertions(copy)
    return activate_assertions(copy, max_backtracks, constraints=list(constraints), mode=mode)


def plain_copy(program: dspy.Module) -> dspy.Module:
    copy = program.deepcopy()
    return deactivate_assertions(copy)


def assertion_aware_metric(metric: Metric, soft_penalty: float = 0.1) -> Metric:
    """The metric, minus `soft_penalty` per final soft failure, and zero on any hard failure."""

    def aware(example: Any, prediction: Any, trace: Any = None) -> float:
        score = float(metric(example, prediction, trace) if trace is not None else metric(example, prediction))
        record = run_record_of(prediction)
        if record is None:
            return score
        if record.error or any(s.hard and s.final_failures for s in record.constraints.values()):
            return 0.0
        soft = sum(s.final_failures for s in record.constraints.values() if not s.hard)
        return max(0.0, score - soft_penalty * soft)

    aware.__name__ = f"assertion_aware_{getattr(metric, '__name__', 'metric')}"
    return aware


@dataclass
class CompileOutcome:
    program: dspy.Module
    demos: dict[str, list[dict[str, Any]]]
    counterexamples: list[Counterexample] = field(default_factory=list)
    lm_calls: int = 0
    tokens: int = 0


def demos_of(program: dspy.Module) -> dict[str, list[dict[str, Any]]]:
    out = {}
    for name, predictor in program.named_predictors():
        out[name] = [d.toDict() if hasattr(d, "toDict") else dict(d) for d in predictor.demos]
    return out


class _Ticker:
    def __init__(self, callback: Callable[[int], None] | None) -> None:
        self.callback = callback
        self.done = 0
        self.lock = threading.Lock()

    def tick(self) -> None:
        with self.lock:
            self.done += 1
            done = self.done
        if self.callback is not None:
            self.callback(done)


def compile_program(
    program: dspy.Module,
    trainset: Sequence[dspy.Example],
    metric: Metric,
    *,
    constraints: Iterable[Constraint] = (),
    with_assertions: bool = True,
    max_backtracks: int = 2,
    optimizer: str = "bootstrap",
    max_bootstrapped_demos: int = 4,
    max_labeled_demos: int = 4,
    num_candidate_programs: int = 4,
    soft_penalty: float = 0.1,
    num_threads: int = 1,
    on_example: Callable[[int], None] | None = None,
) -> CompileOutcome:
    """Compile with BootstrapFewShot (or its random search), optionally with an asserted teacher.

    The returned program is plain (assertions not active); activate it to run C+Infer w/ Assert.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    constraints = list(constraints)
    log = RunLog()
    ticker = _Ticker(on_example)

    base_metric = assertion_aware_metric(metric, soft_penalty) if with_assertions else metric

    def counted_metric(example: Any, prediction: Any, trace: Any = None) -> Any:
        ticker.tick()
        return base_metric(example, prediction, trace)

    if with_assertions:
        teacher = prepare_program(program, constraints, mode=ENFORCE, max_backtracks=max_backtracks)
    else:
        teacher = plain_copy(program)

    if optimizer == "bootstrap":
        student = plain_copy(program)
        optimizer_obj = dspy.BootstrapFewShot(
            metric=counted_metric,
            max_bootstrapped_demos=max_bootstrapped_demos,
            max_labeled_demos=max_labeled_demos,
            max_errors=len(trainset) + 1,
        )
        kwargs: dict[str, Any] = {"teacher": teacher}
    else:
        # candidates are scored with constraints observed, so soft/hard failures move the ranking
        student = (
            prepare_program(program, constraints, mode=OBSERVE, max_backtracks=0)
            if with_assertions
            else plain_copy(program)
        )
        optimizer_obj = dspy.BootstrapFewShotWithRandomSearch(
            metric=counted_metric,
            max_bootstrapped_demos=max_bootstrapped_demos,
            max_labeled_demos=max_labeled_demos,
            num_candidate_programs=num_candidate_programs,
            num_threads=num_threads,
            max_errors=len(trainset) * (num_candidate_programs + 3) + 1,
        )
        kwargs = {"teacher": teacher}

    collectors = tuple(dspy.settings.get(COLLECTORS_KEY) or ()) + (log,)
    with dspy.context(**{COLLECTORS_KEY: collectors}), tally_lm() as tally:
        compiled = optimizer_obj.compile(student, trainset=list(trainset), **kwargs)
    compiled = plain_copy(compiled)
    return CompileOutcome(
        program=compiled,
        demos=demos_of(compiled),
        counterexamples=log.counterexamples(),
        lm_calls=tally.calls,
        tokens=tally.tokens,
    )
