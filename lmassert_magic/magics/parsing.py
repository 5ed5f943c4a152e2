"""Shared parsing of magic lines and cell bodies, and the one-line errors the magics raise.

Every body must tokenise as Python (JupyterLab highlights cell-magic bodies as Python), and is
parsed with `ast`, never executed as a whole. Line numbers in errors count the `%%magic` line as
line 1, as Jupyter shows them.

User mistakes become a plain `UsageError` ("line 3: unknown name 'tweeet' ...; did you mean
'tweet'?"): IPython prints it as one line, without a traceback.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import inspect
import io
import keyword
import tokenize
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, NoReturn

from IPython.core.error import UsageError
from IPython.core.magic import Magics
from IPython.core.magic_arguments import parse_argstring

from ..definitions.specs import FieldSpec, RegistryError, SignatureSpec, StepRef, closest
from ..definitions.store import get_registry

FIRST_BODY_LINE = 2  # the body's first line is cell line 2; the %%magic line is line 1

IN_MARKERS = ("In", "Input", "InputField")
OUT_MARKERS = ("Out", "Output", "OutputField")
FIELD_KEYWORDS = ("desc", "prefix")

__all__ = [
    "FIRST_BODY_LINE",
    "RegistryMagics",
    "cell_id",
    "check_identifier",
    "check_tokens",
    "fail",
    "parse_assert_body",
    "parse_line",
    "parse_pipeline_body",
    "parse_signature_body",
    "user_errors",
]


#: An error quoting a huge cell (a 100,000-character line, a giant name) is cut to this length.
MAX_ERROR_CHARS = 600


def one_line(text: str) -> str:
    """IPython prints a UsageError as one line; keep it one (pydantic and argparse messages wrap),
    and readable: the middle of a very long one is cut (the problem is named first, hints come last)."""
    line = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    if len(line) > MAX_ERROR_CHARS:
        tail = MAX_ERROR_CHARS // 4
        cut = len(line) - MAX_ERROR_CHARS
        line = f"{line[: MAX_ERROR_CHARS - tail]} …({cut:,} characters cut)… {line[-tail:]}"
    return line


def fail(message: str, line: int | None = None, *, name: str | None = None,
         candidates: Iterable[str] = ()) -> NoReturn:
    """Raise a one-line UsageError, naming the cell line and the closest candidate for `name`."""
    if name is not None:
        hint = closest(name, candidates)
        if hint:
            message += f"; did you mean {hint!r}?"
    raise UsageError(one_line(f"line {line}: {message}" if line else message))


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Registry mistakes (RegistryError) surface as UsageError; anything else propagates as is."""
    try:
        yield
    except RegistryError as exc:
        raise UsageError(one_line(str(exc))) from None


def parse_line(magic: Callable[..., Any], line: str, *, where: str = "line 1",
               clean: Callable[[str], str] = one_line) -> Any:
    """Parse a magic line with its `magic_arguments` parser; problems are '<where>: ...' UsageErrors.

    IPython splits magic lines without removing quotes (so Windows paths keep their backslashes);
    a value written in quotes (`--settings "vanilla, compile"`, a path with spaces) loses them here.
    `where` starts the message (a line magic says its own name: `%lm: ...`); `clean` makes it one
    line (and may blank secrets the line could hold).
    """
    try:
        args = parse_argstring(magic, line)
    except UsageError as exc:
        raise UsageError(clean(f"{where}: {exc}")) from None
    except ValueError as exc:  # unbalanced quotes in the line
        raise UsageError(clean(f"{where}: cannot split the arguments ({exc})")) from None
    for key, value in vars(args).items():
        if isinstance(value, str):
            setattr(args, key, _unquote(value))
        elif isinstance(value, list):
            setattr(args, key, [_unquote(v) if isinstance(v, str) else v for v in value])
    return args


def _unquote(value: str) -> str:
    return value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value


def check_identifier(value: str, what: str, line: int = 1) -> str:
    """Names bound in the notebook must be Python names (this also catches unexpanded `{x}` / `$x`)."""
    if not value.isidentifier() or keyword.iskeyword(value):
        fail(f"{what} {value!r} is not a valid Python name", line)
    return value


def check_tokens(body: str, first_line: int = FIRST_BODY_LINE) -> list[tokenize.TokenInfo]:
    """The body's tokens; a body that doesn't tokenise as Python is a UsageError naming the line."""
    tokens: list[tokenize.TokenInfo] = []
    opened: list[tokenize.TokenInfo] = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(body).readline):
            tokens.append(tok)
            if tok.type == tokenize.OP and tok.string in "([{":
                opened.append(tok)
            elif tok.type == tokenize.OP and tok.string in ")]}":
                if not opened:  # else tokenize counts it as an opener and reports EOF past the last line
                    fail(f"the body does not tokenise as Python: {tok.string!r} closes nothing",
                         first_line + tok.start[0] - 1)
                opened.pop()
    except tokenize.TokenError as exc:
        message, (row, _) = exc.args
        if "statement" in message and opened:  # point at the bracket that never closes
            tok = opened[-1]
            fail(f"the body does not tokenise as Python: {tok.string!r} is never closed", first_line + tok.start[0] - 1)
        fail(f"the body does not tokenise as Python ({message.lower()})", first_line + row - 1)
    except (SyntaxError, IndentationError) as exc:  # Python 3.12+ reports bad tokens this way
        fail(f"the body does not tokenise as Python ({exc.msg})", first_line + (exc.lineno or 1) - 1)
    for tok in tokens:
        if tok.type == tokenize.ERRORTOKEN and not tok.string.isspace():
            what = "an unterminated string" if tok.string in ("'", '"') else f"the character {tok.string!r}"
            fail(f"the body does not tokenise as Python: {what}", first_line + tok.start[0] - 1)
    return tokens


def _parse_module(body: str, first_line: int) -> ast.Module:
    try:
        return ast.parse(body)
    except SyntaxError as exc:
        fail(f"invalid Python: {exc.msg}", first_line + (exc.lineno or 1) - 1)


def _within_parser_limits(parse: Callable[..., Any]) -> Callable[..., Any]:
    """Python's parser and compiler give up on very deep nesting (RecursionError, or MemoryError for a
    parser stack overflow): that is a mistake in the cell, reported like any other, not a crash."""

    @functools.wraps(parse)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return parse(*args, **kwargs)
        except (RecursionError, MemoryError):
            first_line = kwargs.get("first_line", FIRST_BODY_LINE)
            fail("the body is nested too deeply for Python to parse (thousands of `not`, `-`, `[...]` or `>>`); "
                 "simplify it, or move the logic into a function in a normal cell", first_line)

    return guarded


def _significant(tokens: Iterable[tokenize.TokenInfo]) -> list[tokenize.TokenInfo]:
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    return [t for t in tokens if t.type not in skip and not (t.type == tokenize.ERRORTOKEN and t.string.isspace())]


def _offset(body: str, row: int, col: int) -> int:
    lines = body.splitlines(keepends=True)
    return sum(len(line) for line in lines[: row - 1]) + col


# ---------------------------------------------------------------- %%signature


@_within_parser_limits
def parse_signature_body(name: str, body: str, *, cot: bool = False,
                         first_line: int = FIRST_BODY_LINE) -> SignatureSpec:
    """A `%%signature` body: a docstring, then `field: type = In(...)/Out(...)` lines, or the
    DSPy shorthand `question, context: list[str] -> answer` (optionally after a docstring)."""
    if not body.strip():
        fail("the body is empty: write a docstring and fields like `question: str = In()`, "
             "or `question -> answer`", first_line)
    tokens = check_tokens(body, first_line)
    depth = 0
    arrow = None
    for tok in tokens:
        if tok.type == tokenize.OP and tok.string in "([{":
            depth += 1
        elif tok.type == tokenize.OP and tok.string in ")]}":
            depth -= 1
        elif tok.type == tokenize.OP and tok.string == "->" and depth == 0:
            arrow = tok
            break
    if arrow is not None:
        return _parse_shorthand(name, body, tokens, arrow, cot=cot, first_line=first_line)
    return _parse_class_body(name, body, cot=cot, first_line=first_line)


def _parse_shorthand(name: str, body: str, tokens: list[tokenize.TokenInfo], arrow: tokenize.TokenInfo, *,
                     cot: bool, first_line: int) -> SignatureSpec:
    sig = _significant(tokens)
    instructions = None
    start = sig[0]
    if sig[0].type == tokenize.STRING and len(sig) > 1 and sig[1].start[0] > sig[0].end[0]:
        try:
            instructions = inspect.cleandoc(ast.literal_eval(sig[0].string))
        except (ValueError, SyntaxError):
            fail("the docstring must be a plain string", first_line + sig[0].start[0] - 1)
        start = sig[1]
    arrow_line = first_line + arrow.start[0] - 1
    left = body[_offset(body, *start.start): _offset(body, *arrow.start)]
    right = body[_offset(body, *arrow.end):]
    fields: list[FieldSpec] = []
    for role, text, row in (("input", left, start.start[0]), ("output", right, arrow.end[0])):
        if not text.strip():
            fail(f"the shorthand has no {role} fields: write `question, context -> answer`", arrow_line)
        if "->" in text and role == "output":
            fail("the shorthand has more than one '->'", arrow_line)
        try:
            args = ast.parse(f"def f({text}): pass").body[0].args  # type: ignore[attr-defined]
        except SyntaxError:
            fail(f"bad {role} fields {' '.join(text.split())!r}: write names, optionally typed "
                 "(`question: str, context: list[str] -> answer`)", arrow_line)
        if args.defaults or args.kw_defaults or args.vararg or args.kwarg or args.kwonlyargs or args.posonlyargs:
            fail(f"bad {role} fields {' '.join(text.split())!r}: the shorthand takes names and types only; "
                 "use `name: type = In(desc=...)` lines for descriptions", arrow_line)
        for arg in args.args:
            fields.append(FieldSpec(arg.arg, role, ast.unparse(arg.annotation) if arg.annotation else "",
                                    line=first_line + row - 1 + arg.lineno - 1))
    return SignatureSpec(name, tuple(fields), instructions, cot, body)


def _marker(call: ast.expr) -> str | None:
    func = call.func if isinstance(call, ast.Call) else None
    if isinstance(func, ast.Name):
        name = func.id
    elif isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "dspy":
        name = func.attr
    else:
        return None
    if name in IN_MARKERS:
        return "input"
    if name in OUT_MARKERS:
        return "output"
    return None


def _literal_str(node: ast.expr, what: str, line: int) -> str:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    fail(f"{what} must be a plain string literal", line)


def _parse_class_body(name: str, body: str, *, cot: bool, first_line: int) -> SignatureSpec:
    tree = _parse_module(body, first_line)
    instructions = None
    fields: list[FieldSpec] = []
    for index, stmt in enumerate(tree.body):
        line = first_line + stmt.lineno - 1
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str):
            if index != 0:
                fail("a docstring (the instructions) must come first", line)
            instructions = inspect.cleandoc(stmt.value.value)
            continue
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            fname, annotation, value = stmt.target.id, ast.unparse(stmt.annotation), stmt.value
        elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            fname, annotation, value = stmt.targets[0].id, "", stmt.value
        else:
            fail("expected a field like `question: str = In()` or `answer: str = Out(desc=\"...\")`, "
                 f"got `{ast.get_source_segment(body, stmt) or type(stmt).__name__}`", line)
        if value is None:
            fail(f"field {fname!r} needs a marker: `{fname}: {annotation} = In()` or `= Out()`", line)
        role = _marker(value)
        if role is None:
            got = ast.unparse(value.func) if isinstance(value, ast.Call) else ast.unparse(value)
            fail(f"field {fname!r}: expected In(...) or Out(...), got {got!r}", line, name=got,
                 candidates=IN_MARKERS + OUT_MARKERS)
        assert isinstance(value, ast.Call)
        desc = prefix = None
        if len(value.args) > 1:
            fail(f"field {fname!r}: at most one positional argument (the description)", line)
        if value.args:
            desc = _literal_str(value.args[0], f"field {fname!r}: the description", line)
        given = {"desc"} if value.args else set()
        for kw in value.keywords:
            if kw.arg is None:
                fail(f"field {fname!r}: `**{ast.unparse(kw.value)}` cannot be read without running it; "
                     "write desc=\"...\" or prefix=\"...\"", line)
            if kw.arg not in FIELD_KEYWORDS:
                fail(f"field {fname!r}: unknown argument {kw.arg!r} (use desc= or prefix=)", line,
                     name=kw.arg, candidates=FIELD_KEYWORDS)
            if kw.arg in given:  # Python itself rejects a repeated keyword; `In("d", desc="e")` says it twice too
                fail(f"field {fname!r}: the {'description' if kw.arg == 'desc' else kw.arg} is given twice", line)
            given.add(kw.arg)
            text = _literal_str(kw.value, f"field {fname!r}: {kw.arg}", line)
            if kw.arg == "desc":
                desc = text
            else:
                prefix = text
        fields.append(FieldSpec(fname, role, annotation, desc, prefix, line))
    return SignatureSpec(name, tuple(fields), instructions, cot, body)


# ---------------------------------------------------------------- %%assert


@_within_parser_limits
def parse_assert_body(body: str, first_line: int = FIRST_BODY_LINE) -> tuple[str, int, str | None, int | None]:
    """A `%%assert` body: a condition expression, then optionally the feedback string / f-string.

    Returns (condition source, its cell line, message source or None, its cell line or None).
    """
    if not body.strip():
        fail("the body is empty: write a condition over the fields, then the feedback message on the next line, "
             "e.g. `len(tweet) <= 280` then `\"Make the tweet shorter.\"`", first_line)
    check_tokens(body, first_line)
    tree = _parse_module(body, first_line)
    if not tree.body:
        fail("the body is empty (only comments): write a condition over the fields, then the feedback message",
             first_line)
    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            fail(f"expected an expression, got {type(stmt).__name__.lower()} "
                 f"`{(ast.get_source_segment(body, stmt) or '').splitlines()[0]}`; define helpers in a normal cell "
                 "and use them here", first_line + stmt.lineno - 1)
    if len(tree.body) > 2:
        fail("a %%assert body is one condition and one message; put another constraint in its own cell",
             first_line + tree.body[2].lineno - 1)
    cond = tree.body[0].value  # type: ignore[attr-defined]
    # the statement's line, not the value's: the source kept below starts at an enclosing '(' line
    cond_line = first_line + tree.body[0].lineno - 1
    if isinstance(cond, ast.JoinedStr) or (isinstance(cond, ast.Constant) and isinstance(cond.value, str)):
        fail("the first expression is the condition, and it is a string here; write the condition first, "
             "then the message", cond_line)
    if isinstance(cond, ast.Tuple):
        fail("the condition is a tuple (a stray comma?); put the message on its own line", cond_line)
    cond_src = ast.get_source_segment(body, tree.body[0])  # the statement keeps enclosing parentheses
    assert cond_src is not None
    msg_src = msg_line = None
    if len(tree.body) == 2:
        msg = tree.body[1].value  # type: ignore[attr-defined]
        msg_line = first_line + tree.body[1].lineno - 1
        if not (isinstance(msg, ast.JoinedStr) or (isinstance(msg, ast.Constant) and isinstance(msg.value, str))):
            fail("the second expression is the feedback message and must be a string or an f-string", msg_line)
        msg_src = ast.get_source_segment(body, tree.body[1])
    return cond_src, cond_line, msg_src, msg_line


# ---------------------------------------------------------------- %%compile


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return f"{base}.{node.attr}" if base else None
    return None


@_within_parser_limits
def parse_pipeline_body(body: str, first_line: int = FIRST_BODY_LINE) -> tuple[StepRef, ...]:
    """A `%%compile` body: steps joined with `>>` (and/or one per line), or one dspy.Module name."""
    if not body.strip():
        fail("the body is empty: write the pipeline, e.g. `retrieve >> GenerateTweet`, or the name of a "
             "dspy.Module subclass", first_line)
    check_tokens(body, first_line)
    try:
        tree = ast.parse(body)
    except SyntaxError:
        try:  # a chain broken over lines (`retrieve\n>> GenerateTweet`) reads as one parenthesised expression
            tree = ast.parse("(\n" + body + "\n)")
            ast.increment_lineno(tree, -1)
        except SyntaxError:
            tree = _parse_module(body, first_line)  # report the error as the body has it
    steps: list[StepRef] = []

    def flatten(root: ast.expr) -> None:
        pending = [root]  # a stack, not recursion: a long chain is a deep left-leaning tree
        while pending:
            node = pending.pop()
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.RShift):
                pending += [node.right, node.left]
                continue
            line = first_line + node.lineno - 1
            ref = _dotted(node)
            if ref is None:
                if isinstance(node, ast.BinOp):
                    fail("join pipeline steps with >>", line)
                fail(f"a pipeline step must be a name (a registered signature, a function or a dspy.Module), got "
                     f"`{ast.unparse(node)}`; assign it to a variable in a normal cell first", line)
            steps.append(StepRef(ref, line))

    for stmt in tree.body:
        if not isinstance(stmt, ast.Expr):
            fail("the body declares the pipeline only, e.g. `retrieve >> GenerateTweet`", first_line + stmt.lineno - 1)
        flatten(stmt.value)
    return tuple(steps)


# ---------------------------------------------------------------- notebook context


def cell_id(shell: Any) -> str | None:
    """The Jupyter cell id of the running cell (JupyterLab sends it), so re-running a cell replaces
    what it defined; None outside a kernel."""
    try:
        kernel = getattr(shell, "kernel", None)
        parent = kernel.get_parent() if kernel is not None else getattr(shell, "parent_header", None)
        metadata = (parent or {}).get("metadata") or {}
        value = metadata.get("cellId")
        return str(value) if value else None
    except Exception:
        return None


class RegistryMagics(Magics):
    """Shared helpers: the registry, the user namespace, and binding names without clobbering data."""

    @property
    def registry(self) -> Any:
        return get_registry()

    @property
    def user_ns(self) -> dict[str, Any]:
        return self.shell.user_ns  # type: ignore[union-attr]

    def check_bindable(self, name: str, ok: Callable[[Any], bool], what: str) -> None:
        """NAME may only replace a notebook variable of the kind the magic binds (never, say, a dataset)."""
        if name in self.user_ns and not ok(self.user_ns[name]):
            fail(f"{name!r} is already a notebook variable ({type(self.user_ns[name]).__name__}); "
                 f"choose another name for the {what}", 1)

    def lookup(self, name: str, flag: str, *, predicate: Callable[[Any], bool] | None = None,
               kind: str = "variable") -> Any:
        """A notebook variable named on the magic line; unknown names get a closest-name hint."""
        ns: Mapping[str, Any] = self.user_ns
        parts = name.split(".")
        if not all(p.isidentifier() for p in parts):
            fail(f"{flag} takes a notebook variable name, got {name!r}", 1)
        if parts[0] not in ns:
            pool = [k for k, v in ns.items() if not k.startswith("_") and (predicate is None or predicate(v))]
            fail(f"{flag}: no notebook variable named {name!r}", 1, name=parts[0], candidates=pool)
        value = ns[parts[0]]
        for attr in parts[1:]:
            try:
                value = getattr(value, attr)
            except AttributeError:
                fail(f"{flag}: {name!r} has no attribute {attr!r}", 1)
        return value

    def unbind(self, name: str, value: Any) -> bool:
        """Remove a notebook variable only if it still holds what the extension put there."""
        if name in self.user_ns and self.user_ns[name] is value:
            del self.user_ns[name]
            return True
        return False
