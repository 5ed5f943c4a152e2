"""Every default is defined once, in `lmassert_magic/engine/defaults.py`; the rest of the package names it.

Two checks: the magics' and the definitions' defaults *are* the module's values, and no public
function, dataclass field or magic flag of the layers that share these defaults types one of them as
a literal (`max_backtracks: int = 2`). Modules whose owners have not switched yet are listed (and
printed), not failed; take a module off `PENDING` once it names its defaults.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

from IPython.core.magic_arguments import parse_argstring

from lmassert_magic.definitions.specs import ConstraintSpec
from lmassert_magic.engine import defaults
from lmassert_magic.magics.assertion import AssertionMagics
from lmassert_magic.magics.compile import CompileMagics

PACKAGE = Path(__file__).resolve().parents[1] / "lmassert_magic"

#: Parameter / field names that take one of the shared defaults.
DEFAULTED = {"max_backtracks", "timeout", "check_timeout", "seed", "num_threads", "threads", "retry_temperature",
             "soft_penalty", "optimizer", "counterexamples", "budget", "confidence", "max_errors",
             "max_metric_calls", "time_cap", "threshold", "constraint_weight", "concurrency"}
#: `@argument` flags of the magics that take one of them.
FLAGS = {"--backtracks", "--timeout", "--seed", "--threads", "--retry-temperature", "--optimizer",
         "--counterexamples", "--budget", "--max-errors", "--max-metric-calls", "--time-cap", "--async"}
#: Where the shared defaults are looked for (other layers have defaults of their own, defined once there).
SCANNED = ["engine", "definitions", "magics", "report", "registry.py", "export.py"]
#: Engine modules still typing their defaults (the engine's owner switches them to `engine.defaults`).
PENDING: set[str] = set()


def test_the_compile_magic_defaults_are_the_modules():
    args = parse_argstring(CompileMagics.compile_magic, "p --train t --dev d --metric m")
    assert args.backtracks == defaults.MAX_BACKTRACKS
    assert args.budget == defaults.BUDGET
    assert args.seed == defaults.SEED
    assert args.retry_temperature == defaults.RETRY_TEMPERATURE
    assert args.threads == defaults.THREADS
    assert args.concurrency == defaults.CONCURRENCY
    assert args.optimizer == defaults.OPTIMIZER
    assert args.counterexamples == defaults.COUNTEREXAMPLES
    assert args.max_errors == defaults.MAX_ERRORS
    assert args.keep_soft_failures == defaults.KEEP_SOFT_FAILURES


def test_the_check_timeout_of_cells_is_the_modules():
    assert AssertionMagics.check_timeout.default_value == defaults.CHECK_TIMEOUT_SECONDS
    timeout = next(f for f in dataclasses.fields(ConstraintSpec) if f.name == "timeout")
    assert timeout.default == defaults.CHECK_TIMEOUT_SECONDS


def test_the_defaults_are_what_the_design_says():
    assert defaults.MAX_BACKTRACKS == 2 and defaults.CHECK_TIMEOUT_SECONDS == 120.0
    assert defaults.PYTHON_CHECK_TIMEOUT_SECONDS is None and defaults.BUDGET == "shared"


def _literal(node: ast.expr | None) -> bool:
    """A typed-in default: a number or string (None means 'not set' and True/False are switches)."""
    return isinstance(node, ast.Constant) and node.value is not None and not isinstance(node.value, bool)


def typed_defaults(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            positional = a.posonlyargs + a.args
            pairs = list(zip(positional[len(positional) - len(a.defaults):], a.defaults))
            pairs += [(arg, d) for arg, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
            found += [f"{node.name}({arg.arg}={ast.unparse(d)}) line {d.lineno}"
                      for arg, d in pairs if arg.arg in DEFAULTED and _literal(d)]
        elif isinstance(node, ast.ClassDef):
            found += [f"{node.name}.{s.target.id} = {ast.unparse(s.value)} line {s.lineno}"
                      for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                      and s.target.id in DEFAULTED and _literal(s.value)]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "argument":
            flags = {a.value for a in node.args if isinstance(a, ast.Constant)}
            found += [f"@argument({', '.join(sorted(flags))}, default={ast.unparse(k.value)}) line {node.lineno}"
                      for k in node.keywords if k.arg == "default" and flags & FLAGS and _literal(k.value)]
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Float" and node.args \
                and _literal(node.args[0]):  # a traitlets option of a magic
            found.append(f"Float({ast.unparse(node.args[0])}) line {node.lineno}")
    return found


def test_no_shared_default_is_typed_as_a_literal():
    files = []
    for part in SCANNED:
        target = PACKAGE / part
        files += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    typed = {str(f.relative_to(PACKAGE)): hits for f in files if (hits := typed_defaults(f))}
    pending = {k: v for k, v in typed.items() if k in PENDING}
    print("pending (owners switch them):", "\n".join(f"{k}: {v}" for k, v in pending.items()))
    assert {k: v for k, v in typed.items() if k not in PENDING} == {}
