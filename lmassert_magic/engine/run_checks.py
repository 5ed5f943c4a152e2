"""Checking declared constraints on a step's output, for a run (`run_state.RunState` is a `RunChecks`).

Kept apart from the rest of the run's state for size only: these methods use the run's lock, verdicts
(`checks`, `kinds`), judge memo (`judged`), pending counterexamples and record, set up by `RunState`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from .constraints import (
    Constraint,
    answering_from,
    ask_together,
    hide_trace,
    judge_request,
    learn_uses_lm,
    show_trace,
    uses_lm,
)
from .context import RunConfig, inside_check
from .errors import ConstraintError
from .records import ConstraintStats, Counterexample, RunRecord
from .tally import calls_in_check, start_counting_check_calls, stop_counting_check_calls

logger = logging.getLogger("lmassert_magic")

def _fields_key(fields: dict[str, Any]) -> str:
    """What a judge saw: the same step inputs and the same outputs give the same key."""
    return repr(sorted(fields.items()))



@dataclass
class _Check:
    """One place a constraint is checked: its first verdict and its latest one."""

    name: str
    hard: bool
    first: bool | None = None
    last: bool | None = None
    error: bool = False


class RunChecks:
    """The checking part of a run (a mixin of `RunState`, which sets these attributes up)."""

    config: RunConfig
    record: RunRecord
    lock: threading.Lock
    checks: dict[tuple, _Check]
    kinds: dict[str, str]
    judged: dict[tuple, bool]
    pending: dict[tuple, list[Counterexample]]

    def feedback_text(self, constraint: Constraint, fields: dict[str, Any]) -> str:
        token = inside_check.set(True)
        try:
            return constraint.feedback(fields)
        except ConstraintError:
            self._note_error(constraint.name, constraint.hard)
            raise
        finally:
            inside_check.reset(token)

    def check_declared(self, constraint: Constraint, key: tuple, fields: dict[str, Any],
                       outputs: dict[str, Any]) -> bool:
        """Check `constraint`; a check that asks an LM is judged once per distinct set of fields in a run."""
        memo_key = (constraint.name, _fields_key(fields)) if uses_lm(constraint) else None
        passed = None
        if memo_key is not None:
            with self.lock:
                passed = self.judged.get(memo_key)
        if passed is None:
            token = inside_check.set(True)  # predictors a check calls (LM judges) are not steps of the run
            calls, counting = start_counting_check_calls()
            try:
                passed = constraint.check(fields)
            except ConstraintError:
                self._mark_broken(constraint, key)
                raise
            finally:
                stop_counting_check_calls(counting)
                inside_check.reset(token)
            if calls[0]:
                self._learn_judge(constraint, fields, passed)
        self._record_declared(constraint, key, outputs, passed)
        return passed

    def _mark_broken(self, constraint: Constraint, key: tuple) -> None:
        """A check that raised ConstraintError: its own code is broken, not the output."""
        with self.lock:
            check = self.checks.setdefault(key, _Check(constraint.name, constraint.hard))
            check.error = True

    def _learn_judge(self, constraint: Constraint, fields: dict[str, Any], passed: bool) -> None:
        """A check seen asking an LM: remember so, and its verdict on these fields for the rest of the run."""
        learn_uses_lm(constraint)
        with self.lock:
            self.judged[(constraint.name, _fields_key(fields))] = passed

    def _record_declared(self, constraint: Constraint, key: tuple, outputs: dict[str, Any], passed: bool) -> None:
        self.record_verdict(key, constraint.name, constraint.hard, passed, kind="declared")
        if passed and self.pending:  # a counterexample of this check waits for its fix
            self.resolve_pending(key, outputs)

    def check_outputs(self, constraints: Sequence[Constraint], step: tuple, fields: dict[str, Any],
                      outputs: dict[str, Any]) -> dict[str, bool]:
        """`check_declared` of each constraint on one output of step `step`: name -> verdict. The bootstrap trace
        is set aside once for them all (each check would otherwise set it aside for itself).

        Only constraints not (yet) seen asking an LM come here (`uses_lm` false: nothing memoized to look up), so
        this is `check_declared`'s path for them, unrolled: every call of a checked step runs it."""
        hidden = hide_trace()
        inside = inside_check.set(True)  # predictors a check calls (LM judges) are not steps of the run
        verdicts: dict[str, bool] = {}
        try:
            for c in constraints:
                key = (c.name, step)
                if getattr(c, "_uses_lm", False):  # `uses_lm`, learned by another thread meanwhile: a memo may answer
                    verdicts[c.name] = self.check_declared(c, key, fields, outputs)
                    continue
                calls = [0]  # `start_counting_check_calls`
                counting = calls_in_check.set(calls)
                try:
                    passed = c.check(fields, trace_hidden=True) if type(c) is Constraint else c.check(fields)
                except ConstraintError:
                    self._mark_broken(c, key)
                    raise
                finally:
                    calls_in_check.reset(counting)
                if calls[0]:
                    self._learn_judge(c, fields, passed)
                self._record_declared(c, key, outputs, passed)
                verdicts[c.name] = passed
            return verdicts
        finally:
            inside_check.reset(inside)
            show_trace(hidden)

    def check_judged(self, constraints: Sequence[Constraint], step: tuple, fields: dict[str, Any],
                     outputs: dict[str, Any]) -> dict[str, bool]:
        """Check constraints seen asking an LM judge on one output: name -> verdict.

        With `batch_judges` on, the first judge question of each one not yet judged on these fields is asked
        in one LM call (`constraints.ask_together`) and the checks then take their verdicts from it; a
        batched call that fails leaves the checks to ask separately.
        """
        answers: dict[tuple, bool] = {}
        if self.config.batch_judges and len(constraints) > 1:
            answers = self._ask_judges_together(constraints, fields)
        if not answers:
            return {c.name: self.check_declared(c, (c.name, step), fields, outputs) for c in constraints}
        with answering_from(answers):
            return {c.name: self.check_declared(c, (c.name, step), fields, outputs) for c in constraints}

    def _ask_judges_together(self, constraints: Sequence[Constraint], fields: dict[str, Any]) -> dict[tuple, bool]:
        with self.lock:
            unjudged = [c for c in constraints if (c.name, _fields_key(fields)) not in self.judged]
        if len(unjudged) < 2:
            return {}
        token = inside_check.set(True)
        try:
            requests = [r for r in (judge_request(c, fields) for c in unjudged) if r is not None]
            by_lm: dict[int, list] = {}
            for request in requests:
                by_lm.setdefault(id(request.lm), []).append(request)
            answers: dict[tuple, bool] = {}
            for group in by_lm.values():
                if len({r.key for r in group}) < 2:
                    continue
                try:
                    with dspy.context(trace=None):  # judges never land in the bootstrap trace
                        answers.update(ask_together(group, order=list(fields)))
                except Exception as exc:  # a response that does not parse: each check asks on its own
                    logger.info("judges asked together failed (%s: %s); asking them one by one",
                                type(exc).__name__, exc)
            return answers
        finally:
            inside_check.reset(token)

    def record_verdict(self, key: tuple, name: str, hard: bool, passed: bool, kind: str) -> None:
        with self.lock:
            check = self.checks.get(key)
            if check is None:
                check = self.checks[key] = _Check(name, hard)
            if check.first is None:
                check.first = passed
            check.last = passed
            self.kinds.setdefault(name, kind)

    def resolve_pending(self, check_key: tuple, outputs: dict[str, Any]) -> None:
        with self.lock:
            fixed = self.pending.pop(check_key, [])
        for cx in fixed:
            cx.fixed_outputs = dict(outputs)

    def _note_error(self, name: str, hard: bool) -> None:
        with self.lock:
            stats = self.record.constraints.setdefault(name, ConstraintStats(name, hard))
            stats.errors += 1
