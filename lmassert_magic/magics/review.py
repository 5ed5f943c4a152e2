"""`%lmassert trace` and `%lmassert review`: one example's retry timeline, and the demos chosen by hand.

Thin, like every magic: find the compiled program's report in the registry, call it (`CompileReport.trace`,
`CompileReport.review`), print what happened. `review_handler` is what `%%compile` gives its report, so a
review made anywhere (a cell, the widget, Python) rebinds the registry's program in one transaction and
moves the notebook variable along.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from IPython.display import display

from ..definitions.specs import RegistryError
from .parsing import RegistryMagics, fail

TRACE_USAGE = "%lmassert trace PROGRAM [EXAMPLE] [--setting S]"
REVIEW_USAGE = ("%lmassert review PROGRAM [--reject ID] [--accept ID] [--pin EXAMPLE:ATTEMPT [--setting S]] "
                "[--reset]")


def _report(magics: RegistryMagics, name: str, command: str) -> Any:
    """The report of compiled program NAME (the one `%%compile NAME` displayed)."""
    reg = magics.registry
    record = reg.programs.get(name)
    if record is None:
        kind = reg.kind_of(name)
        if kind is not None:
            fail(f"{name!r} is a {kind}; {command} takes a compiled program (%%compile NAME)", 1)
        fail(f"no compiled program named {name!r}", 1, name=name, candidates=reg.programs)
    if record.report is None:
        fail(f"{name} has no report to {command} (the report layer was not available when it compiled)", 1)
    return record.report


def trace(magics: RegistryMagics, name: str, example: str | None, setting: str | None) -> None:
    """Display one example's retry timeline (default: the assertion setting, its first failing example)."""
    report = _report(magics, name, "trace")
    index: int | None = None
    if example is not None:
        try:
            index = int(example)
        except ValueError:
            fail(f"EXAMPLE must be a dev-set index (0, 1, ...), got {example!r}; usage: {TRACE_USAGE}", 1)
    try:
        view = report.trace(index, setting=setting)
    except ValueError as exc:
        fail(str(exc), 1)
    display(view)


def _pins(specs: Sequence[str], setting: str | None) -> list[tuple[int, int, str | None]]:
    pins = []
    for spec in specs:
        example, sep, seq = spec.partition(":")
        if not sep or not example.strip().isdigit() or not seq.strip().isdigit():
            fail(f"--pin takes EXAMPLE:ATTEMPT (a dev-set index and an attempt's # in the timeline), got {spec!r}", 1)
        pins.append((int(example), int(seq), setting))
    return pins


def review(magics: RegistryMagics, name: str, *, reject: Sequence[str], accept: Sequence[str], pin: Sequence[str],
           setting: str | None, reset: bool) -> None:
    """Change the demos chosen by hand, or (with no change asked) list them with their status."""
    report = _report(magics, name, "review")
    if reset and (reject or accept or pin):
        fail("--reset cannot be combined with --reject, --accept or --pin", 1)
    if setting is not None and not pin:
        fail(f"--setting goes with --pin here; usage: {REVIEW_USAGE}", 1)
    pins = _pins(pin, setting)
    if not (reject or accept or pins or reset):
        frame = report.demo_review()
        for row in frame.itertuples():
            source = "" if row.source == "compile" else f"  from {row.source}"
            print(f"  {row.id:<24} {row.kind:<15} {row.status}{source}")
        print("\n".join(report.reviewer.review.lines()))
        return
    try:
        report.review(reject=reject, accept=accept, pin=pins, reset=reset)
    except ValueError as exc:  # a bad id or pin: the engine's words, on the magic's line
        fail(str(exc), 1)
    print("\n".join(report.reviewer.notes))


def review_handler(magics: RegistryMagics, name: str, result: Any) -> Callable[[Any, Any], list[str]]:
    """What a compile's report calls on each review: rebind NAME in the registry (one transaction, refused
    if NAME was compiled again since), then the notebook variable if it still holds the old program."""

    def rebind(program: Any, chosen: Any) -> list[str]:
        reg = magics.registry
        record = reg.programs.get(name)
        old = record.program if record is not None else None
        try:
            reg.rebind_program(name, program, chosen, result=result)
        except RegistryError as exc:
            raise ValueError(exc.message) from None
        notes = [f"{name} rebound: {chosen.summary()}"]
        ns = magics.user_ns
        if ns.get(name) is old and old is not None:
            ns[name] = program
        else:
            notes.append(f"the notebook variable {name} no longer holds the compiled program; left alone "
                         f"(the registry's {name}, and %lmassert export, have the chosen demos)")
        return notes

    return rebind


__all__ = ["REVIEW_USAGE", "TRACE_USAGE", "review", "review_handler", "trace"]
