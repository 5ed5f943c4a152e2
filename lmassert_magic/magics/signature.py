"""`%%signature NAME [--cot]`: define a DSPy signature from a Python-looking cell.

Nothing in the line or the body is expanded (`{x}` / `$x` stay as written).
"""

from __future__ import annotations

from typing import Any

import dspy
from IPython.core.magic import cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments

from .parsing import (
    RegistryMagics,
    check_identifier,
    parse_line,
    parse_signature_body,
    user_errors,
)


def _is_signature_class(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, dspy.Signature)


@magics_class
class SignatureMagics(RegistryMagics):
    """The `%%signature` cell magic."""

    @cell_magic
    @no_var_expand
    @magic_arguments(name="%signature")
    @argument("name", metavar="NAME", help="the signature's name; the class is bound to it in the notebook")
    @argument("--cot", action="store_true",
              help="pipelines built by %%%%compile run this signature with dspy.ChainOfThought (adds `reasoning`)")
    def signature(self, line: str, cell: str) -> None:
        """Define a DSPy signature; the class is bound to NAME in the notebook.

        The body is Python: a docstring (the instructions), then one annotated line per field::

            %%signature GenerateTweet
            \"\"\"Generate an engaging tweet that answers the question, faithful to the context.\"\"\"
            question: str = In()
            context: list[str] = In(desc="facts that may be relevant")
            tweet: str = Out()

        `In`/`Out` (also `InputField`/`OutputField`, `dspy.InputField`/`dspy.OutputField`) take an
        optional `desc=` (or one positional description) and `prefix=`. Types may use notebook
        names, `typing` names without an import (`Literal[...]`, `Optional[...]`) and builtins.
        DSPy's shorthand works too, optionally after a docstring: `question, context: list[str] -> tweet`.

        Re-running the cell replaces the definition. If the fields, types, instructions or --cot
        changed, compiled programs built from the old definition are marked stale (the output says
        so); constraints on the signature are kept. Nothing in the line or body is expanded:
        `{x}` and `$x` stay as written (@no_var_expand). Errors name the cell line (the
        %%signature line is line 1).
        """
        args = parse_line(self.signature, line)
        name = check_identifier(args.name, "the signature name")
        spec = parse_signature_body(name, cell, cot=args.cot)
        self.check_bindable(name, _is_signature_class, "signature")
        existed = name in self.registry.signatures
        with user_errors():
            outcome = self.registry.define_signature(spec, self.user_ns)
        self.user_ns[name] = outcome.entry.cls
        verb = "Redefined" if existed else "Defined"
        if existed and not outcome.changed:
            verb = "Re-ran (unchanged)"
        cot = " (ChainOfThought)" if spec.cot else ""
        print(f"{verb} signature {name}: {spec.shorthand()}{cot}")
        for note in outcome.notes:
            print(f"Note: {note}")
