"""Running a program over a dev set and measuring it: scores, each example's run record, LM calls,
tokens and cache hits, counted the same way in every setting."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from . import defaults
from .compile import Metric
from .context import COLLECTORS_KEY, stray_predictor_calls
from .records import RunLog, RunRecord
from .results import ExampleResult
from .tally import tally_lm


def _outputs(prediction: Any) -> dict[str, Any]:
    try:
        return {k: v for k, v in prediction.items() if not k.startswith("_")}
    except AttributeError:
        return {"output": prediction}



@dataclass
class Evaluation:
    """What `evaluate_program` measured; costs are counted the same way in every setting."""

    examples: list[ExampleResult]
    lm_calls: int  # every LM request, cache hits and judge calls included
    tokens: int
    seconds: float
    observe_lm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    stray_predictor_calls: int = 0

    def __iter__(self) -> Iterator[Any]:  # (examples, lm_calls, tokens, seconds), as before
        return iter((self.examples, self.lm_calls, self.tokens, self.seconds))


def evaluate_program(
    program: dspy.Module,
    devset: Sequence[dspy.Example],
    metric: Metric,
    *,
    num_threads: int = defaults.THREADS,
    on_example: Callable[[int], None] | None = None,
) -> Evaluation:
    """Run an (activated) program over `devset` with dspy.Evaluate; every example is accounted for.

    Each example's RunRecord is collected from the run itself (not from the prediction), so a
    program returning a dict or a string still gets its constraints counted.
    """
    lock = threading.Lock()
    done = [0]
    # Set when the evaluation is interrupted. dspy.Evaluate stops handing out examples on a SIGINT, but
    # an interrupt raised in a worker thread (from an LM client, a callback) leaves its queue running in
    # the background, still calling the LM after the cell has returned; queued examples now do nothing.
    stopped = threading.Event()
    # The metric runs right after the program on the same worker thread: the record travels between them
    # on the thread, then is filed under its example.
    local = threading.local()
    records: dict[int, RunRecord | None] = {}
    errors: dict[int, tuple[str, str | None]] = {}  # example -> (message, exception type raised by the program)
    outer = tuple(dspy.settings.get(COLLECTORS_KEY) or ())

    def probe(**inputs: Any) -> Any:
        local.record, local.error, local.error_type = None, None, None
        if stopped.is_set():
            local.error = "not run: the evaluation was interrupted"
            return dspy.Prediction()
        log = RunLog()
        try:
            with dspy.context(**{COLLECTORS_KEY: (*outer, log)}):
                prediction = program(**inputs)
        except (Exception, asyncio.CancelledError) as exc:  # an LM client cancelling its call is a failure too
            prediction = dspy.Prediction()
            local.error, local.error_type = f"{type(exc).__name__}: {exc}", type(exc).__name__
        local.record = log.records[-1] if log.records else None
        with lock:
            done[0] += 1
            n = done[0]
        if on_example is not None:
            on_example(n)
        return prediction

    def scored(example: Any, prediction: Any, trace: Any = None) -> float:
        key = id(example)
        records[key] = getattr(local, "record", None)
        error = getattr(local, "error", None)
        if error:
            errors[key] = (error, getattr(local, "error_type", None))
            return 0.0
        try:
            return float(metric(example, prediction))
        except Exception as exc:
            errors[key] = (f"metric raised {type(exc).__name__}: {exc}", None)
            return 0.0

    evaluator = dspy.Evaluate(
        devset=list(devset),
        metric=scored,
        num_threads=num_threads,
        display_progress=False,
        display_table=False,
        max_errors=len(devset) + 1,
        provide_traceback=False,
    )
    stray_before = stray_predictor_calls()
    start = time.perf_counter()
    with tally_lm() as tally:
        try:
            outcome = evaluator(probe)
        except BaseException:
            stopped.set()
            raise
    seconds = time.perf_counter() - start
    examples = []
    for i, (example, prediction, score) in enumerate(outcome.results):
        key = id(example)
        error, error_type = errors.get(key, (None, None))
        record = records.get(key)
        if key not in records and error is None:
            error = "no prediction"
        examples.append(ExampleResult(
            i, dict(example.inputs()), _outputs(prediction), float(score or 0.0), record, error, error_type,
        ))
    observe = sum(e.record.observe_lm_calls for e in examples if e.record is not None)
    return Evaluation(
        examples=examples, lm_calls=tally.calls - observe, tokens=tally.tokens, seconds=seconds,
        observe_lm_calls=observe, cache_hits=tally.cache_hits, prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens, stray_predictor_calls=stray_predictor_calls() - stray_before,
    )
