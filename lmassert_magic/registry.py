"""The kernel-side store behind the magics: signatures, constraints and compiled programs.

No IPython here, so the same definitions can be built from plain Python. The registry keeps
*specs* (plain, comparable data: what the user wrote) and the real DSPy objects built from them.

Transactional: every change builds everything it needs on a copy of the state and swaps it in only
when nothing failed, so a failing cell leaves the registry exactly as it was. `snapshot()` returns a
deterministic JSON-able structure (and `snapshot_json()` its canonical text) for comparing states.

`get_registry()` is a process-wide singleton that survives `%reload_ext` (and a reload of this
module), so definitions outlive a reload of the extension.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import dataclasses
import difflib
import json
import keyword
import math
import symtable
import threading
import types
import typing
from collections import ChainMap
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dspy
from dspy.signatures.signature import SignatureMeta

from .engine.constraints import Constraint, lm_judge
from .engine.errors import TargetNotFoundError
from .engine.runtime import activate_assertions, resolve_target
from .pipeline import (
    MODULE,
    Pipeline,
    PipelineError,
    Step,
    check_wiring,
    instantiate_module,
    reserved_step_names,
    tag_predictors,
)

__all__ = [
    "DEFAULT_CHECK_TIMEOUT",
    "HELPERS",
    "CompileRecord",
    "ConstraintEntry",
    "ConstraintSpec",
    "FieldSpec",
    "Outcome",
    "PipelinePlan",
    "PipelineSpec",
    "Registry",
    "RegistryError",
    "SignatureEntry",
    "SignatureSpec",
    "StepRef",
    "build_constraint",
    "build_signature",
    "closest",
    "free_names",
    "get_registry",
]

#: Per-check time limit (seconds) for constraints defined with `%%assert`; None means no limit.
DEFAULT_CHECK_TIMEOUT: float | None = 120.0

#: Names usable in `%%assert` bodies without an import (a notebook name of the same name wins).
HELPERS: dict[str, Any] = {"lm_judge": lm_judge}

#: Names usable in field types without an import (after notebook names, before builtins).
TYPING_NAMES: dict[str, Any] = {
    name: getattr(typing, name) for name in typing.__all__ if not name.startswith("_") and hasattr(typing, name)
}

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


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
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
    timeout: float | None = DEFAULT_CHECK_TIMEOUT
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


# ---------------------------------------------------------------- building DSPy objects


def _type_names(tree: ast.AST) -> list[tuple[str, int]]:
    return [(n.id, n.lineno) for n in ast.walk(tree) if isinstance(n, ast.Name)]


def resolve_type(fspec: FieldSpec, namespace: Mapping[str, Any], *, quoted: bool = False) -> Any:
    """Evaluate a field's annotation: notebook names, then typing, then builtins (and `dspy`).

    A string (`'list[str]'`, or a notebook variable holding one) is resolved too, now: left to pydantic as a
    forward reference, an unknown name in it would only fail later, on every example.
    """
    try:
        tree = ast.parse(fspec.type, mode="eval")
    except SyntaxError as exc:
        raise RegistryError(f"field {fspec.name!r}: type {fspec.type!r} is not valid Python ({exc.msg})",
                            fspec.line) from None
    scope = ChainMap(dict(namespace), TYPING_NAMES, {"dspy": dspy})
    known = set(scope) | set(dir(builtins))
    for name, _ in _type_names(tree):
        if name not in known:
            raise RegistryError(
                f"field {fspec.name!r}: unknown type name {name!r}"
                + _did_you_mean(name, [*TYPING_NAMES, *(k for k in namespace if not k.startswith("_")),
                                       "str", "int", "float", "bool", "list", "dict", "tuple"]),
                fspec.line,
            )
    try:
        value = eval(compile(tree, "<field type>", "eval"), {"__builtins__": builtins}, scope)  # noqa: S307
    except Exception as exc:
        raise RegistryError(f"field {fspec.name!r}: type {fspec.type!r} failed: {type(exc).__name__}: {exc}",
                            fspec.line) from None
    if isinstance(value, str):
        if quoted:
            raise RegistryError(f"field {fspec.name!r}: type {fspec.type!r} is a string, not a type", fspec.line)
        return resolve_type(dataclasses.replace(fspec, type=value), namespace, quoted=True)
    return value


def build_signature(spec: SignatureSpec, namespace: Mapping[str, Any]) -> type[dspy.Signature]:
    """The `dspy.Signature` class a spec describes (types resolved against `namespace`)."""
    annotations: dict[str, Any] = {}
    body: dict[str, Any] = {"__module__": "__main__", "__qualname__": spec.name, "__doc__": spec.instructions}
    for f in spec.fields:
        if f.type:
            annotations[f.name] = resolve_type(f, namespace)
        kwargs: dict[str, Any] = {}
        if f.desc is not None:
            kwargs["desc"] = f.desc
        if f.prefix is not None:
            kwargs["prefix"] = f.prefix
        body[f.name] = dspy.InputField(**kwargs) if f.role == INPUT else dspy.OutputField(**kwargs)
    body["__annotations__"] = annotations
    try:
        return SignatureMeta(spec.name, (dspy.Signature,), body)
    except Exception as exc:
        culprit = _unusable_type(spec, annotations)
        if culprit is not None:
            f, problem = culprit
            raise RegistryError(f"field {f.name!r}: type {f.type!r} cannot be used for a field ({problem})",
                                f.line) from None
        raise RegistryError(f"cannot build signature {spec.name}: {_first_sentence(exc)}") from None


def _first_sentence(exc: BaseException) -> str:
    """`Type: first sentence` of an error (pydantic's go on with advice that does not apply here)."""
    text = str(exc).strip().split("\n", 1)[0].split(". ", 1)[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _unusable_type(spec: SignatureSpec, annotations: Mapping[str, Any]) -> tuple[FieldSpec, str] | None:
    """The first field whose type pydantic cannot build a schema for, to name it and its line."""
    import pydantic

    for f in spec.fields:
        if f.name in annotations:
            try:
                pydantic.TypeAdapter(annotations[f.name])
            except Exception as exc:  # RecursionError too, for absurdly nested types
                return f, _first_sentence(exc)
    return None


#: Names the dspy.Signature class itself defines (`instructions`, `fields`, ...): a field of that name breaks it.
SIGNATURE_ATTRIBUTES = frozenset(
    n for n in dir(SignatureMeta) if not n.startswith("_") and isinstance(getattr(SignatureMeta, n, None), property)
) | {"model_config"}


def validate_signature(spec: SignatureSpec) -> None:
    """Rules DSPy or the engine would trip over later, reported now with the line they concern."""
    if not spec.name.isidentifier() or keyword.iskeyword(spec.name):
        raise RegistryError(f"{spec.name!r} is not a valid Python name for a signature", 1)
    if spec.name in reserved_step_names():
        raise RegistryError(f"{spec.name!r} clashes with a dspy.Module attribute; choose another name", 1)
    seen: dict[str, FieldSpec] = {}
    for f in spec.fields:
        if not f.name.isidentifier() or keyword.iskeyword(f.name):
            raise RegistryError(f"{f.name!r} is not a valid field name", f.line)
        if f.name in seen:
            raise RegistryError(f"field {f.name!r} is defined twice", f.line)
        if f.name == "feedback":
            raise RegistryError("'feedback' is reserved: retries pass the constraint feedback in it", f.line)
        if f.name.startswith("_"):
            raise RegistryError(f"field names cannot start with '_' ({f.name!r})", f.line)
        if f.name in SIGNATURE_ATTRIBUTES:
            raise RegistryError(f"{f.name!r} is a name dspy.Signature uses itself; choose another field name", f.line)
        seen[f.name] = f
    outputs = [f for f in spec.fields if f.role == OUTPUT]
    for out in outputs:
        clash = seen.get(f"past_{out.name}")
        if clash is not None:
            raise RegistryError(f"'past_{out.name}' is reserved: retries pass the last failing {out.name} in it",
                                clash.line)
    if spec.cot and "reasoning" in seen:
        raise RegistryError("--cot adds a 'reasoning' output; rename the field 'reasoning'", seen["reasoning"].line)
    if not outputs:
        raise RegistryError(f"signature {spec.name} has no output field (add e.g. `answer: str = Out()`)")
    if not any(f.role == INPUT for f in spec.fields):
        raise RegistryError(f"signature {spec.name} has no input field (add e.g. `question: str = In()`)")


def parse_expression(expr: str) -> ast.Expression:
    """Parse an expression that may span lines (as in a cell); line numbers are the expression's own."""
    tree = ast.parse("(\n" + expr + "\n)", mode="eval")
    ast.increment_lineno(tree, -1)
    return tree


def free_names(expr: str) -> dict[str, int]:
    """Names an expression reads from outside itself, with the (1-based) line of their first use.

    Comprehension variables, lambda parameters and walrus targets are bound inside and not listed.
    """
    wrapped = "def __lmassert_expr__():\n    return (\n" + expr + "\n)\n"
    table = symtable.symtable(wrapped, "<expr>", "exec")
    names: set[str] = set()

    def visit(t: symtable.SymbolTable) -> None:
        for sym in t.get_symbols():
            if sym.is_referenced() and sym.is_global():
                names.add(sym.get_name())
        for child in t.get_children():
            visit(child)

    for child in table.get_children():
        visit(child)
    first: dict[str, int] = {}
    for node in ast.walk(parse_expression(expr)):
        if isinstance(node, ast.Name) and node.id in names:
            first[node.id] = min(first.get(node.id, node.lineno), node.lineno)
    return {name: first.get(name, 1) for name in sorted(names)}


class _CellExpression:
    """A `%%assert` expression as a callable over step fields, resolving other names at call time.

    Fields are parameters (so the engine passes exactly those); package helpers are locals unless
    the notebook defines the same name; everything else is read from the live notebook namespace.
    """

    def __init__(self, expr: str, params: Sequence[str], helpers: Sequence[str], namespace: MutableMapping[str, Any],
                 label: str) -> None:
        self.expr = expr
        self.params = tuple(params)
        self.helpers = tuple(helpers)
        self.namespace = namespace
        self.label = label
        lines = ["def __lmassert_factory__(__lmassert_helper__):",
                 f"    def __lmassert_check__({', '.join(self.params)}):"]
        lines += [f"        {h} = __lmassert_helper__({h!r})" for h in self.helpers]
        lines += ["        return (", expr, "        )", "    return __lmassert_check__"]
        code = compile("\n".join(lines) + "\n", label, "exec")
        factory_code = next(c for c in code.co_consts if isinstance(c, types.CodeType))
        self._factory_code = factory_code
        self.__signature__ = _signature_for(self.params)

    def __deepcopy__(self, memo: dict[int, Any]) -> _CellExpression:
        return self  # immutable; copying it would copy the whole notebook namespace

    def __copy__(self) -> _CellExpression:
        return self

    def _helper(self, name: str) -> Any:
        return self.namespace[name] if name in self.namespace else HELPERS[name]

    def __call__(self, **fields: Any) -> Any:
        globals_ = self.namespace if isinstance(self.namespace, dict) else dict(self.namespace)
        factory = types.FunctionType(self._factory_code, globals_)
        return factory(self._helper)(**fields)

    def __repr__(self) -> str:
        return f"<{self.label}: {self.expr.strip()}>"


def _signature_for(params: Sequence[str]) -> Any:
    import inspect

    return inspect.Signature([inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in params])


def _check_expression(expr: str, line: int, fields: Sequence[str], namespace: Mapping[str, Any],
                      what: str, target: str) -> tuple[list[str], list[str]]:
    """Every free name must be a field, a notebook name, a builtin or a helper; returns (fields, helpers)."""
    try:
        tree = parse_expression(expr)
    except SyntaxError as exc:
        raise RegistryError(f"the {what} is not a valid expression: {exc.msg}", line + max((exc.lineno or 2) - 2, 0)) \
            from None
    except (RecursionError, MemoryError):  # Python's parser gives up on very deep nesting
        raise RegistryError(f"the {what} is nested too deeply for Python to parse; simplify it", line) from None
    for node in ast.walk(tree):
        if isinstance(node, (ast.Yield, ast.YieldFrom, ast.Await)):
            raise RegistryError(f"the {what} cannot use yield or await", line + node.lineno - 1)
    try:
        names = free_names(expr)
    except (RecursionError, MemoryError):
        raise RegistryError(f"the {what} is nested too deeply for Python to parse; simplify it", line) from None
    used_fields: list[str] = []
    used_helpers: list[str] = []
    for name, offset in names.items():
        if name in fields:
            used_fields.append(name)
        elif name in namespace:
            continue
        elif name in HELPERS:
            used_helpers.append(name)
        elif hasattr(builtins, name):
            continue
        else:
            candidates = [*fields, *HELPERS, *(k for k in namespace if not k.startswith("_"))]
            raise RegistryError(
                f"unknown name {name!r} in the {what}: not a field of {target} ({', '.join(fields)}), a notebook "
                f"name, a builtin or lm_judge" + _did_you_mean(name, candidates),
                line + offset - 1,
            )
    return used_fields, used_helpers


def build_constraint(spec: ConstraintSpec, signature: SignatureSpec, namespace: MutableMapping[str, Any]) -> Constraint:
    """The engine `Constraint` for a `%%assert` spec; names are checked now and resolved at each check."""
    fields = signature.field_names()
    cond_fields, cond_helpers = _check_expression(spec.condition, spec.line, fields, namespace, "condition",
                                                  signature.name)
    try:
        condition = _CellExpression(spec.condition, cond_fields, cond_helpers, namespace,
                                    f"<%%assert {spec.name} condition>")
    except (RecursionError, MemoryError):  # the compiler's limit is lower than the parser's
        raise RegistryError("the condition is nested too deeply for Python to compile; simplify it", spec.line) \
            from None
    message: str | Callable[..., str] = ""
    if spec.message is not None:
        mline = spec.message_line or spec.line
        node = parse_expression(spec.message).body
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            message = node.value
        elif isinstance(node, ast.JoinedStr):
            msg_fields, msg_helpers = _check_expression(spec.message, mline, fields, namespace, "message",
                                                        signature.name)
            message = _CellExpression(spec.message, msg_fields, msg_helpers, namespace,
                                      f"<%%assert {spec.name} message>")
        else:
            raise RegistryError("the feedback message must be a string or an f-string", mline)
    return Constraint(
        name=spec.name,
        condition=condition,
        message=message,
        hard=spec.hard,
        target=spec.target,
        max_backtracks=spec.max_backtracks,
        timeout=spec.timeout,
        source=f"%%assert {spec.target} --name {spec.name} (cell line {spec.line})",
    )


def condition_fields(spec: ConstraintSpec, signature: SignatureSpec) -> list[str]:
    """The fields a constraint's condition reads (for notes about fields that went away)."""
    try:
        return [n for n in free_names(spec.condition) if n in signature.field_names()]
    except SyntaxError:
        return []


# ---------------------------------------------------------------- the registry


@dataclass
class _State:
    signatures: dict[str, SignatureEntry] = field(default_factory=dict)
    constraints: dict[str, ConstraintEntry] = field(default_factory=dict)
    programs: dict[str, CompileRecord] = field(default_factory=dict)
    revision: int = 0
    versions: int = 0
    # constraint name -> (the constraint version it measured, CalibrationResult); a measurement, not a
    # definition: it is not in the snapshot, and a redefined constraint simply no longer matches it
    calibrations: dict[str, tuple[int, Any]] = field(default_factory=dict)

    def copy(self) -> _State:
        return _State(dict(self.signatures), dict(self.constraints), dict(self.programs), self.revision,
                      self.versions, dict(self.calibrations))

    def kind_of(self, name: str) -> str | None:
        if name in self.signatures:
            return SIGNATURE
        if name in self.constraints:
            return CONSTRAINT
        if name in self.programs:
            return PROGRAM
        return None

    def next_version(self) -> int:
        self.versions += 1
        return self.versions


class Transaction:
    """Changes made on a copy of the registry state; committed only if the `with` block succeeds."""

    def __init__(self, state: _State) -> None:
        self.state = state
        self.changed = False

    # -- invalidation ------------------------------------------------------------------------
    def mark_stale(self, predicate: Callable[[CompileRecord], bool], reason: str) -> list[str]:
        """Mark matching compile records stale; returns the notes the cell output shows."""
        notes = []
        for name, record in sorted(self.state.programs.items()):
            if predicate(record) and record.stale is None:
                self.state.programs[name] = dataclasses.replace(record, stale=reason)
                notes.append(
                    f"compiled program {name!r} was built from the previous definition and is now stale "
                    f"({reason}); re-run its %%compile cell"
                )
                self.changed = True
        return notes

    def _uses_signature(self, name: str) -> Callable[[CompileRecord], bool]:
        return lambda record: record.uses_signature(name)


class Registry:
    """Signatures, constraints and compiled programs of one kernel (see the module docstring)."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._state = _State()

    # -- reading ---------------------------------------------------------------------------------
    @property
    def signatures(self) -> Mapping[str, SignatureEntry]:
        return types.MappingProxyType(self._state.signatures)

    @property
    def constraints(self) -> Mapping[str, ConstraintEntry]:
        return types.MappingProxyType(self._state.constraints)

    @property
    def programs(self) -> Mapping[str, CompileRecord]:
        return types.MappingProxyType(self._state.programs)

    @property
    def revision(self) -> int:
        """Bumped by every committed change; a failed change leaves it (and everything else) alone."""
        return self._state.revision

    def kind_of(self, name: str) -> str | None:
        """'signature', 'constraint', 'program' or None: names are unique across kinds."""
        return self._state.kind_of(name)

    def names(self, kind: str | None = None) -> list[str]:
        """Registered names (of one kind), sorted: for listings and closest-name hints."""
        state = self._state
        groups = {SIGNATURE: state.signatures, CONSTRAINT: state.constraints, PROGRAM: state.programs}
        if kind is not None:
            return sorted(groups[kind])
        return sorted(n for g in groups.values() for n in g)

    def calibration_of(self, name: str) -> Any:
        """The judge calibration measured for constraint `name` as it is defined now, or None."""
        entry = self._state.constraints.get(name)
        stored = self._state.calibrations.get(name)
        if entry is None or stored is None or stored[0] != entry.version:
            return None
        return stored[1]

    def record_calibration(self, name: str, result: Any) -> None:
        """Keep `result` (a CalibrationResult) for the current definition of constraint `name`."""
        with self.transaction() as tx:
            entry = tx.state.constraints.get(name)
            if entry is None:
                raise RegistryError(f"no constraint named {name!r}", 1)
            tx.state.calibrations[name] = (entry.version, result)
            tx.changed = True

    def constraints_on(self, signature: str) -> list[ConstraintEntry]:
        """The constraints %%compile attaches wherever `signature` is used."""
        return [e for _, e in sorted(self._state.constraints.items()) if e.spec.target == signature]

    def dependents_of(self, signature: str) -> list[str]:
        """Compiled programs that go stale when `signature` changes."""
        return sorted(n for n, r in self._state.programs.items() if r.uses_signature(signature))

    def snapshot(self) -> dict[str, Any]:
        """A deterministic, JSON-serialisable picture of everything registered (for tests and diffs)."""
        state = self._state
        return {
            "revision": state.revision,
            "versions": state.versions,
            "signatures": {n: {"version": e.version, **_spec_dict(e.spec)}
                           for n, e in sorted(state.signatures.items())},
            "constraints": {n: {"version": e.version, **_spec_dict(e.spec)}
                            for n, e in sorted(state.constraints.items())},
            "programs": {n: _record_dict(r) for n, r in sorted(state.programs.items())},
        }

    def snapshot_json(self) -> str:
        """`snapshot()` as canonical JSON text: equal strings mean equal registries."""
        return json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"), default=repr)

    # -- transactions ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """`with registry.transaction() as tx:` — all of the block's changes, or none of them."""
        with self._lock:
            tx = Transaction(self._state.copy())
            yield tx
            if tx.changed:
                tx.state.revision += 1
                self._state = tx.state

    def reset(self) -> None:
        """Forget everything (the revision counter keeps counting)."""
        with self._lock:
            revision = self._state.revision + 1
            self._state = _State(revision=revision)

    # -- signatures ------------------------------------------------------------------------------
    def define_signature(self, spec: SignatureSpec, namespace: Mapping[str, Any]) -> Outcome:
        """Add or replace a signature. A changed definition makes programs built from it stale."""
        validate_signature(spec)
        with self.transaction() as tx:
            state = tx.state
            other = state.kind_of(spec.name)
            if other not in (None, SIGNATURE):
                raise RegistryError(f"{spec.name!r} is already a registered {other}; choose another name", 1)
            cls = build_signature(spec, namespace)
            old = state.signatures.get(spec.name)
            outcome = Outcome()
            if old is not None and old.spec.key() == spec.key():
                # same meaning: keep the version (and so every dependent stays fresh), refresh the rest
                entry = SignatureEntry(spec, cls, old.version)
                outcome.changed = False
            else:
                entry = SignatureEntry(spec, cls, state.next_version())
            state.signatures[spec.name] = entry
            tx.changed = True
            outcome.entry = entry
            if old is not None and outcome.changed:
                outcome.notes += tx.mark_stale(tx._uses_signature(spec.name), f"signature {spec.name} was redefined")
                for centry in [e for e in state.constraints.values() if e.spec.target == spec.name]:
                    gone = [f for f in condition_fields(centry.spec, old.spec) if f not in spec.field_names()]
                    if gone:
                        outcome.notes.append(
                            f"constraint {centry.spec.name!r} reads field(s) {', '.join(gone)}, which {spec.name} "
                            "no longer has; redefine or remove it before the next %%compile"
                        )
            return outcome

    # -- constraints -----------------------------------------------------------------------------
    def next_constraint_name(self, target: str) -> str:
        """The default name of an unnamed constraint: `<target>_<n>` with the smallest free n."""
        n = 1
        while self._state.kind_of(f"{target}_{n}") is not None:
            n += 1
        return f"{target}_{n}"

    def find_unnamed(self, target: str, *, cell_id: str | None, condition: str, message: str | None) -> str | None:
        """The auto-named constraint a re-run cell defined before: same notebook cell, else same body."""
        for name, e in sorted(self._state.constraints.items()):
            if not e.spec.auto_name:
                continue
            if cell_id is not None and e.spec.cell_id == cell_id:
                return name
            if e.spec.target == target and e.spec.condition == condition and e.spec.message == message:
                return name
        return None

    def define_constraint(self, spec: ConstraintSpec, namespace: MutableMapping[str, Any], *,
                          replaces: str | None = None) -> Outcome:
        """Add or replace a constraint on a registered signature (names checked against `namespace`).

        `replaces` names a constraint the same cell defined before under another name; it goes away
        in the same transaction.
        """
        if not spec.name.isidentifier() or keyword.iskeyword(spec.name):
            raise RegistryError(f"{spec.name!r} is not a valid constraint name (use letters, digits and _)", 1)
        if spec.max_backtracks is not None and spec.max_backtracks < 0:
            raise RegistryError("--backtracks must be 0 or more", 1)
        if spec.timeout is not None and not 0 < spec.timeout < math.inf:
            raise RegistryError(f"the timeout must be a positive number of seconds or None, got {spec.timeout}", 1)
        with self.transaction() as tx:
            state = tx.state
            sig = state.signatures.get(spec.target)
            if sig is None:
                raise RegistryError(
                    f"unknown signature {spec.target!r}" + _did_you_mean(spec.target, state.signatures)
                    + (" (define it with %%signature first)" if not state.signatures else ""), 1)
            other = state.kind_of(spec.name)
            if other not in (None, CONSTRAINT):
                raise RegistryError(f"{spec.name!r} is already a registered {other}; choose another name", 1)
            constraint = build_constraint(spec, sig.spec, namespace)
            old = state.constraints.get(spec.name)
            outcome = Outcome()
            if old is not None and old.spec.key() == spec.key():
                entry = ConstraintEntry(spec, constraint, old.version)
                outcome.changed = False
            else:
                entry = ConstraintEntry(spec, constraint, state.next_version())
            state.constraints[spec.name] = entry
            tx.changed = True
            outcome.entry = entry
            gone = state.constraints.pop(replaces, None) if replaces and replaces != spec.name else None
            if gone is not None:
                outcome.notes.append(f"this cell defined {replaces} before; it is replaced by {spec.name}")
                outcome.notes += tx.mark_stale(tx._uses_signature(gone.spec.target),
                                               f"constraint {replaces} was replaced")
            if outcome.changed:
                targets = {spec.target} | ({old.spec.target} if old is not None else set())
                verb = "redefined" if old is not None else "added"
                for target in sorted(targets):
                    outcome.notes += tx.mark_stale(tx._uses_signature(target),
                                                   f"constraint {spec.name} on {target} was {verb}")
            used = set(condition_fields(spec, sig.spec))
            if not used & set(sig.spec.field_names()) - set(sig.spec.inputs):
                outcome.notes.append(
                    f"the condition reads no output field of {spec.target}, so retrying cannot change its result"
                )
            return outcome

    # -- removal ---------------------------------------------------------------------------------
    def remove(self, name: str) -> list[str]:
        """Remove a definition; a signature takes its constraints with it. Returns what happened."""
        with self.transaction() as tx:
            state = tx.state
            kind = state.kind_of(name)
            if kind is None:
                raise RegistryError(f"nothing is registered as {name!r}" + _did_you_mean(name, self.names()))
            notes = [f"removed {kind} {name}"]
            if kind == SIGNATURE:
                del state.signatures[name]
                for cname in [n for n, e in state.constraints.items() if e.spec.target == name]:
                    del state.constraints[cname]
                    notes.append(f"removed constraint {cname} (it targeted {name})")
                notes += tx.mark_stale(tx._uses_signature(name), f"signature {name} was removed")
            elif kind == CONSTRAINT:
                target = state.constraints.pop(name).spec.target
                notes += tx.mark_stale(tx._uses_signature(target), f"constraint {name} was removed")
            else:
                del state.programs[name]
            tx.changed = True
            return notes

    # -- pipelines and compile results -------------------------------------------------------------
    def plan_pipeline(
        self,
        spec: PipelineSpec,
        namespace: MutableMapping[str, Any],
        *,
        example_inputs: Sequence[str] | None = None,
    ) -> PipelinePlan:
        """Build the program a `%%compile` body describes, with the constraints of the signatures it uses.

        Read-only: nothing is committed. Constraints on signatures the program doesn't use are skipped
        (listed in `plan.skipped`).
        """
        state = self._state
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
            resolved.append((ref, *self._resolve_step(ref, namespace, alone=len(spec.steps) == 1)))

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

    def _resolve_step(self, ref: StepRef, namespace: Mapping[str, Any], *, alone: bool) -> tuple[str, Any]:
        state = self._state
        if ref.ref in state.signatures:
            return SIGNATURE, None
        parts = ref.ref.split(".")
        if parts[0] not in namespace:
            candidates = [*state.signatures,
                          *(k for k, v in namespace.items() if not k.startswith("_") and callable(v))]
            raise RegistryError(
                f"unknown step {ref.ref!r}: not a registered signature or a notebook name"
                + _did_you_mean(parts[0], candidates),
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

    def record_compile(
        self,
        plan: PipelinePlan,
        *,
        result: Any,
        program: Any,
        options: Mapping[str, Any],
        report: Any = None,
        interrupted: bool = False,
    ) -> Outcome:
        """Store a compile run; stale at once if a definition it used changed while it ran."""
        with self.transaction() as tx:
            state = tx.state
            other = state.kind_of(plan.spec.name)
            if other not in (None, PROGRAM):
                raise RegistryError(f"{plan.spec.name!r} is already a registered {other}; choose another name", 1)
            stale = None
            for name, version in plan.signature_versions.items():
                current = state.signatures.get(name)
                if current is None or current.version != version:
                    stale = f"signature {name} changed while it compiled"
            record = CompileRecord(
                name=plan.spec.name,
                pipeline=plan.spec,
                steps=plan.steps,
                options=tuple(sorted(options.items())),
                signatures=plan.signatures,
                signature_versions=tuple(sorted(plan.signature_versions.items())),
                constraints=plan.constraint_specs,
                constraint_versions=tuple(sorted(plan.constraint_versions.items())),
                skipped=tuple(plan.skipped),
                result=result,
                program=program,
                report=report,
                interrupted=interrupted,
                stale=stale,
            )
            state.programs[plan.spec.name] = record
            tx.changed = True
            return Outcome(entry=record)


def activated_copy(
    program: dspy.Module, constraints: Sequence[Constraint], max_backtracks: int, **config: Any
) -> dspy.Module:
    """A deep copy of `program` with the constraints attached and backtracking on (`config`: budget, seed...)."""
    copy = program.deepcopy()
    return activate_assertions(copy, max_backtracks, constraints=list(constraints), **config)


# ---------------------------------------------------------------- snapshot helpers


def _plain(value: Any) -> Any:
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    return repr(value)


def _spec_dict(spec: Any) -> dict[str, Any]:
    return _plain(spec)


def _record_dict(record: CompileRecord) -> dict[str, Any]:
    result = record.result
    settings = {}
    for key, res in getattr(result, "settings", {}).items():
        settings[key] = {"examples": res.n, "failed": res.n_failed, "metric": _plain(res.metric)}
    return {
        "pipeline": _plain(record.pipeline),
        "steps": _plain(record.steps),
        "options": _plain(dict(record.options)),
        "signature_versions": _plain(dict(record.signature_versions)),
        "constraint_versions": _plain(dict(record.constraint_versions)),
        "skipped": list(record.skipped),
        "interrupted": record.interrupted,
        "stale": record.stale,
        "program": None if record.program is None else type(record.program).__name__,
        "results": settings,
    }


# ---------------------------------------------------------------- the singleton

_REGISTRY: Registry | None = globals().get("_REGISTRY")  # kept across importlib.reload of this module
_REGISTRY_LOCK = threading.Lock()


def get_registry() -> Registry:
    """The process-wide registry (survives `%reload_ext lmassert_magic`)."""
    global _REGISTRY
    with _REGISTRY_LOCK:
        if _REGISTRY is None:
            _REGISTRY = Registry()
        return _REGISTRY

