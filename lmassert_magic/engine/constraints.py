"""Declarative constraints: a named condition over one predictor step's input and output fields."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dspy
from dspy.dsp.utils.settings import main_thread_config, thread_local_overrides
from dspy.dsp.utils.utils import dotdict

from . import defaults
from .errors import ConstraintError
from .tally import note_judged_verdict, note_lm_call

Condition = Callable[..., Any]
Message = str | Callable[..., str]


def _run_with_time_limit(fn: Callable[[], Any], timeout: float, name: str) -> tuple[bool, Any, BaseException | None]:
    """(finished, value, error) of `fn()` run on its own daemon thread, waiting at most `timeout` seconds.

    One thread per check, not a pool: Python cannot stop a thread, so a check that never returns keeps
    its thread for good; in a bounded pool enough of them would starve every later check, and pool
    threads are joined at exit, so the kernel could not shut down. A daemon thread does neither.
    """
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller, which decides what it means
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=f"lmassert-check-{name}", daemon=True).start()
    if not done.wait(timeout):
        return False, None, None
    return True, box.get("value"), box.get("error")


def _wanted_params(fn: Callable[..., Any]) -> tuple[set[str] | None, bool]:
    """Which keyword fields a callable takes (None = all, via **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None, False
    names: set[str] = set()
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            return None, True
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            names.add(p.name)
    return names, False


@functools.lru_cache(maxsize=1024)
def _params(fn: Callable[..., Any]) -> tuple[frozenset[str] | None, frozenset[str]]:
    """(names the callable takes or None for **kwargs, names it requires); cached: checks are hot."""
    wanted, _ = _wanted_params(fn)
    if wanted is None:
        return None, frozenset()
    required = frozenset(
        p.name
        for p in inspect.signature(fn).parameters.values()
        if p.default is inspect.Parameter.empty and p.name in wanted
    )
    return frozenset(wanted), required


def _select(fn: Callable[..., Any], fields: Mapping[str, Any], constraint: str) -> dict[str, Any]:
    try:
        wanted, required = _params(fn)
    except TypeError:  # unhashable callable
        wanted, required = _params.__wrapped__(fn)
    if wanted is None:
        return dict(fields)
    if not required.issubset(fields):
        missing = sorted(required - set(fields))
        raise ConstraintError(
            constraint,
            f"needs field(s) {', '.join(missing)} but the step has {', '.join(sorted(fields)) or 'none'}",
        )
    return {k: v for k, v in fields.items() if k in wanted}


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool) or type(value).__name__ == "bool_"


def hide_trace() -> contextvars.Token | None:
    """Set DSPy's bootstrap trace aside in this context (LM judges inside a check must not land in it): what
    `dspy.context(trace=None)` does, without its generator machinery, as every check of every call asks. None
    when no trace is kept; hand the result to `show_trace`."""
    overrides = thread_local_overrides.get()
    if overrides.get("trace", main_thread_config.get("trace")) is None:
        return None
    return thread_local_overrides.set(dotdict({**main_thread_config, **overrides, "trace": None}))


def show_trace(token: contextvars.Token | None) -> None:
    if token is not None:
        thread_local_overrides.reset(token)


def _outside_trace(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    token = hide_trace()
    try:
        return fn(**kwargs)
    finally:
        show_trace(token)


@dataclass
class Constraint:
    """A named check attached to a predictor (or to every predictor of a signature).

    `condition` is called with the step's fields as keyword arguments (only those it names, or all
    of them if it takes **kwargs) and must return a bool. `message` is the feedback given to the LM
    on failure: a plain string, or a callable over the same fields (e.g. an f-string in a lambda).
    """

    name: str
    condition: Condition
    message: Message = ""
    hard: bool = False
    target: Any = None
    max_backtracks: int | None = None
    timeout: float | None = defaults.PYTHON_CHECK_TIMEOUT_SECONDS  # a check with a limit runs on its own thread
    source: str | None = None  # where it was defined (e.g. a cell), for error messages

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ValueError("a constraint needs a non-empty name")
        if not callable(self.condition):
            raise TypeError(f"constraint {self.name!r}: condition must be callable, got {type(self.condition)}")
        if not (isinstance(self.message, str) or callable(self.message)):
            raise TypeError(f"constraint {self.name!r}: message must be a str or a callable")
        if self.max_backtracks is not None:
            defaults.check_max_backtracks(self.max_backtracks, f"constraint {self.name!r}: ")
        if self.timeout is not None and not 0 < self.timeout < math.inf:
            raise ValueError(f"constraint {self.name!r}: timeout must be a positive number of seconds or None")

    def __deepcopy__(self, memo: dict) -> Constraint:
        return self  # a definition, shared by every copy of a program (its callables may hold locks, modules...)

    @property
    def kind(self) -> str:
        return "hard" if self.hard else "soft"

    def check(self, fields: Mapping[str, Any], trace_hidden: bool = False) -> bool:
        """Run the condition; any trouble in it becomes a ConstraintError naming this constraint.

        `trace_hidden`: the caller has set the bootstrap trace aside already (`hide_trace`)."""
        kwargs = _select(self.condition, fields, self.name)
        value = self._call(self.condition, kwargs, "condition", trace_hidden)
        if value is not True and value is not False and not _is_bool(value):
            raise ConstraintError(
                self.name, f"condition returned {type(value).__name__} {value!r:.60}, expected True or False"
            )
        return bool(value)

    def applies_to(self, fields: Mapping[str, Any]) -> bool:
        """Whether `fields` hold every field the condition requires, so a check on them can run at all
        (an optimizer's metric sees a program's outputs, not each step's fields)."""
        try:
            _, required = _params(self.condition)
        except TypeError:  # unhashable callable
            _, required = _params.__wrapped__(self.condition)
        return required <= set(fields)

    def feedback(self, fields: Mapping[str, Any]) -> str:
        if isinstance(self.message, str):
            return self.message or f"The output failed the constraint {self.name!r}."
        kwargs = _select(self.message, fields, self.name)
        text = self._call(self.message, kwargs, "message")
        return str(text)

    def _call(self, fn: Callable[..., Any], kwargs: dict[str, Any], what: str, trace_hidden: bool = False) -> Any:
        try:
            if self.timeout is None:
                return fn(**kwargs) if trace_hidden else _outside_trace(fn, kwargs)
            ctx = contextvars.copy_context()
            finished, value, error = _run_with_time_limit(lambda: ctx.run(_outside_trace, fn, kwargs), self.timeout,
                                                          self.name)
            if not finished:
                raise ConstraintError(self.name, f"{what} did not finish within {self.timeout:g}s")
            if error is not None:
                raise error
            return value
        except ConstraintError:
            raise
        except Exception as exc:  # the constraint's own bug: attribute it to the constraint
            raise ConstraintError(self.name, f"{what} raised {type(exc).__name__}: {exc}", exc) from exc


def uses_lm(constraint: Constraint) -> bool:
    """Whether this constraint's check has been seen asking an LM (an `lm_judge`).

    Learned on the first check that does (the definition is shared by every copy of a program), so
    a run checks the others first and spends no judge call on an attempt that will be retried anyway.
    """
    return getattr(constraint, "_uses_lm", False)


def learn_uses_lm(constraint: Constraint) -> None:
    constraint._uses_lm = True  # type: ignore[attr-defined]  # learned state, not part of the definition


class _JudgeSignature(dspy.Signature):
    """Answer the yes/no question about the text honestly."""

    text: str = dspy.InputField()
    question: str = dspy.InputField()
    answer: bool = dspy.OutputField(desc="true for yes, false for no")


def _judge_text(fields: Mapping[str, Any]) -> str:
    return "\n".join(f"{k}: {v}" for k, v in fields.items())


def _as_verdict(answer: Any) -> bool:
    if isinstance(answer, str):
        return answer.strip().lower() in {"yes", "true", "y", "1"}
    return bool(answer)


#: While a list: `lm_judge` appends what it would ask (a `JudgeRequest`) and stops the check (`judge_request`).
_collecting: contextvars.ContextVar[list | None] = contextvars.ContextVar("lmassert_judge_collect", default=None)
#: Verdicts asked ahead of the checks (`ask_together`): `JudgeRequest.key` -> verdict; `lm_judge` answers from them.
_answers: contextvars.ContextVar[Mapping[tuple, bool] | None] = contextvars.ContextVar("lmassert_judge_answers",
                                                                                       default=None)


class _Asked(BaseException):
    """Stops a check at its first `lm_judge` question while its questions are being collected (a BaseException,
    so that a condition's own `except Exception` does not take it for an error)."""


@dataclass(frozen=True)
class JudgeRequest:
    """One `lm_judge` question: the question, the fields it is asked about, the LM (None: the configured one)."""

    question: str
    fields: Mapping[str, Any]
    lm: Any = None

    @property
    def key(self) -> tuple:
        return (self.question, _judge_text(self.fields), id(self.lm) if self.lm is not None else None)


def judge_request(constraint: Constraint, fields: Mapping[str, Any]) -> JudgeRequest | None:
    """The first question `constraint`'s check asks an LM judge about `fields`, without asking it.

    The condition runs until it calls `lm_judge`, which records its question and stops the condition (code
    before that call runs, so it runs twice when the check is then made). None when it asks no judge, or
    fails before it does (the check itself then says why).
    """
    asked: list[JudgeRequest] = []
    token = _collecting.set(asked)
    try:
        constraint.check(fields)
    except _Asked:
        pass
    except ConstraintError:
        return None
    finally:
        _collecting.reset(token)
    return asked[0] if asked else None


@functools.lru_cache(maxsize=32)
def _batched_signature(n: int) -> type[dspy.Signature]:
    """`text` and `question_1..n` in, `answer_1..n` out: one yes/no verdict per question."""
    fields: dict[str, Any] = {"text": (str, dspy.InputField())}
    for i in range(1, n + 1):
        fields[f"question_{i}"] = (str, dspy.InputField())
    for i in range(1, n + 1):
        fields[f"answer_{i}"] = (bool, dspy.OutputField(desc=f"the answer to question_{i}: true for yes, false for no"))
    return dspy.Signature(fields, "Answer each yes/no question about the text honestly.")


def ask_together(requests: Sequence[JudgeRequest], order: Sequence[str] = ()) -> dict[tuple, bool]:
    """Ask several judge questions about one output in one LM call: `JudgeRequest.key` -> verdict.

    The text shown is the union of the requests' fields (in `order`, then as they come), so a question that
    alone would see fewer fields sees them all; each question gets its own boolean output field. Needs at
    least two distinct questions and one LM for all of them. The call counts as one judge call.
    """
    distinct = list({r.key: r for r in requests}.values())
    if len(distinct) < 2:
        raise ValueError("ask_together needs at least two distinct judge questions")
    lms = {id(r.lm) for r in distinct}
    if len(lms) > 1:
        raise ValueError("ask_together asks one LM; these questions name several")
    union: dict[str, Any] = {}
    rank = {name: i for i, name in enumerate(order)}
    for r in distinct:
        for k, v in r.fields.items():
            union.setdefault(k, v)
    union = dict(sorted(union.items(), key=lambda kv: rank.get(kv[0], len(rank))))
    predictor = dspy.Predict(_batched_signature(len(distinct)))
    if distinct[0].lm is not None:
        predictor.set_lm(distinct[0].lm)
    note_lm_call()
    questions = {f"question_{i}": r.question for i, r in enumerate(distinct, 1)}
    prediction = predictor(text=_judge_text(union), **questions)
    return {r.key: _as_verdict(prediction[f"answer_{i}"]) for i, r in enumerate(distinct, 1)}


@contextlib.contextmanager
def answering_from(answers: Mapping[tuple, bool]) -> Iterator[None]:
    """`lm_judge` calls inside answer from `answers` (`ask_together`'s) when they hold the question."""
    token = _answers.set(answers)
    try:
        yield
    finally:
        _answers.reset(token)


def lm_judge(question: str, /, lm: Any = None, **fields: Any) -> bool:
    """An LM-judged check, e.g. `lm_judge("Is the tweet engaging?", tweet=tweet)`.

    Uses the configured LM (or `lm`) with a boolean output field, so it returns a real bool. The
    question is positional-only, so a field may itself be called `question`. Within a run that asks
    several judges about one output together (`batch_judges`), the verdict comes from that call.
    """
    collecting = _collecting.get()
    if collecting is not None:
        collecting.append(JudgeRequest(question, fields, lm))
        raise _Asked
    answers = _answers.get()
    if answers:
        known = answers.get(JudgeRequest(question, fields, lm).key)
        if known is not None:
            note_judged_verdict()
            return known
    text = _judge_text(fields)
    predictor = dspy.Predict(_JudgeSignature)
    note_lm_call()
    if lm is not None:
        predictor.set_lm(lm)
    return _as_verdict(predictor(text=text, question=question).answer)
