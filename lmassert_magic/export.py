"""`%lmassert export NAME PATH`: a compiled program as files that need no notebook and no magics.

Two files: `NAME.json` (DSPy's `save`: demos and instructions per predictor) and `NAME.py`, plain
Python importing only dspy, lmassert_magic and what the constraints import, which rebuilds the
signatures, constraints and pipeline and loads the JSON::

    from tweeter import load_program
    program = load_program()          # or load_program(retriever=my_retriever) for REQUIRED objects

The definitions are the ones the program was compiled from (even if a cell changed since). Notebook
helpers the constraints or pipeline use are copied: modules become imports, functions and classes
their source, plain literals their repr. Anything else (a retriever object, say) is listed in
`REQUIRED` and passed by name to `build_program()` / `load_program()`.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import symtable
import sys
import textwrap
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .definitions.expressions import HELPERS, free_names, parse_expression
from .definitions.signatures import TYPING_NAMES
from .definitions.specs import CompileRecord, ConstraintSpec, RegistryError, SignatureSpec, closest
from .definitions.store import Registry
from .engine import is_activated

__all__ = ["ExportResult", "export_program", "render_module"]

try:  # blanks the values of secret environment variables (API keys) and key-shaped strings
    from .lm.redact import redact as _redact
except ImportError:  # pragma: no cover - depends on the lm layer being present

    def _redact(text: str) -> str:
        return text

_MISSING = object()


@dataclass
class ExportResult:
    """Where the files went, and which notebook objects `load_program()` needs passed in."""

    json_path: Path
    py_path: Path
    required: tuple[str, ...]
    notes: list[str] = field(default_factory=list)


def _paths(name: str, path: str | Path) -> tuple[Path, Path]:
    path = Path(path).expanduser()
    if path.suffix == ".py":
        return path.with_suffix(".json"), path
    if path.suffix == ".json":
        return path, path.with_suffix(".py")
    if path.suffix:
        raise RegistryError(f"PATH must be a directory, a .py file or a .json file, got {str(path)!r}")
    return path / f"{name}.json", path / f"{name}.py"


def export_program(registry: Registry, name: str, path: str | Path, namespace: Mapping[str, Any]) -> ExportResult:
    """Write NAME's compiled program (JSON state) and the Python that rebuilds it (see module doc)."""
    record = registry.programs.get(name)
    if record is None:
        kind = registry.kind_of(name)
        if kind is not None:
            raise RegistryError(f"{name!r} is a {kind}; export takes a compiled program (%%compile NAME)")
        hint = closest(name, registry.programs)
        raise RegistryError(f"no compiled program named {name!r}" + (f"; did you mean {hint!r}?" if hint else ""))
    if record.program is None:
        raise RegistryError(f"{name} has no program to export (its compile was interrupted); re-run %%compile")
    json_path, py_path = _paths(name, path)
    if py_path.stem.isidentifier() is False:
        raise RegistryError(f"the Python file name {py_path.name!r} must be importable (letters, digits, _)")
    source, required = render_module(record, namespace, json_path.name)
    compile(source, str(py_path), "exec")  # a bug here must not leave a broken file behind
    if _redact(source) != source:
        raise RegistryError(f"the exported {py_path.name} would contain an API key (the value of a secret "
                            "environment variable, typed into a definition); remove it from the cell")
    py_path.parent.mkdir(parents=True, exist_ok=True)
    record.program.save(str(json_path))
    notes = []
    state = json_path.read_text(encoding="utf-8")
    if _redact(state) != state:  # demos are LM text and data, which can carry a key: blank it in the file
        json_path.write_text(_redact(state), encoding="utf-8")
        notes.append(f"an API key found in the demos was blanked in {json_path.name}")
    py_path.write_text(source, encoding="utf-8")
    if record.stale:
        notes.append(f"{name} is stale ({record.stale}); exported the definitions it was compiled from")
    if record.review is not None and record.review.changed:
        notes.append(f"{record.review.lines()[0]}; {json_path.name} holds the demos as chosen")
    if required:
        notes.append(f"pass these notebook objects to load_program(): {', '.join(required)}")
    return ExportResult(json_path, py_path, required, notes)


# ---------------------------------------------------------------- notebook objects


def _cell_source(obj: Any, namespace: Mapping[str, Any]) -> str | None:
    """Source of a notebook function/class: inspect first, else the newest input cell defining it."""
    try:
        return textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError):
        pass
    history = namespace.get("_ih") or namespace.get("In") or []
    target = getattr(obj, "__name__", None)
    for cell in reversed(list(history)):
        try:
            tree = ast.parse(cell)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == target:
                return ast.get_source_segment(cell, node, padded=False)
    return None


def _global_reads(source: str) -> set[str]:
    """Names a top-level def/class reads from module scope."""
    names: set[str] = set()

    def visit(t: symtable.SymbolTable) -> None:
        for sym in t.get_symbols():
            if sym.is_referenced() and (sym.is_global() or (t.get_type() == "class" and not sym.is_assigned())):
                names.add(sym.get_name())
        for child in t.get_children():
            visit(child)

    for child in symtable.symtable(source, "<export>", "exec").get_children():
        visit(child)
    return names


def _importable(obj: Any) -> tuple[str, str] | None:
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not module or module == "__main__" or not qualname or "." in qualname or "<" in qualname:
        return None
    try:
        mod = sys.modules.get(module) or importlib.import_module(module)
    except Exception:
        return None
    return (module, qualname) if getattr(mod, qualname, None) is obj else None


def _literal(value: Any) -> str | None:
    try:
        text = repr(value)
        return text if ast.literal_eval(text) == value and type(ast.literal_eval(text)) is type(value) else None
    except Exception:
        return None


class _Collector:
    """Turns notebook names into module-level code, dependencies first."""

    def __init__(self, namespace: Mapping[str, Any], defined: set[str]) -> None:
        self.namespace = namespace
        self.defined = set(defined)  # emitted elsewhere (signature classes) or already handled
        self.imports: list[str] = []
        self.blocks: list[str] = []
        self.required: list[str] = []
        self._active: set[str] = set()

    def need(self, name: str) -> None:
        if name in self.defined or name in self._active:
            return
        value = self.namespace.get(name, _MISSING)
        if value is _MISSING:
            if name in HELPERS or hasattr(builtins, name):
                return
            self.defined.add(name)
            self.required.append(name)
            return
        self._active.add(name)
        try:
            self._emit(name, value)
        finally:
            self._active.discard(name)
        self.defined.add(name)

    def _emit(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType):
            mod = value.__name__
            self.imports.append(f"import {mod}" if mod == name else f"import {mod} as {name}")
            return
        where = _importable(value)
        if where is not None:
            module, qualname = where
            self.imports.append(f"from {module} import {qualname}" + ("" if qualname == name else f" as {name}"))
            return
        if isinstance(value, (types.FunctionType, type)):
            source = _cell_source(value, self.namespace)
            if source is not None and _redact(source) != source:  # an API key in the code: not copied
                self.required.append(name)
                return
            if source is not None:
                for dep in sorted(_global_reads(source) - {value.__name__}):
                    if dep in self.namespace or dep not in dir(builtins):
                        self.need(dep)
                block = source.rstrip() + "\n"
                if value.__name__ != name:
                    block += f"\n{name} = {value.__name__}\n"
                self.blocks.append(block)
                return
        text = _literal(value)
        if text is not None and _redact(text) == text:  # a value holding an API key is passed in, never written
            self.blocks.append(f"{name} = {text}\n")
            return
        self.required.append(name)


# ---------------------------------------------------------------- rendering


def _docstring(text: str) -> str:
    if '"""' not in text and "\\" not in text and not text.endswith('"'):
        return f'"""{text}"""'
    return repr(text)


def _render_signature(spec: SignatureSpec) -> str:
    lines = [f"class {spec.name}(dspy.Signature):"]
    if spec.instructions is not None:
        lines.append("    " + _docstring(spec.instructions).replace("\n", "\n    "))
        lines.append("")
    for f in spec.fields:
        kwargs = []
        if f.desc is not None:
            kwargs.append(f"desc={f.desc!r}")
        if f.prefix is not None:
            kwargs.append(f"prefix={f.prefix!r}")
        marker = "dspy.InputField" if f.role == "input" else "dspy.OutputField"
        annotation = f": {f.type}" if f.type else ""
        lines.append(f"    {f.name}{annotation} = {marker}({', '.join(kwargs)})")
    return "\n".join(lines) + "\n"


def _lambda(expr: str, fields: list[str]) -> str:
    body = expr if "\n" not in expr else "(\n" + expr + "\n)"
    return f"lambda {', '.join(fields)}: {body}" if fields else f"lambda: {body}"


def _render_constraint(spec: ConstraintSpec, sig: SignatureSpec, collector: _Collector) -> str:
    fields = sig.field_names()
    cond_names = free_names(spec.condition)
    cond_fields = [n for n in cond_names if n in fields]
    for n in cond_names:
        if n not in fields:
            collector.need(n)
    if spec.message is None:
        message = "''"
    else:
        node = parse_expression(spec.message).body
        if isinstance(node, ast.Constant):
            message = repr(node.value)
        else:
            msg_names = free_names(spec.message)
            for n in msg_names:
                if n not in fields:
                    collector.need(n)
            message = _lambda(spec.message, [n for n in msg_names if n in fields])
    return (
        "    Constraint(\n"
        f"        name={spec.name!r},\n"
        f"        condition={_lambda(spec.condition, cond_fields)},\n"
        f"        message={message},\n"
        f"        hard={spec.hard!r},\n"
        f"        target={spec.target!r},\n"
        f"        max_backtracks={spec.max_backtracks!r},\n"
        f"        timeout={spec.timeout!r},\n"
        "    ),\n"
    )


def _type_names(spec: SignatureSpec) -> set[str]:
    names: set[str] = set()
    for f in spec.fields:
        if f.type:
            names |= {n.id for n in ast.walk(ast.parse(f.type, mode="eval")) if isinstance(n, ast.Name)}
    return names


def render_module(record: CompileRecord, namespace: Mapping[str, Any], json_name: str) -> tuple[str, tuple[str, ...]]:
    """The Python source that rebuilds `record`'s program, and the notebook objects it needs passed in."""
    sig_names = {s.name for s in record.signatures}
    collector = _Collector(namespace, sig_names | {"dspy"})
    typing_imports: set[str] = set()
    for spec in record.signatures:
        for n in sorted(_type_names(spec)):
            if n in namespace and n not in sig_names:
                collector.need(n)
            elif n in TYPING_NAMES:
                typing_imports.add(n)
    sigs = {s.name: s for s in record.signatures}
    constraints = "".join(_render_constraint(c, sigs[c.target], collector) for c in record.constraints)

    if record.steps and record.steps[0].kind == "module":
        ref = record.steps[0].ref
        collector.need(ref.split(".")[0])
        obj: Any = namespace.get(ref.split(".")[0])
        for part in ref.split(".")[1:]:
            obj = getattr(obj, part, None)
        make = f"{ref}()" if isinstance(obj, type) else f"{ref}.deepcopy()"
        build = f"    program = {make}\n"
    else:
        items = []
        for step in record.steps:
            if step.kind == "signature":
                items.append(
                    f"        Step.predict({step.name!r}, {step.ref}, cot={step.cot!r}, origin={step.ref!r}),\n"
                )
            else:
                collector.need(step.ref.split(".")[0])
                items.append(f"        Step.call({step.name!r}, {step.ref}),\n")
        build = "    program = Pipeline([\n" + "".join(items) + "    ])\n"

    options = record.option_dict
    activate = record.program is not None and is_activated(record.program)
    required = tuple(collector.required)
    out: list[str] = []
    out.append(f'"""{record.name}: an lmassert_magic program, rebuilt without IPython or magics.\n\n'
               f"Generated by `%lmassert export {record.name}`: the signatures, constraints and pipeline it was\n"
               f"compiled from; the compiled state (demos, instructions) is in {json_name}.\n\n"
               f"    from {Path(json_name).stem} import load_program\n"
               f"    program = load_program({', '.join(f'{r}=...' for r in required)})\n"
               '"""\n\n')
    stdlib = ["from pathlib import Path"]
    if typing_imports:
        stdlib.append(f"from typing import {', '.join(sorted(typing_imports))}")
    out.append("\n".join(sorted(set(stdlib))) + "\n\n")
    if collector.imports:
        out.append("\n".join(dict.fromkeys(collector.imports)) + "\n\n")
    out.append("import dspy\n\n")
    out.append("from lmassert_magic import Constraint, activate_assertions, lm_judge  # noqa: F401\n")
    out.append("from lmassert_magic.pipeline import Pipeline, Step, tag_predictors  # noqa: F401\n\n")
    out.append(f"STATE_PATH = Path(__file__).with_name({json_name!r})\n")
    out.append(f"MAX_BACKTRACKS = {int(options.get('backtracks', 2))!r}\n")
    out.append(f"ACTIVATE = {activate!r}\n")
    out.append("#: Notebook objects this file cannot rebuild: pass them by name to build_program() / load_program().\n")
    out.append(f"REQUIRED = {required!r}\n\n")
    if collector.blocks:
        out.append("# ---- notebook helpers (copied from the notebook)\n\n")
        out.append("\n\n".join(collector.blocks) + "\n\n")
    out.append("# ---- signatures\n\n")
    out.append("\n\n".join(_render_signature(s) for s in record.signatures) + "\n\n")
    out.append("SIGNATURES = {" + ", ".join(f"{n!r}: {n}" for n in sorted(sig_names)) + "}\n\n")
    out.append("# ---- constraints\n\n")
    out.append("CONSTRAINTS = [\n" + constraints + "]\n\n\n")
    out.append(
        "def _provide(objects):\n"
        "    unknown = sorted(set(objects) - set(REQUIRED))\n"
        "    if unknown:\n"
        "        raise TypeError(f\"unexpected object(s) {', '.join(unknown)}; this program takes {REQUIRED}\")\n"
        "    missing = [n for n in REQUIRED if n not in objects and n not in globals()]\n"
        "    if missing:\n"
        "        raise TypeError(f\"pass the notebook object(s) {', '.join(missing)} by name, \"\n"
        "                        f\"e.g. load_program({missing[0]}=...)\")\n"
        "    globals().update(objects)\n\n\n"
        "def build_program(**objects):\n"
        "    \"\"\"The pipeline with fresh predictors: no demos, no assertions active.\"\"\"\n"
        "    _provide(objects)\n"
        + build +
        "    tag_predictors(program, SIGNATURES)\n"
        "    return program\n\n\n"
        "def load_program(path=STATE_PATH, *, activate=ACTIVATE, **objects):\n"
        "    \"\"\"The compiled program: state from `path`, constraints attached and backtracking on.\"\"\"\n"
        "    program = build_program(**objects)\n"
        "    program.load(str(path))\n"
        "    if activate:\n"
        "        activate_assertions(program, MAX_BACKTRACKS, constraints=CONSTRAINTS)\n"
        "    return program\n"
    )
    return "".join(out), required
