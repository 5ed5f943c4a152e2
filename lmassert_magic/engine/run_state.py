"""The state of one run: its budget, feedback, verdicts, counterexamples and record.

A `RunState` is also the run's main scope (`scopes.Scope`); branches share it through `root`, hence
the lock around everything they touch. `finish` turns the verdicts into the run's `RunRecord`.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, NoReturn

import dspy
from dspy.dsp.utils.settings import thread_local_overrides

from .constraints import Constraint
from .context import OBSERVE, PASS_KEY, RUN_STATE_KEY, SHARED, RunConfig, current_attempt, here
from .errors import DSPyAssertionError, DSPySuggestionError
from .records import IDENTICAL_OUTPUT, Attempt, ConstraintStats, Counterexample, RunRecord
from .retry import REPEAT_NOTE, RetryPlan, retry_request
from .run_checks import RunChecks, _Check
from .scopes import NOTE, STOP, Backtrack, Branch, CallRecord, Scope, same_step
from .streaming import Notice, aannounce, announce
from .tally import usage_numbers
from .targets import predictor_label

logger = logging.getLogger("lmassert_magic")


class Counter(collections.Counter):
    """`collections.Counter`, made without its Python-level `__init__` (a run makes ten, all empty)."""

    __init__ = dict.__init__  # type: ignore[assignment]


#: The step's retries that repeated an earlier output after which its retrying stops.
REPEATS_TO_STOP = 2


def _same_fields(a: dict[str, Any], b: dict[str, Any]) -> bool:
    try:
        return bool(a == b)
    except Exception:  # values that cannot be compared as a whole (arrays): not provably the same
        return False


class RunState(RunChecks, Scope):
    """One run (one top-level call of an activated program), which is also its main scope."""

    def __init__(self, config: RunConfig) -> None:
        self.root = self
        self.config = config
        self.record = RunRecord()
        self.lock = threading.Lock()
        self.checks: dict[tuple, _Check] = {}
        self.kinds: dict[str, str] = {}
        self.used = 0
        self.by_constraint: Counter[str] = Counter()
        self.by_place: Counter[tuple] = Counter()
        self.feedback: dict[tuple, list[str]] = {}  # step -> distinct messages given to it in this run
        self.attempts: Counter[tuple] = Counter()  # step -> retries made
        self.plans: dict[tuple, RetryPlan] = {}
        self.pending: dict[tuple, list[Counterexample]] = {}
        self.uncached = 0
        self.failed_calls = 0
        self.pass_id = 0
        self.calls: list[CallRecord] = []
        self.replay: list[CallRecord] = []
        self.branch_calls: dict[tuple, CallRecord] = {}
        self.branch_replay: dict[tuple, CallRecord] = {}
        self.live: set[tuple] = set()
        self.occurrence: Counter[str] = Counter()
        self.branch_occurrence: Counter[tuple] = Counter()
        self.branches: dict[tuple, Branch] = {}
        self.owner = here()  # the thread and task that run `forward`; others get branches (`context.active_scope`)
        self.judged: dict[tuple, bool] = {}  # (constraint, fields) -> an LM judge's verdict in this run
        self.attempt_counts: Counter[tuple] = Counter()  # step -> LM calls it made in this run
        self.open_attempts: dict[int, tuple[float, Any]] = {}  # seq -> (start time, context token)
        self.attempt_uncached: Counter[int] = Counter()  # seq -> calls the LM (not the cache) answered
        self.seen_outputs: dict[tuple, list[tuple[int, dict]]] = {}  # step -> (attempt, its distinct fields)
        self.repeats: Counter[tuple] = Counter()  # step -> its retries that returned fields it had returned before

    # -- driving forward ------------------------------------------------------------------
    def run(self, fn: Callable[[], Any]) -> Any:
        trace = dspy.settings.trace
        mark = len(trace) if trace is not None else 0
        while True:
            self._begin_pass()
            try:
                return fn()
            except Backtrack as bt:
                if self._rewind(bt, trace, mark) is not None:
                    announce(bt.notice)

    async def arun(self, afn: Callable[[], Awaitable[Any]]) -> Any:
        """`run` for `aforward`. Each pass runs in a context of its own, so that tasks it starts know their pass."""
        trace = dspy.settings.trace
        mark = len(trace) if trace is not None else 0
        while True:
            self._begin_pass()
            try:
                with dspy.context(**{PASS_KEY: self.pass_id}):
                    return await afn()
            except Backtrack as bt:
                if self._rewind(bt, trace, mark) is not None:
                    await aannounce(bt.notice)

    def _rewind(self, bt: Backtrack, trace: list | None, mark: int) -> Notice | None:
        """Undo an abandoned pass: its trace entries go, its accepted calls are kept for replay."""
        if trace is not None:
            del trace[mark:]
        with self.lock:
            self.replay = self.calls[: bt.index] if bt.index is not None else list(self.calls)
            self.branch_replay = dict(self.branch_calls)
        return bt.notice

    def _begin_pass(self) -> None:
        with self.lock:
            self.pass_id += 1
            self.calls = []
            self.branch_calls = {}
            self.live = set()
            self.occurrence = Counter()
            self.branch_occurrence = Counter()
            self.branches = {}
            self.record.passes += 1
        overrides = thread_local_overrides.get()
        if overrides.get(RUN_STATE_KEY) is self:  # the run's own dspy.context: worker tasks learn the pass
            overrides[PASS_KEY] = self.pass_id

    def branch_for_thread(self, pass_id: int | None) -> Branch:
        """This worker thread's (or asyncio task's) branch in the pass its task was handed out in (tasks of a
        thread run in turn). A task handed out in an abandoned pass gets a stale branch, which stops at its next step.
        """
        ident = here()
        with self.lock:
            if pass_id is not None and pass_id != self.pass_id:
                return self.new_branch(pass_id)
            branch = self.branches.get(ident)
            if branch is None:
                branch = self.branches[ident] = self.new_branch(self.pass_id)
            return branch

    def new_branch(self, pass_id: int) -> Branch:
        """A branch of this run for one thread's calls in pass `pass_id` (`carry_run` makes one per call)."""
        return Branch(self, pass_id)

    def _step_key(self, index: int, name: str, inputs: dict[str, Any]) -> tuple:
        return ("main", index)

    def _inline_place(self, occurrence: int) -> tuple:
        return ("inline", occurrence)

    def _replayed(self, index: int, key: tuple, predictor: Any, inputs: dict[str, Any]) -> CallRecord | None:
        if index < len(self.replay) and key not in self.plans:
            previous = self.replay[index]
            if same_step(previous.predictor, predictor) and previous.inputs == inputs:
                return previous
            self.replay = []  # diverged: nothing further can be replayed
        return None

    def _backtrack(self, index: int, call: CallRecord, notice: Notice) -> NoReturn:
        raise Backtrack(index, notice)

    # -- shared bookkeeping (also used by branches, hence the lock) ----------------------------------
    def name_of(self, predictor: Any) -> str:
        return getattr(predictor, "_lmassert_name", None) or predictor_label(predictor)

    def count_call(self, judge: bool = False) -> None:
        attempt = self._own_attempt() if judge else None
        with self.lock:
            if judge and self.config.mode == OBSERVE:
                self.record.observe_lm_calls += 1
            else:
                self.record.lm_calls += 1
            if attempt is not None:
                attempt.judge_calls += 1

    def warn(self, message: str) -> None:
        with self.lock:
            self.record.warnings.append(message)
        logger.warning(message)

    def count_failed_call(self) -> None:
        with self.lock:
            self.failed_calls += 1

    def add_usage(self, entry: dict[str, Any], cached: bool = False) -> None:
        prompt, completion, total = usage_numbers(entry)
        attempt = self._own_attempt()
        with self.lock:
            if not cached:
                self.uncached += 1
            self.record.prompt_tokens += prompt
            self.record.completion_tokens += completion
            self.record.tokens += total
            if attempt is not None:
                attempt.prompt_tokens += prompt
                attempt.completion_tokens += completion
                attempt.tokens += total
                if not cached:
                    seq = attempt.seq
                    self.attempt_uncached[seq] = self.attempt_uncached.get(seq, 0) + 1

    def add_cached_usage(self, entry: dict[str, Any]) -> None:
        self.add_usage(entry, cached=True)

    # -- attempts: each LM call of a step, for the run's timeline ------------------------------------
    def begin_attempt(self, key: tuple, name: str, inputs: dict[str, Any], plan: RetryPlan | None,
                      count: bool = False) -> Attempt:
        """Open the record of one LM call of step `key`; this thread's LM usage counts towards it until it ends.
        `count`: also count the call in the run (`count_call`), in the same locked section."""
        with self.lock:
            if count:
                self.record.lm_calls += 1
            n = self.attempt_counts.get(key, 0)
            self.attempt_counts[key] = n + 1
            reason = "retry" if plan is not None else ("rerun" if n else "first")
            attempt = Attempt(len(self.record.attempts), name, n, reason, dict(inputs),
                              list(plan.feedback) if plan is not None else [], lm_calls=1)
            self.record.attempts.append(attempt)
            self.open_attempts[attempt.seq] = (time.perf_counter(), current_attempt.set(attempt))
        return attempt

    def end_attempt(self, attempt: Attempt, error: BaseException | None = None) -> None:
        """Close an attempt (once): its seconds, and the calls the cache answered."""
        with self.lock:
            opened = self.open_attempts.pop(attempt.seq, None)
            if opened is None:
                return
            start, token = opened
            if error is not None:
                attempt.error = f"{type(error).__name__}: {error}"
            failed = 1 if attempt.error else 0
            uncached = self.attempt_uncached.pop(attempt.seq, 0)
            attempt.cache_hits = max(0, attempt.lm_calls + attempt.judge_calls - uncached - failed)
            attempt.seconds = time.perf_counter() - start
        try:
            current_attempt.reset(token)
        except ValueError:  # closed from another context than it was opened in: just clear it here
            current_attempt.set(None)

    def note_attempt(self, attempt: Attempt | None, outputs: dict[str, Any] | None = None,
                     verdicts: dict[str, bool] | None = None) -> None:
        """The outputs an attempt returned, and verdicts of checks on them (a check made twice must pass twice)."""
        if attempt is None:
            return
        with self.lock:
            if outputs is not None:
                attempt.outputs = dict(outputs)
            for name, passed in (verdicts or {}).items():
                attempt.verdicts[name] = attempt.verdicts.get(name, True) and bool(passed)

    def note_checked(self, attempt: Attempt, outputs: dict[str, Any], verdicts: dict[str, bool],
                     live: Iterable[tuple]) -> None:
        """`note_attempt(attempt, outputs, verdicts)` and `mark_live(live)` in one locked section."""
        with self.lock:
            attempt.outputs = dict(outputs)
            seen = attempt.verdicts
            for name, passed in verdicts.items():
                seen[name] = seen.get(name, True) and bool(passed)
            self.live.update(live)

    def note_output(self, key: tuple, attempt: Attempt, outputs: dict[str, Any], fields: dict[str, Any],
                    retry: bool) -> None:
        """`note_attempt(attempt, outputs)` then `note_repeat(key, attempt, fields, retry)`, in one locked section."""
        with self.lock:
            attempt.outputs = dict(outputs)
            self._note_repeat(key, attempt, fields, retry)

    # -- identical retries: told once, then stopped ------------------------------------------------
    def note_repeat(self, key: tuple, attempt: Attempt | None, fields: dict[str, Any], retry: bool) -> None:
        """Remember the fields (inputs and outputs) an attempt of step `key` returned; a retry that returns
        fields the step returned before is a repeat (`attempt.repeat_of`: the earlier attempt's number)."""
        with self.lock:
            self._note_repeat(key, attempt, fields, retry)

    def _note_repeat(self, key: tuple, attempt: Attempt | None, fields: dict[str, Any], retry: bool) -> None:
        seen = self.seen_outputs.setdefault(key, [])
        if retry and attempt is not None:
            earlier = next((n for n, f in seen if _same_fields(f, fields)), None)
            if earlier is not None:
                attempt.repeat_of = earlier
                self.repeats[key] += 1
                return
        seen.append((attempt.attempt if attempt is not None else -1, fields))

    def after_repeat(self, key: tuple, attempt: Attempt | None) -> str | None:
        """What a failing attempt of step `key` means for the step's next retry, if its output is a repeat.

        A retry that returns the fields an earlier attempt of the step returned would, if retried as usual,
        be sent the same prompt as before (the same feedback, the same past output) and so, at temperature
        0, return the same output again: a wasted call. The first such repeat in a run is retried with
        `retry.REPEAT_NOTE` heading its feedback (`NOTE`), so the prompt differs; at the step's second
        repeat (`REPEATS_TO_STOP`) its retrying stops (`STOP`), as if the budget were spent: a soft
        failure lets the output through, a hard one raises. None: not a repeat, or `stop_on_repeat` is off.
        """
        if attempt is None or attempt.repeat_of is None or not self.config.stop_on_repeat:
            return None
        with self.lock:
            return STOP if self.repeats[key] >= REPEATS_TO_STOP else NOTE

    def stop_retrying(self, attempt: Attempt) -> None:
        with self.lock:
            attempt.stopped = IDENTICAL_OUTPUT
        logger.info("retries of %s stopped: attempt %d repeats attempt %d", attempt.step, attempt.attempt,
                    attempt.repeat_of)

    @staticmethod
    def retry_feedback(feedback: list[str], repeat: str | None) -> list[str]:
        """The feedback a retry is sent: the step's messages, headed by `REPEAT_NOTE` after a repeat."""
        return [REPEAT_NOTE, *feedback] if repeat == NOTE else feedback

    def _own_attempt(self) -> Attempt | None:
        attempt = current_attempt.get()
        if attempt is None:
            return None
        attempts = self.record.attempts
        return attempt if attempt.seq < len(attempts) and attempts[attempt.seq] is attempt else None

    def take_plan(self, key: tuple) -> RetryPlan | None:
        if not self.plans:  # the usual case (no retry planned); a plan for this step is set before its call
            return None
        with self.lock:
            return self.plans.pop(key, None)

    def set_plan(self, key: tuple, plan: RetryPlan) -> None:
        with self.lock:
            self.plans[key] = plan

    def attempts_of(self, key: tuple) -> int:
        return self.attempts[key]

    def take_budget(self, name: str, place: tuple, cap: int | None) -> bool:
        """Spend one retry for constraint `name` at `place`, if the budget allows it."""
        config = self.config
        with self.lock:
            if config.budget == SHARED:
                if self.used >= config.max_backtracks:
                    return False
                if cap is not None and self.by_constraint[name] >= cap:
                    return False
            else:
                limit = cap if cap is not None else config.max_backtracks
                if self.by_place[(name, place)] >= limit:
                    return False
            self.used += 1
            self.by_constraint[name] += 1
            self.by_place[(name, place)] += 1
            return True

    def add_feedback(self, step: tuple, messages: Iterable[str]) -> list[str]:
        with self.lock:
            given = self.feedback.setdefault(step, [])
            for message in messages:
                if message not in given:
                    given.append(message)
            self.attempts[step] += 1
            return list(given)

    def mark_live(self, keys: Iterable[tuple]) -> None:
        with self.lock:
            self.live.update(keys)

    def add_counterexample(self, name: str, hard: bool, check_key: tuple, call: CallRecord,
                           outputs: dict[str, Any], message: str) -> None:
        cx = Counterexample(name, hard, call.name, dict(call.inputs), dict(outputs), message)
        with self.lock:
            self.record.counterexamples.append(cx)
            self.pending.setdefault(check_key, []).append(cx)

    def retry_request(
        self, predictor: Any, name: str, inputs: dict[str, Any], kwargs: dict[str, Any], plan: RetryPlan,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        return retry_request(predictor, name, inputs, kwargs, plan, seed=self.config.seed,
                             retry_temperature=self.config.retry_temperature)

    def give_up(
        self, failing: Sequence[Constraint], messages: Sequence[str], predictor: Any, name: str,
        outputs: dict[str, Any], attempts: int,
    ) -> None:
        for constraint, message in zip(failing, messages):
            if constraint.hard:
                raise DSPyAssertionError(constraint.name, message, predictor, attempts=attempts,
                                         last_outputs=outputs, predictor=name)
        if self.config.strict_suggestions:
            raise DSPySuggestionError(failing[0].name, messages[0], predictor, attempts=attempts,
                                      last_outputs=outputs, predictor=name)
        for constraint in failing:
            logger.info("suggestion %r on %s still fails after %d attempt(s)", constraint.name, name, attempts)

    # -- end of run ---------------------------------------------------------------------------
    def finish(self, error: BaseException | None) -> RunRecord:
        record = self.record
        verdicts: dict[str, list[_Check]] = {}
        for key, check in self.checks.items():
            stats = record.constraints.get(check.name)
            if stats is None:
                stats = record.constraints[check.name] = ConstraintStats(check.name, check.hard)
            if check.error:  # the condition itself raised, timed out or gave a non-bool
                stats.errors += 1
            if key not in self.live or check.first is None:
                continue  # checked only in an abandoned pass: not a verdict on the returned output
            verdicts.setdefault(check.name, []).append(check)
            stats.checks += 1
            if not check.last:
                stats.final_failures += 1  # passing first and failing at the end is a failure
            elif check.first:
                stats.first_try_passes += 1
            else:
                stats.passes_after_backtrack += 1
        for name, checks in verdicts.items():
            stats = record.constraints[name]
            stats.examples = 1
            first = final = 1
            for c in checks:
                first &= bool(c.first)
                final &= bool(c.last)
            stats.passed_first, stats.passed_final = int(first), int(final)
        for name, used in self.by_constraint.items():
            record.constraints.setdefault(name, ConstraintStats(name, False)).backtracks += used
        record.kinds = dict(self.kinds)
        for call in [*self.calls, *self.branch_calls.values()]:  # the last pass: what the run went on with
            if call.attempt is not None:
                call.attempt.kept = True
        record.cache_hits = max(0, record.lm_calls + record.observe_lm_calls - self.uncached - self.failed_calls)
        if error is not None:
            record.error = f"{type(error).__name__}: {error}"
        return record
