"""Constraint expression -> checked callable: the condition and message of a `%%assert` cell.

Names are checked when the cell runs (every free name must be a field of the target signature, a
notebook name, a builtin or a helper such as `lm_judge`) and resolved from the live notebook at
each check, so a helper redefined in a later cell is used. `build_constraint` turns a spec into the
engine's `Constraint`.
"""

from __future__ import annotations

import ast
import builtins
import inspect
import symtable
import types
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from typing import Any

from ..engine.constraints import Constraint, lm_judge
from .specs import ConstraintSpec, RegistryError, SignatureSpec, did_you_mean

__all__ = ["HELPERS", "build_constraint", "condition_fields", "free_names", "parse_expression"]

#: Names usable in `%%assert` bodies without an import (a notebook name of the same name wins).
HELPERS: dict[str, Any] = {"lm_judge": lm_judge}


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
                f"name, a builtin or lm_judge" + did_you_mean(name, candidates),
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

