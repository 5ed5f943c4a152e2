"""Running a program over a dev set and measuring it: scores, each example's run record, LM calls,
tokens and cache hits, counted the same way in every setting."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
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
    concurrency: int | None = defaults.CONCURRENCY,
    on_example: Callable[[int], None] | None = None,
) -> Evaluation:
    """Run an (activated) program over `devset` with dspy.Evaluate; every example is accounted for.

    Each example's RunRecord is collected from the run itself (not from the prediction), so a
    program returning a dict or a string still gets its constraints counted. With `concurrency`, the
    examples run instead as asyncio tasks in one event loop, at most `concurrency` at a time
    (`evaluate_async`): the same examples, records and counts, without a thread per call.
    """
    if concurrency is not None:
        return evaluate_async(program, devset, metric, concurrency=concurrency, on_example=on_example)
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


def evaluate_async(
    program: dspy.Module,
    devset: Sequence[dspy.Example],
    metric: Metric,
    *,
    concurrency: int,
    on_example: Callable[[int], None] | None = None,
) -> Evaluation:
    """`evaluate_program` with `await program.acall(...)`, at most `concurrency` examples in flight.

    Why: an LM behind a network waits far more than it computes; tasks of one event loop wait together
    without a thread each. Each example is accounted for as in the threaded run (the same
    `ExampleResult`s, records and counts). A program without `aforward` runs on a pool of `concurrency`
    threads instead. Works from inside a running event loop (a notebook kernel's): the evaluation then
    gets a loop on a thread of its own, and an interrupt cancels it.
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be 1 or more, got {concurrency}")
    examples = list(devset)
    outer = tuple(dspy.settings.get(COLLECTORS_KEY) or ())
    done = [0]
    pool = (None if callable(getattr(program, "aforward", None))
            else concurrent.futures.ThreadPoolExecutor(concurrency, thread_name_prefix="lmassert-eval"))

    def call(inputs: dict[str, Any]) -> Awaitable[Any]:
        if pool is None:
            return program.acall(**inputs)
        job = functools.partial(contextvars.copy_context().run, program, **inputs)
        return asyncio.get_running_loop().run_in_executor(pool, job)

    async def one(index: int, example: dspy.Example, limit: asyncio.Semaphore) -> ExampleResult:
        error: str | None = None
        error_type: str | None = None
        async with limit:
            log = RunLog()
            try:
                with dspy.context(**{COLLECTORS_KEY: (*outer, log)}):
                    prediction = await call(dict(example.inputs()))
            except asyncio.CancelledError as exc:  # an LM client cancelling its call is a failure too...
                task = asyncio.current_task()
                if task is not None and task.cancelling():  # ...but an interrupted evaluation stops
                    raise
                prediction, error, error_type = dspy.Prediction(), f"CancelledError: {exc}", "CancelledError"
            except Exception as exc:
                prediction, error, error_type = dspy.Prediction(), f"{type(exc).__name__}: {exc}", type(exc).__name__
            done[0] += 1
            if on_example is not None:
                on_example(done[0])
        score = 0.0
        if error is None:
            try:
                score = float(metric(example, prediction))
            except Exception as exc:
                error = f"metric raised {type(exc).__name__}: {exc}"
        record = log.records[-1] if log.records else None
        return ExampleResult(index, dict(example.inputs()), _outputs(prediction), score, record, error, error_type)

    async def all_examples() -> list[ExampleResult]:
        limit = asyncio.Semaphore(concurrency)
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(i, example, limit)) for i, example in enumerate(examples)]
        return [task.result() for task in tasks]

    stray_before = stray_predictor_calls()
    start = time.perf_counter()
    try:
        with tally_lm() as tally:
            results = run_async(all_examples)
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    seconds = time.perf_counter() - start
    observe = sum(e.record.observe_lm_calls for e in results if e.record is not None)
    return Evaluation(
        examples=results, lm_calls=tally.calls - observe, tokens=tally.tokens, seconds=seconds,
        observe_lm_calls=observe, cache_hits=tally.cache_hits, prompt_tokens=tally.prompt_tokens,
        completion_tokens=tally.completion_tokens, stray_predictor_calls=stray_predictor_calls() - stray_before,
    )


def run_async(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """`asyncio.run(make())`, also where an event loop already runs on this thread (a notebook kernel's).

    There the coroutine gets a loop on a thread of its own, with this thread's context (DSPy's settings,
    the tally); an interrupt of this thread cancels it, waits for it to stop, and is raised again.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    loop = asyncio.new_event_loop()
    context = contextvars.copy_context()
    box: dict[str, Any] = {}

    async def main() -> Any:
        box["task"] = asyncio.current_task()
        return await make()

    def target() -> None:
        try:
            box["value"] = context.run(loop.run_until_complete, main())
        except BaseException as exc:  # re-raised on the caller's thread
            box["error"] = exc
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    thread = threading.Thread(target=target, name="lmassert-async-evaluation", daemon=True)
    thread.start()
    try:
        thread.join()
    except BaseException:  # KeyboardInterrupt (Kernel > Interrupt): stop the loop's work, then report it
        task = box.get("task")
        if task is not None:
            loop.call_soon_threadsafe(task.cancel)
        thread.join()
        raise
    if "error" in box:
        raise box["error"]
    return box["value"]
