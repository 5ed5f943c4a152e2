"""`%%assert TARGET`: a constraint on the outputs of a registered signature, written as Python.

Nothing in the line or the body is expanded (`{x}` / `$x` stay as written), so an f-string
message sees the fields, not notebook variables of the same name.
"""

from __future__ import annotations

import math

from IPython.core.magic import cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments
from traitlets import Float

from ..definitions.specs import ConstraintSpec
from ..engine.defaults import CHECK_TIMEOUT_SECONDS, MAX_BACKTRACKS
from .parsing import (
    RegistryMagics,
    cell_id,
    check_identifier,
    fail,
    parse_assert_body,
    parse_line,
    user_errors,
)


@magics_class
class AssertionMagics(RegistryMagics):
    """The `%%assert` cell magic."""

    check_timeout = Float(
        CHECK_TIMEOUT_SECONDS,
        allow_none=True,
        help="Seconds one check of a %%assert constraint may take (0 or None: no limit). "
        "Set with `%config AssertionMagics.check_timeout = 10`, or per cell with --timeout.",
    ).tag(config=True)

    @cell_magic("assert")
    @no_var_expand
    @magic_arguments(name="%assert")
    @argument("target", metavar="TARGET",
              help="the registered signature (%%%%signature NAME) whose step the constraint checks")
    @argument("--name", "-n", default=None,
              help="the constraint's name; default: TARGET_<n> with the smallest free n (TARGET_1, TARGET_2, ...)")
    @argument("--soft", action="store_true", help="a Suggest: after the backtracks, record the failure and go on "
                                                  "(the default)")
    @argument("--hard", action="store_true", help="an Assert: after the backtracks, stop the program with an error")
    @argument("--backtracks", "-b", type=int, default=None,
              help="caps the retries this constraint may take of a call's shared budget "
                   f"(%%%%compile --backtracks, default {MAX_BACKTRACKS})")
    @argument("--timeout", type=float, default=None,
              help="seconds one check may take; 0 = no limit "
                   f"(default: AssertionMagics.check_timeout, {CHECK_TIMEOUT_SECONDS:g})")
    def assert_magic(self, line: str, cell: str) -> None:
        """Add a constraint on the step of signature TARGET (soft unless --hard).

        The body is Python: a condition over the step's input and output fields, then the feedback
        message the LM gets when it fails (a string, or an f-string over the fields)::

            %%assert GenerateTweet --name no_hashtags
            not re.search(r"#\\w+", tweet)
            "Please revise the tweet to remove hashtag phrases."

            %%assert GenerateTweet --name engaging
            lm_judge("Is the tweet engaging? Answer yes or no.", tweet=tweet)
            f"The tweet {tweet!r} is dull; make it engaging."

        The condition must give True or False (wrap a match in bool(...)). It may use the fields,
        builtins, notebook names (helpers, imports such as `re`; looked up when the check runs) and
        `lm_judge` without an import. Unknown names are an error naming the line and the closest
        candidate. Without --name, the name is TARGET_<n> (the smallest free n); re-running the same
        cell replaces its constraint. Each check has a time limit (--timeout, default 120 s).
        Nothing in the line or body is expanded: `{x}` and `$x` stay as written (@no_var_expand).
        """
        args = parse_line(self.assert_magic, line)
        if args.soft and args.hard:
            fail("choose one of --soft and --hard", 1)
        target = check_identifier(args.target, "the target")
        if args.name is not None:
            check_identifier(args.name, "the constraint name")
        condition, cond_line, message, msg_line = parse_assert_body(cell)
        registry = self.registry
        if target not in registry.signatures:
            fail(f"unknown signature {target!r}" + ("" if registry.signatures else
                                                     " (define it with %%signature first)"),
                 1, name=target, candidates=registry.signatures)
        timeout = args.timeout if args.timeout is not None else self.check_timeout
        timeout = None if not timeout else float(timeout)
        if timeout is not None and not 0 < timeout < math.inf:  # nan and inf too: a time limit is a number
            fail(f"--timeout must be 0 (no limit) or a positive number of seconds, got {timeout}", 1)

        cid = cell_id(self.shell)
        replaces = None
        name = args.name
        if name is None:
            previous = registry.find_unnamed(target, cell_id=cid, condition=condition, message=message)
            if previous is not None and registry.constraints[previous].spec.target == target:
                name = previous
            else:
                replaces = previous
                name = registry.next_constraint_name(target)
        elif cid is not None:
            # the same cell renamed its constraint: the old name goes away
            old = [n for n, e in registry.constraints.items() if e.spec.cell_id == cid and n != name]
            replaces = old[0] if old else None
        existed = name in registry.constraints
        spec = ConstraintSpec(
            name=name,
            target=target,
            condition=condition,
            message=message,
            hard=bool(args.hard),
            max_backtracks=args.backtracks,
            timeout=timeout,
            line=cond_line,
            message_line=msg_line,
            auto_name=args.name is None,
            cell_id=cid,
            source=cell,
        )
        with user_errors():
            outcome = registry.define_constraint(spec, self.user_ns, replaces=replaces)
        verb = "Redefined" if existed else "Added"
        if existed and not outcome.changed:
            verb = "Re-ran (unchanged)"
        budget = "shared backtracks" if args.backtracks is None else f"at most {args.backtracks} backtrack(s)"
        limit = "no time limit" if timeout is None else f"{timeout:g}s per check"
        print(f"{verb} {spec.kind} constraint {name} on {target} ({budget}, {limit})")
        for note in outcome.notes:
            print(f"Note: {note}")
