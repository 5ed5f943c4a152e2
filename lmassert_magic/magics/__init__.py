"""The IPython side of lmassert_magic: `%%signature`, `%%assert`, `%%compile`, `%lmassert` (and `%lm`).

The magics are thin: they parse a cell, update the registry (`lmassert_magic.registry`) and call
the engine. Expansion rule: nothing is expanded, neither the magic line nor the body (all magics
are `@no_var_expand`), so `{x}` and `$x` reach the magic as written; name notebook variables
directly (`--train trainset`). Errors in what the user wrote are one-line `UsageError`s naming the
cell line (the `%%magic` line is line 1); a failing cell leaves the registry unchanged.

`%load_ext lmassert_magic` registers the magics, their tab completion (registered names) and their
`%config` options; `%unload_ext` removes all of it; `%reload_ext` keeps the registry.
"""

from __future__ import annotations

import shlex
import warnings
from dataclasses import dataclass, field
from typing import Any

from IPython.core.magic import Magics

from ..definitions.store import get_registry
from ..engine.ablation import SETTINGS
from ..engine.compile import OPTIMIZERS
from .admin import ARITY, AdminMagics
from .assertion import AssertionMagics
from .compile import CompileMagics
from .signature import SignatureMagics

try:  # written separately; the extension works without it
    from .lm import LMMagics
except ImportError as _exc:  # pragma: no cover - depends on the lm layer being present
    if getattr(_exc, "name", None) != f"{__name__}.lm":  # it exists but is broken: say so, load the rest
        warnings.warn(f"lmassert_magic: %lm is unavailable ({_exc})", RuntimeWarning, stacklevel=2)
    LMMagics = None  # type: ignore[assignment,misc]

__all__ = [
    "AdminMagics",
    "AssertionMagics",
    "CompileMagics",
    "LMMagics",
    "SignatureMagics",
    "load_ipython_extension",
    "magics_classes",
    "unload_ipython_extension",
]


def magics_classes() -> list[type[Magics]]:
    """Every Magics class the extension registers (`%lm` only when its module is there)."""
    classes: list[type[Magics]] = [SignatureMagics, AssertionMagics, CompileMagics, AdminMagics]
    if LMMagics is not None:
        classes.append(LMMagics)
    return classes


# ---------------------------------------------------------------- tab completion


def _words(event: Any) -> tuple[list[str], str]:
    """The words before the one being completed, and that word."""
    text = getattr(event, "text_until_cursor", None) or event.line
    text = text.splitlines()[-1] if text else ""
    try:
        words = shlex.split(text)
    except ValueError:
        words = text.split()
    current = "" if not text or text[-1].isspace() else (words.pop() if words else "")
    return words, current


def _notebook_names(shell: Any, predicate: Any = None) -> list[str]:
    return sorted(k for k, v in shell.user_ns.items()
                  if not k.startswith("_") and (predicate is None or predicate(v)))


def _positionals(words: list[str], flags_with_values: set[str]) -> int:
    count, skip = 0, False
    for w in words[1:]:
        if skip:
            skip = False
        elif w.startswith("-"):
            skip = w in flags_with_values
        else:
            count += 1
    return count


# Completers get (shell, event) from IPython's complete_command hook and return candidates;
# IPython keeps those starting with the typed prefix.


def complete_signature(shell: Any, event: Any) -> list[str]:
    words, _ = _words(event)
    if _positionals(words, set()) == 0:
        return sorted(get_registry().signatures)
    return ["--cot"]


def complete_assert(shell: Any, event: Any) -> list[str]:
    words, _ = _words(event)
    if words and words[-1] in ("--name", "-n"):
        return sorted(get_registry().constraints)
    if _positionals(words, {"--name", "-n", "--backtracks", "-b", "--timeout"}) == 0:
        return sorted(get_registry().signatures)
    return ["--name", "--soft", "--hard", "--backtracks", "--timeout"]


def complete_compile(shell: Any, event: Any) -> list[str]:
    words, current = _words(event)
    prev = words[-1] if words else ""
    if prev in ("--train", "--dev"):
        return _notebook_names(shell, lambda v: isinstance(v, (list, tuple)))
    if prev == "--metric":
        return _notebook_names(shell, lambda v: callable(v) and not isinstance(v, type))
    if prev == "--optimizer":
        return list(OPTIMIZERS)
    if prev == "--settings":
        head = current.rpartition(",")[0]
        return [f"{head},{s}" if head else s for s in SETTINGS]
    if prev == "--budget":
        return ["shared", "per_constraint"]
    if prev == "--counterexamples":
        return ["retry", "prompt"]
    if prev in ("-o", "--output", "--backtracks", "-b", "--threads", "--seed", "--max-errors", "--retry-temperature"):
        return []
    flags = {"--train", "--dev", "--metric", "--optimizer", "--settings", "--backtracks", "-b", "--threads", "-o",
             "--output", "--budget", "--seed", "--max-errors", "--retry-temperature", "--counterexamples"}
    if _positionals(words, flags) == 0 and not current.startswith("-"):
        return sorted(get_registry().programs)
    return ["--train", "--dev", "--metric", "--optimizer", "--settings", "--backtracks", "--budget", "--seed",
            "--retry-temperature", "--keep-soft-failures", "--max-errors", "--counterexamples", "--threads", "-o",
            "--no-stop-on-repeat", "--no-stop-at-failing-judge", "--batch-judges"]


def complete_lmassert(shell: Any, event: Any) -> list[str]:
    words, _ = _words(event)
    if len(words) <= 1:
        return sorted(ARITY)
    if len(words) == 2 and words[1] in ("show", "remove", "export", "trace", "review"):
        reg = get_registry()
        return sorted(reg.programs) if words[1] in ("export", "trace", "review") else reg.names()
    return []


COMPLETERS = {
    "%%signature": complete_signature,
    "%%assert": complete_assert,
    "%%compile": complete_compile,
    "%lmassert": complete_lmassert,
}


def _install_completers(shell: Any) -> None:
    for key, func in COMPLETERS.items():
        shell.set_hook("complete_command", func, str_key=key)


def _remove_completers(shell: Any) -> None:
    dispatch = getattr(shell, "strdispatchers", {}).get("complete_command")
    if dispatch is None:
        return
    ours = set(COMPLETERS.values())
    for key in COMPLETERS:
        chain = dispatch.strs.get(key)
        if chain is None:
            continue
        chain.chain = [(p, f) for p, f in chain.chain if getattr(f, "__func__", f) not in ours]
        if not chain.chain:
            del dispatch.strs[key]


# ---------------------------------------------------------------- load / unload


@dataclass
class _Loaded:
    instances: list[Magics] = field(default_factory=list)


# Kept across an importlib.reload of this module, like the registry.
_LOADED: dict[int, _Loaded] = globals().get("_LOADED", {})


def load_ipython_extension(ipython: Any) -> None:
    """Register the magics, completers and %config options on `ipython` (idempotent)."""
    if id(ipython) in _LOADED:
        unload_ipython_extension(ipython)
    loaded = _Loaded()
    for cls in magics_classes():
        instance = cls(shell=ipython)
        ipython.register_magics(instance)
        if instance not in ipython.configurables:
            ipython.configurables.append(instance)
        loaded.instances.append(instance)
    _install_completers(ipython)
    _LOADED[id(ipython)] = loaded
    get_registry()  # created now, so it exists before the first cell


def unload_ipython_extension(ipython: Any) -> None:
    """Remove every magic, completer and configurable this extension added; the registry stays."""
    loaded = _LOADED.pop(id(ipython), None)
    _remove_completers(ipython)
    if loaded is None:
        return
    manager = ipython.magics_manager
    for instance in loaded.instances:
        hook = getattr(instance, "unload", None)
        if callable(hook):
            hook()
        for kind, table in instance.magics.items():
            for name, func in table.items():
                if manager.magics[kind].get(name) == func:
                    del manager.magics[kind][name]
        if manager.registry.get(type(instance).__name__) is instance:
            del manager.registry[type(instance).__name__]
        if instance in ipython.configurables:
            ipython.configurables.remove(instance)
