"""What an ablation produced: per example, per setting, and for the whole run, with its tables
(pandas DataFrames), paired comparisons and generated headlines."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import dspy
import pandas as pd

from . import defaults
from .compile import CompileSummary
from .constraints import Constraint
from .five_settings import ALL_CONSTRAINTS, HEADLINE_PAIRS, LABELS, SETTINGS
from .records import ConstraintStats, Counterexample, RunRecord, merge_stats
from .stats import PairedDiff, Rate, describe_difference, mean_interval, paired_difference, proportion_interval, rate_of


@dataclass
class ExampleResult:
    index: int
    inputs: dict[str, Any]
    outputs: dict[str, Any]
    score: float
    record: RunRecord | None
    error: str | None = None
    error_type: str | None = None  # the exception class the program raised (None: the metric failed, or no error)

    @property
    def ok(self) -> bool:
        return self.error is None



@dataclass
class SettingResult:
    """One setting's evaluation.

    `lm_calls` are the program's own LM requests, cache hits included: in the enforcing settings
    they include judge calls (a judge drives retries there); in Vanilla and Compile, where
    constraints are only observed, judge calls go to `observe_lm_calls` instead.
    """

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
    truncated_responses: int = 0  # LM responses cut at max_tokens (compile and evaluation)
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
    def warnings(self) -> dict[str, int]:
        """Bookkeeping problems of this setting's runs (e.g. a record a result could not carry), counted."""
        counts: dict[str, int] = {}
        for e in self.examples:
            for message in e.record.warnings if e.record is not None else ():
                counts[message] = counts.get(message, 0) + 1
        return counts

    def verdicts(self, name: str) -> list[bool | None]:
        """Per example (in dev-set order): whether the returned output satisfies `name`; None if unchecked."""
        if name == ALL_CONSTRAINTS:
            return [_all_passed(e) for e in self.examples]
        return [e.record.passed(name) if e.record is not None else None for e in self.examples]

    def rate(self, name: str, confidence: float = defaults.CONFIDENCE) -> Rate:
        """The share of checked examples satisfying `name` (or every constraint), with its Wilson interval."""
        verdicts = [v for v in self.verdicts(name) if v is not None]
        return rate_of(sum(verdicts), len(verdicts), confidence)

    def scores(self) -> list[float]:
        return [e.score for e in self.examples]

    def metric_interval(
        self, seed: int = defaults.STATS_SEED, confidence: float = defaults.CONFIDENCE,
    ) -> tuple[float, float]:
        """Wilson for 0/1 scores, a seeded bootstrap of the mean otherwise (0..1 scale)."""
        scores = self.scores()
        if all(x in (0.0, 1.0) for x in scores):
            return proportion_interval(int(sum(scores)), len(scores), confidence)
        return mean_interval(scores, confidence, seed)

    def per_example(self, total: float) -> float:
        return total / self.n if self.n else math.nan

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
    seed: int = defaults.SEED
    config: dict[str, Any] = field(default_factory=dict)
    calibrations: dict[str, Any] = field(default_factory=dict)  # constraint name -> CalibrationResult

    def failed_everywhere(self) -> str | None:
        """When every example of every setting failed, the exception type they share ("" if they differ).

        None when any example succeeded (or none ran). Tells a broken pipeline or check (one type, raised
        before any LM call) from an LM that cannot be reached.
        """
        examples = [e for s in self.settings.values() for e in s.examples]
        if not examples or any(e.ok for e in examples):
            return None
        kinds = {e.error_type for e in examples}
        return kinds.pop() or "" if len(kinds) == 1 else ""

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

    def measures(self) -> list[str]:
        """Constraint names, then "all constraints" when there is more than one."""
        names = [name for name, _ in self.constraint_infos()]
        return names + [ALL_CONSTRAINTS] if len(names) > 1 else names

    def summary(self) -> pd.DataFrame:
        """One row per setting: the metric and each pass rate (% of examples) with 95% intervals, and costs.

        Each measure `m` has columns `m`, `m ci_low`, `m ci_high`; `n` is the number of dev examples.
        Costs are per example and counted the same way in every setting: `lm_calls/ex` are the
        program's LM requests (cache hits included), `observe_calls/ex` judge calls spent only on
        measuring, tokens include the requests the cache answered. Seconds depend on the cache.
        """
        rows = []
        for res in self.settings.values():
            row: dict[str, Any] = {"setting": res.label, "n": res.n, "failed": res.n_failed}
            low, high = res.metric_interval(self.seed)
            row[self.metric_name] = 100 * res.metric
            row[f"{self.metric_name} ci_low"], row[f"{self.metric_name} ci_high"] = 100 * low, 100 * high
            for name in self.measures():
                rate = res.rate(name)
                row[name] = 100 * rate.rate
                row[f"{name} ci_low"], row[f"{name} ci_high"] = 100 * rate.ci_low, 100 * rate.ci_high
            row["lm_calls/ex"] = res.per_example(res.lm_calls)
            row["cache_hits/ex"] = res.per_example(res.cache_hits)
            row["observe_calls/ex"] = res.per_example(res.observe_lm_calls)
            row["tokens/ex"] = res.per_example(res.tokens)
            row["prompt_tokens/ex"] = res.per_example(res.prompt_tokens)
            row["completion_tokens/ex"] = res.per_example(res.completion_tokens)
            row["seconds"] = res.seconds
            rows.append(row)
        return pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()

    def pass_rates(self) -> pd.DataFrame:
        """Long form: setting x constraint (and "all constraints"); the rate is the share of examples whose
        returned output satisfies it, with n and a 95% Wilson interval; raw check counts beside it."""
        rows = []
        infos = dict(self.constraint_infos())
        for res in self.settings.values():
            stats = res.constraint_stats
            for name in self.measures():
                rate = res.rate(name)
                s = stats.get(name) or ConstraintStats(name, infos.get(name, False))
                kind = "all" if name == ALL_CONSTRAINTS else ("hard" if infos.get(name) else "soft")
                rows.append(
                    {
                        "setting": res.label,
                        "constraint": name,
                        "kind": kind,
                        "n": rate.n,
                        "passed": rate.successes,
                        "pass_rate": 100 * rate.rate,
                        "ci_low": 100 * rate.ci_low,
                        "ci_high": 100 * rate.ci_high,
                        "passed_first": s.passed_first,
                        "examples": s.examples,
                        "checks": s.checks,
                        "first_try_passes": s.first_try_passes,
                        "passes_after_backtrack": s.passes_after_backtrack,
                        "final_failures": s.final_failures,
                        "backtracks": s.backtracks,
                        "errors": s.errors,
                    }
                )
        return pd.DataFrame(rows)

    def comparisons(self) -> pd.DataFrame:
        """Each like-with-like pair of settings, per measure, paired by example (see HEADLINE_PAIRS).

        `diff` and its interval are in percentage points (metric: in points of 100 x its scale);
        `distinguishable` is False when the difference cannot be told from noise at this n.
        """
        rows = []
        for base_key, key in HEADLINE_PAIRS:
            if base_key not in self.settings or key not in self.settings:
                continue
            for measure, diff in self._pair_diffs(base_key, key):
                rows.append({
                    "base": diff.name_a, "setting": diff.name_b, "measure": measure, "n": diff.n,
                    "base_rate": 100 * diff.mean_a, "rate": 100 * diff.mean_b, "diff": 100 * diff.diff,
                    "ci_low": 100 * diff.ci_low, "ci_high": 100 * diff.ci_high, "up": diff.up, "down": diff.down,
                    "dropped": diff.dropped, "p_value": diff.mcnemar_p if diff.mcnemar_p is not None else diff.sign_p,
                    "distinguishable": diff.distinguishable, "method": diff.method, "binary": diff.binary,
                    "is_metric": measure == self.metric_name and measure not in self.measures(),
                    "sentence": describe_difference(measure, diff),
                })
        cols = ["base", "setting", "measure", "n", "base_rate", "rate", "diff", "ci_low", "ci_high", "up", "down",
                "dropped", "p_value", "distinguishable", "method", "binary", "is_metric", "sentence"]
        return pd.DataFrame(rows, columns=cols)

    def _pair_diffs(self, base_key: str, key: str) -> list[tuple[str, PairedDiff]]:
        base, other = self.settings[base_key], self.settings[key]
        out = []
        for name in self.measures():
            a = [None if v is None else float(v) for v in base.verdicts(name)]
            b = [None if v is None else float(v) for v in other.verdicts(name)]
            if any(v is not None for v in a) and any(v is not None for v in b):
                out.append((name, paired_difference(a, b, seed=self.seed, name_a=base.label, name_b=other.label)))
        out.append((self.metric_name, paired_difference(
            base.scores(), other.scores(), seed=self.seed, name_a=base.label, name_b=other.label)))
        return out

    def quality_changes(self, base_key: str, key: str) -> pd.DataFrame:
        """Examples whose metric differs between two settings, with the constraints whose retries
        touched them in `key`: where a quality loss under assertions comes from."""
        base, other = self.settings[base_key], self.settings[key]
        rows = []
        for b, e in zip(base.examples, other.examples):
            if b.score == e.score:
                continue
            retried = sorted({c.constraint for c in (e.record.counterexamples if e.record else [])})
            rows.append({"index": e.index, "base_score": b.score, "score": e.score, "retried_for": retried,
                         "base_outputs": b.outputs, "outputs": e.outputs, "error": e.error})
        cols = ["index", "base_score", "score", "retried_for", "base_outputs", "outputs", "error"]
        return pd.DataFrame(rows, columns=cols)

    def explain_quality(self, base_key: str, key: str) -> str:
        """A sentence, generated from the examples, on where the metric moved between two settings and
        which constraints' retries were involved."""
        base, other = self.settings[base_key], self.settings[key]
        changes = self.quality_changes(base_key, key)
        fell = changes[changes.score < changes.base_score]
        rose = changes[changes.score > changes.base_score]
        text = (f"{self.metric_name} fell on {len(fell)} of {other.n} examples and rose on {len(rose)} "
                f"from {base.label} to {other.label}")
        if len(fell):
            counts: dict[str, int] = {}
            for names in fell.retried_for:
                for name in names:
                    counts[name] = counts.get(name, 0) + 1
            if counts:
                listed = ", ".join(f"{n} ({k})" for n, k in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
                text += f"; the examples that fell were retried for {listed}"
            else:
                text += "; none of the examples that fell was retried (their change came from demos or sampling)"
        return text + "."

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
        """Sentences an instructor can read aloud, generated from this run's numbers, like with like.

        Infer w/ Assert vs Vanilla (assertions at inference), Compile w/ Assert vs Compile
        (assertions while compiling), C+Infer w/ Assert vs Compile w/ Assert (inference on top).
        Each carries n and a 95% interval on the paired difference; one whose interval holds 0 says
        in words that it cannot be told from noise. The metric line comes first in each pair, so a
        quality loss is as visible as a constraint gain; then the extra LM calls it cost.
        """
        lines = []
        for base_key, key in HEADLINE_PAIRS:
            if base_key not in self.settings or key not in self.settings:
                continue
            diffs = self._pair_diffs(base_key, key)
            metric_diff = diffs[-1][1]
            lines.append(describe_difference(self.metric_name, metric_diff))
            lines.extend(describe_difference(name, diff) for name, diff in diffs[:-1])
            base, other = self.settings[base_key], self.settings[key]
            extra = other.per_example(other.lm_calls) - base.per_example(base.lm_calls)
            lines.append(
                f"cost: {other.label} made {other.per_example(other.lm_calls):.2f} LM calls per example against "
                f"{base.per_example(base.lm_calls):.2f} for {base.label} ({extra:+.2f})."
            )
        return lines



def _all_passed(example: ExampleResult) -> bool | None:
    """Whether an example's returned output satisfies every constraint checked on it; a run that
    raised (e.g. a hard failure) satisfies none; None when nothing was checked."""
    record = example.record
    verdict = record.all_passed if record is not None else None
    if verdict is None:
        return None
    return verdict and example.error is None
