"""The peer benchmark's checkpoint (one JSON object per line, appended as each example finishes) and its
progress lines.

Why a checkpoint: a full run takes hours of model time on two cores; an interruption must cost at most the
example in flight. Rows are keyed by kind ("run": a system's outputs and costs on one example, "score": its
verdicts and quality), study, system and example id; a restart skips the keys it finds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any


class Checkpoint:
    """An append-only JSONL file of rows; `fresh=True` starts it over."""

    def __init__(self, path: Path, *, fresh: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fresh and self.path.exists():
            self.path.unlink()
        self._rows: list[dict[str, Any]] = []
        if self.path.exists():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if line.strip():
                    try:
                        self._rows.append(json.loads(line))
                    except json.JSONDecodeError:  # a line cut by the interruption: its example runs again
                        continue

    def append(self, row: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=str) + "\n")
        self._rows.append(row)

    @property
    def all_rows(self) -> list[dict[str, Any]]:
        return list(self._rows)

    def rows(self, kind: str, study: str | None = None, system: str | None = None) -> list[dict[str, Any]]:
        """Rows of one kind (and study, system), the last one kept per example, in first-seen order."""
        kept: dict[tuple, dict[str, Any]] = {}
        for row in self._rows:
            if row.get("kind") != kind or (study and row.get("study") != study):
                continue
            if system and row.get("system") != system:
                continue
            kept[(row.get("study"), row.get("system"), row.get("id"))] = row
        return list(kept.values())

    def done(self, kind: str, study: str, system: str) -> set[str]:
        return {row["id"] for row in self.rows(kind, study, system)}

    def first(self, kind: str) -> dict[str, Any] | None:
        return next((row for row in self._rows if row.get("kind") == kind), None)


class Progress:
    """`study | system | 12/80 | 5 calls (2 judge, 1 cache hit) | 4.1 s | about 5 min left` per example."""

    def __init__(self, study: str, system: str, total: int, done: int) -> None:
        self.study, self.system, self.total, self.count = study, system, total, done
        self.started = time.monotonic()
        self.ran = 0

    def line(self, row: dict[str, Any]) -> str:
        self.count += 1
        self.ran += 1
        left = (time.monotonic() - self.started) / self.ran * (self.total - self.count)
        mark = f" | error: {row['error'][:80]}" if row.get("error") else ""
        return (f"{self.study} | {self.system} | {self.count}/{self.total} | {row['lm_calls']} calls "
                f"({row['judge_calls']} judge, {row['cache_hits']} cache hits) | {row['seconds']:.1f} s | "
                f"about {left / 60:.0f} min left{mark}")
