"""Malformed `%%signature`, `%%assert` and `%%compile` cells, generated with Hypothesis.

Every generated cell is malformed by construction (broken syntax, unknown names, wrong types, empty
bodies, huge bodies, unicode), and every one must end in a plain one-line `UsageError` that names the
problem, with the registry byte-for-byte unchanged (`snapshot_json()`) and the notebook's public
names unchanged. The cells run through a real InteractiveShell with the extension loaded, over a
registry that already holds signatures, a constraint and a compiled program.

The number of cells tried per magic is counted (`TRIED`) and checked by the last test (>= 500 in all).
"""

from __future__ import annotations

import collections
import contextlib
import keyword
import re
import sys
import unicodedata
from collections.abc import Iterator

import dspy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from lmassert_magic.registry import get_registry
from lmassert_magic.testing import ScriptedLM

from helpers import GENERATE_TWEET_CELL

#: Cells tried per magic (checked by test_at_least_500_malformed_cells_were_tried).
TRIED: collections.Counter[str] = collections.Counter()
EXAMPLES = {"signature": 200, "assert": 200, "compile": 160}
#: A UsageError may name what the user wrote, but a huge cell must not become a huge error line.
MAX_MESSAGE = 2000

SETUP = '''
import math
import re
import dspy

def retrieve(question):
    return ["fact about " + question]

def quality(example, pred, trace=None):
    return float("#" not in pred.tweet)

def positional_only(question, /):
    return {"context": [question]}

class Pipe(dspy.Module):
    def __init__(self):
        super().__init__()

trainset = [dspy.Example(question=f"q{i}", answer="a").with_inputs("question") for i in range(3)]
devset = [dspy.Example(question=f"d{i}", answer="a").with_inputs("question") for i in range(2)]
raw = [{"question": "q"}]
strs = ["a", "b"]
number = 3
text = "abc"
table = {"question": "q"}
empty = []
no_inputs = [dspy.Example(question="q")]
'''

VALID_BODY = GENERATE_TWEET_CELL.split("\n", 1)[1]
OTHER = "%%signature Other\nquestion -> answer\n"
NO_HASHTAGS = '%%assert GenerateTweet --name no_hashtags\nnot re.search(r"#\\w+", tweet)\n"Remove hashtags."\n'
COMPILED = ("%%compile tweeter --train trainset --dev devset --metric quality --settings vanilla\n"
            "retrieve >> GenerateTweet\n")
COMPILE_LINE = "%%compile prog --train trainset --dev devset --metric quality"
NOTEBOOK_NAMES = ["math", "re", "dspy", "retrieve", "quality", "positional_only", "Pipe", "trainset", "devset", "raw",
                  "strs", "number", "text", "table", "empty", "no_inputs", "tweeter", "GenerateTweet", "Other"]
HIDDEN = {"In", "Out", "exit", "quit", "get_ipython"}


def public_names(ip) -> dict[str, int]:
    return {k: id(v) for k, v in ip.user_ns.items() if not k.startswith("_") and k not in HIDDEN}


@pytest.fixture
def notebook(ip):
    """A notebook with two signatures, a constraint and a compiled program (over a scripted LM)."""
    lm = ScriptedLM(lambda messages: {"tweet": "a #tweet", "answer": "x"})
    with dspy.context(lm=lm):
        for cell in (SETUP, GENERATE_TWEET_CELL, OTHER, NO_HASHTAGS, COMPILED):
            ip.run_cell(cell)
        assert set(get_registry().names()) == {"GenerateTweet", "Other", "no_hashtags", "tweeter"}
        yield ip


@contextlib.contextmanager
def kernel_recursion_limit() -> Iterator[None]:
    """Hypothesis raises the recursion limit while it runs a test; a kernel runs cells with Python's 1000,
    which is what decides whether a deeply nested (but otherwise valid) expression still parses."""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(min(limit, 1000))
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)


def expect_usage_error(ip, magic: str, cell: str, pattern: str) -> str:
    """Run a malformed cell: a plain one-line UsageError matching `pattern`, and nothing changed."""
    TRIED[magic] += 1
    before, names_before = get_registry().snapshot_json(), public_names(ip)
    with pytest.raises(UsageError) as info, kernel_recursion_limit():
        ip.run_cell(cell)
    message = str(info.value)
    assert type(info.value) is UsageError, f"{type(info.value).__name__} prints a traceback: {message}"
    assert message.strip() and "\n" not in message, repr(message)
    assert len(message) <= MAX_MESSAGE, f"a {len(message)}-character error line"
    assert re.search(pattern, message, re.IGNORECASE | re.DOTALL), (pattern, message[:500], cell[:300])
    assert get_registry().snapshot_json() == before, cell[:300]
    assert public_names(ip) == names_before, cell[:300]
    return message


# ---------------------------------------------------------------- building blocks

SYMBOLS = st.characters(min_codepoint=0x80, max_codepoint=0x1FFFF,
                        categories=["So", "Sm", "Sc", "Sk", "Pd", "Po", "Ps", "Pe", "Pi", "Pf"]).filter(
    lambda c: not ("a" + c).isidentifier())
#: Characters that never tokenise as Python outside a string or a comment.
BAD_CHARS = st.one_of(st.sampled_from(["$", "?", "`", "\x00", "\x7f", "\u200b", "\u202e", "\ufeff"]), SYMBOLS)
UNKNOWN = st.from_regex(r"zz[a-z0-9_]{1,12}", fullmatch=True)
UNICODE_UNKNOWN = st.text(alphabet=st.characters(categories=["Lo", "Ll", "Lu"], min_codepoint=0x100),
                          min_size=1, max_size=8).map(lambda s: "zz" + s).filter(
    lambda s: s.isidentifier() and unicodedata.normalize("NFKC", s) == s)
NOT_NAMES = st.one_of(
    st.sampled_from(["1abc", "class", "def", "None", "a-b", "{x}", "$x", "a.b", "9", "é-1", "名前→", "x y"]),
    st.builds(lambda c, s: s + c, BAD_CHARS.filter(lambda c: c not in "\x00\x7f\ufeff"), UNKNOWN),
)
RANDOM_TEXT = st.text(alphabet=st.characters(exclude_categories=["Cs"]), min_size=1, max_size=60)


def lines_of(body: str) -> list[str]:
    return body.rstrip("\n").split("\n")


def insert_line(body: str, line: str, where: int) -> str:
    lines = lines_of(body)
    lines.insert(min(where, len(lines)), line)
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- %%signature

SIG_NAMES = st.sampled_from(["GenerateTweet", "NewSig", "Other"])
SIG_BREAKERS = ["(", "[", "{", '"unterminated', "'''never closed", ")", "]", "q: = In()", "def", "->->", ":=",
                "else:", "q: str = In(", "a: str = Out(desc='x'"]
NOT_TYPES = ["3", "3.5", "[str]", "{str: int}", "...", "1/0", "str.upper", "print", "trainset", "dict[str]",
             "int | 'x'", "list[str](3)", "quality()", "(yield)", "text", "'3'", "dspy.Module", "Literal[", "None + 1"]
BAD_MARKERS = ["In(desc=3)", "In(desc=None)", "In('a', 'b')", "In(prefix=[])", "In(desc=f'x')", "In(foo='x')",
               "In(*args)", "In(**kw)", "Out(desc=b'x')", "Input(desc=number)", "Out(prefix=text)", "In",
               "In()()", "x.In()", "dspy.In(3)", "3", "'text'", "In(desc='a', desc='b')"]
NOT_FIELDS = ["x = 3", "import os", "def f(): pass", "for i in x: pass", "print('x')", "x.y: str = In()",
              "a, b = In()", "a = b = Out()", "a += Out()", "del x", "pass", "if True:\n    a: str = Out()",
              "q: str", "@dec\ndef f(): pass", "class C: pass", "with x: pass", "return 1", "'''doc''' + 1"]
CLASHING_FIELDS = ["feedback", "past_tweet", "instructions", "signature", "fields", "input_fields", "output_fields",
                   "model_config", "__x", "_private", "question", "tweet"]


@st.composite
def signature_cells(draw) -> tuple[str, str]:
    name = draw(SIG_NAMES)
    kind = draw(st.sampled_from(["empty", "syntax", "unknown", "not_type", "marker", "not_field", "clash",
                                 "roles", "line", "huge", "deep", "unicode", "random"]))
    head = f"%%signature {name}"
    if kind == "empty":
        body = draw(st.sampled_from(["", "\n", "   \n\t\n", "# comment\n", "\n# a\n# b\n", '"""Only a docstring."""\n',
                                     '"""doc"""\n# and a comment\n']))
        return f"{head}\n{body}", r"empty|no output field|no input field"
    if kind == "syntax":
        breaker = draw(st.sampled_from(SIG_BREAKERS))
        where = draw(st.integers(0, 5))
        if draw(st.booleans()):
            body = insert_line(VALID_BODY, breaker, where)
        else:  # appended to the end of a line
            lines = lines_of(VALID_BODY)
            i = where % len(lines)
            lines[i] += " " + breaker
            body = "\n".join(lines) + "\n"
        return f"{head}\n{body}", r"^line \d+: "
    if kind == "unknown":
        unknown = draw(st.one_of(UNKNOWN, UNICODE_UNKNOWN))
        form = draw(st.sampled_from(["type", "inner", "marker", "shorthand", "quoted"]))
        if form == "type":
            body = insert_line(VALID_BODY, f"extra: {unknown} = In()", draw(st.integers(1, 4)))
        elif form == "quoted":  # a forward reference: would fail on every example, not when defined
            body = insert_line(VALID_BODY, f"extra: '{unknown}' = In()", draw(st.integers(1, 4)))
        elif form == "inner":
            body = insert_line(VALID_BODY, f"extra: dict[str, list[{unknown}]] = Out()", draw(st.integers(1, 4)))
        elif form == "marker":
            body = insert_line(VALID_BODY, f"extra: str = {unknown}()", draw(st.integers(1, 4)))
        else:
            body = f"question, extra: {unknown} -> answer\n"
        return f"{head}\n{body}", re.escape(repr(unknown))
    if kind == "not_type":
        bad = draw(st.sampled_from(NOT_TYPES))
        field = draw(st.sampled_from(["extra", "tweet", "context"]))
        if field == "extra":
            body = insert_line(VALID_BODY, f"extra: {bad} = Out()", draw(st.integers(1, 4)))
        else:
            body = re.sub(rf"^{field}: [^=]+=", f"{field}: {bad} =", VALID_BODY, flags=re.M)
        return f"{head}\n{body}", r"field|type|line \d+"
    if kind == "marker":
        bad = draw(st.sampled_from(BAD_MARKERS))
        body = insert_line(VALID_BODY, f"extra: str = {bad}", draw(st.integers(1, 4)))
        return f"{head}\n{body}", r"^line \d+: .*(extra|In|Out)"
    if kind == "not_field":
        bad = draw(st.sampled_from(NOT_FIELDS))
        body = insert_line(VALID_BODY, bad, draw(st.integers(1, 4)))
        return f"{head}\n{body}", r"^line \d+: "
    if kind == "clash":
        field = draw(st.sampled_from(CLASHING_FIELDS))
        role = draw(st.sampled_from(["In", "Out"]))
        body = VALID_BODY + f"{field}: str = {role}()\n"
        if field == "reasoning":
            head += " --cot"
        return f"{head}\n{body}", rf"{re.escape(field)}"
    if kind == "roles":
        body = draw(st.sampled_from([
            "question: str = In()\ncontext: str = In()\n", "tweet: str = Out()\n", '"""doc"""\nanswer: str = Out()\n',
            "question -> \n", "-> answer\n", "question -> answer -> more\n", "q, q -> a\n", "q -> q\n",
            "question = In()\nquestion = Out()\n", "q: str = In()\nreasoning: str = Out()\n",
        ]))
        if "reasoning" in body:
            head += " --cot"
        return f"{head}\n{body}", r"output|input|field|shorthand|'->'|twice|reasoning"
    if kind == "line":
        bad = draw(st.one_of(NOT_NAMES, st.sampled_from(
            ["trainset", "quality", "no_hashtags", "tweeter", "forward", "named_predictors", "GenerateTweet Extra",
             "GenerateTweet --bogus", "", "'unclosed", "GenerateTweet --cot=yes"])))
        return f"%%signature {bad}\nquestion -> answer\n", r"^line 1: "
    if kind == "huge":
        n = draw(st.integers(2000, 6000))
        form = draw(st.sampled_from(["many_fields", "long_line", "long_doc", "long_shorthand"]))
        unknown = draw(UNKNOWN)
        if form == "many_fields":
            body = "".join(f"f{i}: str = In()\n" for i in range(n)) + f"out: {unknown} = Out()\n"
            return f"{head}\n{body}", re.escape(repr(unknown))
        if form == "long_line":
            return f"{head}\n{unknown * (n // len(unknown) * 10)}\n", r"^line 2: "
        if form == "long_doc":
            return f'{head}\n"""{"word " * n}"""\nquestion: str = In()\n', r"no output field"
        fields = ", ".join(f"f{i}" for i in range(n))
        return f"{head}\n{fields}, {unknown}: {unknown} -> answer\n", re.escape(repr(unknown))
    if kind == "deep":
        n = draw(st.integers(250, 3000))
        form = draw(st.sampled_from(["list", "paren", "union", "call"]))
        inner = {"list": "list[" * n + "str" + "]" * n, "paren": "(" * n + "str" + ")" * n,
                 "union": " | ".join(["int"] * n) + " | zzunknown", "call": "dict" + "(" * n + ")" * n}[form]
        return f"{head}\nquestion: {inner} = In()\nanswer: str = Out()\n", r"line \d+|field|type|nested|deep"
    if kind == "unicode":
        form = draw(st.sampled_from(["field", "type", "arrow", "marker"]))
        ch = draw(BAD_CHARS)
        word = draw(st.from_regex(r"[a-z]{1,6}", fullmatch=True))
        if form == "field":
            body = insert_line(VALID_BODY, f"{word}{ch}x: str = In()", draw(st.integers(1, 4)))
        elif form == "type":
            body = insert_line(VALID_BODY, f"{word}: str{ch} = In()", draw(st.integers(1, 4)))
        elif form == "arrow":
            body = f"question{ch}{word} -> answer\n"
        else:
            body = insert_line(VALID_BODY, f"{word}: str = In{ch}()", draw(st.integers(1, 4)))
        return f"{head}\n{body}", r"^line \d+: "
    # random text that can be neither a field line ('=') nor the shorthand ('->')
    junk = draw(RANDOM_TEXT.filter(lambda t: "=" not in t and "->" not in t and "\r" not in t and "\x0c" not in t))
    return f"{head}\n{junk}\n", r"line \d+|output field|empty|docstring"


@settings(max_examples=EXAMPLES["signature"], deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=signature_cells())
def test_malformed_signature_cells_are_one_line_usage_errors(notebook, case):
    cell, pattern = case
    expect_usage_error(notebook, "signature", cell, pattern)


# ---------------------------------------------------------------- %%assert

GOOD_CONDITIONS = ["len(tweet) <= 280", 'not re.search(r"#\\w+", tweet)', "question.lower() in tweet.lower()",
                   "all(len(c) < 500 for c in context)", "bool(tweet)"]
ASSERT_BREAKERS = ["len(tweet) <", "(tweet", "tweet ==", '"unterminated', 'f"{tweet"', "lambda:", "not",
                   "tweet[", "if tweet", "tweet +* 2", "tweet)", "[t for t in]", "tweet = 3 ==", "**tweet",
                   "tweet if", "len(tweet) <= 280 and", "{tweet:", "tweet.", "f'{tweet!z}'", "'\\N{BOGUS}' in tweet"]
#: Never valid right after a complete condition.
SUFFIX_BREAKERS = [" (", " [", ' "unterminated', " ==", ")", " if", " +* 2", " .", " else", " lambda:", " {", " ,,"]
MISSPELT = {"tweet": ["tweeet", "twet", "Tweet", "tweets"], "question": ["questoin", "qestion", "Question"],
            "context": ["contxt", "contexts"]}
NOT_MESSAGES = ["3", "None", "['x']", "b'x'", '"a" + "b"', "tweet", "f'{tweet}'.upper()", "print('x')", "...",
                "len(tweet)", "('a', 'b')"]
STATEMENTS = ["x = 1", "import os", "def f(): pass", "for t in tweet: pass", "with x: pass", "return True",
              "del tweet", "pass", "global x", "assert tweet", "raise ValueError", "tweet += 'x'", "x: int = 1",
              "if tweet:\n    pass", "try:\n    pass\nexcept Exception:\n    pass"]
ASSERT_LINES = [
    "GenerateTweet --backtracks -1", "GenerateTweet --backtracks x", "GenerateTweet --backtracks 1.5",
    "GenerateTweet --timeout -1", "GenerateTweet --timeout x", "GenerateTweet --timeout nan",
    "GenerateTweet --timeout inf", "GenerateTweet --timeout -inf", "GenerateTweet --soft --hard",
    "GenerateTweet --name", "GenerateTweet 'unclosed", "GenerateTweet extra", "GenerateTweet --bogus",
    "GenerateTweet --name GenerateTweet", "GenerateTweet --name tweeter", "GenerateTweet --name Other",
    "GenerateTweat", "GeneratTweet", "generatetweet", "trainset", "quality", "no_hashtags", "tweeter", "",
    "GenerateTweet --hard=1",
]


@st.composite
def assert_cells(draw) -> tuple[str, str]:
    kind = draw(st.sampled_from(["empty", "syntax", "unknown", "misspelt", "message", "condition", "statement",
                                 "three", "yield", "line", "name", "fields", "huge", "deep", "unicode", "random"]))
    head = "%%assert GenerateTweet" + draw(st.sampled_from(["", " --name checked", " --hard", " --soft -b 1"]))
    cond = draw(st.sampled_from(GOOD_CONDITIONS))
    if kind == "empty":
        body = draw(st.sampled_from(["", "\n", "  \n\t\n", "# only a comment\n", "\n# a\n\n# b\n"]))
        return f"{head}\n{body}", r"empty"
    if kind == "syntax":
        bad = draw(st.sampled_from(ASSERT_BREAKERS))
        form = draw(st.integers(0, 2))
        tail = draw(st.sampled_from(SUFFIX_BREAKERS))
        body = [f"{bad}\n\"Fix it.\"\n", f"{cond}\n{bad}\n", f"{cond}{tail}\n\"Fix it.\"\n"][form]
        return f"{head}\n{body}", r"^line [23]: "
    if kind == "unknown":
        unknown = draw(st.one_of(UNKNOWN, UNICODE_UNKNOWN))
        form = draw(st.sampled_from(["cond", "call", "comprehension", "message", "attribute", "default"]))
        body = {
            "cond": f"{unknown} in tweet\n\"Fix it.\"\n",
            "call": f"{unknown}(tweet)\n",
            "comprehension": f"all({unknown}(c) for c in context)\n\"Fix.\"\n",
            "message": f"{cond}\nf\"Tweet {{tweet!r}} broke {{{unknown}}}.\"\n",
            "attribute": f"{unknown}.check(tweet) and {cond}\n",
            "default": f"(lambda t=tweet: {unknown})()\n",
        }[form]
        return f"{head}\n{body}", r"^line [23]: unknown name " + re.escape(repr(unknown))
    if kind == "misspelt":
        field = draw(st.sampled_from(sorted(MISSPELT)))
        wrong = draw(st.sampled_from(MISSPELT[field]))
        return f"{head}\nlen({wrong}) > 0\n\"Fix it.\"\n", rf"unknown name '{wrong}'.*did you mean '{field}'"
    if kind == "message":
        bad = draw(st.sampled_from(NOT_MESSAGES))
        return f"{head}\n{cond}\n{bad}\n", r"^line 3: .*message"
    if kind == "condition":
        bad = draw(st.sampled_from(['"a string"', "f'{tweet}'", "tweet, 1", "len(tweet) < 3,", "*tweet", "'a' 'b'"]))
        return f"{head}\n{bad}\n\"Fix it.\"\n", r"^line 2: .*(condition|string|tuple|starred|invalid)"
    if kind == "statement":
        bad = draw(st.sampled_from(STATEMENTS))
        body = draw(st.sampled_from([f"{bad}\n", f"{cond}\n{bad}\n"]))
        return f"{head}\n{body}", r"^line [23]: (expected an expression|invalid Python)"
    if kind == "three":
        extra = draw(st.sampled_from(['"More."', cond, "True"]))
        return f"{head}\n{cond}\n\"Fix it.\"\n{extra}\n", r"^line 4: .*one condition and one message"
    if kind == "yield":
        bad = draw(st.sampled_from(["(yield)", "(yield tweet)", "await tweet", "[(yield) for c in context]",
                                    "(yield from context)"]))
        body = draw(st.sampled_from([f"{bad}\n", f"{cond}\nf'{{{bad}}}'\n"]))
        return f"{head}\n{body}", r"yield|await|invalid"
    if kind == "line":
        bad = draw(st.sampled_from(ASSERT_LINES))
        return f"%%assert {bad}\n{cond}\n\"Fix it.\"\n", r"^line 1: "
    if kind == "name":
        bad = draw(NOT_NAMES)
        target = draw(st.booleans())
        line = f"%%assert {bad}" if target else f"%%assert GenerateTweet --name '{bad}'"
        return f"{line}\n{cond}\n", r"^line 1: "
    if kind == "fields":
        field = draw(st.sampled_from(["feedback", "past_tweet", "reasoning", "answer", "past_question"]))
        return f"{head}\n{field} != tweet\n", rf"^line 2: unknown name '{field}'"
    if kind == "huge":
        n = draw(st.integers(2000, 8000))
        unknown = draw(UNKNOWN)
        form = draw(st.sampled_from(["and", "lines", "name", "message", "third"]))
        if form == "and":
            return f"{head}\n" + " and ".join([cond] * n) + f" and {unknown}\n", re.escape(repr(unknown))
        if form == "lines":
            return f"{head}\n(\n" + "\n".join(["len(tweet) > 0 and"] * n) + f"\n{unknown}\n)\n", \
                rf"^line {n + 3}: unknown name"
        if form == "name":
            long_name = unknown * (n // len(unknown) * 5)
            return f"{head}\n{long_name} in tweet\n", r"^line 2: unknown name"
        if form == "message":
            return f"{head}\n{cond}\nf\"{'x' * n * 10}{{{unknown}}}\"\n", re.escape(repr(unknown))
        return f"{head}\n{cond}\n\"{'m' * n * 10}\"\n{cond}\n", r"^line 4: "
    if kind == "deep":  # past what Python's parser takes (about 3,000 levels) or its 200 nested brackets
        n = draw(st.integers(5000, 30000))
        form = draw(st.sampled_from(["not", "minus", "index", "power", "attr", "paren"]))
        expr = {"not": "not " * n + "tweet", "minus": "-" * n + "len(tweet)", "index": "tweet" + "[0]" * n,
                "power": "**".join(["2"] * n), "attr": "tweet" + ".x" * n, "paren": "(" * 250 + "tweet" + ")" * 250}
        return f"{head}\n{expr[form]}\n", r"^line 2: "
    if kind == "unicode":
        ch = draw(BAD_CHARS)
        form = draw(st.sampled_from(["cond", "name", "message", "operator"]))
        body = {
            "cond": f"len(tweet) {ch} 280\n",
            "name": f"len(twe{ch}et) > 0\n",
            "message": f"{cond}\n\"Fix it.\" {ch}\n",
            "operator": f"{ch}{cond}\n",
        }[form]
        return f"{head}\n{body}", r"^line [23]: "
    junk = draw(RANDOM_TEXT.filter(lambda t: "\r" not in t and "\x0c" not in t))
    return f"{head}\n{draw(BAD_CHARS)}{junk}\n", r"^line [23]: "


@settings(max_examples=EXAMPLES["assert"], deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=assert_cells())
def test_malformed_assert_cells_are_one_line_usage_errors(notebook, case):
    cell, pattern = case
    expect_usage_error(notebook, "assert", cell, pattern)


# ---------------------------------------------------------------- %%compile

COMPILE_BREAKERS = ["retrieve >>", ">> GenerateTweet", "retrieve >>> GenerateTweet", "retrieve > > GenerateTweet",
                    "retrieve >> (GenerateTweet", '"unterminated', "retrieve >> GenerateTweet)",
                    "retrieve ->> GenerateTweet", "retrieve >> GenerateTweet >>", "retrieve >>\n>> GenerateTweet",
                    "(retrieve >> GenerateTweet", "retrieve >> >> GenerateTweet"]
NOT_STEPS = ["retrieve(3) >> GenerateTweet", "1 >> GenerateTweet", '"x" >> GenerateTweet', "lambda: 1",
             "[retrieve] >> GenerateTweet", "retrieve | GenerateTweet", "retrieve + GenerateTweet",
             "retrieve >> GenerateTweet()", "retrieve >> GenerateTweet[0]", "-retrieve >> GenerateTweet",
             "retrieve >> {GenerateTweet}", "await retrieve", "retrieve >> not GenerateTweet"]
BODY_STATEMENTS = ["x = 1", "import os", "retrieve >> GenerateTweet; x = 1", "def f(): pass",
                   "pipeline = retrieve >> GenerateTweet", "for s in x: pass", "del retrieve"]
WRONG_STEPS = ["number >> GenerateTweet", "text >> GenerateTweet", "raw >> GenerateTweet", "table >> GenerateTweet",
               "Pipe >> GenerateTweet", "retrieve >> Pipe", "dspy.Signature", "dspy.Predict >> GenerateTweet",
               "math.sqrt >> GenerateTweet", "positional_only >> GenerateTweet", "GenerateTweet",
               "retrieve >> Other", "math.nope >> GenerateTweet", "GenerateTweet.nope", "trainset",
               "no_hashtags >> GenerateTweet", "retrieve.nope >> GenerateTweet", "Other >> GenerateTweet"]
OPTION_ERRORS = [
    ("--train trainst", "trainst"), ("--dev devst", "devst"), ("--metric qualty", "qualty"),
    ("--train number", "--train"), ("--train text", "--train"), ("--train quality", "--train"),
    ("--train table", "--train"), ("--train raw", "dspy.Example"), ("--train strs", "dspy.Example"),
    ("--train no_inputs", "input fields"), ("--dev no_inputs", "input fields"), ("--dev empty", "empty"),
    ("--train empty", "empty"), ("--metric trainset", "not a function"), ("--metric number", "not a function"),
    ("--backtracks -1", "backtracks"), ("--backtracks x", "backtracks"), ("--threads 0", "threads"),
    ("--threads -3", "threads"), ("--threads x", "threads"), ("--settings bogus", "setting"),
    ("--settings ,", "setting"), ("--settings 'vanilla,fancy'", "fancy"), ("--optimizer mipro", "optimizer"),
    ("--optimizer", "optimizer"), ("-o prog", "-o"), ("-o 1x", "-o"), ("-o trainset", "trainset"),
    ("-o quality", "quality"), ("-o In", "'In'"), ("-o GenerateTweet", "GenerateTweet"),
    ("--train 'trainset[0]'", "--train"), ("--train trainset.nope", "nope"), ("--bogus 1", "bogus"),
    ("--train", "--train"),
]
PROGRAM_NAMES = ["trainset", "retrieve", "GenerateTweet", "no_hashtags", "Other", "quality", "math"]


@st.composite
def compile_cells(draw) -> tuple[str, str]:
    kind = draw(st.sampled_from(["empty", "syntax", "unknown", "misspelt", "not_step", "statement", "wrong_step",
                                 "option", "name", "required", "huge", "deep", "unicode", "random"]))
    head = COMPILE_LINE + draw(st.sampled_from(["", " --settings vanilla", " -o rep", " --threads 2"]))
    if kind == "empty":
        body = draw(st.sampled_from(["", "\n", "  \n\t\n", "# a pipeline, one day\n", "\n\n# b\n"]))
        return f"{head}\n{body}", r"empty"
    if kind == "syntax":
        return f"{head}\n{draw(st.sampled_from(COMPILE_BREAKERS))}\n", r"^line [23]: "
    if kind == "unknown":
        unknown = draw(st.one_of(UNKNOWN, UNICODE_UNKNOWN))
        body = draw(st.sampled_from([f"{unknown} >> GenerateTweet", f"retrieve >> {unknown}", f"{unknown}",
                                     f"retrieve\n{unknown}", f"{unknown}.attr >> GenerateTweet"]))
        return f"{head}\n{body}\n", r"^line [23]: unknown step " + re.escape(repr(unknown).rstrip("'"))
    if kind == "misspelt":
        body = draw(st.sampled_from(["retreive >> GenerateTweet", "retrieve >> GenerateTweat",
                                     "retrieve >> generatetweet", "Retrieve >> GenerateTweet"]))
        return f"{head}\n{body}\n", r"^line 2: unknown step .*did you mean"
    if kind == "not_step":
        return f"{head}\n{draw(st.sampled_from(NOT_STEPS))}\n", r"^line 2: "
    if kind == "statement":
        return f"{head}\n{draw(st.sampled_from(BODY_STATEMENTS))}\n", r"^line 2: "
    if kind == "wrong_step":
        return f"{head}\n{draw(st.sampled_from(WRONG_STEPS))}\n", r"^line 2: "
    if kind == "option":
        option, named = draw(st.sampled_from(OPTION_ERRORS))
        line = COMPILE_LINE
        flag = option.split()[0]
        if flag in ("--train", "--dev", "--metric"):
            line = re.sub(rf"{flag} \S+", option, line)
        else:
            line += " " + option
        return f"{line}\nretrieve >> GenerateTweet\n", r"^line 1: .*" + re.escape(named)
    if kind == "name":
        bad = draw(st.one_of(NOT_NAMES, st.sampled_from(PROGRAM_NAMES)))
        return f"%%compile '{bad}' --train trainset --dev devset --metric quality\nretrieve >> GenerateTweet\n", \
            r"^line 1: "
    if kind == "required":
        line = draw(st.sampled_from(["%%compile", "%%compile prog", "%%compile prog --train trainset",
                                     "%%compile prog --dev devset --metric quality",
                                     "%%compile --train trainset --dev devset --metric quality"]))
        return f"{line}\nretrieve >> GenerateTweet\n", r"^line 1: .*required"
    if kind == "huge":
        n = draw(st.integers(2000, 6000))
        unknown = draw(UNKNOWN)
        form = draw(st.sampled_from(["chain", "lines", "name"]))
        if form == "chain":
            return f"{head}\n" + " >> ".join(["retrieve"] * n) + f" >> {unknown}\n", r"^line 2: "
        if form == "lines":
            return f"{head}\n" + "\n".join(["retrieve"] * n) + f"\n{unknown}\n", rf"^line {n + 2}: unknown step"
        return f"{head}\n{unknown * (n // len(unknown) * 10)} >> GenerateTweet\n", r"^line 2: unknown step"
    if kind == "deep":
        n = draw(st.integers(150, 3000))
        form = draw(st.sampled_from(["paren", "attr", "shift"]))
        body = {"paren": "(" * n + "retrieve" + ")" * n + " >> zzmissing",
                "attr": "retrieve" + ".zz" * n + " >> GenerateTweet",
                "shift": "retrieve >> (" * n + "GenerateTweet" + ")" * n + " >> zzmissing"}[form]
        return f"{head}\n{body}\n", r"^line 2: "
    if kind == "unicode":
        ch = draw(BAD_CHARS)
        form = draw(st.sampled_from(["step", "operator", "option"]))
        if form == "option":
            return (f"%%compile prog --train train{ch}set --dev devset --metric quality\nretrieve >> GenerateTweet\n",
                    r"^line 1: ")
        body = {"step": f"retri{ch}eve >> GenerateTweet", "operator": f"retrieve {ch} GenerateTweet"}[form]
        return f"{head}\n{body}\n", r"^line 2: "
    junk = draw(RANDOM_TEXT.filter(lambda t: "\r" not in t and "\x0c" not in t))
    return f"{head}\n{draw(BAD_CHARS)}{junk}\n", r"^line [23]: "


@settings(max_examples=EXAMPLES["compile"], deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(case=compile_cells())
def test_malformed_compile_cells_are_one_line_usage_errors(notebook, case):
    cell, pattern = case
    expect_usage_error(notebook, "compile", cell, pattern)


# ---------------------------------------------------------------- the checks themselves can fail


def test_the_check_catches_a_cell_that_changes_the_registry(notebook):
    """A cell that succeeds (or fails and leaves a change behind) is caught, so the properties above can fail."""
    with pytest.raises(pytest.fail.Exception):
        expect_usage_error(notebook, "control", "%%signature Fresh\nquestion -> answer\n", r".")
    with pytest.raises(AssertionError, match="unexpected"):
        expect_usage_error(notebook, "control", "%%assert GenerateTweet\nzzz\n", r"unexpected")
    TRIED.pop("control", None)


def test_generated_names_are_really_unknown():
    assert not any(keyword.iskeyword(n) for n in NOTEBOOK_NAMES)
    assert all(not n.startswith("zz") for n in NOTEBOOK_NAMES)


def test_at_least_500_malformed_cells_were_tried(request):
    """Counts the cells the three property tests above ran (skipped when they were deselected)."""
    wanted = {"signature": test_malformed_signature_cells_are_one_line_usage_errors,
              "assert": test_malformed_assert_cells_are_one_line_usage_errors,
              "compile": test_malformed_compile_cells_are_one_line_usage_errors}
    selected = {item.name for item in request.session.items}
    if not all(f.__name__ in selected for f in wanted.values()):
        pytest.skip("the property tests were not all selected")
    print(f"malformed cells tried: {dict(TRIED)} (total {sum(TRIED.values())})")
    for magic in wanted:
        assert TRIED[magic] >= EXAMPLES[magic], (magic, TRIED[magic])
    assert sum(TRIED[m] for m in wanted) >= 500
