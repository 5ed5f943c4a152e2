"""Pipelines for `%%compile`: registered signatures and plain Python callables, wired by field name.

No IPython here: the exported Python file of `%lmassert export` builds the same `Pipeline`.

Wiring rule (one dict of *fields* flows through the chain, starting with the call's keyword inputs):

* A **signature step** takes its input fields from the flow (a missing one is an error naming the
  step) and adds every field of its prediction (its outputs, plus ``reasoning`` for ChainOfThought).
* A **callable step** is called with the fields its parameters name (a parameter with a default is
  passed only when the field exists; ``**kwargs`` receives every field; positional-only parameters
  cannot be wired by name and are an error). Its result:

  - a ``dict`` / mapping / ``dspy.Prediction`` is merged into the flow (new values win);
  - any other value except ``None`` goes to the **single missing input of the next step** (a
    signature's input field, or a callable's required parameter, that the flow does not have yet),
    e.g. ``retrieve`` returning a list feeds ``context`` of ``GenerateTweet`` when ``question`` is
    already there. No next step, or zero or several missing inputs, is an error that says to return
    a dict instead;
  - ``None`` is an error (almost always a forgotten ``return``).

The pipeline returns a ``dspy.Prediction`` of every field the steps produced (not the inputs).

Predictors are attributes named after their signatures (``GenerateTweet``, then ``GenerateTweet_2``
if a signature repeats), so ``save``/``load`` and BootstrapFewShot see stable names. A callable that
is itself a ``dspy.Module`` becomes a sub-module, so its predictors are part of the program too.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import dspy

__all__ = [
    "ORIGIN_ATTR",
    "Pipeline",
    "PipelineError",
    "Step",
    "call_kwargs",
    "check_wiring",
    "instantiate_module",
    "match_signature",
    "reserved_step_names",
    "tag_predictors",
]

#: Attribute the engine's string targets also match (`matches_target` in engine.targets): the registered
#: signature a predictor was built from, even when DSPy renamed its signature (ChainOfThought does).
ORIGIN_ATTR = "_lmassert_origin"

PREDICT = "predict"
CALL = "call"
MODULE = "module"


class PipelineError(ValueError):
    """The chain cannot be wired: a missing field, an unusable return value, a bad step."""


@dataclass(frozen=True)
class Step:
    """One link of the chain. Immutable, and never deep-copied: copies of a program share callables."""

    name: str
    kind: str
    signature: type[dspy.Signature] | None = None
    cot: bool = False
    func: Callable[..., Any] | None = None
    origin: str | None = None

    @classmethod
    def predict(
        cls, name: str, signature: type[dspy.Signature], *, cot: bool = False, origin: str | None = None
    ) -> Step:
        """A predictor step (ChainOfThought when `cot`); `origin` names the registered signature
        (default: the signature class name), which constraint targets match."""
        return cls(name, PREDICT, signature=signature, cot=cot, origin=origin or signature.__name__)

    @classmethod
    def call(cls, name: str, func: Callable[..., Any]) -> Step:
        """A plain Python step (a retriever, a formatter) or a `dspy.Module` instance."""
        if not callable(func):
            raise PipelineError(f"step {name!r} is not callable ({type(func).__name__})")
        return cls(name, CALL, func=func)

    def __deepcopy__(self, memo: dict[int, Any]) -> Step:
        return self

    def describe(self) -> str:
        if self.kind == PREDICT:
            return f"{self.name} ({'ChainOfThought' if self.cot else 'Predict'})"
        return self.name


def reserved_step_names() -> frozenset[str]:
    """Names a step cannot take: they would shadow `dspy.Module` attributes of the pipeline."""
    return frozenset(name for name in dir(Pipeline) if not name.startswith("__")) | {
        "steps", "callbacks", "history", "_compiled"
    }


class Pipeline(dspy.Module):
    """A chain of signature steps and callables (see the module docstring for the wiring rule)."""

    def __init__(self, steps: Iterable[Step]) -> None:
        super().__init__()
        steps = list(steps)
        if not steps:
            raise PipelineError("a pipeline needs at least one step")
        reserved = reserved_step_names()
        seen: set[str] = set()
        kept: list[Step] = []
        for step in steps:
            if not step.name.isidentifier():
                raise PipelineError(f"step name {step.name!r} is not a Python identifier")
            if step.name in seen:
                raise PipelineError(f"two steps are named {step.name!r}; step names must be unique")
            if step.name in reserved:
                raise PipelineError(f"step name {step.name!r} clashes with a dspy.Module attribute")
            seen.add(step.name)
            if step.kind == PREDICT:
                assert step.signature is not None
                predictor = dspy.ChainOfThought(step.signature) if step.cot else dspy.Predict(step.signature)
                for p in predictor.predictors():
                    setattr(p, ORIGIN_ATTR, step.origin)
                setattr(self, step.name, predictor)
                kept.append(step)
            elif isinstance(step.func, dspy.Module):
                setattr(self, step.name, step.func)  # a sub-module: deep-copied and saved with the program
                kept.append(Step(step.name, MODULE))
            else:
                kept.append(step)
        self.steps = tuple(kept)

    def forward(self, **inputs: Any) -> dspy.Prediction:
        """Run the steps in order over one flow of fields; returns the fields the steps produced."""
        steps = self._steps(inputs)
        value: Any = None
        while True:
            try:
                func, kwargs = steps.send(value)
            except StopIteration as stop:
                return stop.value
            value = func(**kwargs)

    async def aforward(self, **inputs: Any) -> dspy.Prediction:
        """`forward` for `await pipeline.acall(...)`: the same steps, predictors and modules awaited through
        their `acall`, async callables awaited, plain callables called."""
        steps = self._steps(inputs)
        value: Any = None
        while True:
            try:
                func, kwargs = steps.send(value)
            except StopIteration as stop:
                return stop.value
            if isinstance(func, dspy.Module) and callable(getattr(func, "aforward", None)):
                value = await func.acall(**kwargs)
            else:
                value = func(**kwargs)
                if inspect.isawaitable(value):
                    value = await value

    def _steps(self, inputs: dict[str, Any]) -> Generator[tuple[Any, dict[str, Any]], Any, dspy.Prediction]:
        """The wiring, written once for both calling paths: yields (callable, keyword arguments) per step and
        gets its result back; returns the fields produced."""
        flow = dict(inputs)
        produced: dict[str, Any] = {}
        for index, step in enumerate(self.steps):
            if step.kind == PREDICT:
                assert step.signature is not None
                wanted = list(step.signature.input_fields)
                missing = [f for f in wanted if f not in flow]
                if missing:
                    raise PipelineError(
                        f"step {step.name} needs input field(s) {', '.join(missing)}; the pipeline has "
                        f"{', '.join(sorted(flow)) or 'none'} at that point"
                    )
                prediction = yield getattr(self, step.name), {f: flow[f] for f in wanted}
                new = {k: v for k, v in prediction.items() if not k.startswith("_")}
            else:
                func = getattr(self, step.name) if step.kind == MODULE else step.func
                assert func is not None
                value = yield func, call_kwargs(func, flow, step.name)
                new = self._result_fields(index, step, value, flow)
            flow.update(new)
            produced.update(new)
        return dspy.Prediction(**produced)

    def _result_fields(self, index: int, step: Step, value: Any, flow: Mapping[str, Any]) -> dict[str, Any]:
        if isinstance(value, Mapping):
            return dict(value)
        if isinstance(value, dspy.Prediction):
            return {k: v for k, v in value.items() if not k.startswith("_")}
        if value is None:
            raise PipelineError(
                f"step {step.name} returned None; return a dict of fields, or a value for the next step's missing input"
            )
        if index + 1 >= len(self.steps):
            raise PipelineError(
                f"step {step.name} is the last step and returned a {type(value).__name__}, not a dict; "
                "return a dict like {'field': value} to name its output"
            )
        nxt = self.steps[index + 1]
        missing = self._missing_inputs(nxt, flow)
        if missing is None or len(missing) != 1:
            what = "an unknown set of" if missing is None else (", ".join(missing) or "no")
            raise PipelineError(
                f"step {step.name} returned a {type(value).__name__}, not a dict, and the next step {nxt.name} has "
                f"{what} missing input(s), so the value has no single field to go to; return a dict like "
                "{'field': value} instead"
            )
        return {missing[0]: value}

    def _missing_inputs(self, step: Step, flow: Mapping[str, Any]) -> list[str] | None:
        if step.kind == PREDICT:
            assert step.signature is not None
            return [f for f in step.signature.input_fields if f not in flow]
        func = getattr(self, step.name) if step.kind == MODULE else step.func
        params = _parameters(func)
        if params is None or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return [
            p.name
            for p in params
            if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
            and p.default is inspect.Parameter.empty
            and p.name not in flow
        ]

    def describe(self) -> str:
        return " >> ".join(step.describe() for step in self.steps)


# ---------------------------------------------------------------- calling plain Python steps


def _parameters(func: Any) -> list[inspect.Parameter] | None:
    """The parameters a step is called with (a Module's `forward`, without `self`); None if unknown."""
    target = func
    if isinstance(func, dspy.Module):
        target = type(func).forward
        try:
            params = list(inspect.signature(target).parameters.values())
        except (TypeError, ValueError):
            return None
        return params[1:]
    try:
        return list(inspect.signature(target).parameters.values())
    except (TypeError, ValueError):
        return None


def call_kwargs(func: Any, fields: Mapping[str, Any], step: str = "step") -> dict[str, Any]:
    """The keyword arguments for a callable step: the fields its parameters name."""
    params = _parameters(func)
    if params is None:
        raise PipelineError(f"cannot read the parameters of step {step}; wrap it in a def with named parameters")
    kwargs: dict[str, Any] = {}
    missing: list[str] = []
    for p in params:
        if p.kind is inspect.Parameter.VAR_KEYWORD:
            kwargs.update({k: v for k, v in fields.items() if k not in kwargs})
        elif p.kind is inspect.Parameter.VAR_POSITIONAL:
            continue
        elif p.kind is inspect.Parameter.POSITIONAL_ONLY:
            if p.default is inspect.Parameter.empty:
                raise PipelineError(
                    f"step {step} has a positional-only parameter {p.name!r}, which cannot be wired by name"
                )
        elif p.name in fields:
            kwargs[p.name] = fields[p.name]
        elif p.default is inspect.Parameter.empty:
            missing.append(p.name)
    if missing:
        raise PipelineError(
            f"step {step} needs field(s) {', '.join(missing)}; the pipeline has {', '.join(sorted(fields)) or 'none'} "
            "at that point"
        )
    return kwargs


def check_wiring(steps: Sequence[Step], inputs: Iterable[str]) -> list[tuple[int, str]]:
    """Problems visible before running: (step index, message) for inputs nothing can provide.

    Only checked up to the first callable step, whose output fields are unknown until it runs.
    """
    available = set(inputs)
    problems: list[tuple[int, str]] = []
    for index, step in enumerate(steps):
        if step.kind == PREDICT:
            assert step.signature is not None
            missing = [f for f in step.signature.input_fields if f not in available]
            if missing:
                problems.append(
                    (index, f"{step.name} needs input field(s) {', '.join(missing)}, which the examples' inputs "
                            f"({', '.join(sorted(inputs)) or 'none'}) and earlier steps don't provide")
                )
            available.update(step.signature.output_fields)
            if step.cot:
                available.add("reasoning")
            continue
        params = _parameters(step.func) if step.func is not None else None
        if params is not None:
            missing = [
                p.name for p in params
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
                and p.default is inspect.Parameter.empty and p.name not in available
            ]
            positional = [p.name for p in params if p.kind is inspect.Parameter.POSITIONAL_ONLY
                          and p.default is inspect.Parameter.empty]
            if positional:
                problems.append((index, f"{step.name} has positional-only parameter(s) {', '.join(positional)}, "
                                        "which cannot be wired by field name"))
            elif missing:
                problems.append((index, f"{step.name} needs field(s) {', '.join(missing)}, which the examples' "
                                        f"inputs and earlier steps don't provide"))
        break  # a callable's output fields are unknown until it runs
    return problems


# ---------------------------------------------------------------- user dspy.Module subclasses


def instantiate_module(obj: Any) -> dspy.Module:
    """A fresh program from a notebook `dspy.Module` subclass (called with no arguments) or instance (copied)."""
    if isinstance(obj, type) and issubclass(obj, dspy.Module):
        try:
            return obj()
        except TypeError as exc:
            raise PipelineError(
                f"{obj.__name__}() needs arguments ({exc}); create an instance in a normal cell and name that instead"
            ) from exc
    if isinstance(obj, dspy.Module):
        return obj.deepcopy()
    raise PipelineError(f"{type(obj).__name__} is not a dspy.Module")


def match_signature(signature: Any, registered: Mapping[str, type[dspy.Signature]]) -> str | None:
    """Which registered signature a predictor's signature comes from (identity, class name, or
    same instructions with a superset of fields, which is what ChainOfThought makes of it)."""
    if signature is None:
        return None
    for name, cls in registered.items():
        if signature is cls:
            return name
    try:
        ins, outs = set(signature.input_fields), set(signature.output_fields)
        instructions = (signature.instructions or "").strip()
    except AttributeError:
        return None
    best: tuple[int, int, str] | None = None
    for name, cls in registered.items():
        if not (set(cls.input_fields) <= ins and set(cls.output_fields) <= outs):
            continue
        by_name = getattr(signature, "__name__", None) == name
        if not by_name and (cls.instructions or "").strip() != instructions:
            continue
        rank = (1 if by_name else 0, len(cls.input_fields) + len(cls.output_fields), name)
        if best is None or rank > best:
            best = rank
    return best[2] if best else None


def tag_predictors(program: dspy.Module, registered: Mapping[str, type[dspy.Signature]]) -> dict[str, str]:
    """Mark each predictor of `program` with the registered signature it uses; returns predictor -> signature."""
    found: dict[str, str] = {}
    for pname, predictor in program.named_predictors():
        origin = match_signature(getattr(predictor, "signature", None), registered)
        if origin is None:
            existing = getattr(predictor, ORIGIN_ATTR, None)
            if existing in registered:
                origin = existing
        if origin is not None:
            setattr(predictor, ORIGIN_ATTR, origin)
            found[pname] = origin
    return found
