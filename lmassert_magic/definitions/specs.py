"""What a cell defines, as plain comparable data, and the registry's entries built from it.

A *spec* is what the user wrote (`%%signature`, `%%assert`, `%%compile` bodies): frozen dataclasses
with a `key()` that says what the definition means, so an unchanged re-run invalidates nothing. An
*entry* is a spec plus the real object built from it and the version dependents record. Also here:
the one error type of the definitions layer and the "did you mean" hint every message uses.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import dspy

from ..engine.constraints import Constraint
from ..engine.defaults import CHECK_TIMEOUT_SECONDS

__all__ = [
    "CONSTRAINT",
    "INPUT",
    "OUTPUT",
    "PROGRAM",
    "SIGNATURE",
    "CompileRecord",
    "ConstraintEntry",
    "ConstraintSpec",
    "FieldSpec",
    "Outcome",
    "PipelineSpec",
    "RegistryError",
    "ResolvedStep",
    "SignatureEntry",
    "SignatureSpec",
    "StepRef",
    "closest",
    "did_you_mean",
]

INPUT, OUTPUT = "input", "output"
SIGNATURE, CONSTRAINT, PROGRAM = "signature", "constraint", "program"


class RegistryError(ValueError):
    """A user mistake in a definition; `line` is the cell line it concerns (1 = the %%magic line)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        self.message = message
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The most similar candidate (case-insensitive exact match first), for 'did you mean' hints."""
    pool = sorted({c for c in candidates if isinstance(c, str)})
    for c in pool:
        if c.lower() == name.lower() and c != name:
            return c
    hits = difflib.get_close_matches(name, pool, n=1, cutoff=0.6)
    return hits[0] if hits else None


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest candidate, or '' when none is close."""
    hint = closest(name, candidates)
    return f"; did you mean {hint!r}?" if hint else ""


# ---------------------------------------------------------------- specs (what the user wrote)


@dataclass(frozen=True)
class FieldSpec:
    """One signature field; `type` is the annotation's canonical source ('' = untyped, i.e. str)."""

    name: str
    role: str
    type: str = ""
    desc: str | None = None
    prefix: str | None = None
    line: int | None = None

    def key(self) -> tuple[Any, ...]:
        return (self.name, self.role, self.type, self.desc, self.prefix)


@dataclass(frozen=True)
class SignatureSpec:
    """A `%%signature` cell as data: comparable, so an unchanged re-run invalidates nothing."""

    name: str
    fields: tuple[FieldSpec, ...]
    instructions: str | None = None
    cot: bool = False
    source: str = ""

    def key(self) -> tuple[Any, ...]:
        """What the definition means (not where it was written): equal keys = nothing to invalidate."""
        return (self.name, self.instructions, self.cot, tuple(f.key() for f in self.fields))

    @property
    def inputs(self) -> list[str]:
        return [f.name for f in self.fields if f.role == INPUT]

    @property
    def outputs(self) -> list[str]:
        return [f.name for f in self.fields if f.role == OUTPUT]

    def field_names(self) -> list[str]:
        """The fields a constraint on this signature sees (ChainOfThought adds `reasoning`)."""
        names = [f.name for f in self.fields]
        return names + ["reasoning"] if self.cot and "reasoning" not in names else names

    def shorthand(self) -> str:
        return f"{', '.join(self.inputs)} -> {', '.join(self.outputs)}"


@dataclass(frozen=True)
class ConstraintSpec:
    """A `%%assert` cell: `condition` / `message` are Python expression sources (message may be None)."""

    name: str
    target: str
    condition: str
    message: str | None = None
    hard: bool = False
    max_backtracks: int | None = None
    timeout: float | None = CHECK_TIMEOUT_SECONDS
    line: int = 2
    message_line: int | None = None
    auto_name: bool = False
    cell_id: str | None = None
    source: str = ""

    def key(self) -> tuple[Any, ...]:
        return (self.name, self.target, self.condition, self.message, self.hard, self.max_backtracks, self.timeout)

    @property
    def kind(self) -> str:
        return "hard" if self.hard else "soft"


@dataclass(frozen=True)
class StepRef:
    """A step as written in a `%%compile` body: a name or dotted name, and its cell line."""

    ref: str
    line: int = 2


@dataclass(frozen=True)
class PipelineSpec:
    """A `%%compile` body as data (steps are resolved against the notebook when planned)."""

    name: str
    steps: tuple[StepRef, ...]
    source: str = ""


# ---------------------------------------------------------------- entries (specs + built objects)


@dataclass(frozen=True)
class SignatureEntry:
    """A registered signature: the spec, the class built from it, and a version dependents record."""

    spec: SignatureSpec
    cls: type[dspy.Signature]
    version: int


@dataclass(frozen=True)
class ConstraintEntry:
    """A registered constraint: the spec and the engine Constraint built from it."""

    spec: ConstraintSpec
    constraint: Constraint
    version: int


@dataclass(frozen=True)
class ResolvedStep:
    """A pipeline step after resolution; kept so export rebuilds the same predictor names."""

    name: str  # attribute name in the pipeline
    kind: str  # "signature" | "callable" | "module"
    ref: str  # what the body said
    line: int
    cot: bool = False


@dataclass(frozen=True)
class CompileRecord:
    """One `%%compile` run: what was built from which definitions, and what it gave."""

    name: str
    pipeline: PipelineSpec
    steps: tuple[ResolvedStep, ...]
    options: tuple[tuple[str, Any], ...]
    signatures: tuple[SignatureSpec, ...]  # the definitions the program was built from (for export)
    signature_versions: tuple[tuple[str, int], ...]
    constraints: tuple[ConstraintSpec, ...]
    constraint_versions: tuple[tuple[str, int], ...]
    skipped: tuple[str, ...]
    result: Any  # engine.ablation.AblationResult
    program: Any  # the program bound to `name`, or None
    report: Any = None
    interrupted: bool = False
    stale: str | None = None
    review: Any = None  # engine.review.DemoReview: the demos chosen by hand, once a review was made

    @property
    def option_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def uses_signature(self, name: str) -> bool:
        return any(n == name for n, _ in self.signature_versions)


@dataclass
class Outcome:
    """What a registry change did, for the cell output: the entry plus notes worth telling the user."""

    entry: Any = None
    notes: list[str] = field(default_factory=list)
    changed: bool = True
