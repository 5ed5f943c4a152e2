"""Every default value of the package, defined once.

Imports nothing from the package (nor anything else), so every layer may import it without a loop:
the engine's functions, the definitions (`%%assert` specs), the magics' argument defaults and
their help texts all read their defaults here. Change a default here and it changes everywhere.
The range check of the backtrack budget (`check_max_backtracks`) lives beside its default.
"""

from __future__ import annotations

__all__ = [
    "BATCH_JUDGES",
    "BUDGET",
    "CHECK_TIMEOUT_SECONDS",
    "CONCURRENCY",
    "CONFIDENCE",
    "COUNTEREXAMPLES",
    "GEPA_CONSTRAINT_WEIGHT",
    "GEPA_MAX_METRIC_CALLS",
    "GEPA_TIME_CAP_SECONDS",
    "KEEP_SOFT_FAILURES",
    "MAX_BACKTRACKS",
    "MAX_ERRORS",
    "OPTIMIZER",
    "PYTHON_CHECK_TIMEOUT_SECONDS",
    "REFINE_THRESHOLD",
    "RETRY_TEMPERATURE",
    "SEED",
    "STATS_SEED",
    "SOFT_PENALTY",
    "THREADS",
    "check_max_backtracks",
]

#: Retries per forward call, shared by all its constraints (DSPy 2.5's budget): at most
#: MAX_BACKTRACKS + 1 attempts. `%%compile --backtracks`, `run_ablation`, `compile_program`,
#: `activate_assertions`, `RunConfig`, `backtrack_handler`.
MAX_BACKTRACKS: int = 2


def check_max_backtracks(value: int, owner: str = "") -> None:
    """Refuse a negative number of retries: the one check of every place that takes one.

    `owner` prefixes the message, e.g. "constraint 'short': ".
    """
    if value < 0:
        raise ValueError(f"{owner}max_backtracks must be >= 0")


#: How the budget is shared: "shared" (DSPy 2.5: MAX_BACKTRACKS per call for all constraints) or
#: "per_constraint" (the names are `engine.context.SHARED` / `PER_CONSTRAINT`).
BUDGET: str = "shared"

#: Seconds one check of a constraint defined with `%%assert` may take (`AssertionMagics.check_timeout`,
#: `%%assert --timeout`, `ConstraintSpec.timeout`). A cell's check may call an LM judge or notebook code
#: that hangs; the notebook must not.
CHECK_TIMEOUT_SECONDS: float = 120.0

#: The time limit of a `Constraint` built in Python (`engine.Constraint(timeout=...)`): none, so its
#: check runs inline on the calling thread unless the caller asks for a limit.
PYTHON_CHECK_TIMEOUT_SECONDS: float | None = None

#: Ask a step's LM judges about one output in one LM call (`activate_assertions(batch_judges=...)`). Off: on the
#: embedded model, TweetGen's engaging and faithful judges asked together agreed with the same judges asked apart
#: on 49% of 160 verdicts (95% CI 42-57%, kappa -0.01; the batched call said yes to the first question and no to
#: the second every time; bench/judge_batching.py, bench/results/judge_batching.json). Turn it on for an LM whose
#: batched verdicts agree with its separate ones (measure with that script).
BATCH_JUDGES: bool = False

#: A retry whose output repeats an earlier attempt's is told so in its next feedback, and a second repeat stops
#: that step's retries (`activate_assertions(stop_on_repeat=...)`, `%%compile --no-stop-on-repeat`): at
#: temperature 0 a repeat is the same prompt answered the same way, a call that cannot change the verdict.
STOP_ON_REPEAT: bool = True

#: An attempt's LM judges are asked one at a time and judging stops at the first that fails once its retry is
#: paid for, as DSPy 2.5's first failing Suggest stopped the run (`stop_at_failing_judge=...`,
#: `%%compile --no-stop-at-failing-judge`): the later judges' verdicts on an output about to be replaced are
#: calls spent on nothing. An output that cannot be retried is judged by every judge.
STOP_AT_FAILING_JUDGE: bool = True

#: Temperature of a retry when the LM's own is 0 or unset (a positive LM temperature is kept).
RETRY_TEMPERATURE: float = 0.7

#: Run seed: retries sample from rollouts derived from it (`%%compile --seed`).
SEED: int = 0

#: Parallel examples in an evaluation (`%%compile --threads`, `run_ablation(num_threads=...)`).
THREADS: int = 1

#: Examples in flight in an async evaluation (`%%compile --async N`, `run_ablation(concurrency=N)`): None runs
#: the threaded evaluation; N runs each example with `await program.acall(...)`, N at a time, in one event loop.
CONCURRENCY: int | None = None

#: The compile optimizer: "bootstrap" (BootstrapFewShot) or "random_search".
OPTIMIZER: str = "bootstrap"

#: GEPA's budget (`%%compile --optimizer gepa --max-metric-calls`, `max_metric_calls=`): program runs it may
#: score. On a 2-core laptop with the embedded model a TweetGen run costs about 4 s (two steps, two judged
#: constraints), so 100 runs are about 7 minutes plus the reflection calls: a first evaluation of the
#: train set and a handful of proposals.
GEPA_MAX_METRIC_CALLS: int = 100

#: The constraints' share of a GEPA score (`engine.signals.gepa_metric`): score = (1 - w) x metric + w x
#: share of constraints passed, 0 when a hard one fails.
GEPA_CONSTRAINT_WEIGHT: float = 0.5

#: GEPA stops proposing after this many seconds whatever budget is left (`--time-cap`, `time_cap=`): a
#: workshop cell must end. A run stopped by it depends on the machine's speed; the compile notes say so.
GEPA_TIME_CAP_SECONDS: float = 900.0

#: The reward `dspy.Refine` must reach to stop early (`--optimizer refine`): every constraint passes.
REFINE_THRESHOLD: float = 1.0

#: Where counterexample demos show their feedback: "retry" (retry prompts only, as DSPy 2.5) or "prompt".
COUNTEREXAMPLES: str = "retry"

#: Keep traces whose output still fails a soft constraint as demos (DSPy 2.5 did; default: drop them).
KEEP_SOFT_FAILURES: bool = False

#: Stop a compile once this many training examples fail; None: never.
MAX_ERRORS: int | None = None

#: How much one soft failure lowers a candidate's score in assertion-aware candidate selection.
SOFT_PENALTY: float = 0.1

#: Confidence of every interval the numbers carry (Wilson for rates, bootstrap for means and differences).
CONFIDENCE: float = 0.95

#: Seed of the bootstrap resampling behind metric intervals (not the run seed: it only draws resamples).
STATS_SEED: int = 0
