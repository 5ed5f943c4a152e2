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

from . import defaults
from .activation import activate_assertions, deactivate_assertions, run_record_of
from .constraints import Constraint
from .context import COLLECTORS_KEY, ENFORCE, OBSERVE, OFF
from .records import Counterexample, RunLog
from .tally import tally_lm

Metric = Callable[..., Any]
OPTIMIZERS = ("bootstrap", "random_search")


def prepare_program(
    program: dspy.Module,
    constraints: Iterable[Constraint] = (),
    *,
    mode: str = ENFORCE,
    max_backtracks: int = defaults.MAX_BACKTRACKS,
    **config: Any,
) -> dspy.Module:
    """A fresh copy of `program` with the constraints attached and assertions in `mode`.

    `config` goes to `activate_assertions` (budget, retry_temperature, seed).
    """
    copy = program.deepcopy()
    deactivate_assertions(copy)
    return activate_assertions(copy, max_backtracks, constraints=list(constraints), mode=mode, **config)


def plain_copy(program: dspy.Module) -> dspy.Module:
    copy = program.deepcopy()
    return deactivate_assertions(copy)


def assertion_aware_metric(
    metric: Metric, soft_penalty: float = defaults.SOFT_PENALTY, *,
    keep_soft_failures: bool = defaults.KEEP_SOFT_FAILURES, on_dropped: Callable[[], None] | None = None,
) -> Metric:
    """The metric, minus `soft_penalty` per final soft failure, and zero on any hard failure or error.

    While bootstrapping (a trace is passed), a trace whose returned output still fails a soft
    constraint scores 0 so it never becomes a demo, unless `keep_soft_failures` (DSPy 2.5 kept them);
    `on_dropped` is told each time that decides a trace's fate.
    """

    def aware(example: Any, prediction: Any, trace: Any = None) -> float:
        score = float(metric(example, prediction, trace) if trace is not None else metric(example, prediction))
        record = run_record_of(prediction)
        if record is None:
            return score
        if record.error or record.final_failures(hard=True):
            return 0.0
        soft = len(record.final_failures(hard=False))
        if soft and trace is not None and not keep_soft_failures:
            if score > 0 and on_dropped is not None:
                on_dropped()
            return 0.0
        return max(0.0, score - soft_penalty * soft)

    aware.__name__ = f"assertion_aware_{getattr(metric, '__name__', 'metric')}"
    return aware


COUNTEREXAMPLE_MODES = ("retry", "prompt")


class CompileError(RuntimeError):
    """A compile stopped because too many training examples failed (DSPy's `max_errors`)."""


@dataclass
class CompileSummary:
    """What a compile left out: failed training examples and traces dropped for soft failures.

    The part of a compile's outcome a report keeps (no program, no demos).
    """

    n_examples: int = 0
    n_failed: int = 0
    failures: list[str] = field(default_factory=list)
    dropped_soft_failures: int = 0
    counterexample_mode: str = defaults.COUNTEREXAMPLES
    keep_soft_failures: bool = defaults.KEEP_SOFT_FAILURES
    reused_from: str | None = None  # the setting whose compile this one reuses (its cost is counted there)
    notes: list[str] = field(default_factory=list)  # what the optimizer did, in words (GEPA's budget, Refine's N)
    instructions: dict[str, str] = field(default_factory=dict)  # predictor -> instructions an optimizer wrote

    def summary(self, reused_from: str | None = None) -> CompileSummary:
        """A copy of these fields alone (an outcome's summary drops its program and demos)."""
        return CompileSummary(
            self.n_examples, self.n_failed, list(self.failures), self.dropped_soft_failures,
            self.counterexample_mode, self.keep_soft_failures, reused_from, list(self.notes),
            dict(self.instructions),
        )


@dataclass(kw_only=True)
class CompileOutcome(CompileSummary):
    """A compiled program and what compiling it cost and left out.

    `n_examples` counts teacher runs on training examples and `failures` the first errors among them
    (type and message); a failed example never yields a demo. `dropped_soft_failures` counts traces
    that passed the metric but still failed a soft constraint, so were not kept as demos.
    `counterexample_mode` says where counterexample demos show their feedback and failing output:
    "retry" (in retry prompts only, as in DSPy 2.5) or "prompt" (also in the normal prompt's instructions).
    """

    program: dspy.Module
    demos: dict[str, list[dict[str, Any]]]
    counterexamples: list[Counterexample] = field(default_factory=list)
    lm_calls: int = 0
    tokens: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


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


MAX_LISTED_FAILURES = 5


def compile_program(
    program: dspy.Module,
    trainset: Sequence[dspy.Example],
    metric: Metric,
    *,
    constraints: Iterable[Constraint] = (),
    with_assertions: bool = True,
    max_backtracks: int = defaults.MAX_BACKTRACKS,
    optimizer: str = defaults.OPTIMIZER,
    max_bootstrapped_demos: int = 4,
    max_labeled_demos: int = 4,
    num_candidate_programs: int = 4,
    soft_penalty: float = defaults.SOFT_PENALTY,
    num_threads: int = defaults.THREADS,
    on_example: Callable[[int], None] | None = None,
    keep_soft_failures: bool = defaults.KEEP_SOFT_FAILURES,
    max_errors: int | None = defaults.MAX_ERRORS,
    counterexamples: str = defaults.COUNTEREXAMPLES,
    seed: int = defaults.SEED,
    run_config: dict[str, Any] | None = None,
) -> CompileOutcome:
    """Compile with BootstrapFewShot (or its random search), optionally with an asserted teacher.

    With assertions the teacher backtracks (assertion-driven bootstrapping), fixed traces become
    demos carrying `feedback` and `past_<field>` (counterexample bootstrapping), and the metric is
    assertion-aware. Without, the teacher runs with every constraint off, inline ones included.
    `max_errors` stops the compile with CompileError once that many training examples fail
    (DSPy's convention: the error that reaches it stops it); by default nothing stops it.
    The returned program is plain (assertions not active); activate it to run C+Infer w/ Assert.
    `run_config` goes to `activate_assertions` for the teacher and the scored candidates (budget,
    retry_temperature, the judge economies), so a compile backtracks the way the evaluated runs do.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(OPTIMIZERS)}")
    if counterexamples not in COUNTEREXAMPLE_MODES:
        raise ValueError(f"counterexamples must be one of {COUNTEREXAMPLE_MODES}, got {counterexamples!r}")
    if max_errors is not None and max_errors < 1:
        raise ValueError("max_errors must be 1 or more (or None: never stop)")
    constraints = list(constraints)
    log = RunLog()
    ticker = _Ticker(on_example)
    lock = threading.Lock()
    dropped = [0]
    metric_errors: list[str] = []

    def note_dropped() -> None:
        with lock:
            dropped[0] += 1

    base_metric = (
        assertion_aware_metric(metric, soft_penalty, keep_soft_failures=keep_soft_failures, on_dropped=note_dropped)
        if with_assertions else metric
    )

    def counted_metric(example: Any, prediction: Any, trace: Any = None) -> Any:
        ticker.tick()
        try:
            return base_metric(example, prediction, trace)
        except Exception as exc:
            with lock:
                metric_errors.append(f"metric raised {type(exc).__name__}: {exc}")
            raise

    mode = ENFORCE if with_assertions else OFF
    run_config = dict(run_config or {})
    teacher = prepare_program(program, constraints, mode=mode, max_backtracks=max_backtracks, seed=seed, **run_config)
    # Candidates are scored with constraints observed, so soft/hard failures move the ranking.
    student_mode = OBSERVE if with_assertions else OFF
    limit = max_errors if max_errors is not None else len(trainset) * (num_candidate_programs + 3) + 1
    if optimizer == "bootstrap":
        student = plain_copy(program)
        optimizer_obj = dspy.BootstrapFewShot(
            metric=counted_metric,
            max_bootstrapped_demos=max_bootstrapped_demos,
            max_labeled_demos=max_labeled_demos,
            max_errors=limit,
        )
    else:
        student = prepare_program(program, constraints, mode=student_mode, max_backtracks=0, seed=seed, **run_config)
        optimizer_obj = dspy.BootstrapFewShotWithRandomSearch(
            metric=counted_metric,
            max_bootstrapped_demos=max_bootstrapped_demos,
            max_labeled_demos=max_labeled_demos,
            num_candidate_programs=num_candidate_programs,
            num_threads=num_threads,
            max_errors=limit,
        )

    def failures() -> list[str]:
        errors = [r.error for r in list(log.records) if r.error] + list(metric_errors)
        return errors

    collectors = tuple(dspy.settings.get(COLLECTORS_KEY) or ()) + (log,)
    with dspy.context(**{COLLECTORS_KEY: collectors}), tally_lm() as tally:
        try:
            compiled = optimizer_obj.compile(student, trainset=list(trainset), teacher=teacher)
        except Exception as exc:
            errors = failures()
            if max_errors is not None and len(errors) >= max_errors:
                listed = "; ".join(errors[:MAX_LISTED_FAILURES])
                raise CompileError(
                    f"compile stopped: {len(errors)} of {len(trainset)} training examples failed "
                    f"(max_errors={max_errors}); first failures: {listed}"
                ) from exc
            raise
    compiled = plain_copy(compiled)
    if counterexamples == "prompt":
        show_counterexamples_in_instructions(compiled)
    errors = failures()
    return CompileOutcome(
        program=compiled,
        demos=demos_of(compiled),
        counterexamples=log.counterexamples(),
        lm_calls=tally.calls,
        tokens=tally.tokens,
        n_examples=len(log.records) + len(metric_errors),
        n_failed=len(errors),
        failures=errors[:MAX_LISTED_FAILURES],
        dropped_soft_failures=dropped[0],
        counterexample_mode=counterexamples,
        keep_soft_failures=keep_soft_failures,
        cache_hits=tally.cache_hits,
        prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens,
    )


def show_counterexamples_in_instructions(program: dspy.Module) -> dspy.Module:
    """Put each predictor's counterexample demos (failing output, feedback, fix) in its instructions.

    By default (as in DSPy 2.5) a counterexample demo's `feedback` and `past_<field>` appear only in
    retry prompts, whose signature has those fields; this makes the normal prompt show them too.
    """
    for _, predictor in program.named_predictors():
        lessons = []
        for demo in predictor.demos:
            fields = demo.toDict() if hasattr(demo, "toDict") else dict(demo)
            if "feedback" not in fields:
                continue
            parts = []
            for name in predictor.signature.output_fields:
                if f"past_{name}" in fields:
                    parts.append(f"  failing {name}: {fields[f'past_{name}']}")
            parts.append(f"  feedback: {fields['feedback']}")
            for name in predictor.signature.output_fields:
                if name in fields:
                    parts.append(f"  fixed {name}: {fields[name]}")
            lessons.append("\n".join(parts))
        if lessons:
            text = "Earlier outputs that failed a check, the feedback they got, and the fix:\n" + "\n".join(
                f"- example {i + 1}:\n{lesson}" for i, lesson in enumerate(lessons)
            )
            signature = predictor.signature
            predictor.signature = signature.with_instructions(f"{signature.instructions}\n\n{text}")
    return program
