"""What a run of an asserted program leaves behind: per-constraint counts and counterexamples.

Two units are kept apart. *Checks* count every place a constraint was checked on the output a
run returned (a multi-hop program checks its query constraint once per hop). *Examples* count
runs: a constraint passes in an example only if every one of its checks on the returned output
passed. Pass rates are per example; check counts are raw columns beside them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

#: `Attempt.stopped` when a step's retries ended because a retry repeated an earlier output a second time.
IDENTICAL_OUTPUT = "identical output"


@dataclass
class ConstraintStats:
    """Counts for one constraint, summed over runs (one run = one example)."""

    name: str
    hard: bool
    checks: int = 0  # places checked on the returned output
    first_try_passes: int = 0  # ...that passed on their first attempt
    passes_after_backtrack: int = 0  # ...that failed first and pass on the returned output
    final_failures: int = 0  # ...that fail on the returned output
    backtracks: int = 0  # retries this constraint triggered
    errors: int = 0
    examples: int = 0  # runs whose returned output was checked at least once
    passed_first: int = 0  # ...where every first attempt passed
    passed_final: int = 0  # ...where every check on the returned output passed

    @property
    def final_passes(self) -> int:
        return self.first_try_passes + self.passes_after_backtrack

    @property
    def pass_rate(self) -> float:
        """Share of examples whose returned output satisfies the constraint."""
        return self.passed_final / self.examples if self.examples else float("nan")

    @property
    def first_try_rate(self) -> float:
        return self.passed_first / self.examples if self.examples else float("nan")

    @property
    def check_pass_rate(self) -> float:
        """Share of raw checks that passed (a multi-hop step counts once per hop)."""
        return self.final_passes / self.checks if self.checks else float("nan")

    def merge(self, other: ConstraintStats) -> None:
        for name in ("checks", "first_try_passes", "passes_after_backtrack", "final_failures", "backtracks",
                     "errors", "examples", "passed_first", "passed_final"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


@dataclass
class Counterexample:
    """One backtrack: the failing output, the feedback it got, and what came after (None if never fixed)."""

    constraint: str
    hard: bool
    predictor: str
    inputs: dict[str, Any]
    failing_outputs: dict[str, Any]
    feedback: str
    fixed_outputs: dict[str, Any] | None = None

    @property
    def fixed(self) -> bool:
        return self.fixed_outputs is not None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Attempt:
    """One LM call of one step in a run: what it was given, what it returned, how the checks judged it.

    Kept so a run can be replayed as a timeline. `attempt` counts the step's calls in this run (0 is the
    first try); `reason` is "first", "retry" (sent with feedback) or "rerun" (an earlier step was retried,
    so this step ran again on its new inputs). `verdicts` maps each constraint checked on this output to
    whether it passed; `kept` is True for the attempts whose output the run returned. `lm_calls` is the
    step's own call, `judge_calls` the LM-judge calls made while checking it; tokens (theirs too) include
    cached answers; `seconds` spans the call and its checks. `repeat_of` is set on a retry whose inputs and
    outputs equal those of an earlier attempt of the step (that attempt's number); `stopped` says why the
    step was not retried after this attempt although a constraint failed and budget was left
    (`IDENTICAL_OUTPUT`), None otherwise.
    """

    seq: int  # position in the run's timeline (start order)
    step: str  # the predictor's name in the program
    attempt: int
    reason: str
    inputs: dict[str, Any]
    feedback: list[str] = field(default_factory=list)
    outputs: dict[str, Any] = field(default_factory=dict)
    verdicts: dict[str, bool] = field(default_factory=dict)
    kept: bool = False
    error: str | None = None
    lm_calls: int = 0
    judge_calls: int = 0
    cache_hits: int = 0
    tokens: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    repeat_of: int | None = None
    stopped: str | None = None


@dataclass
class RunRecord:
    """One call of an asserted program (one example).

    `lm_calls` counts every LM request the run made (predictor attempts and judge calls), whether
    the cache answered it or not; `cache_hits` says how many the cache answered. `observe_lm_calls`
    are judge calls spent only on measuring outputs (constraints observed, not enforced).
    """

    constraints: dict[str, ConstraintStats] = field(default_factory=dict)
    counterexamples: list[Counterexample] = field(default_factory=list)
    lm_calls: int = 0
    tokens: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    observe_lm_calls: int = 0
    passes: int = 0  # forward passes (1 + backtracks that re-ran forward)
    error: str | None = None
    warnings: list[str] = field(default_factory=list)
    kinds: dict[str, str] = field(default_factory=dict)  # constraint name -> "declared" | "inline"
    attempts: list[Attempt] = field(default_factory=list)  # every step's LM calls, in the order they started

    @property
    def backtracks(self) -> int:
        return sum(s.backtracks for s in self.constraints.values())

    def passed(self, name: str) -> bool | None:
        """Whether the returned output satisfies constraint `name` (None: not checked in this run)."""
        stats = self.constraints.get(name)
        if stats is None or not stats.examples:
            return None
        return bool(stats.passed_final)

    @property
    def all_passed(self) -> bool | None:
        """Whether the returned output satisfies every constraint checked on it (None: none was)."""
        verdicts = [self.passed(n) for n in self.constraints]
        verdicts = [v for v in verdicts if v is not None]
        return all(verdicts) if verdicts else None

    def final_failures(self, hard: bool | None = None) -> list[str]:
        """Names of constraints the returned output fails (only hard or soft ones if asked)."""
        return [
            n for n, s in self.constraints.items()
            if s.examples and not s.passed_final and (hard is None or s.hard == hard)
        ]


class RunLog:
    """Thread-safe sink for RunRecords; the lock guards an append, never a run."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.records: list[RunRecord] = []

    def add(self, record: RunRecord) -> None:
        with self._lock:
            self.records.append(record)

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def __len__(self) -> int:
        return len(self.records)

    def __deepcopy__(self, memo: dict) -> RunLog:
        return RunLog()  # a copied program starts with an empty log

    def constraint_stats(self) -> dict[str, ConstraintStats]:
        return merge_stats(r.constraints for r in list(self.records))

    def counterexamples(self) -> list[Counterexample]:
        return [c for r in list(self.records) for c in r.counterexamples]


def merge_stats(parts: Iterable[dict[str, ConstraintStats]]) -> dict[str, ConstraintStats]:
    total: dict[str, ConstraintStats] = {}
    for part in parts:
        for name, stats in part.items():
            total.setdefault(name, ConstraintStats(name, stats.hard)).merge(stats)
    return total
