"""What a run of an asserted program leaves behind: per-constraint counts and counterexamples."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ConstraintStats:
    """Counts for one constraint; `checks` counts each place it was checked in a run once."""

    name: str
    hard: bool
    checks: int = 0
    first_try_passes: int = 0
    passes_after_backtrack: int = 0
    final_failures: int = 0
    backtracks: int = 0
    errors: int = 0

    @property
    def final_passes(self) -> int:
        return self.first_try_passes + self.passes_after_backtrack

    @property
    def pass_rate(self) -> float:
        return self.final_passes / self.checks if self.checks else float("nan")

    def merge(self, other: ConstraintStats) -> None:
        self.checks += other.checks
        self.first_try_passes += other.first_try_passes
        self.passes_after_backtrack += other.passes_after_backtrack
        self.final_failures += other.final_failures
        self.backtracks += other.backtracks
        self.errors += other.errors


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
class RunRecord:
    """One call of an asserted program."""

    constraints: dict[str, ConstraintStats] = field(default_factory=dict)
    counterexamples: list[Counterexample] = field(default_factory=list)
    lm_calls: int = 0
    tokens: int = 0
    error: str | None = None

    @property
    def backtracks(self) -> int:
        return sum(s.backtracks for s in self.constraints.values())


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
