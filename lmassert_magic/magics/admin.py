"""`%lmassert list | show | remove | reset | export | calibrate | compat`: look after the registry.

Nothing in the line is expanded (`{x}` / `$x` stay as written).
"""

from __future__ import annotations

import contextlib
from typing import Any

import dspy
from IPython.core.magic import line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from IPython.display import display

from ..definitions.specs import CompileRecord, ConstraintEntry, SignatureEntry
from ..engine.calibration import calibrate_judge
from ..export import export_program
from . import review as review_magic
from .compile import ensure_lm
from .parsing import RegistryMagics, fail, parse_line, user_errors

USAGE = {
    "list": "%lmassert list",
    "show": "%lmassert show NAME",
    "remove": "%lmassert remove NAME",
    "reset": "%lmassert reset",
    "export": "%lmassert export NAME PATH",
    "calibrate": "%lmassert calibrate NAME --labels VAR [--refresh]",
    "compat": "%lmassert compat on|off",
    "trace": review_magic.TRACE_USAGE,
    "review": review_magic.REVIEW_USAGE,
}
ARITY = {"list": 0, "show": 1, "remove": 1, "reset": 0, "export": 2, "calibrate": 1, "compat": 1, "trace": (1, 2),
         "review": 1}
#: Options of trace and review (where each belongs, for the message when it is given to another command).
REVIEW_OPTIONS = {"setting": ("trace", "review"), "reject": ("review",), "accept": ("review",), "pin": ("review",),
                  "reset": ("review",)}


def _signature_line(entry: SignatureEntry) -> str:
    spec = entry.spec
    cot = ", ChainOfThought" if spec.cot else ""
    return f"  {spec.name}: {spec.shorthand()}  (v{entry.version}{cot})"


def _constraint_line(entry: ConstraintEntry) -> str:
    spec = entry.spec
    budget = "default" if spec.max_backtracks is None else str(spec.max_backtracks)
    limit = "none" if spec.timeout is None else f"{spec.timeout:g}s"
    return f"  {spec.name}: {spec.kind} on {spec.target}  (backtracks {budget}, timeout {limit})"


def _program_line(record: CompileRecord) -> str:
    chain = " >> ".join(s.ref for s in record.steps)
    flags = []
    if record.interrupted:
        flags.append("interrupted")
    if record.stale:
        flags.append(f"STALE: {record.stale}")
    extra = f"  [{'; '.join(flags)}]" if flags else ""
    return f"  {record.name}: {chain}{extra}"


@magics_class
class AdminMagics(RegistryMagics):
    """The `%lmassert` line magic."""

    @line_magic("lmassert")
    @no_var_expand
    @magic_arguments(name="lmassert")
    @argument("command", nargs="?", default="list",
              help="list | show NAME | remove NAME | reset | export NAME PATH | calibrate NAME --labels VAR | "
                   "compat on|off | trace PROGRAM [EXAMPLE] | review PROGRAM")
    @argument("args", nargs="*", help="NAME, or NAME PATH for export, or PROGRAM [EXAMPLE] for trace")
    @argument("--labels", default=None,
              help="calibrate: notebook variable holding labelled items, (fields dict, True/False) pairs")
    @argument("--refresh", action="store_true", help="calibrate: measure again even if a cached result exists")
    @argument("--setting", default=None, help="trace, review --pin: the setting, by key or label (default: the "
                                              "one that ran with assertions at inference)")
    @argument("--reject", action="append", default=[], metavar="ID",
              help="review: reject demo ID (e.g. GenerateTweet:2, as the report lists them); repeatable")
    @argument("--accept", action="append", default=[], metavar="ID", help="review: accept demo ID again; repeatable")
    @argument("--pin", action="append", default=[], metavar="EXAMPLE:ATTEMPT",
              help="review: pin attempt ATTEMPT (its # in the timeline) of dev example EXAMPLE as a demo; repeatable")
    @argument("--reset", action="store_true", help="review: undo every choice made by hand")
    def lmassert(self, line: str) -> None:
        """Look after what %%signature, %%assert and %%compile registered.

        %lmassert list                 signatures, constraints and compiled programs (stale ones marked)
        %lmassert show NAME            the definition (the cell) and, for a program, its results
        %lmassert remove NAME          forget NAME (a signature takes its constraints with it) and
                                       delete the notebook variable if it still holds the registered object
        %lmassert reset                forget everything (like remove, for every name)
        %lmassert export NAME PATH     write NAME.json (DSPy save) and NAME.py (rebuilds the program
                                       with dspy and lmassert_magic only) to the directory PATH, or to
                                       PATH itself if it ends in .py
        %lmassert calibrate NAME --labels VAR
                                       run constraint NAME (an LM judge) on labelled items and measure its
                                       agreement with the labels (with a 95% interval) and Cohen's kappa;
                                       %%compile reports show it next to NAME's pass rate. Cached on disk
                                       per model, cell text and items ($LMASSERT_CACHE_DIR); --refresh
                                       measures again
        %lmassert compat on|off        zero-edit mode for DSPy 2.5 programs: `dspy.Assert`, `dspy.Suggest`,
                                       `dspy.Retry`, `dspy.primitives.assertions`... backed by this
                                       package (lmassert_magic.compat.install); `off` or %unload_ext undoes it
        %lmassert trace PROGRAM [EXAMPLE] [--setting S]
                                       one dev example's retry timeline: every step's attempts, the feedback
                                       each retry got, a word diff, the constraints that flipped, costs
                                       (default: the assertion setting and its first failing example)
        %lmassert review PROGRAM [--reject ID] [--accept ID] [--pin EXAMPLE:ATTEMPT [--setting S]] [--reset]
                                       choose the compiled program's demos by hand (no option: list them);
                                       rebinds PROGRAM (registry and notebook variable) in one step

        Nothing in the line is expanded: `{x}` and `$x` stay as written (@no_var_expand).
        """
        args = parse_line(self.lmassert, line)
        command = args.command
        if command not in ARITY:
            fail(f"unknown command {command!r} (list, show, remove, reset, export, calibrate, compat, trace, "
                 "review)", 1, name=command, candidates=ARITY)
        arity = ARITY[command]
        if len(args.args) not in (arity if isinstance(arity, tuple) else (arity,)):
            fail(f"usage: {USAGE[command]}", 1)
        misplaced = [k for k, owners in REVIEW_OPTIONS.items() if getattr(args, k) and command not in owners]
        if misplaced:
            owners = " and ".join(dict.fromkeys(c for k in misplaced for c in REVIEW_OPTIONS[k]))
            verb = "belongs" if len(misplaced) == 1 else "belong"
            fail(f"{', '.join('--' + k for k in misplaced)} {verb} to {owners}; usage: {USAGE[command]}", 1)
        if command == "trace":
            review_magic.trace(self, args.args[0], args.args[1] if len(args.args) > 1 else None, args.setting)
            return
        if command == "review":
            review_magic.review(self, args.args[0], reject=args.reject, accept=args.accept, pin=args.pin,
                                setting=args.setting, reset=args.reset)
            return
        if command == "calibrate":
            self._cmd_calibrate(args.args[0], args.labels, args.refresh)
            return
        if command == "compat":
            self._cmd_compat(args.args[0])
            return
        if args.labels is not None or args.refresh:
            fail(f"--labels and --refresh belong to calibrate; usage: {USAGE[command]}", 1)
        getattr(self, f"_cmd_{command}")(*args.args)

    # -- commands ----------------------------------------------------------------------------
    def _cmd_list(self) -> None:
        reg = self.registry
        sections = [
            ("Signatures", [_signature_line(e) for _, e in sorted(reg.signatures.items())]),
            ("Constraints", [_constraint_line(e) for _, e in sorted(reg.constraints.items())]),
            ("Programs", [_program_line(r) for _, r in sorted(reg.programs.items())]),
        ]
        if not any(lines for _, lines in sections):
            print("Nothing registered yet: start with %%signature NAME.")
            return
        for title, lines in sections:
            print(f"{title}:")
            print("\n".join(lines) if lines else "  (none)")

    def _known(self, name: str) -> str:
        kind = self.registry.kind_of(name)
        if kind is None:
            fail(f"nothing is registered as {name!r}", 1, name=name, candidates=self.registry.names())
        return kind

    def _cmd_show(self, name: str) -> None:
        kind = self._known(name)
        reg = self.registry
        if kind == "signature":
            entry = reg.signatures[name]
            flags = " --cot" if entry.spec.cot else ""
            print(f"%%signature {name}{flags}\n{entry.spec.source.rstrip()}\n")
            print(f"fields: {entry.spec.shorthand()}  (version {entry.version})")
            cons = [e.spec.name for e in reg.constraints_on(name)]
            print(f"constraints: {', '.join(cons) or 'none'}")
            print(f"used by: {', '.join(reg.dependents_of(name)) or 'no compiled program'}")
        elif kind == "constraint":
            spec = reg.constraints[name].spec
            flags = f" --name {name} --{spec.kind}"
            if spec.max_backtracks is not None:
                flags += f" --backtracks {spec.max_backtracks}"
            print(f"%%assert {spec.target}{flags}\n{spec.source.rstrip()}\n")
            print(_constraint_line(reg.constraints[name]).strip())
        else:
            record = reg.programs[name]
            opts = record.option_dict
            line = f"%%compile {name} --train {opts.get('train')} --dev {opts.get('dev')} --metric {opts.get('metric')}"
            print(f"{line}\n{record.pipeline.source.rstrip()}\n")
            print(f"settings: {', '.join(opts.get('settings') or [])}; optimizer: {opts.get('optimizer')}; "
                  f"backtracks: {opts.get('backtracks')}")
            print(f"constraints: {', '.join(c.name for c in record.constraints) or 'none'}")
            if record.review is not None:
                print("\n".join(record.review.lines()))
            for note in record.skipped:
                print(f"  {note}")
            if record.interrupted:
                print("interrupted: the results are partial")
            if record.stale:
                print(f"STALE: {record.stale}; re-run its %%compile cell")
            summary: Any = record.report if record.report is not None else record.result.summary()
            display(summary)

    def _cmd_remove(self, name: str) -> None:
        kind = self._known(name)
        reg = self.registry
        bound = self._bound_objects([name]) if kind != "constraint" else {}
        with user_errors():
            notes = reg.remove(name)
        for n, value in bound.items():
            if self.unbind(n, value):
                notes.append(f"deleted notebook variable {n}")
        print("\n".join(notes))

    def _cmd_reset(self) -> None:
        reg = self.registry
        bound = self._bound_objects(list(reg.signatures) + list(reg.programs))
        count = len(reg.names())
        reg.reset()
        gone = [n for n, value in bound.items() if self.unbind(n, value)]
        print(f"Registry reset: forgot {count} definition(s)"
              + (f"; deleted notebook variable(s) {', '.join(gone)}" if gone else ""))

    def _cmd_export(self, name: str, path: str) -> None:
        try:
            with user_errors():
                result = export_program(self.registry, name, path, self.user_ns)
        except OSError as exc:
            fail(f"cannot write the export to {path!r}: {exc}", 1)
        print(f"Exported {name}: {result.py_path} and {result.json_path}")
        for note in result.notes:
            print(f"Note: {note}")

    def _cmd_calibrate(self, name: str, labels: str | None, refresh: bool) -> None:
        reg = self.registry
        if name not in reg.constraints:
            fail(f"no constraint named {name!r}", 1, name=name, candidates=reg.constraints)
        if labels is None:
            fail(f"calibrate needs --labels VAR; usage: {USAGE['calibrate']}", 1)
        items = self.lookup(labels, "--labels", predicate=lambda v: isinstance(v, (list, tuple)))
        entry = reg.constraints[name]
        lm = ensure_lm()
        model = str(getattr(lm, "model", "") or "")
        with user_errors():
            try:
                context = dspy.context(lm=lm) if lm is not None else contextlib.nullcontext()
                with context:
                    result = calibrate_judge(entry.constraint, list(items), name=name, model=model,
                                             prompt=entry.spec.source, refresh=refresh)
            except (TypeError, ValueError) as exc:
                fail(f"--labels {labels}: {exc}", 1)
            reg.record_calibration(name, result)
        cached = " (cached)" if result.from_cache else ""
        print(result.describe() + cached)

    # -- zero-edit mode for DSPy 2.5 programs (lmassert_magic.compat); kept apart from the registry commands --
    def _cmd_compat(self, state: str) -> None:
        from .. import compat

        if state == "on":
            added = compat.install()
            print("DSPy 2.5 assertion names available from dspy"
                  + (f": added {', '.join(added)}" if added else " (already on)"))
        elif state == "off":
            removed = compat.uninstall()
            print(f"Zero-edit mode off: removed {len(removed)} name(s)" if removed else "Zero-edit mode was not on")
        else:
            fail(f"usage: {USAGE['compat']}", 1)

    def unload(self) -> None:
        """`%unload_ext lmassert_magic` turns zero-edit mode off."""
        from .. import compat

        compat.uninstall()

    def _bound_objects(self, names: list[str]) -> dict[str, Any]:
        """What the extension bound in the notebook for these names (signature classes, programs)."""
        reg = self.registry
        out: dict[str, Any] = {}
        for name in names:
            if name in reg.signatures:
                out[name] = reg.signatures[name].cls
            elif name in reg.programs and reg.programs[name].program is not None:
                out[name] = reg.programs[name].program
        return out
