"""Cell body -> DSPy signature: resolving field types, building the class, and the rules it must keep.

`validate_signature` reports, with the cell line, what DSPy or the engine would trip over later
(reserved field names, a missing input or output); `build_signature` resolves each field's type
against the notebook (then `typing`, then builtins) and builds the `dspy.Signature` class.
"""

from __future__ import annotations

import ast
import builtins
import dataclasses
import keyword
import typing
from collections import ChainMap
from collections.abc import Mapping
from typing import Any

import dspy
from dspy.signatures.signature import SignatureMeta

from ..pipeline import reserved_step_names
from .specs import INPUT, OUTPUT, FieldSpec, RegistryError, SignatureSpec, did_you_mean

__all__ = ["SIGNATURE_ATTRIBUTES", "TYPING_NAMES", "build_signature", "resolve_type", "validate_signature"]

#: Names usable in field types without an import (after notebook names, before builtins).
TYPING_NAMES: dict[str, Any] = {
    name: getattr(typing, name) for name in typing.__all__ if not name.startswith("_") and hasattr(typing, name)
}


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
                + did_you_mean(name, [*TYPING_NAMES, *(k for k in namespace if not k.startswith("_")),
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

