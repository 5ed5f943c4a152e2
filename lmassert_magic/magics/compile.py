"""`%%compile NAME`: assemble a pipeline from registered signatures and run the five-setting ablation.

Thin: parse the cell, let the registry build the program and pick its constraints, call
`engine.run_ablation`, record the result. Nothing in the line or the body is expanded.
"""

from __future__ import annotations

import argparse
import contextlib
from collections.abc import Sequence
from typing import Any

import dspy
from IPython.core.magic import cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from ..definitions.specs import PipelineSpec
from ..engine.ablation import (
    C_INFER_ASSERT,
    COMPILE,
    COMPILE_ASSERT,
    SETTINGS,
    AblationResult,
    normalize_settings,
    program_to_bind,
    run_ablation,
)
from ..engine.compile import COUNTEREXAMPLE_MODES
from ..engine.defaults import (
    BATCH_JUDGES,
    BUDGET,
    CONCURRENCY,
    COUNTEREXAMPLES,
    GEPA_MAX_METRIC_CALLS,
    GEPA_TIME_CAP_SECONDS,
    MAX_BACKTRACKS,
    MAX_ERRORS,
    OPTIMIZER,
    RETRY_TEMPERATURE,
    SEED,
    STOP_AT_FAILING_JUDGE,
    STOP_ON_REPEAT,
    THREADS,
)
from ..engine.optimizers import ALL_OPTIMIZERS, GEPA
from ..engine.runtime import BUDGETS
from .parsing import (
    RegistryMagics,
    check_identifier,
    fail,
    parse_line,
    parse_pipeline_body,
    user_errors,
)
from .review import review_handler

try:  # keys in environment variables, blanked wherever an LM's error text is shown
    from ..lm.redact import redact as _redact
except ImportError:  # pragma: no cover - depends on the lm layer being present

    def _redact(text: str) -> str:
        return text


class CompileFailed(RuntimeError):
    """Every example failed in every setting (e.g. the LM is unreachable): a real failure, not a report."""


def ensure_lm() -> Any:
    """The LM to run with: `lmassert_magic.lm.ensure_lm()` (which may start the embedded model)."""
    try:
        from ..lm import ensure_lm as _ensure
    except ImportError:
        _ensure = None
    if _ensure is None:
        if dspy.settings.lm is None:
            fail("no LM is configured: run %lm (or dspy.configure(lm=...)) first")
        return dspy.settings.lm
    return _ensure()


def _examples(value: Any, flag: str) -> list[dspy.Example]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        fail(f"{flag} must name a list of dspy.Example, got a {type(value).__name__}", 1)
    items = list(value)
    for i, ex in enumerate(items):
        if not isinstance(ex, dspy.Example):
            fail(f"{flag}: item {i} is a {type(ex).__name__}, not a dspy.Example; build them with "
                 "dspy.Example(...).with_inputs(...)", 1)
        try:
            ex.inputs()
        except ValueError:
            fail(f"{flag}: item {i} has no input fields; call .with_inputs('question', ...) on the examples", 1)
    return items


def _optimizer_options(args: Any) -> dict[str, Any]:
    """GEPA's budget and time cap, checked; given with another optimizer they would do nothing, so they fail."""
    for flag, value in (("--max-metric-calls", args.max_metric_calls), ("--time-cap", args.time_cap)):
        if value is not None and args.optimizer != GEPA:
            fail(f"{flag} applies to --optimizer gepa only (this compile uses {args.optimizer})", 1)
    if args.optimizer != GEPA:
        return {}
    calls = GEPA_MAX_METRIC_CALLS if args.max_metric_calls is None else args.max_metric_calls
    cap = GEPA_TIME_CAP_SECONDS if args.time_cap is None else args.time_cap
    if calls < 1:
        fail(f"--max-metric-calls must be 1 or more, got {calls}", 1)
    if not 0 < cap < float("inf"):
        fail(f"--time-cap must be a positive number of seconds, got {cap:g}", 1)
    return {"max_metric_calls": calls, "time_cap": cap}


def _is_report(value: Any) -> bool:
    """What `-o VAR` may replace: an earlier report (or bare result), never a dataset or a function."""
    return isinstance(value, AblationResult) or isinstance(getattr(value, "result", None), AblationResult)


@magics_class
class CompileMagics(RegistryMagics):
    """The `%%compile` cell magic."""

    @cell_magic("compile")
    @no_var_expand
    @magic_arguments(name="%compile")
    @argument("name", metavar="NAME", help="the notebook variable the compiled program is bound to")
    @argument("--train", required=True, help="notebook variable: list of dspy.Example to compile on")
    @argument("--dev", required=True, help="notebook variable: list of dspy.Example to evaluate on")
    @argument("--metric", required=True, help="notebook function metric(example, prediction[, trace])")
    @argument("--optimizer", choices=ALL_OPTIMIZERS, default=OPTIMIZER,
              help="bootstrap (BootstrapFewShot), random_search (BootstrapFewShotWithRandomSearch), gepa "
                   "(dspy.GEPA, the constraints' messages as its feedback) or refine (the constrained steps "
                   "run in dspy.Refine with the constraints' reward)")
    @argument("--max-metric-calls", type=int, default=None,
              help=f"--optimizer gepa: program runs GEPA may score (default {GEPA_MAX_METRIC_CALLS})")
    @argument("--time-cap", type=float, default=None,
              help=f"--optimizer gepa: seconds after which GEPA stops proposing (default {GEPA_TIME_CAP_SECONDS:g})")
    @argument("--settings", default=None,
              help=f"comma list of settings to run (default: all): {','.join(SETTINGS)}")
    @argument("--backtracks", "-b", type=int, default=MAX_BACKTRACKS,
              help=f"retries per program call, shared by all its constraints as in DSPy 2.5 (default {MAX_BACKTRACKS})")
    @argument("--budget", choices=BUDGETS, default=BUDGET,
              help="shared (default, DSPy 2.5: --backtracks per call) or per_constraint (--backtracks for each "
                   "constraint at each place)")
    @argument("--seed", type=int, default=SEED,
              help=f"run seed: retries sample from rollouts derived from it (default {SEED})")
    @argument("--retry-temperature", type=float, default=RETRY_TEMPERATURE,
              help=f"temperature of a retry when the LM's is 0 (default {RETRY_TEMPERATURE})")
    @argument("--stop-on-repeat", action=argparse.BooleanOptionalAction, default=STOP_ON_REPEAT,
              help="a retry that repeats an earlier output is told so, and a second repeat stops that step's "
                   "retries (default on; --no-stop-on-repeat spends every retry)")
    @argument("--stop-at-failing-judge", action=argparse.BooleanOptionalAction, default=STOP_AT_FAILING_JUDGE,
              help="ask an attempt's LM judges one at a time and stop at the first that fails while a retry is "
                   "left, as DSPy 2.5's Suggests did (default on; --no-stop-at-failing-judge asks them all)")
    @argument("--batch-judges", action=argparse.BooleanOptionalAction, default=BATCH_JUDGES,
              help="ask a step's LM judges about one output in one LM call (default off: on the embedded model "
                   "batched verdicts disagree with separate ones; bench/judge_batching.py measures yours)")
    @argument("--keep-soft-failures", action="store_true",
              help="keep traces that still fail a soft constraint as demos (DSPy 2.5 did; default: drop them)")
    @argument("--max-errors", type=int, default=MAX_ERRORS,
              help="stop a compile once this many training examples fail (default: never)")
    @argument("--counterexamples", choices=COUNTEREXAMPLE_MODES, default=COUNTEREXAMPLES,
              help="where counterexample demos show their feedback: retry (retry prompts only, as in DSPy 2.5) "
                   "or prompt (also in the normal prompt's instructions)")
    @argument("--threads", type=int, default=THREADS, help=f"parallel examples (default {THREADS})")
    @argument("--async", dest="concurrency", type=int, default=CONCURRENCY, metavar="N",
              help="evaluate with await program.acall(...), N examples at a time in one event loop (same tables "
                   "as the threaded run; compiles keep --threads)")
    @argument("-o", "--output", default=None, help="notebook variable to store the report in")
    def compile_magic(self, line: str, cell: str) -> None:
        """Build the pipeline in the body and run the five-setting ablation on it.

        The body is the pipeline: registered signatures and plain Python callables (retrievers,
        formatters) joined with `>>` (a chain may go on over lines, or put one step per line),
        wired by field name::

            %%compile tweeter --train trainset --dev devset --metric quality
            retrieve >> GenerateTweet

        or the name of a dspy.Module subclass (or instance) from the notebook that uses registered
        signatures. Wiring: each signature step takes its input fields from what the examples'
        inputs and earlier steps provide; a callable gets the fields its parameters name and returns
        a dict (merged), or a single value that goes to the one missing input of the next step.
        Constraints (%%assert) on the signatures used are attached; others are skipped with a note.

        `--optimizer gepa` compiles with dspy.GEPA instead of bootstrapping: with assertions its metric
        gives the failed constraints' messages as feedback (`--max-metric-calls`, `--time-cap` bound it);
        `--optimizer refine` runs each constrained step in dspy.Refine with the constraints' reward.

        NAME is bound to the compiled program: the C+Infer w/ Assert program (compiled with
        assertions, backtracking on) when that was compiled, else the most compiled program run.
        The report is displayed and, with -o VAR, stored. On interrupt (Kernel > Interrupt) the
        partial report is stored and shown and KeyboardInterrupt is re-raised; NAME is not bound.
        If every example fails in every setting (e.g. the LM is down) the cell fails and nothing is
        recorded. Nothing in the line or body is expanded: `{x}` and `$x` stay as written
        (@no_var_expand).
        """
        args = parse_line(self.compile_magic, line)
        name = check_identifier(args.name, "the program name")
        if args.output is not None:
            check_identifier(args.output, "-o")
            if args.output == name:
                fail("-o must differ from NAME (NAME gets the program, -o the report)", 1)
            self.check_bindable(args.output, _is_report, "report")
        if args.backtracks < 0:
            fail("--backtracks must be 0 or more", 1)
        if args.threads < 1:
            fail("--threads must be 1 or more", 1)
        if args.concurrency is not None and args.concurrency < 1:
            fail("--async must be 1 or more", 1)
        if args.max_errors is not None and args.max_errors < 1:
            fail("--max-errors must be 1 or more", 1)
        if not 0 <= args.retry_temperature <= 2:
            fail(f"--retry-temperature must be between 0 and 2, got {args.retry_temperature}", 1)
        optimizer_kwargs = _optimizer_options(args)
        try:
            settings = normalize_settings(args.settings)
        except ValueError as exc:
            fail(f"--settings: {exc}", 1)
        steps = parse_pipeline_body(cell)

        trainset = _examples(self.lookup(args.train, "--train", predicate=lambda v: isinstance(v, (list, tuple))),
                             "--train")
        devset = _examples(self.lookup(args.dev, "--dev", predicate=lambda v: isinstance(v, (list, tuple))), "--dev")
        metric = self.lookup(args.metric, "--metric", predicate=callable)
        if not callable(metric):
            fail(f"--metric {args.metric!r} is a {type(metric).__name__}, not a function", 1)
        if not devset:
            fail("--dev: the dev set is empty", 1)
        needs_train = any(s in settings for s in (COMPILE, COMPILE_ASSERT, C_INFER_ASSERT))
        if needs_train and not trainset:
            fail("--train: the train set is empty (the compile settings need examples)", 1)
        self.check_bindable(name, lambda v: isinstance(v, dspy.Module) or v is None, "compiled program")

        spec = PipelineSpec(name, steps, cell)
        inputs = sorted(devset[0].inputs().keys())
        with user_errors():
            plan = self.registry.plan_pipeline(spec, self.user_ns, example_inputs=inputs)
        for note in plan.skipped:
            print(f"Note: {note}")

        economies = {"stop_on_repeat": args.stop_on_repeat, "batch_judges": args.batch_judges,
                     "stop_at_failing_judge": args.stop_at_failing_judge}
        lm = ensure_lm()
        try:
            from ..report import CompileReport, progress_reporter
        except ImportError:
            CompileReport = progress_reporter = None  # noqa: N806

        lm_context = dspy.context(lm=lm) if lm is not None and dspy.settings.lm is not lm else contextlib.nullcontext()
        reporter = (progress_reporter(settings, len(trainset), len(devset)) if progress_reporter is not None
                    else contextlib.nullcontext(None))
        with lm_context, reporter as progress:
            result = run_ablation(
                plan.program, trainset, devset, metric,
                constraints=plan.constraints, settings=settings, max_backtracks=args.backtracks,
                optimizer=args.optimizer, num_threads=args.threads, concurrency=args.concurrency,
                progress=progress,
                budget=args.budget, seed=args.seed, retry_temperature=args.retry_temperature,
                keep_soft_failures=args.keep_soft_failures, max_errors=args.max_errors,
                counterexamples=args.counterexamples, optimizer_kwargs=optimizer_kwargs, **economies,
            )
        result.calibrations = {
            c.name: cal for c in plan.constraints if (cal := self.registry.calibration_of(c.name)) is not None
        }
        failure = result.failed_everywhere()
        if failure is not None:
            first = next(iter(result.settings.values())).examples[0]
            error = _redact(first.error or "")  # an LM's error may quote the API key
            if failure == "PipelineError":  # the body's wiring, not the LM
                fail(f"the pipeline fails on every example: {error}", 2)
            if failure == "ConstraintError":  # a %%assert's own code, not the LM
                fail(f"every example failed because a check is broken: {error.split(': ', 1)[-1]}; "
                     "fix its %%assert cell (or remove it with %lmassert remove NAME)")
            raise CompileFailed(f"every example failed in every setting; the first error: {error}")

        # an interrupted run binds nothing, so its record holds no program either (export would write one)
        run_config = {"budget": args.budget, "seed": args.seed, "retry_temperature": args.retry_temperature,
                      **economies}
        program = (None if result.interrupted else
                   program_to_bind(result, plan.program, plan.constraints, args.backtracks, **run_config))
        report = (CompileReport(result, program=program, name=name,
                                on_review=review_handler(self, name, result) if program is not None else None)
                  if CompileReport is not None else None)
        options = {
            "train": args.train, "dev": args.dev, "metric": args.metric, "optimizer": args.optimizer,
            "settings": list(settings), "backtracks": args.backtracks, "threads": args.threads,
            "concurrency": args.concurrency,
            "output": args.output, "budget": args.budget, "seed": args.seed,
            "retry_temperature": args.retry_temperature, "keep_soft_failures": args.keep_soft_failures,
            "max_errors": args.max_errors, "counterexamples": args.counterexamples, **economies, **optimizer_kwargs,
        }
        with user_errors():
            self.registry.record_compile(plan, result=result, program=program, options=options, report=report,
                                         interrupted=result.interrupted)
        if not result.interrupted and program is not None:
            self.user_ns[name] = program
        if args.output is not None:
            self.user_ns[args.output] = report if report is not None else result
        display(report if report is not None else result.summary())
        if result.interrupted:
            done = ", ".join(result.settings) or "none"
            print(f"Interrupted: partial results stored (settings finished: {done}); {name} was not bound.")
            raise KeyboardInterrupt
        attached = ", ".join(plan.attached) or "none"
        print(f"{name}: {plan.program.__class__.__name__} with constraints {attached}")
