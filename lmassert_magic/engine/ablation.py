"""The paper's five-setting ablation in one call, with results as pandas DataFrames."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
import pandas as pd

from .compile import CompileOutcome, Metric, compile_program, demos_of, prepare_program
from .constraints import Constraint
from .records import ConstraintStats, Counterexample, RunLog, RunRecord, merge_stats
from .runtime import (
    COLLECTORS_KEY,
    DEFAULT_RETRY_TEMPERATURE,
    ENFORCE,
    OBSERVE,
    SHARED,
    constraints_of,
    stray_predictor_calls,
    tally_lm,
)

VANILLA = "vanilla"
INFER_ASSERT = "infer_assert"
COMPILE = "compile"
COMPILE_ASSERT = "compile_assert"
C_INFER_ASSERT = "c_infer_assert"
SETTINGS = (VANILLA, INFER_ASSERT, COMPILE, COMPILE_ASSERT, C_INFER_ASSERT)
LABELS = {
    VANILLA: "Vanilla",
    INFER_ASSERT: "Infer w/ Assert",
    COMPILE: "Compile",
    COMPILE_ASSERT: "Compile w/ Assert",
    C_INFER_ASSERT: "C+Infer w/ Assert",
}
_ALIASES = {
    **{k: k for k in SETTINGS},
    **{v.lower(): k for k, v in LABELS.items()},
    "infer": INFER_ASSERT,
    "compile_w_assert": COMPILE_ASSERT,
    "c+infer": C_INFER_ASSERT,
    "cinfer": C_INFER_ASSERT,
}


def normalize_settings(settings: Iterable[str] | str | None) -> tuple[str, ...]:
    """Accept keys, labels or a comma list; keep the paper's order; unknown names are an error."""
    if settings is None:
        return SETTINGS
    if isinstance(settings, str):
        settings = [s for s in settings.split(",") if s.strip()]
    chosen = set()
    for raw in settings:
        key = _ALIASES.get(raw.strip().lower().replace(" ", "_").replace("/", "")) or _ALIASES.get(raw.strip().lower())
        if key is None:
            raise ValueError(f"unknown setting {raw!r}; choose from {', '.join(SETTINGS)}")
        chosen.add(key)
    if not chosen:
        raise ValueError("no settings chosen")
    return tuple(s for s in SETTINGS if s in chosen)


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


@dataclass
class ExampleResult:
    index: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    score: float
    record: RunRecord | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class CompileSummary:
    """What a compile left out: failed training examples and traces dropped for soft failures."""

    n_examples: int = 0
    n_failed: int = 0
    failures: list[str] = field(default_factory=list)
    dropped_soft_failures: int = 0
    counterexample_mode: str = "retry"
    keep_soft_failures: bool = False


@dataclass
class SettingResult:
    """One setting's evaluation. `lm_calls` are the program's own LM requests (cache hits included);
    `observe_lm_calls` are judge calls spent only on measuring outputs where constraints are observed."""

    key: str
    examples: list[ExampleResult] = field(default_factory=list)
    eval_seconds: float = 0.0
    compile_seconds: float = 0.0
    lm_calls: int = 0
    tokens: int = 0
    compile_lm_calls: int = 0
    compile_tokens: int = 0
    complete: bool = True
    observe_lm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stray_predictor_calls: int = 0
    compile: CompileSummary | None = None

    @property
    def label(self) -> str:
        return LABELS[self.key]

    @property
    def n(self) -> int:
        return len(self.examples)

    @property
    def n_failed(self) -> int:
        return sum(1 for e in self.examples if not e.ok)

    @property
    def n_ok(self) -> int:
        return self.n - self.n_failed

    @property
    def metric(self) -> float:
        return sum(e.score for e in self.examples) / self.n if self.n else float("nan")

    @property
    def constraint_stats(self) -> dict[str, ConstraintStats]:
        return merge_stats(e.record.constraints for e in self.examples if e.record is not None)

    @property
    def counterexamples(self) -> list[Counterexample]:
        return [c for e in self.examples if e.record for c in e.record.counterexamples]

    @property
    def seconds(self) -> float:
        return self.eval_seconds + self.compile_seconds


@dataclass
class AblationResult:
    """Everything a five-setting run produced; tables come out as DataFrames."""

    settings: dict[str, SettingResult] = field(default_factory=dict)
    constraints: list[Constraint] = field(default_factory=list)
    programs: dict[str, dspy.Module] = field(default_factory=dict)
    demos: dict[str, dict[str, list[dict[str, Any]]]] = field(default_factory=dict)
    compile_counterexamples: list[Counterexample] = field(default_factory=list)
    metric_name: str = "metric"
    interrupted: bool = False
    requested: tuple[str, ...] = SETTINGS

    # -- tables --------------------------------------------------------------------------
    def constraint_infos(self) -> list[tuple[str, bool]]:
        """(name, hard) of every constraint: declared ones in order, then inline `Assert`/`Suggest`
        calls as they appear in the records, so a check written in Python gets its row too."""
        infos = [(c.name, c.hard) for c in self.constraints]
        seen = {name for name, _ in infos}
        for res in self.settings.values():
            for name, s in res.constraint_stats.items():
                if name not in seen:
                    seen.add(name)
                    infos.append((name, s.hard))
        return infos

    def summary(self) -> pd.DataFrame:
        """One row per setting: metric, per-constraint pass rates (% of examples), costs per example, time."""
        rows = []
        for res in self.settings.values():
            row: dict[str, Any] = {"setting": res.label, "examples": res.n, "failed": res.n_failed}
            row[self.metric_name] = 100 * res.metric
            stats = res.constraint_stats
            for name, _ in self.constraint_infos():
                s = stats.get(name)
                row[name] = 100 * s.pass_rate if s and s.examples else math.nan
            row["lm_calls/ex"] = res.lm_calls / res.n if res.n else math.nan
            row["observe_calls/ex"] = res.observe_lm_calls / res.n if res.n else math.nan
            row["tokens/ex"] = res.tokens / res.n if res.n else math.nan
            row["seconds"] = res.seconds
            rows.append(row)
        return pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()

    def pass_rates(self) -> pd.DataFrame:
        """Long form: setting x constraint; the rate is per example, raw check counts beside it."""
        rows = []
        for res in self.settings.values():
            stats = res.constraint_stats
            for name, hard in self.constraint_infos():
                s = stats.get(name) or ConstraintStats(name, hard)
                rows.append(
                    {
                        "setting": res.label,
                        "constraint": name,
                        "kind": "hard" if hard else "soft",
                        "examples": s.examples,
                        "passed_first": s.passed_first,
                        "passed": s.passed_final,
                        "checks": s.checks,
                        "first_try_passes": s.first_try_passes,
                        "passes_after_backtrack": s.passes_after_backtrack,
                        "final_failures": s.final_failures,
                        "backtracks": s.backtracks,
                        "errors": s.errors,
                        "pass_rate": 100 * s.pass_rate if s.examples else math.nan,
                    }
                )
        return pd.DataFrame(rows)

    def demos_frame(self) -> pd.DataFrame:
        rows = []
        for key, per_predictor in self.demos.items():
            for predictor, demos in per_predictor.items():
                for i, demo in enumerate(demos):
                    rows.append(
                        {
                            "setting": LABELS[key],
                            "predictor": predictor,
                            "index": i,
                            "from_counterexample": "feedback" in demo,
                            "augmented": bool(demo.get("augmented")),
                            "fields": {k: v for k, v in demo.items() if k != "augmented"},
                        }
                    )
        cols = ["setting", "predictor", "index", "from_counterexample", "augmented", "fields"]
        return pd.DataFrame(rows, columns=cols)

    def all_counterexamples(self) -> list[tuple[str, Counterexample]]:
        out = [("compile", c) for c in self.compile_counterexamples]
        for res in self.settings.values():
            out.extend((res.label, c) for c in res.counterexamples)
        return out

    def counterexamples_frame(self) -> pd.DataFrame:
        rows = [
            {
                "phase": phase,
                "constraint": c.constraint,
                "kind": "hard" if c.hard else "soft",
                "predictor": c.predictor,
                "inputs": c.inputs,
                "failing_outputs": c.failing_outputs,
                "feedback": c.feedback,
                "fixed_outputs": c.fixed_outputs,
                "fixed": c.fixed,
            }
            for phase, c in self.all_counterexamples()
        ]
        cols = ["phase", "constraint", "kind", "predictor", "inputs", "failing_outputs", "feedback", "fixed_outputs",
                "fixed"]
        return pd.DataFrame(rows, columns=cols)

    def examples_frame(self) -> pd.DataFrame:
        rows = []
        for res in self.settings.values():
            for e in res.examples:
                row = {"setting": res.label, "index": e.index, "score": e.score, "ok": e.ok, "error": e.error,
                       "backtracks": e.record.backtracks if e.record else 0}
                row.update({f"out.{k}": v for k, v in e.outputs.items()})
                rows.append(row)
        return pd.DataFrame(rows)

    def headlines(self) -> list[str]:
        """Sentences an instructor can read aloud, comparing like with like.

        Infer w/ Assert vs Vanilla (assertions at inference), Compile w/ Assert vs Compile
        (assertions while compiling), C+Infer w/ Assert vs Compile w/ Assert (inference on top).
        """
        lines = []
        for base_key, key in HEADLINE_PAIRS:
            if base_key not in self.settings or key not in self.settings:
                continue
            base, other = self.settings[base_key], self.settings[key]
            bstats, astats = base.constraint_stats, other.constraint_stats
            extra_calls = (other.lm_calls / other.n if other.n else 0) - (base.lm_calls / base.n if base.n else 0)
            for name, _ in self.constraint_infos():
                b, a = bstats.get(name), astats.get(name)
                if not b or not a or not b.examples or not a.examples:
                    continue
                lines.append(
                    f"{name}: {100 * b.pass_rate:.0f}% -> {100 * a.pass_rate:.0f}% "
                    f"({base.label} -> {other.label}), {extra_calls:+.1f} LM calls per example"
                )
            lines.append(
                f"{self.metric_name}: {100 * base.metric:.1f} -> {100 * other.metric:.1f} "
                f"({base.label} -> {other.label})"
            )
        return lines


HEADLINE_PAIRS = ((VANILLA, INFER_ASSERT), (COMPILE, COMPILE_ASSERT), (COMPILE_ASSERT, C_INFER_ASSERT))


# ---------------------------------------------------------------- running


def _outputs(prediction: Any) -> dict[str, Any]:
    try:
        return {k: v for k, v in prediction.items() if not k.startswith("_")}
    except AttributeError:
        return {"output": prediction}


@dataclass
class Evaluation:
    """What `evaluate_program` measured; costs are counted the same way in every setting."""

    examples: list[ExampleResult]
    lm_calls: int  # every LM request, cache hits and judge calls included
    tokens: int
    seconds: float
    observe_lm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stray_predictor_calls: int = 0

    def __iter__(self) -> Iterator[Any]:  # (examples, lm_calls, tokens, seconds), as before
        return iter((self.examples, self.lm_calls, self.tokens, self.seconds))


def evaluate_program(
    program: dspy.Module,
    devset: Sequence[dspy.Example],
    metric: Metric,
    *,
    num_threads: int = 1,
    on_example: Callable[[int], None] | None = None,
) -> Evaluation:
    """Run an (activated) program over `devset` with dspy.Evaluate; every example is accounted for.

    Each example's RunRecord is collected from the run itself (not from the prediction), so a
    program returning a dict or a string still gets its constraints counted.
    """
    lock = threading.Lock()
    done = [0]
    # Set when the evaluation is interrupted. dspy.Evaluate stops handing out examples on a SIGINT, but
    # an interrupt raised in a worker thread (from an LM client, a callback) leaves its queue running in
    # the background, still calling the LM after the cell has returned; queued examples now do nothing.
    stopped = threading.Event()
    # The metric runs right after the program on the same worker thread: the record travels between them
    # on the thread, then is filed under its example.
    local = threading.local()
    records: dict[int, RunRecord | None] = {}
    errors: dict[int, str] = {}
    outer = tuple(dspy.settings.get(COLLECTORS_KEY) or ())

    def probe(**inputs: Any) -> Any:
        local.record, local.error = None, None
        if stopped.is_set():
            local.error = "not run: the evaluation was interrupted"
            return dspy.Prediction()
        log = RunLog()
        try:
            with dspy.context(**{COLLECTORS_KEY: (*outer, log)}):
                prediction = program(**inputs)
        except (Exception, asyncio.CancelledError) as exc:  # an LM client cancelling its call is a failure too
            prediction = dspy.Prediction()
            local.error = f"{type(exc).__name__}: {exc}"
        local.record = log.records[-1] if log.records else None
        with lock:
            done[0] += 1
            n = done[0]
        if on_example is not None:
            on_example(n)
        return prediction

    def scored(example: Any, prediction: Any, trace: Any = None) -> float:
        key = id(example)
        records[key] = getattr(local, "record", None)
        error = getattr(local, "error", None)
        if error:
            errors[key] = error
            return 0.0
        try:
            return float(metric(example, prediction))
        except Exception as exc:
            errors[key] = f"metric raised {type(exc).__name__}: {exc}"
            return 0.0

    evaluator = dspy.Evaluate(
        devset=list(devset),
        metric=scored,
        num_threads=num_threads,
        display_progress=False,
        display_table=False,
        max_errors=len(devset) + 1,
        provide_traceback=False,
    )
    stray_before = stray_predictor_calls()
    start = time.perf_counter()
    with tally_lm() as tally:
        try:
            outcome = evaluator(probe)
        except BaseException:
            stopped.set()
            raise
    seconds = time.perf_counter() - start
    examples = []
    for i, (example, prediction, score) in enumerate(outcome.results):
        key = id(example)
        error = errors.get(key)
        record = records.get(key)
        if key not in records and error is None:
            error = "no prediction"
        examples.append(
            ExampleResult(i, dict(example.inputs()), _outputs(prediction), float(score or 0.0), record, error)
        )
    observe = sum(e.record.observe_lm_calls for e in examples if e.record is not None)
    return Evaluation(
        examples=examples, lm_calls=tally.calls - observe, tokens=tally.tokens, seconds=seconds,
        observe_lm_calls=observe, cache_hits=tally.cache_hits, prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens, stray_predictor_calls=stray_predictor_calls() - stray_before,
    )


def run_ablation(
    program: dspy.Module,
    trainset: Sequence[dspy.Example],
    devset: Sequence[dspy.Example],
    metric: Metric,
    *,
    constraints: Iterable[Constraint] = (),
    settings: Iterable[str] | str | None = None,
    max_backtracks: int = 2,
    optimizer: str = "bootstrap",
    optimizer_kwargs: dict[str, Any] | None = None,
    soft_penalty: float = 0.1,
    num_threads: int = 1,
    progress: Callable[[ProgressEvent], None] | None = None,
    quiet: bool = True,
    keep_soft_failures: bool = False,
    max_errors: int | None = None,
    counterexamples: str = "retry",
    budget: str = SHARED,
    retry_temperature: float | None = DEFAULT_RETRY_TEMPERATURE,
    seed: int = 0,
) -> AblationResult:
    """Run the chosen settings of the paper's ablation on `devset`.

    Vanilla and Compile are assertion-free: every constraint, inline ones included, is observed on
    the returned output for the tables but never enforced, and their compile teacher runs with
    constraints off. `max_backtracks`, `budget`, `retry_temperature` and `seed` go to the asserted
    runs; `keep_soft_failures`, `max_errors` and `counterexamples` to the compiles (see compile_program).

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
        constraints=constraints, metric_name=getattr(metric, "__name__", "metric"), requested=keys
    )
    notify = progress or (lambda event: None)
    compiled: dict[str, CompileOutcome] = {}
    opt_kwargs = dict(optimizer_kwargs or {})

    def compile_for(key: str, with_assertions: bool) -> tuple[CompileOutcome, float]:
        cache_key = COMPILE_ASSERT if with_assertions else COMPILE
        if cache_key in compiled:
            return compiled[cache_key], 0.0
        start = time.perf_counter()
        with _silenced(quiet):
            outcome = compile_program(
                program, trainset, metric, constraints=constraints, with_assertions=with_assertions,
                max_backtracks=max_backtracks, optimizer=optimizer, soft_penalty=soft_penalty,
                num_threads=num_threads,
                on_example=lambda n: notify(ProgressEvent(key, "compile", n, len(trainset))),
                keep_soft_failures=keep_soft_failures, max_errors=max_errors, counterexamples=counterexamples,
                seed=seed, **opt_kwargs,
            )
        compiled[cache_key] = outcome
        result.demos[cache_key] = outcome.demos
        result.programs[cache_key] = outcome.program
        if with_assertions:
            result.compile_counterexamples = outcome.counterexamples
        return outcome, time.perf_counter() - start

    run_config = {"budget": budget, "retry_temperature": retry_temperature, "seed": seed}
    try:
        with _quieted(quiet):
            _run_settings(keys, result, program, devset, metric, constraints, max_backtracks, num_threads, notify,
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
    num_threads: int,
    notify: Callable[[ProgressEvent], None],
    compile_for: Callable[[str, bool], tuple[CompileOutcome, float]],
    run_config: dict[str, Any],
) -> None:
    for key in keys:
        setting = SettingResult(key)
        if key in (VANILLA, INFER_ASSERT):
            base = program
        else:
            outcome, setting.compile_seconds = compile_for(key, key != COMPILE)
            setting.compile_lm_calls, setting.compile_tokens = outcome.lm_calls, outcome.tokens
            setting.compile = CompileSummary(
                outcome.n_examples, outcome.n_failed, list(outcome.failures), outcome.dropped_soft_failures,
                outcome.counterexample_mode, outcome.keep_soft_failures,
            )
            base = outcome.program
        mode = ENFORCE if key in (INFER_ASSERT, C_INFER_ASSERT) else OBSERVE
        runnable = prepare_program(base, constraints, mode=mode, max_backtracks=max_backtracks, **run_config)
        notify(ProgressEvent(key, "evaluate", 0, len(devset)))
        evaluation = evaluate_program(
            runnable, devset, metric, num_threads=num_threads,
            on_example=lambda n, key=key: notify(ProgressEvent(key, "evaluate", n, len(devset))),
        )
        setting.examples, setting.lm_calls, setting.tokens = evaluation.examples, evaluation.lm_calls, evaluation.tokens
        setting.eval_seconds, setting.observe_lm_calls = evaluation.seconds, evaluation.observe_lm_calls
        setting.cache_hits, setting.prompt_tokens = evaluation.cache_hits, evaluation.prompt_tokens
        setting.completion_tokens = evaluation.completion_tokens
        setting.stray_predictor_calls = evaluation.stray_predictor_calls
        result.settings[key] = setting
        if key not in result.programs:
            result.programs[key] = base
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


def format_exception(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


__all__ = [
    "AblationResult",
    "CompileSummary",
    "Evaluation",
    "HEADLINE_PAIRS",
    "ExampleResult",
    "LABELS",
    "ProgressEvent",
    "SETTINGS",
    "SettingResult",
    "demos_of",
    "evaluate_program",
    "normalize_settings",
    "run_ablation",
]
