"""Compiling with DSPy 3's own optimizers, driven by the constraints: GEPA and Refine.

`gepa`: `dspy.GEPA` evolves each predictor's instructions; with assertions its metric is
`signals.gepa_metric` (score and the failed constraints' messages as feedback, one objective per
constraint), without them the task metric alone. Its budget is `max_metric_calls` program runs, and a
time cap stops it on a slow laptop.

`refine`: each predictor a constraint targets runs inside `dspy.Refine` with the constraints' reward
(`signals.constraint_reward`): N attempts, the best kept, an advice call between attempts. To the engine
the refined predictor is one step, so its constraints are judged on the output Refine returns, and its
attempts and advice calls count as the run's LM calls.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

from . import defaults
from .activation import _GuardMixin, _twin
from .compile import OPTIMIZERS, CompileOutcome, Metric, demos_of, plain_copy, prepare_program
from .constraints import Constraint
from .context import COLLECTORS_KEY, OBSERVE, RUN_STATE_KEY, active_scope, current_scope
from .records import RunLog
from .retry import rollout_id
from .signals import constraint_reward, describe_constraints, gepa_metric
from .tally import tally_lm
from .targets import FIRST_SIGNATURE_ATTR, resolve_target

GEPA = "gepa"
REFINE = "refine"
DSPY3_OPTIMIZERS = (GEPA, REFINE)
#: Every optimizer `%%compile --optimizer` and `run_ablation(optimizer=...)` take.
ALL_OPTIMIZERS = (*OPTIMIZERS, *DSPY3_OPTIMIZERS)

__all__ = ["ALL_OPTIMIZERS", "DSPY3_OPTIMIZERS", "GEPA", "REFINE", "RefineSpec", "compile_dspy3", "refine_program"]


# ---------------------------------------------------------------- Refine around a predictor


@dataclass(frozen=True)
class RefineSpec:
    """How a refined predictor runs: attempts, the constraints its reward checks, the reward that stops it early."""

    n: int
    constraints: tuple[Constraint, ...]
    threshold: float = defaults.REFINE_THRESHOLD


class _RefineMixin:
    """Runs each call of the predictor through a fresh `dspy.Refine` (DSPy's Refine lowers its `fail_count`
    for good on every failed attempt, so one kept instance would start raising after a few examples)."""

    def forward(self, **kwargs: Any) -> Any:
        spec = self.__dict__.get("_lmassert_refine")
        if spec is None:
            return super().forward(**kwargs)  # type: ignore[misc]
        return _refined_call(self, spec, kwargs)

    async def aforward(self, **kwargs: Any) -> Any:
        """`dspy.Refine` has no async path: the refined call runs on a worker thread (with this context)."""
        spec = self.__dict__.get("_lmassert_refine")
        if spec is None:
            return await super().aforward(**kwargs)  # type: ignore[misc]
        return await asyncio.to_thread(_refined_call, self, spec, kwargs)


def _plain_class(cls: type) -> type:
    """The predictor class under any twin this package made (guarded, refined)."""
    for base in cls.__mro__:
        if not issubclass(base, (_GuardMixin, _RefineMixin)):
            return base
    return cls


_refined_classes: dict[type, type] = {}


def _refined_class(cls: type) -> type:
    base = _plain_class(cls)
    if base not in _refined_classes:
        _refined_classes[base] = _twin(base, _RefineMixin, "Refined")
    return _refined_classes[base]


def _seeded(lm: Any, seed: int, step: str, inputs: dict[str, Any], start: int | None) -> Any:
    """A copy of `lm` whose copies (Refine makes one per attempt, at temperature 1.0) carry a sampling seed
    derived from the run seed, the step, its inputs and the attempt: a repeated run repeats its attempts."""
    base = lm.copy(rollout_id=start) if start is not None else lm.copy()

    def copy_with_seed(**kwargs: Any) -> Any:
        made = type(base).copy(base, **kwargs)
        made.kwargs["seed"] = rollout_id(seed, f"refine:{step}", inputs, int(kwargs.get("rollout_id") or 0))
        return made

    base.copy = copy_with_seed
    return base


def _refined_call(predictor: Any, spec: RefineSpec, kwargs: dict[str, Any]) -> Any:
    kwargs = dict(kwargs)
    inner = copy.copy(predictor)  # the plain predictor Refine samples (it deep-copies it per attempt)
    inner.__class__ = _plain_class(type(predictor))
    for key in [k for k in inner.__dict__ if k.startswith("_lmassert_")]:
        del inner.__dict__[key]
    if "signature" in kwargs:  # a retry sends its own signature (feedback and past outputs)
        inner.signature = kwargs.pop("signature")
    if "demos" in kwargs:
        inner.demos = kwargs.pop("demos")
    config = dict(kwargs.pop("config", None) or {})
    start = config.pop("rollout_id", None)  # Refine samples its own rollouts, at its own temperature and seeds
    for key in ("temperature", "seed"):
        config.pop(key, None)
    inner.config = {**inner.config, **config}
    lm = kwargs.pop("lm", None) or predictor.lm or dspy.settings.lm
    scope = active_scope()
    name = getattr(predictor, "_lmassert_name", None) or type(predictor).__name__
    run_seed = scope.root.config.seed if scope is not None else defaults.SEED
    inner.lm = _seeded(lm, run_seed, name, kwargs, start)
    refine = dspy.Refine(module=inner, N=spec.n, reward_fn=constraint_reward(spec.constraints),
                         threshold=spec.threshold)
    refine.reward_fn_code = describe_constraints(spec.constraints)  # what its advice step is shown
    outer = dspy.settings.trace
    token = current_scope.set(None)  # Refine's attempts and advice calls are inside this one step
    try:
        # warn_on_type_mismatch: Refine passes its advice step numbers and lists as JSON strings, warning each time
        with dspy.context(trace=[], warn_on_type_mismatch=False, **{RUN_STATE_KEY: None}), tally_lm() as tally:
            prediction = refine(**kwargs)
    finally:
        current_scope.reset(token)
    if prediction is None:
        raise RuntimeError(f"dspy.Refine: every attempt of {name} failed")
    if scope is not None:
        for _ in range(tally.calls - 1):  # the step itself was counted when it was called
            scope.root.count_call()
    if outer is not None and dspy.settings.max_trace_size > 0:
        outer.append((predictor, dict(kwargs), prediction))
    return prediction


def refine_program(
    program: dspy.Module, constraints: Iterable[Constraint], *, n: int,
    threshold: float = defaults.REFINE_THRESHOLD,
) -> dspy.Module:
    """A copy of `program` whose predictors named by the constraints' targets each run in `dspy.Refine`.

    Each refined predictor's reward checks the constraints on it (share passed, 0 on a hard failure); it
    makes up to `n` attempts and stops at the first reaching `threshold`. Names, demos and state are kept
    (the class is swapped in place, as activation does), so the copy activates, saves and compiles as before.
    """
    if n < 1:
        raise ValueError(f"n must be 1 or more, got {n}")
    refined = plain_copy(program)
    groups: dict[int, tuple[Any, list[Constraint]]] = {}
    for constraint in constraints:
        for _, predictor in resolve_target(refined, constraint.target):
            groups.setdefault(id(predictor), (predictor, []))[1].append(constraint)
    for predictor, on_it in groups.values():
        predictor.__class__ = _refined_class(type(predictor))
        predictor._lmassert_refine = RefineSpec(n, tuple(on_it), threshold)
    return refined


# ---------------------------------------------------------------- compiling


def _check_options(optimizer: str, max_metric_calls: int, time_cap: float | None) -> None:
    if optimizer not in DSPY3_OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; choose one of {', '.join(ALL_OPTIMIZERS)}")
    if max_metric_calls < 1:
        raise ValueError(f"max_metric_calls must be 1 or more, got {max_metric_calls}")
    if time_cap is not None and not time_cap > 0:
        raise ValueError(f"time_cap must be a positive number of seconds or None, got {time_cap}")


def compile_dspy3(
    program: dspy.Module,
    trainset: Sequence[dspy.Example],
    metric: Metric,
    *,
    optimizer: str,
    constraints: Iterable[Constraint] = (),
    with_assertions: bool = True,
    max_backtracks: int = defaults.MAX_BACKTRACKS,
    constraint_weight: float = defaults.GEPA_CONSTRAINT_WEIGHT,
    num_threads: int = defaults.THREADS,
    on_example: Callable[[int], None] | None = None,
    seed: int = defaults.SEED,
    max_metric_calls: int = defaults.GEPA_MAX_METRIC_CALLS,
    time_cap: float | None = defaults.GEPA_TIME_CAP_SECONDS,
    reflection_lm: Any = None,
    threshold: float = defaults.REFINE_THRESHOLD,
    **bootstrap_options: Any,
) -> CompileOutcome:
    """Compile with GEPA or Refine; the outcome has the shape `compile_program`'s has, so the five settings
    run on it unchanged.

    GEPA: the student runs with constraints observed (with assertions) and the metric gives the failed
    constraints' messages as feedback; without assertions it sees the task metric only. The train set is
    also GEPA's Pareto set (the dev set stays unseen). `reflection_lm` defaults to the configured LM.
    Refine: with assertions, the targeted predictors run in `dspy.Refine` with N = `max_backtracks` + 1
    (the attempts backtracking would have); without, there is nothing to refine and the program is kept.
    `constraint_weight` is the constraints' share of GEPA's score (`signals.gepa_metric`).
    `bootstrap_options` (soft_penalty, keep_soft_failures, max_errors, counterexamples) apply to
    bootstrapping only.
    """
    _check_options(optimizer, max_metric_calls, time_cap)
    constraints = list(constraints)
    if optimizer == REFINE:
        return _compile_refine(program, constraints, with_assertions, max_backtracks + 1, threshold)
    return _compile_gepa(program, trainset, metric, constraints, with_assertions, constraint_weight, num_threads,
                         on_example, seed, max_metric_calls, time_cap, reflection_lm)


def _compile_refine(program: dspy.Module, constraints: list[Constraint], with_assertions: bool, n: int,
                    threshold: float) -> CompileOutcome:
    if with_assertions and constraints:
        compiled = refine_program(program, constraints, n=n, threshold=threshold)
        steps = [name for name, p in compiled.named_predictors() if "_lmassert_refine" in p.__dict__]
        notes = [f"dspy.Refine (N={n}, threshold {threshold:g}) around {', '.join(steps)}, rewarded by the "
                 "share of its constraints passed (0 when a hard one fails); no training examples are run"]
    else:
        compiled = plain_copy(program)
        notes = ["no compile: dspy.Refine is driven by the constraints, which are off in this setting"]
    return CompileOutcome(program=compiled, demos=demos_of(compiled), notes=notes)


def _compile_gepa(
    program: dspy.Module, trainset: Sequence[dspy.Example], metric: Metric, constraints: list[Constraint],
    with_assertions: bool, constraint_weight: float, num_threads: int, on_example: Callable[[int], None] | None,
    seed: int, max_metric_calls: int, time_cap: float | None, reflection_lm: Any,
) -> CompileOutcome:
    from dspy.teleprompt.gepa.instruction_proposal import InstructionProposer
    from gepa.utils.stop_condition import TimeoutStopCondition

    if with_assertions:
        student = prepare_program(program, constraints, mode=OBSERVE, max_backtracks=0, seed=seed)
        scored = gepa_metric(constraints, metric, constraint_weight=constraint_weight)
    else:
        student = plain_copy(program)
        scored = gepa_metric((), metric)
    calls, errors, lock = [0], [], threading.Lock()

    def counted(gold: Any, pred: Any, trace: Any = None, pred_name: Any = None, pred_trace: Any = None) -> Any:
        if pred_name is None:  # a program run scored (GEPA's budget unit); with a name: feedback for a predictor
            with lock:
                calls[0] += 1
                done = calls[0]
            if on_example is not None:
                on_example(done)
        try:
            return scored(gold, pred, trace, pred_name, pred_trace)
        except Exception as exc:
            with lock:
                errors.append(f"metric raised {type(exc).__name__}: {exc}")
            raise

    adapter = dspy.settings.adapter or dspy.ChatAdapter()
    stoppers = {"stop_callbacks": [TimeoutStopCondition(time_cap)]} if time_cap is not None else {}
    optimizer = dspy.GEPA(
        metric=counted, max_metric_calls=max_metric_calls, reflection_lm=reflection_lm or dspy.settings.lm,
        instruction_proposer=InstructionProposer(adapter=adapter), num_threads=num_threads, seed=seed,
        reflection_minibatch_size=max(1, min(3, len(trainset))), gepa_kwargs=stoppers,
    )
    log = RunLog()
    collectors = (*tuple(dspy.settings.get(COLLECTORS_KEY) or ()), log)
    start = time.perf_counter()
    with dspy.context(**{COLLECTORS_KEY: collectors}), tally_lm() as tally:
        compiled = optimizer.compile(student, trainset=list(trainset))
    seconds = time.perf_counter() - start
    compiled = plain_copy(compiled)
    before = dict(student.named_predictors())
    for name, predictor in compiled.named_predictors():  # constraints naming the old signature still find it
        first = before[name]
        setattr(predictor, FIRST_SIGNATURE_ATTR, getattr(first, FIRST_SIGNATURE_ATTR, first.signature))
    errors = [r.error for r in log.records if r.error] + errors
    note = (f"GEPA: {calls[0]} metric calls of a budget of {max_metric_calls}, constraint feedback "
            f"{'on' if with_assertions else 'off'}; the train set is also its Pareto set")
    if time_cap is not None and seconds >= time_cap:
        note += f"; stopped by the time cap ({time_cap:g} s), so the result depends on the machine's speed"
    instructions = {name: p.signature.instructions for name, p in compiled.named_predictors()}
    return CompileOutcome(
        program=compiled, demos=demos_of(compiled), lm_calls=tally.calls, tokens=tally.tokens,
        cache_hits=tally.cache_hits, prompt_tokens=tally.prompt_tokens, completion_tokens=tally.completion_tokens,
        n_examples=calls[0], n_failed=len(errors), failures=errors[:5], notes=[note], instructions=instructions,
    )
