"""What the four paper programs share: data, retriever, LM, and the paper's five settings.

The 2.5 notebooks configured a ColBERTv2 server over Wikipedia abstracts and HotPotQA; here every
study runs offline on the package's fictional world (`lmassert_magic.datasets`), with `dspy.Retrieve`
reading a BM25 retriever over the study's passages through `dspy.settings.rm`, exactly the route the
2.5 programs took. Passages keep the `"Title | text"` shape of the Wikipedia abstracts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.teleprompt import BootstrapFewShotWithRandomSearch

from lmassert_magic.datasets import load_study
from lmassert_magic.engine.runtime import run_record_of, tally_lm

SETTINGS = ("Vanilla", "Infer w/ Assert", "Compile", "Compile w/ Assert", "C+Infer w/ Assert")


def datasets(study: str, inputs: Sequence[str], n_train: int | None = None,
             n_dev: int | None = None) -> tuple[list[dspy.Example], list[dspy.Example]]:
    """(trainset, devset) of a study with the inputs the 2.5 notebook declared (`with_inputs`)."""
    data = load_study(study)
    train = [x.with_inputs(*inputs) for x in data.train[:n_train]]
    dev = [x.with_inputs(*inputs) for x in data.dev[:n_dev]]
    return train, dev


def retriever(study: str, k: int = 3) -> Callable[..., Any]:
    """An `rm` for `dspy.configure(rm=...)`: BM25 over the study's passages (`dspy.Retrieve(k=...)` sets k)."""
    return load_study(study).retriever(k).as_rm()


@contextlib.contextmanager
def offline(study: str, lm: Any = None) -> Iterator[None]:
    """`with offline("tweetgen"):` the study's retriever as `rm`, and `lm` (default: the embedded model)."""
    if lm is None:
        from lmassert_magic.lm import local_lm

        lm = local_lm()
    from lmassert_magic.lm import AutoAdapter, wants_json_schema

    adapter = AutoAdapter() if wants_json_schema(lm) and dspy.settings.adapter is None else dspy.settings.adapter
    with dspy.context(lm=lm, rm=retriever(study), adapter=adapter, trace=[]):
        yield


@dataclass
class Run:
    """One program over a set of examples: predictions (None = the program raised) and costs."""

    predictions: list[Any]
    errors: list[str]
    lm_calls: int
    uncached_calls: int
    seconds: float
    backtracks: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        return len(self.predictions)

    def per_example(self) -> float:
        return self.lm_calls / self.n if self.n else float("nan")


def run_program(program: Any, examples: Sequence[dspy.Example]) -> Run:
    """Call `program` on each example (one thread) and count its LM calls; failures are kept, not raised."""
    predictions, errors, backtracks = [], [], 0
    start = time.perf_counter()
    with tally_lm() as tally:
        for example in examples:
            try:
                prediction = program(**example.inputs())
            except Exception as exc:  # a hard Assert, or the model's unparseable output
                predictions.append(None)
                errors.append(f"{type(exc).__name__}: {exc}")
                record = getattr(exc, "run_record", None)
            else:
                predictions.append(prediction)
                record = run_record_of(prediction)
            backtracks += record.backtracks if record is not None else 0
    return Run(predictions, errors, tally.calls, tally.uncached, time.perf_counter() - start, backtracks)


def mean_metric(metric: Callable[..., Any], examples: Sequence[dspy.Example], run: Run) -> float:
    """The metric's mean over the examples, in percent; an example whose program raised scores 0."""
    scores = [float(metric(x, p)) if p is not None else 0.0 for x, p in zip(examples, run.predictions)]
    return 100.0 * sum(scores) / len(scores) if scores else float("nan")


def compile_program(student: Any, teacher: Any, trainset: Sequence[dspy.Example], valset: Sequence[dspy.Example],
                    metric: Callable[..., Any], *, num_candidate_programs: int = 6,
                    max_bootstrapped_demos: int = 2, num_threads: int | None = None) -> Any:
    """The 2.5 notebooks' compile call: `BootstrapFewShotWithRandomSearch(...).compile(student=, teacher=)`."""
    teleprompter = BootstrapFewShotWithRandomSearch(
        metric=metric, max_bootstrapped_demos=max_bootstrapped_demos, num_candidate_programs=num_candidate_programs,
        num_threads=num_threads,
    )
    return teleprompter.compile(student=student, teacher=teacher, trainset=list(trainset), valset=list(valset))


def demos_of(program: Any) -> dict[str, int]:
    """Bootstrapped demos per predictor of a compiled program."""
    return {name: len(p.demos) for name, p in program.named_predictors()}
