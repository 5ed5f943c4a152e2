"""What a change makes stale, and planning the program a `%%compile` body describes.

Invalidation: a compiled program records the versions of the signatures (and constraints) it was
built from; redefining, replacing or removing one of them marks the program stale, with a note the
cell shows. Planning: `plan_pipeline` resolves each step of a `%%compile` body against the registry
and the notebook, builds the program, and picks the constraints of the signatures it uses. Nothing
here commits anything: the store (`store.py`) calls these inside its transactions.
"""

from __future__ import annotations

import dataclasses
import keyword
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import dspy

from ..engine import resolve_target
from ..engine.activation import activated_copy
from ..engine.constraints import Constraint
from ..engine.errors import TargetNotFoundError
from ..pipeline import MODULE, Pipeline, PipelineError, Step, check_wiring, instantiate_module, tag_predictors
from .expressions import build_constraint, condition_fields
from .specs import (
    PROGRAM,
    SIGNATURE,
    CompileRecord,
    ConstraintEntry,
    ConstraintSpec,
    PipelineSpec,
    RegistryError,
    ResolvedStep,
    SignatureEntry,
    SignatureSpec,
    StepRef,
    did_you_mean,
)

__all__ = [
    "PipelinePlan",
    "activated_copy",
    "changed_while_compiling",
    "fields_gone_notes",
    "mark_stale",
    "plan_pipeline",
    "uses_signature",
]


class Definitions(Protocol):
    """What planning reads of the registry state (see `store._State`)."""

    signatures: dict[str, SignatureEntry]
    constraints: dict[str, ConstraintEntry]
    programs: dict[str, CompileRecord]

    def kind_of(self, name: str) -> str | None: ...


# ---------------------------------------------------------------- what a change makes stale


def uses_signature(name: str) -> Callable[[CompileRecord], bool]:
    """The predicate 'this compiled program was built from signature `name`'."""
    return lambda record: record.uses_signature(name)


def mark_stale(programs: MutableMapping[str, CompileRecord], predicate: Callable[[CompileRecord], bool],
               reason: str) -> list[str]:
    """Mark the matching compile records stale (in `programs`); returns the notes the cell output shows."""
    notes = []
    for name, record in sorted(programs.items()):
        if predicate(record) and record.stale is None:
            programs[name] = dataclasses.replace(record, stale=reason)
            notes.append(
                f"compiled program {name!r} was built from the previous definition and is now stale "
                f"({reason}); re-run its %%compile cell"
            )
    return notes


def fields_gone_notes(constraints: Mapping[str, ConstraintEntry], old: SignatureSpec,
                      new: SignatureSpec) -> list[str]:
    """Notes on the constraints of a redefined signature that read fields it no longer has."""
    notes = []
    for centry in [e for e in constraints.values() if e.spec.target == new.name]:
        gone = [f for f in condition_fields(centry.spec, old) if f not in new.field_names()]
        if gone:
            notes.append(
                f"constraint {centry.spec.name!r} reads field(s) {', '.join(gone)}, which {new.name} "
                "no longer has; redefine or remove it before the next %%compile"
            )
    return notes


def changed_while_compiling(signatures: Mapping[str, SignatureEntry], versions: Mapping[str, int]) -> str | None:
    """Why a compile that just finished is stale at once (a signature it used changed meanwhile), or None."""
    stale = None
    for name, version in versions.items():
        current = signatures.get(name)
        if current is None or current.version != version:
            stale = f"signature {name} changed while it compiled"
    return stale


# ---------------------------------------------------------------- planning a %%compile body


@dataclass
class PipelinePlan:
    """A program built from the registry and ready to run; nothing is committed until `record_compile`."""

    spec: PipelineSpec
    program: dspy.Module
    steps: tuple[ResolvedStep, ...]
    constraints: list[Constraint]
    constraint_specs: tuple[ConstraintSpec, ...]
    attached: dict[str, list[str]]
    skipped: list[str]
    signatures: tuple[SignatureSpec, ...]
    signature_versions: dict[str, int]
    constraint_versions: dict[str, int]

    @property
    def kind(self) -> str:
        return MODULE if self.steps and self.steps[0].kind == MODULE else "chain"


def plan_pipeline(
    state: Definitions,
    spec: PipelineSpec,
    namespace: MutableMapping[str, Any],
    *,
    example_inputs: Sequence[str] | None = None,
) -> PipelinePlan:
    """Build the program a `%%compile` body describes, with the constraints of the signatures it uses.

    Read-only: nothing is committed. Constraints on signatures the program doesn't use are skipped
    (listed in `plan.skipped`).
    """
    if not spec.name.isidentifier() or keyword.iskeyword(spec.name):
        raise RegistryError(f"{spec.name!r} is not a valid Python name for a program", 1)
    other = state.kind_of(spec.name)
    if other not in (None, PROGRAM):
        raise RegistryError(f"{spec.name!r} is already a registered {other}; choose another name", 1)
    if not spec.steps:
        raise RegistryError("the body is empty: write the pipeline, e.g. `retrieve >> GenerateTweet`, "
                            "or the name of a dspy.Module subclass", 2)
    resolved: list[tuple[StepRef, str, Any]] = []
    for ref in spec.steps:
        resolved.append((ref, *_resolve_step(state, ref, namespace, alone=len(spec.steps) == 1)))

    registered = {n: e.cls for n, e in state.signatures.items()}
    used: set[str] = set()
    steps: list[ResolvedStep] = []
    if resolved[0][1] == MODULE:
        ref, _, obj = resolved[0]
        try:
            program = instantiate_module(obj)
        except PipelineError as exc:
            raise RegistryError(str(exc), ref.line) from None
        used = set(tag_predictors(program, registered).values())
        steps.append(ResolvedStep(ref.ref, MODULE, ref.ref, ref.line))
    else:
        pipeline_steps: list[Step] = []
        counts: dict[str, int] = {}
        for ref, kind, obj in resolved:
            base = ref.ref.replace(".", "_")
            counts[base] = counts.get(base, 0) + 1
            name = base if counts[base] == 1 else f"{base}_{counts[base]}"
            if kind == SIGNATURE:
                entry = state.signatures[ref.ref]
                pipeline_steps.append(Step.predict(name, entry.cls, cot=entry.spec.cot, origin=ref.ref))
                steps.append(ResolvedStep(name, SIGNATURE, ref.ref, ref.line, entry.spec.cot))
                used.add(ref.ref)
            else:
                pipeline_steps.append(Step.call(name, obj))
                steps.append(ResolvedStep(name, "callable", ref.ref, ref.line))
        if example_inputs is not None:
            problems = check_wiring(pipeline_steps, example_inputs)
            if problems:
                index, message = problems[0]
                raise RegistryError(message, spec.steps[index].line if len(spec.steps) > index else 2)
        try:
            program = Pipeline(pipeline_steps)
        except PipelineError as exc:
            raise RegistryError(str(exc), 2) from None

    constraints: list[Constraint] = []
    cspecs: list[ConstraintSpec] = []
    attached: dict[str, list[str]] = {}
    skipped: list[str] = []
    for cname, centry in sorted(state.constraints.items()):
        target = centry.spec.target
        if target not in used:
            skipped.append(f"constraint {cname} targets {target}, which {spec.name} does not use; skipped")
            continue
        try:
            constraint = build_constraint(centry.spec, state.signatures[target].spec, namespace)
        except RegistryError as exc:
            raise RegistryError(
                f"constraint {cname} no longer fits signature {target} (in its %%assert cell, {exc}); "
                f"redefine it or remove it with %lmassert remove {cname}"
            ) from None
        try:
            hits = resolve_target(program, constraint.target)
        except TargetNotFoundError:
            skipped.append(f"constraint {cname}: no predictor of {spec.name} uses {target}; skipped")
            continue
        constraints.append(constraint)
        cspecs.append(centry.spec)
        attached[cname] = [n for n, _ in hits]
    sig_specs = tuple(state.signatures[n].spec for n in sorted(used))
    return PipelinePlan(
        spec=spec,
        program=program,
        steps=tuple(steps),
        constraints=constraints,
        constraint_specs=tuple(cspecs),
        attached=attached,
        skipped=skipped,
        signatures=sig_specs,
        signature_versions={n: state.signatures[n].version for n in sorted(used)},
        constraint_versions={s.name: state.constraints[s.name].version for s in cspecs},
    )


def _resolve_step(state: Definitions, ref: StepRef, namespace: Mapping[str, Any], *, alone: bool) -> tuple[str, Any]:
    if ref.ref in state.signatures:
        return SIGNATURE, None
    parts = ref.ref.split(".")
    if parts[0] not in namespace:
        candidates = [*state.signatures,
                      *(k for k, v in namespace.items() if not k.startswith("_") and callable(v))]
        raise RegistryError(
            f"unknown step {ref.ref!r}: not a registered signature or a notebook name"
            + did_you_mean(parts[0], candidates),
            ref.line,
        )
    obj = namespace[parts[0]]
    for i, attr in enumerate(parts[1:], start=1):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            raise RegistryError(f"{'.'.join(parts[:i])} has no attribute {attr!r}", ref.line) from None
    if isinstance(obj, type) and issubclass(obj, dspy.Module):
        if not alone:
            raise RegistryError(
                f"{ref.ref} is a dspy.Module class: name it alone in the body, or put an instance in the chain",
                ref.line)
        return MODULE, obj
    if isinstance(obj, dspy.Module) and alone and not isinstance(obj, dspy.Predict):
        return MODULE, obj
    if isinstance(obj, type) and issubclass(obj, dspy.Signature):
        raise RegistryError(f"{ref.ref} is a DSPy signature not defined with %%signature; define it with "
                            "%%signature so constraints can target it", ref.line)
    if not callable(obj):
        raise RegistryError(f"{ref.ref} is a {type(obj).__name__}, not a signature, function or dspy.Module",
                            ref.line)
    return "callable", obj

