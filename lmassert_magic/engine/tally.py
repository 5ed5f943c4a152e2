"""Counting LM calls, tokens and cache hits: of one run, of many runs (`tally_lm`), and of LM judges.

DSPy reports usage per uncached call to the active usage tracker; `TokenSink` adds it to a run's
or a tally's counts, and `UsageRecallingCache` makes a cache hit report the tokens it saved, so a
setting's token count does not depend on which setting warmed the cache first.

Imports nothing else of the engine: the constraints (whose LM judges count their calls through
`note_lm_call`) and the run state both build on it.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import dspy
from dspy.utils.callback import BaseCallback
from dspy.utils.usage_tracker import UsageTracker


class TokenSink(UsageTracker):
    """Adds each uncached call's usage to `add` and forwards the entry to any tracker the caller had.

    `add_cached_usage` receives the usage a cached response carried (see `UsageRecallingCache`),
    so token counts do not depend on whether an earlier setting warmed the cache. Shared, not
    copied, when DSPy hands trackers to worker threads: the tally must stay one.
    """

    def __init__(
        self, add: Callable[[dict[str, Any]], None], parent: UsageTracker | None,
        add_cached: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        super().__init__()
        self._add = add
        self._add_cached = add_cached
        self._parent = parent

    def add_usage(self, lm: str, usage_entry: dict[str, Any]) -> None:
        self._add(usage_entry or {})
        if self._parent is not None:
            self._parent.add_usage(lm, usage_entry)

    def add_cached_usage(self, usage_entry: dict[str, Any]) -> None:
        if self._add_cached is not None:
            self._add_cached(usage_entry)
        forward = getattr(self._parent, "add_cached_usage", None)
        if forward is not None:
            forward(usage_entry)

    def __deepcopy__(self, memo: dict) -> TokenSink:
        return self


class UsageRecallingCache:
    """DSPy's cache, unchanged, except that a hit tells the active usage tracker the tokens it saved.

    DSPy reports no usage for a cached response, so a setting that runs after another one (and hits
    its cache) would look cheaper in tokens. Installed around `dspy.cache` while runs and tallies are
    active; every other attribute goes to the real cache.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def get(self, *args: Any, **kwargs: Any) -> Any:
        record = self._inner.get(*args, **kwargs)
        if record is not None:
            recall = getattr(dspy.settings.usage_tracker, "add_cached_usage", None)
            if recall is not None:
                usage = record.get("usage") if isinstance(record, dict) else getattr(record, "usage", None)
                recall(dict(usage or {}))
        return record


def recall_cached_usage() -> None:
    if not isinstance(dspy.cache, UsageRecallingCache):
        dspy.cache = UsageRecallingCache(dspy.cache)


def usage_numbers(entry: dict[str, Any]) -> tuple[int, int, int]:
    """(prompt, completion, total) tokens of one usage entry; providers name them differently."""
    prompt = int(entry.get("prompt_tokens") or entry.get("input_tokens") or 0)
    completion = int(entry.get("completion_tokens") or entry.get("output_tokens") or 0)
    total = entry.get("total_tokens")
    return prompt, completion, int(total) if total is not None else prompt + completion


# The active run's judge-call counter. The run lives above this module (`engine.context` sets it on
# import), so the judge, which lives below the run, can count its calls without importing the run.
_judge_call_counter: Callable[[], None] | None = None


def count_judge_calls_with(counter: Callable[[], None]) -> None:
    """Install what `note_lm_call` calls: `engine.context` counts the call against the active run."""
    global _judge_call_counter
    _judge_call_counter = counter


#: LM calls made by the constraint check now running (set around each declared check), so the engine
#: learns which checks ask an LM and can run the others first.
calls_in_check: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("lmassert_check_calls",
                                                                                  default=None)


def note_lm_call() -> None:
    """Count one LM call against the current run (predictor calls count themselves; judges call this)."""
    in_check = calls_in_check.get()
    if in_check is not None:
        in_check[0] += 1
    if _judge_call_counter is not None:
        _judge_call_counter()


def note_judged_verdict() -> None:
    """The check now running took an LM judge's verdict asked ahead of it (several judges in one call, counted
    there): it asks an LM, but made no call itself."""
    in_check = calls_in_check.get()
    if in_check is not None:
        in_check[0] += 1


@contextlib.contextmanager
def counting_check_calls() -> Iterator[list[int]]:
    """`[n]`: the LM-judge verdicts the enclosed check used: calls it made through `note_lm_call`, and verdicts
    asked ahead of it (`note_judged_verdict`)."""
    calls, token = start_counting_check_calls()
    try:
        yield calls
    finally:
        stop_counting_check_calls(token)


def start_counting_check_calls() -> tuple[list[int], contextvars.Token]:
    """`counting_check_calls` without the context manager, for the run's per-check path: `[n]` and the token
    to hand to `stop_counting_check_calls` (in a `finally`)."""
    calls = [0]
    return calls, calls_in_check.set(calls)


def stop_counting_check_calls(token: contextvars.Token) -> None:
    calls_in_check.reset(token)


class LMTally(BaseCallback):
    """Counts LM calls and tokens across many runs and threads (a compile, an evaluation)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls = 0
        self.uncached = 0
        self.failed = 0
        self.tokens = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    @property
    def cache_hits(self) -> int:
        """Calls the cache answered: neither sent to the LM (usage reported) nor failed."""
        return max(0, self.calls - self.uncached - self.failed)

    def on_lm_start(self, call_id: str, instance: Any, inputs: dict[str, Any]) -> None:
        with self._lock:
            self.calls += 1

    def on_lm_end(self, call_id: str, outputs: Any, exception: Exception | None = None) -> None:
        if exception is not None:
            with self._lock:
                self.failed += 1

    def add_usage(self, entry: dict[str, Any], cached: bool = False) -> None:
        prompt, completion, total = usage_numbers(entry)
        with self._lock:
            if not cached:
                self.uncached += 1
            self.tokens += total
            self.prompt_tokens += prompt
            self.completion_tokens += completion

    def add_cached_usage(self, entry: dict[str, Any]) -> None:
        self.add_usage(entry, cached=True)


@contextlib.contextmanager
def tally_lm() -> Iterator[LMTally]:
    """`with tally_lm() as t: ...` counts every LM call and token inside, in any thread DSPy spawns."""
    tally = LMTally()
    callbacks = [*list(dspy.settings.get("callbacks") or []), tally]
    recall_cached_usage()
    usage = TokenSink(tally.add_usage, dspy.settings.get("usage_tracker"), tally.add_cached_usage)
    with dspy.context(callbacks=callbacks, usage_tracker=usage):
        yield tally


#: DSPy logs this once per LM response that hit max_tokens (from "dspy.clients.lm").
TRUNCATION_PREFIX = "LM response was truncated"


class TruncationCounter(logging.Filter):
    """Counts DSPy's per-call "response was truncated" warnings and keeps them off the notebook.

    A 40-example run on a small model can log hundreds of them; the report shows one count per
    setting instead (its outputs may be incomplete), which a reader can act on.
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.count = 0

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(TRUNCATION_PREFIX):
            with self._lock:
                self.count += 1
            return False
        return True


@contextlib.contextmanager
def counting_truncations() -> Iterator[TruncationCounter]:
    """Count (and silence) truncated-response warnings while the block runs."""
    counter = TruncationCounter()
    dspy_lm_logger = logging.getLogger("dspy.clients.lm")
    dspy_lm_logger.addFilter(counter)
    try:
        yield counter
    finally:
        dspy_lm_logger.removeFilter(counter)
