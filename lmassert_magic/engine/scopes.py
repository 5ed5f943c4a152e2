"""The scopes of a run: the ordered predictor calls of one thread (or asyncio task), replayed, checked and retried.

The run itself is the main scope (`run_state.RunState`); each DSPy worker task, asyncio task started
inside `aforward`, or `carry_run` call, is a `Branch`. A failing declared constraint retries its step
in place; a failing inline `Assert`/`Suggest` raises `Backtrack`, which unwinds `forward` so the run
can replay it. A checked call's logic is one generator (`Steps`) driven by `drive` (sync `forward`) or
`adrive` (`aforward`), so both calling paths retry, count and record exactly alike.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

import dspy

from .constraints import Constraint, uses_lm
from .context import OBSERVE, OFF
from .errors import DSPyAssertionError, DSPySuggestionError, TargetNotFoundError
from .retry import RetryPlan
from .streaming import Notice, aannounce, announce, retry_status
from .targets import describe_target, matches_target

if TYPE_CHECKING:
    from .run_state import RunState

logger = logging.getLogger("lmassert_magic")

#: What a failing attempt whose output repeats an earlier one of its step means for the next retry
#: (`RunState.after_repeat`): its feedback starts with `retry.REPEAT_NOTE`, or the step is retried no more.
NOTE = "note"
STOP = "stop"


@dataclass
class CallRecord:
    """One accepted predictor call of a pass; replayed as it is when a later step backtracks."""

    predictor: Any
    name: str
    inputs: dict[str, Any]
    key: tuple
    trace_inputs: dict[str, Any] = field(default_factory=dict)
    prediction: Any = None
    checks: tuple = ()  # keys of the declared checks made on the accepted output
    main_index: int = 0  # calls of the main scope made before this one (branch calls)
    attempt: Any = None  # the `records.Attempt` whose output this call accepted



@functools.lru_cache(maxsize=4096)
def field_names(signature: type) -> tuple[frozenset[str], tuple[str, ...]]:
    """(input names, output names) of a signature class: DSPy rebuilds both dicts on every access, and
    every checked call asks several times. Signature classes are immutable (edits make new classes)."""
    return frozenset(signature.input_fields), tuple(signature.output_fields)


def outputs_of(predictor: Any, prediction: Any, names: Sequence[str] | None = None) -> dict[str, Any]:
    """The output fields of `predictor` (`names`, if its signature's are known already) in `prediction`."""
    out = {}
    for name in field_names(predictor.signature)[1] if names is None else names:
        try:
            out[name] = prediction[name]
        except (KeyError, AttributeError):
            out[name] = None
    return out


def drop_trace_entry(predictor: Any, prediction: Any) -> bool:
    """Remove a rejected attempt from the bootstrap trace (found by identity: threads share the list).

    False when a trace is being recorded but the attempt is not in it (it would then become a demo).
    """
    trace = dspy.settings.trace
    if trace is None:
        return True
    for i in range(len(trace) - 1, -1, -1):
        entry = trace[i]
        if entry[0] is predictor and entry[2] is prediction:
            del trace[i]
            return True
    return False


def same_step(previous: Any, predictor: Any) -> bool:
    """Whether a predictor called in this pass is the step `previous` was in an earlier pass.

    The same object, or, for predictors created inside `forward` (a new object on every pass), an
    equal one: same class, signature, demos, LM and config.
    """
    if previous is predictor:
        return True
    if not (getattr(previous, "_lmassert_ephemeral", False) and getattr(predictor, "_lmassert_ephemeral", False)):
        return False
    try:
        return (
            type(previous) is type(predictor)
            and previous.signature.equals(predictor.signature)
            and previous.demos == predictor.demos
            and previous.lm is predictor.lm
            and previous.config == predictor.config
        )
    except Exception:  # an exotic signature or demo that cannot be compared: not provably the same step
        return False


class Backtrack(BaseException):
    """Unwinds `forward` to re-run it with a retry planned; BaseException so user `except Exception` can't eat it.

    `index` is how many main-scope calls replay; None means the pass was abandoned by another thread.
    """

    def __init__(self, index: int | None, notice: Notice | None = None) -> None:
        super().__init__(index)
        self.index = index
        self.notice = notice  # what the run tells a stream before the next pass


#: A checked predictor call's logic, written once for both calling paths: it yields the keyword arguments of
#: each LM call it needs (and gets the prediction back), an `Offload` of constraint code to run (and gets its
#: value back) or a `Notice` for the stream, and returns the prediction.
Steps = Generator[Any, Any, Any]


@dataclass
class Offload:
    """Constraint code a step runs (checks, feedback messages). On the async path blocking code (`blocking`, or
    code of `constraints` one of which has a time limit, as `%%assert` gives, or was seen asking an LM judge) runs
    on a worker thread: the loop goes on. Only `adrive` asks (`blocks`), so the sync path never works it out."""

    fn: Callable[[], Any]
    blocking: bool = False
    constraints: Sequence[Constraint] = ()

    def blocks(self) -> bool:
        return self.blocking or _blocks(self.constraints)


def _blocks(constraints: Sequence[Constraint]) -> bool:
    return any(c.timeout is not None or uses_lm(c) for c in constraints)


def _checks(root: RunState, constraints: Sequence[Constraint], key: tuple, fields: dict[str, Any],
            outputs: dict[str, Any]) -> Offload:
    """Checking `constraints` on one output: name -> verdict."""
    return Offload(lambda: root.check_outputs(constraints, key, fields, outputs), constraints=constraints)


def _judge_checks(root: RunState, constraints: Sequence[Constraint], key: tuple, fields: dict[str, Any],
                  outputs: dict[str, Any]) -> Offload:
    """Checking constraints seen asking an LM judge on one output (together in one call if `batch_judges`)."""
    return Offload(lambda: root.check_judged(constraints, key, fields, outputs), True)


def _messages(root: RunState, failing: Sequence[Constraint], fields: dict[str, Any]) -> Offload:
    """The feedback messages of the failing constraints (a message may be code over the fields)."""
    return Offload(lambda: [root.feedback_text(c, fields) for c in failing], constraints=failing)


def drive(steps: Steps, call: Callable[..., Any]) -> Any:
    """Run `steps`, making each predictor call it asks for with `call` (the predictor's own `forward`)."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        reply, error = None, None
        if isinstance(request, Notice):
            announce(request)
            continue
        try:
            reply = request.fn() if isinstance(request, Offload) else call(**request)
        except BaseException as exc:  # handed to the steps, which count it and close their attempt
            error = exc


async def adrive(steps: Steps, acall: Callable[..., Any]) -> Any:
    """`drive` for `aforward`: the same steps, each predictor call awaited, so the event loop never blocks."""
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            request = steps.send(reply) if error is None else steps.throw(error)
        except StopIteration as stop:
            return stop.value
        reply, error = None, None
        if isinstance(request, Notice):
            await aannounce(request)
            continue
        try:
            if isinstance(request, Offload):  # a worker thread gets a copy of this task's context
                reply = await asyncio.to_thread(request.fn) if request.blocks() else request.fn()
            else:
                reply = await acall(**request)
        except BaseException as exc:
            error = exc


class Scope:
    """Where predictor calls and inline checks of one thread of a run are ordered.

    The run itself is the main scope; each DSPy worker task (or `carry_run` call) is a branch
    that shares the run's budget, verdicts and record but keeps its own list of calls.
    """

    root: RunState
    calls: list[CallRecord]
    occurrence: Counter
    owner: tuple | None = None  # the run's own thread and task (set on the run itself; branches have none)

    # -- predictor calls --------------------------------------------------------------------
    def predictor_call(self, predictor: Any, kwargs: dict[str, Any], call: Callable[..., Any]) -> Any:
        """One call of a guarded predictor's `forward` in this scope: replayed, or made, checked and retried."""
        return drive(self._call_steps(predictor, kwargs), call)

    async def apredictor_call(self, predictor: Any, kwargs: dict[str, Any], acall: Callable[..., Any]) -> Any:
        """The same for `aforward`: identical steps, with the LM calls awaited (`drive` says how)."""
        return await adrive(self._call_steps(predictor, kwargs), acall)

    def _call_steps(self, predictor: Any, kwargs: dict[str, Any]) -> Steps:
        root = self.root
        self._ensure_current()
        name = root.name_of(predictor)
        input_names, output_names = field_names(predictor.signature)
        inputs = {k: v for k, v in kwargs.items() if k in input_names}
        index = len(self.calls)
        key = self._step_key(index, name, inputs)

        previous = self._replayed(index, key, predictor, inputs)
        if previous is not None:
            trace = dspy.settings.trace
            if trace is not None:
                trace.append((predictor, dict(previous.trace_inputs), previous.prediction))
            self._accept(previous)
            root.mark_live(previous.checks)
            return previous.prediction

        plan = root.take_plan(key) if root.plans else None  # (no retry planned: the usual case)
        record = CallRecord(predictor, name, inputs, key, attempt=root.begin_attempt(key, name, inputs, plan, True))
        try:
            try:
                if plan is None:
                    prediction, trace_inputs = (yield kwargs), kwargs
                else:
                    request, trace_inputs = root.retry_request(predictor, name, inputs, kwargs, plan)
                    prediction = yield request
            except Exception as exc:
                root.count_failed_call()
                root.end_attempt(record.attempt, exc)
                raise
            outputs = outputs_of(predictor, prediction, output_names)
            root.note_output(key, record.attempt, outputs, {**inputs, **outputs}, plan is not None)
            if plan is not None and not self._is_current():
                root.set_plan(key, plan)  # a retry abandoned in flight by another thread's backtrack: redo it
            self._ensure_current()
            record.main_index = len(root.calls)
            constraints = getattr(predictor, "_lmassert_constraints", ()) if root.config.mode != OFF else ()
            if constraints:
                attempt = plan.attempt if plan else 0
                prediction, trace_inputs = yield from self._check_declared(record, kwargs, prediction, trace_inputs,
                                                                           constraints, attempt, outputs)
        finally:
            root.end_attempt(record.attempt)
        record.prediction, record.trace_inputs = prediction, dict(trace_inputs)
        self._accept(record)
        return prediction

    def _check_declared(
        self,
        record: CallRecord,
        kwargs: dict[str, Any],
        prediction: Any,
        trace_inputs: dict[str, Any],
        constraints: Sequence[Constraint],
        attempt: int,
        outputs: dict[str, Any] | None = None,
    ) -> Generator[Any, Any, tuple[Any, dict[str, Any]]]:
        """`outputs`: those of `prediction`, if known already (each retry's are read from its prediction)."""
        root = self.root
        predictor, key = record.predictor, record.key
        record.checks = tuple([(c.name, key) for c in constraints])
        retried = False
        while True:
            if outputs is None:
                outputs = outputs_of(predictor, prediction)
            fields = {**record.inputs, **outputs}
            enforcing = root.config.mode != OBSERVE
            if retried:
                root.note_repeat(key, record.attempt, fields, retry=True)
            repeat = root.after_repeat(key, record.attempt) if enforcing and record.attempt.repeat_of is not None \
                else None
            # Checks that ask an LM (judges) go last, and are skipped on an attempt that already fails a
            # check without one and will be retried: judging an output that is thrown away is a wasted call.
            judged: list[Constraint] = []
            first: list[Constraint] = []
            blocks = False  # `_blocks(first)`
            for c in constraints:
                if uses_lm(c):
                    judged.append(c)
                else:
                    first.append(c)
                    blocks = blocks or c.timeout is not None
            if blocks:
                verdicts = yield _checks(root, first, key, fields, outputs)
            else:  # what `drive` and `adrive` do with code that cannot block (run it here), without the round trip
                verdicts = root.check_outputs(first, key, fields, outputs)
            failing = [c for c in first if not verdicts[c.name]]
            charged = None
            if failing and enforcing and judged and repeat != STOP:
                charged = next((c for c in failing if root.take_budget(c.name, (c.name, key), c.max_backtracks)), None)
            if charged is None and judged:
                if enforcing and repeat != STOP and root.config.stop_at_failing_judge and not root.config.batch_judges:
                    # one judge at a time, as DSPy 2.5's Suggests ran: once one fails and a retry is paid for,
                    # the others would judge an output that is thrown away (they judge the retry instead)
                    for judge in judged:
                        verdicts.update((yield _judge_checks(root, [judge], key, fields, outputs)))
                        if not verdicts[judge.name] and root.take_budget(judge.name, (judge.name, key),
                                                                         judge.max_backtracks):
                            charged = judge
                            break
                else:
                    verdicts.update((yield _judge_checks(root, judged, key, fields, outputs)))
                failing = [c for c in constraints if c.name in verdicts and not verdicts[c.name]]
            root.note_checked(record.attempt, outputs, verdicts, record.checks)
            if not failing or not enforcing:
                return prediction, trace_inputs
            messages = yield _messages(root, failing, fields)
            if repeat == STOP:
                root.stop_retrying(record.attempt)
                root.give_up(failing, messages, predictor, record.name, outputs, attempt + 1)
                return prediction, trace_inputs
            if charged is None:
                charged = next((c for c in failing if root.take_budget(c.name, (c.name, key), c.max_backtracks)), None)
            if charged is None:
                root.give_up(failing, messages, predictor, record.name, outputs, attempt + 1)
                return prediction, trace_inputs
            feedback = root.add_feedback(key, messages)
            for constraint, message in zip(failing, messages):
                root.add_counterexample(constraint.name, constraint.hard, (constraint.name, key), record, outputs,
                                        message)
            attempt += 1
            if not drop_trace_entry(predictor, prediction):  # the trace keeps only the accepted attempt
                root.warn(f"a rejected attempt of {record.name} was not found in the trace to remove")
            yield Notice(retry_status(record.name, [c.name for c in failing], attempt + 1, outputs), (predictor,))
            plan = RetryPlan(root.retry_feedback(feedback, repeat), outputs, attempt)
            root.end_attempt(record.attempt)
            record.attempt = root.begin_attempt(key, record.name, record.inputs, plan, True)
            request, trace_inputs = root.retry_request(predictor, record.name, record.inputs, dict(kwargs), plan)
            try:
                prediction = yield request
            except Exception as exc:
                root.end_attempt(record.attempt, exc)
                raise
            retried = True
            outputs = None
            self._ensure_current()

    # -- inline Assert / Suggest ------------------------------------------------------------------
    def inline_check(
        self, passed: bool, message: str, target: Any, hard: bool, name: str, cap: int | None
    ) -> bool:
        root = self.root
        self._ensure_current()
        if root.config.mode == OFF:
            return passed
        occurrence = self.occurrence[name]
        self.occurrence[name] += 1
        check_key = (name, self._inline_place(occurrence))
        root.record_verdict(check_key, name, hard, passed, kind="inline")
        root.mark_live((check_key,))
        index = self._target_index(target)
        call = self.calls[index] if index is not None else None
        outputs = outputs_of(call.predictor, call.prediction) if call else {}
        root.note_attempt(call.attempt if call else None, verdicts={name: passed})
        if passed:
            root.resolve_pending(check_key, outputs)
            return True
        if root.config.mode == OBSERVE:
            return False
        text = message or f"The output failed the check {name!r}."
        repeat = root.after_repeat(call.key, call.attempt) if call is not None else None
        if repeat == STOP:
            root.stop_retrying(call.attempt)
        elif call is not None and root.take_budget(name, check_key, cap):
            feedback = root.retry_feedback(root.add_feedback(call.key, [text]), repeat)
            root.set_plan(call.key, RetryPlan(feedback, outputs, root.attempts_of(call.key) + 1))
            root.add_counterexample(name, hard, check_key, call, outputs, text)
            self._backtrack(index, call, Notice(retry_status(call.name, [name], root.attempts_of(call.key) + 1,
                                                             outputs)))
        attempts = 1 + (root.attempts_of(call.key) if call else 0)
        where = call.name if call else None
        module = call.predictor if call else None
        if hard:
            raise DSPyAssertionError(name, text, module, attempts=attempts, last_outputs=outputs, predictor=where)
        if root.config.strict_suggestions:
            raise DSPySuggestionError(name, text, module, attempts=attempts, last_outputs=outputs, predictor=where)
        logger.info("suggestion %r still fails after %d attempt(s)", name, attempts)
        return False

    def _target_index(self, target: Any) -> int | None:
        if not self.calls:
            return None
        if target is None:
            return len(self.calls) - 1
        for i in range(len(self.calls) - 1, -1, -1):
            if matches_target(self.calls[i].predictor, self.calls[i].name, target):
                return i
        raise TargetNotFoundError(
            f"target_module {describe_target(target)} matches none of the predictors called so far: "
            f"{', '.join(dict.fromkeys(c.name for c in self.calls))}"
        )

    # -- what differs between the main scope and a branch -------------------------------------------
    def _is_current(self) -> bool:
        return True

    def _ensure_current(self) -> None:
        pass

    def _step_key(self, index: int, name: str, inputs: dict[str, Any]) -> tuple:
        raise NotImplementedError

    def _inline_place(self, occurrence: int) -> tuple:
        raise NotImplementedError

    def _replayed(self, index: int, key: tuple, predictor: Any, inputs: dict[str, Any]) -> CallRecord | None:
        raise NotImplementedError

    def _accept(self, record: CallRecord) -> None:
        self.calls.append(record)

    def _backtrack(self, index: int, call: CallRecord, notice: Notice) -> NoReturn:
        raise NotImplementedError

class Branch(Scope):
    """A worker thread's part of a run: its own call order, the run's budget, verdicts and record.

    Steps are keyed by predictor and inputs (thread order is not reproducible); an inline check
    that fails here unwinds the whole run, whose next pass replays every branch call but the target.
    """

    def __init__(self, root: RunState, pass_id: int) -> None:
        self.root = root
        self.pass_id = pass_id
        self.calls: list[CallRecord] = []
        self.occurrence: Counter[str] = Counter()

    def _is_current(self) -> bool:
        return self.pass_id == self.root.pass_id

    def _ensure_current(self) -> None:
        if not self._is_current():
            raise Backtrack(None)  # the run moved on without this thread: stop spending its budget

    def _step_key(self, index: int, name: str, inputs: dict[str, Any]) -> tuple:
        identity = (name, repr(sorted((k, repr(v)) for k, v in inputs.items())))
        root = self.root
        with root.lock:
            occurrence = root.branch_occurrence[identity]
            root.branch_occurrence[identity] += 1
        return ("branch", identity, occurrence)

    def _inline_place(self, occurrence: int) -> tuple:
        last = self.calls[-1].key if self.calls else None
        return ("inline", last, occurrence)

    def _replayed(self, index: int, key: tuple, predictor: Any, inputs: dict[str, Any]) -> CallRecord | None:
        root = self.root
        with root.lock:
            if key in root.plans:
                return None
            previous = root.branch_replay.get(key)
        if previous is not None and same_step(previous.predictor, predictor):
            return previous
        return None

    def _accept(self, record: CallRecord) -> None:
        self.calls.append(record)
        with self.root.lock:
            self.root.branch_calls[record.key] = record

    def _backtrack(self, index: int, call: CallRecord, notice: Notice) -> NoReturn:
        raise Backtrack(call.main_index, notice)
