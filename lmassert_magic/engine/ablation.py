"""The paper's five-setting ablation in one call, with results as pandas DataFrames.

The settings and their names are in `five_settings`, the result objects and their tables in
`results`, measuring one program on the dev set in `evaluation`; this module runs the settings in
turn (compiling where a setting needs it) and re-exports those names.
"""

from __future__ import annotations

import contextlib
import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from . import defaults
from .activation import activated_copy, constraints_of
from .compile import CompileOutcome, CompileSummary, Metric, compile_program, demos_of, prepare_program
from .constraints import Constraint
from .context import ENFORCE, OBSERVE
from .evaluation import Evaluation, evaluate_program
from .five_settings import (
    ALL_CONSTRAINTS,
    C_INFER_ASSERT,
    COMPILE,
    COMPILE_ASSERT,
    HEADLINE_PAIRS,
    INFER_ASSERT,
    LABELS,
    SETTINGS,
    VANILLA,
    normalize_settings,
)
from .optimizers import DSPY3_OPTIMIZERS, compile_dspy3
from .results import AblationResult, ExampleResult, SettingResult
from .tally import counting_truncations


@dataclass
class ProgressEvent:
    """Sent to the progress callback: `phase` is 'compile' or 'evaluate'; `total` may be None."""

    setting: str
    phase: str
    done: int
    total: int | None
    finished: bool = False

    @property
    def label(self) -> str:
        return LABELS.get(self.setting, self.setting)



def run_ablation(
    program: dspy.Module,
    trainset: Sequence[dspy.Example],
    devset: Sequence[dspy.Example],
    metric: Metric,
    *,
    constraints: Iterable[Constraint] = (),
    settings: Iterable[str] | str | None = None,
    max_backtracks: int = defaults.MAX_BACKTRACKS,
    optimizer: str = defaults.OPTIMIZER,
    optimizer_kwargs: dict[str, Any] | None = None,
    soft_penalty: float = defaults.SOFT_PENALTY,
    num_threads: int = defaults.THREADS,
    concurrency: int | None = defaults.CONCURRENCY,
    progress: Callable[[ProgressEvent], None] | None = None,
    quiet: bool = True,
    keep_soft_failures: bool = defaults.KEEP_SOFT_FAILURES,
    max_errors: int | None = defaults.MAX_ERRORS,
    counterexamples: str = defaults.COUNTEREXAMPLES,
    budget: str = defaults.BUDGET,
    retry_temperature: float | None = defaults.RETRY_TEMPERATURE,
    seed: int = defaults.SEED,
    stop_on_repeat: bool = defaults.STOP_ON_REPEAT,
    batch_judges: bool = defaults.BATCH_JUDGES,
    stop_at_failing_judge: bool = defaults.STOP_AT_FAILING_JUDGE,
) -> AblationResult:
    """Run the chosen settings of the paper's ablation on `devset`.

    Vanilla and Compile are assertion-free: every constraint, inline ones included, is observed on
    the returned output for the tables but never enforced, and their compile teacher runs with
    constraints off. `max_backtracks`, `budget`, `retry_temperature`, `seed` and the judge economies
    (`stop_on_repeat`, `batch_judges`, `stop_at_failing_judge`: see activate_assertions) go to every
    asserted run, the compile's teacher included; `keep_soft_failures`, `max_errors` and
    `counterexamples` to the compiles (see compile_program).
    `concurrency` evaluates each setting async, that many examples at a time (`evaluate_async`; the
    tables are the threaded run's); compiles still use `num_threads`.

    KeyboardInterrupt stops the run but still returns the settings that finished
    (`result.interrupted` is True); the caller decides whether to re-raise. `quiet` hides
    DSPy's own progress prints and INFO logs, which would otherwise flood a notebook cell.
    """
    keys = normalize_settings(settings)
    constraints = list(constraints) or constraints_of(program)
    if not devset:
        raise ValueError("the dev set is empty")
    needs_compile = any(k in keys for k in (COMPILE, COMPILE_ASSERT, C_INFER_ASSERT))
    if needs_compile and not trainset:
        raise ValueError("compiling settings need a non-empty train set")
    result = AblationResult(
        constraints=constraints, metric_name=getattr(metric, "__name__", "metric"), requested=keys, seed=seed,
        config={"max_backtracks": max_backtracks, "budget": budget, "retry_temperature": retry_temperature,
                "stop_on_repeat": stop_on_repeat, "batch_judges": batch_judges,
                "stop_at_failing_judge": stop_at_failing_judge,
                "optimizer": optimizer, "counterexamples": counterexamples, "keep_soft_failures": keep_soft_failures,
                "num_threads": num_threads, **({"concurrency": concurrency} if concurrency is not None else {}),
                **lm_facts()},
    )
    notify = progress or (lambda event: None)
    compiled: dict[str, CompileOutcome] = {}
    opt_kwargs = dict(optimizer_kwargs or {})
    run_config = {"budget": budget, "retry_temperature": retry_temperature, "seed": seed,
                  "stop_on_repeat": stop_on_repeat, "batch_judges": batch_judges,
                  "stop_at_failing_judge": stop_at_failing_judge}

    def compile_for(key: str, with_assertions: bool) -> tuple[CompileOutcome, float]:
        cache_key = COMPILE_ASSERT if with_assertions else COMPILE
        if cache_key in compiled:
            return compiled[cache_key], 0.0
        start = time.perf_counter()
        # GEPA scores up to its budget of program runs, not the train set once: no known total
        compiler, total = (compile_dspy3, None) if optimizer in DSPY3_OPTIMIZERS else (compile_program, len(trainset))
        teacher = {} if compiler is compile_dspy3 else {
            "run_config": {k: v for k, v in run_config.items() if k != "seed"}}
        with _silenced(quiet):
            outcome = compiler(
                program, trainset, metric, constraints=constraints, with_assertions=with_assertions,
                max_backtracks=max_backtracks, optimizer=optimizer, soft_penalty=soft_penalty,
                num_threads=num_threads,
                on_example=lambda n: notify(ProgressEvent(key, "compile", n, total)),
                keep_soft_failures=keep_soft_failures, max_errors=max_errors, counterexamples=counterexamples,
                seed=seed, **teacher, **opt_kwargs,
            )
        compiled[cache_key] = outcome
        result.demos[cache_key] = outcome.demos
        result.programs[cache_key] = outcome.program
        if with_assertions:
            result.compile_counterexamples = outcome.counterexamples
        return outcome, time.perf_counter() - start

    evaluation = {"num_threads": num_threads, "concurrency": concurrency}
    try:
        with _quieted(quiet):
            _run_settings(keys, result, program, devset, metric, constraints, max_backtracks, evaluation, notify,
                          compile_for, run_config)
    except KeyboardInterrupt:
        result.interrupted = True
    return result


def _run_settings(
    keys: Sequence[str],
    result: AblationResult,
    program: dspy.Module,
    devset: Sequence[dspy.Example],
    metric: Metric,
    constraints: list[Constraint],
    max_backtracks: int,
    evaluation_options: dict[str, Any],
    notify: Callable[[ProgressEvent], None],
    compile_for: Callable[[str, bool], tuple[CompileOutcome, float]],
    run_config: dict[str, Any],
) -> None:
    for key in keys:
        with counting_truncations() as truncations:
            setting = SettingResult(key)
            if key in (VANILLA, INFER_ASSERT):
                base = program
            else:
                reused = key == C_INFER_ASSERT and COMPILE_ASSERT in result.settings
                outcome, setting.compile_seconds = compile_for(key, key != COMPILE)
                if not reused:  # a reused compile's cost stays with the setting that paid it
                    setting.compile_lm_calls, setting.compile_tokens = outcome.lm_calls, outcome.tokens
                setting.compile = outcome.summary(reused_from=COMPILE_ASSERT if reused else None)
                base = outcome.program
            mode = ENFORCE if key in (INFER_ASSERT, C_INFER_ASSERT) else OBSERVE
            runnable = prepare_program(base, constraints, mode=mode, max_backtracks=max_backtracks, **run_config)
            notify(ProgressEvent(key, "evaluate", 0, len(devset)))
            evaluation = evaluate_program(
                runnable, devset, metric, **evaluation_options,
                on_example=lambda n, key=key: notify(ProgressEvent(key, "evaluate", n, len(devset))),
            )
            setting.examples, setting.lm_calls = evaluation.examples, evaluation.lm_calls
            setting.tokens = evaluation.tokens
            setting.eval_seconds, setting.observe_lm_calls = evaluation.seconds, evaluation.observe_lm_calls
            setting.cache_hits, setting.prompt_tokens = evaluation.cache_hits, evaluation.prompt_tokens
            setting.completion_tokens = evaluation.completion_tokens
            setting.stray_predictor_calls = evaluation.stray_predictor_calls
            result.settings[key] = setting
            if key not in result.programs:
                result.programs[key] = base
        setting.truncated_responses = truncations.count
        notify(ProgressEvent(key, "evaluate", len(devset), len(devset), finished=True))


@contextlib.contextmanager
def _quieted(quiet: bool) -> Iterator[None]:
    if not quiet:
        yield
        return
    dspy_logger = logging.getLogger("dspy")
    level = dspy_logger.level
    dspy_logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        dspy_logger.setLevel(level)


@contextlib.contextmanager
def _silenced(quiet: bool) -> Iterator[None]:
    """Swallow the optimizers' prints and tqdm bars (progress reporters keep their own stream)."""
    if not quiet:
        yield
        return
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield



def lm_facts(lm: Any = None) -> dict[str, Any]:
    """What the figures depend on besides the seed: the LM, and whether its server may batch requests.

    A server that decodes concurrent requests in one batch can give other outputs with more threads;
    an LM whose engine says it takes requests one at a time (the embedded model's default) cannot.
    """
    lm = lm if lm is not None else dspy.settings.lm
    if lm is None:
        return {}
    facts: dict[str, Any] = {"lm": getattr(lm, "model", type(lm).__name__)}
    order = getattr(getattr(lm, "engine", None), "request_order", None)
    facts["lm_requests"] = order or "unknown (a server may batch parallel requests)"
    return facts


def program_to_bind(
    result: AblationResult, program: dspy.Module, constraints: Sequence[Constraint],
    max_backtracks: int = defaults.MAX_BACKTRACKS, **config: Any,
) -> dspy.Module | None:
    """The program a compile hands back: the most compiled one it made, activated if the run used assertions.

    Compiled with assertions -> that program, activated (the C+Infer w/ Assert program). Else compiled
    without -> that one; else the uncompiled `program`. Those two are activated only when an
    assertion-enforcing setting ran. None when no setting ran.
    """
    programs, ran = result.programs, set(result.settings)
    if COMPILE_ASSERT in programs:
        return activated_copy(programs[COMPILE_ASSERT], constraints, max_backtracks, **config)
    base = programs.get(COMPILE)
    if base is None:
        if not ran:
            return None
        base = program
    if INFER_ASSERT in ran or C_INFER_ASSERT in ran:
        return activated_copy(base, constraints, max_backtracks, **config)
    return base.deepcopy()

__all__ = [
    "lm_facts",
    "program_to_bind",
    "ALL_CONSTRAINTS",
    "C_INFER_ASSERT",
    "COMPILE",
    "COMPILE_ASSERT",
    "HEADLINE_PAIRS",
    "INFER_ASSERT",
    "LABELS",
    "SETTINGS",
    "VANILLA",
    "AblationResult",
    "CompileSummary",
    "Evaluation",
    "ExampleResult",
    "ProgressEvent",
    "SettingResult",
    "demos_of",
    "evaluate_program",
    "normalize_settings",
    "run_ablation",
]
