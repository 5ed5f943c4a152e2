"""The magics through a real InteractiveShell: definitions, errors, reload/unload, %%compile end to end."""

from __future__ import annotations

import re

import dspy
import pytest
from dspy.utils import DummyLM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from IPython.core.error import UsageError

from lmassert_magic.engine.ablation import AblationResult, run_ablation
from lmassert_magic.engine.errors import DSPyAssertionError
from lmassert_magic.engine.runtime import is_activated
from lmassert_magic.magics import LMMagics
from lmassert_magic.magics.compile import CompileFailed
from lmassert_magic.registry import get_registry

from helpers import GENERATE_TWEET_CELL, NO_HASHTAGS_CELL, feedback_dummy_lm, tweet_data_cell

SETUP = tweet_data_cell(3, 2, train_prefix="q", fact="fact about ", answer="a")

COMPILE = '''%%compile tweeter --train trainset --dev devset --metric quality -o rep
retrieve >> GenerateTweet
'''


def _public_ns(ip):
    hidden = {"In", "Out", "exit", "quit", "get_ipython"}
    return {k: id(v) for k, v in ip.user_ns.items() if not k.startswith("_") and k not in hidden}


def usage_error(ip, cell):
    """Run a cell that must fail with a plain one-line UsageError and change nothing."""
    before, ns_before = get_registry().snapshot_json(), _public_ns(ip)
    with pytest.raises(UsageError) as info:
        ip.run_cell(cell)
    assert type(info.value) is UsageError  # subclasses print tracebacks
    message = str(info.value)
    assert "\n" not in message  # IPython shows it as one line
    assert get_registry().snapshot_json() == before
    assert _public_ns(ip) == ns_before
    return message


@pytest.fixture
def tweet(ip):
    ip.run_cell(SETUP)
    ip.run_cell(GENERATE_TWEET_CELL)
    return ip


# ---------------------------------------------------------------- loading


def test_load_registers_every_magic_and_completer(ip):
    for name in ("signature", "assert", "compile"):
        assert ip.find_cell_magic(name) is not None
    assert ip.find_line_magic("lmassert") is not None
    if LMMagics is not None:
        assert any(isinstance(c, LMMagics) for c in ip.configurables)
    keys = ip.strdispatchers["complete_command"].strs
    assert {"%%signature", "%%assert", "%%compile", "%lmassert"} <= set(keys)


def test_unload_removes_magics_completers_and_configurables(ip):
    ip.run_cell("%unload_ext lmassert_magic")
    for name in ("signature", "assert", "compile"):
        assert ip.find_cell_magic(name) is None
    assert ip.find_line_magic("lmassert") is None
    assert not {"%%signature", "%%assert", "%%compile", "%lmassert"} & set(ip.strdispatchers["complete_command"].strs)
    assert not any(type(c).__module__.startswith("lmassert_magic") for c in ip.configurables)
    assert "AdminMagics" not in ip.magics_manager.registry
    with pytest.raises(UsageError, match="not found"):
        ip.run_cell("%%signature X\nq -> a")


def test_reload_keeps_the_registry_and_registers_once(tweet):
    ip = tweet
    before = get_registry().snapshot_json()
    ip.run_cell("%reload_ext lmassert_magic")
    assert get_registry().snapshot_json() == before
    assert ip.find_cell_magic("signature") is not None
    chain = ip.strdispatchers["complete_command"].strs["%%assert"].chain
    assert len(chain) == 1
    assert sum(type(c).__name__ == "AdminMagics" for c in ip.configurables) == 1
    ip.run_cell(NO_HASHTAGS_CELL)  # still works against the kept signature
    assert "no_hashtags" in get_registry().constraints


def test_help_is_argparse_style(ip, capsys):
    doc = ip.find_cell_magic("compile").__doc__
    assert "%%compile --train TRAIN --dev DEV --metric METRIC" in doc
    assert "--optimizer" in doc and "random_search" in doc and "Nothing in the line or body is expanded" in doc
    ip.run_cell("%%assert?")
    out = capsys.readouterr().out
    assert "TARGET_<n>" in out and "--hard" in out and "--timeout" in out


# ---------------------------------------------------------------- %%signature


def test_signature_cell_defines_and_binds_the_class(ip, capsys):
    ip.run_cell(GENERATE_TWEET_CELL)
    cls = ip.user_ns["GenerateTweet"]
    assert issubclass(cls, dspy.Signature)
    assert list(cls.input_fields) == ["question", "context"] and list(cls.output_fields) == ["tweet"]
    assert cls.input_fields["context"].json_schema_extra["desc"] == "facts that may be relevant"
    assert cls.instructions.startswith("Generate an engaging tweet")
    assert get_registry().signatures["GenerateTweet"].cls is cls
    assert "Defined signature GenerateTweet: question, context -> tweet" in capsys.readouterr().out


def test_shorthand_with_docstring_types_and_cot(ip):
    ip.run_cell('%%signature Classify --cot\n"""Label the text."""\n'
                'text, hints: list[str] -> label: Literal["a", "b"]\n')
    cls = ip.user_ns["Classify"]
    assert list(cls.input_fields) == ["text", "hints"]
    assert cls.instructions == "Label the text."
    assert str(cls.output_fields["label"].annotation) == "typing.Literal['a', 'b']"
    assert get_registry().signatures["Classify"].spec.cot is True


def test_plain_shorthand_and_notebook_types(ip):
    ip.run_cell("import pydantic\nclass Topic(pydantic.BaseModel):\n    name: str\n")
    ip.run_cell("%%signature Pick\nquestion -> topic: Topic")
    assert ip.user_ns["Pick"].output_fields["topic"].annotation is ip.user_ns["Topic"]


@pytest.mark.parametrize(
    ("cell", "pattern"),
    [
        ("%%signature S\n", r"cell body is empty"),  # IPython's own check, still a plain UsageError
        ("%%signature S\nq: str = In()\na: str = Out(desc='oops)\n", r"^line 3: the body does not tokenise as Python"),
        ('%%signature S\n"""doc"""\nq: str = In(\n', r"^line 3: the body does not tokenise as Python: '\(' is never"),
        ("%%signature S\nq: str = In()\na: str = Outt()\n", r"^line 3: field 'a': expected In\(...\) or Out\(...\), "
                                                          r"got 'Outt'; did you mean 'Out'\?"),
        ("%%signature S\nq: str = In()\na: str = Out(descr='x')\n", r"^line 3: .*unknown argument 'descr'.*'desc'"),
        ("%%signature S\nq: str = In()\na: Litral['x'] = Out()\n", r"^line 3: .*unknown type name 'Litral'.*'Literal'"),
        ("%%signature S\nq: str = In()\nq: str = Out()\n", r"^line 3: field 'q' is defined twice"),
        ("%%signature S\nfeedback: str = In()\na: str = Out()\n", r"^line 2: 'feedback' is reserved"),
        ("%%signature S\nq: str = In()\n", r"has no output field"),
        ("%%signature S\nq: str\na: str = Out()\n", r"^line 2: field 'q' needs a marker"),
        ("%%signature S\nimport os\n", r"^line 2: expected a field"),
        ("%%signature S\nq: str = In()\n'''late doc'''\na: str = Out()\n", r"^line 3: a docstring .* must come first"),
        ("%%signature S\nq a -> b\n", r"^line 2: bad input fields"),
        ("%%signature S\nq -> a -> b\n", r"^line 2: the shorthand has more than one '->'"),
        ("%%signature S\nq = 1 -> a\n", r"^line 2: bad input fields"),
        ("%%signature 1S\nq -> a\n", r"^line 1: the signature name '1S' is not a valid Python name"),
        ("%%signature trainset\nq -> a\n", r"^line 1: 'trainset' is already a notebook variable \(list\)"),
        ("%%signature\nq -> a\n", r"^line 1: the following arguments are required"),
        ("%%signature S --cto\nq -> a\n", r"^line 1: unrecognized arguments: --cto"),
        ("%%signature S 'unclosed\nq -> a\n", r"^line 1: cannot split the arguments"),
        ("%%signature S\nq -> a $\n", r"^line 2: the body does not tokenise as Python: the character '\$'"),
    ],
)
def test_signature_errors_name_the_line_and_change_nothing(tweet, cell, pattern):
    message = usage_error(tweet, cell)
    assert re.search(pattern, message), message


def test_redefining_a_signature_marks_compiled_programs_stale(tweet, capsys):
    ip = tweet
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE)
    capsys.readouterr()
    ip.run_cell(GENERATE_TWEET_CELL)  # unchanged: nothing goes stale
    assert "Re-ran (unchanged)" in capsys.readouterr().out
    assert get_registry().programs["tweeter"].stale is None
    ip.run_cell(GENERATE_TWEET_CELL.replace("tweet: str = Out()", 'tweet: str = Out(desc="under 280 characters")'))
    out = capsys.readouterr().out
    assert "Redefined signature GenerateTweet" in out
    assert "compiled program 'tweeter' was built from the previous definition and is now stale" in out
    assert get_registry().programs["tweeter"].stale == "signature GenerateTweet was redefined"
    ip.run_cell("%lmassert list")
    assert "STALE: signature GenerateTweet was redefined" in capsys.readouterr().out


# ---------------------------------------------------------------- %%assert


def test_assert_defaults_soft_auto_name_and_rerun_replaces(tweet, capsys):
    ip = tweet
    cell = '%%assert GenerateTweet\nlen(tweet) <= 280\n"Keep it under 280 characters."\n'
    ip.run_cell(cell)
    assert "Added soft constraint GenerateTweet_1 on GenerateTweet (shared backtracks, 120s per check)" in \
        capsys.readouterr().out
    ip.run_cell(cell)
    assert list(get_registry().constraints) == ["GenerateTweet_1"]
    ip.run_cell('%%assert GenerateTweet\n"#" not in tweet\n"No hashtags."\n')
    assert sorted(get_registry().constraints) == ["GenerateTweet_1", "GenerateTweet_2"]
    spec = get_registry().constraints["GenerateTweet_1"].spec
    assert spec.hard is False and spec.timeout == 120.0 and spec.max_backtracks is None


def test_assert_flags_and_named_redefinition(tweet):
    ip = tweet
    ip.run_cell('%%assert GenerateTweet --name short --hard --backtracks 1 --timeout 0\n'
                'len(tweet) <= 280\n"Shorter."\n')
    spec = get_registry().constraints["short"].spec
    assert (spec.hard, spec.max_backtracks, spec.timeout) == (True, 1, None)
    assert get_registry().constraints["short"].constraint.hard is True
    ip.run_cell('%%assert GenerateTweet --name short --soft\nlen(tweet) <= 100\n"Much shorter."\n')
    spec = get_registry().constraints["short"].spec
    assert spec.hard is False and spec.condition == "len(tweet) <= 100"
    assert list(get_registry().constraints) == ["short"]


def test_config_sets_the_default_check_timeout(tweet):
    ip = tweet
    try:
        ip.run_cell("%config AssertionMagics.check_timeout = 5")
        ip.run_cell(NO_HASHTAGS_CELL)
        assert get_registry().constraints["no_hashtags"].constraint.timeout == 5.0
    finally:  # %config lives in the shell's config, which outlives this test's extension
        ip.config.AssertionMagics.pop("check_timeout", None)


def test_rerun_in_the_same_jupyter_cell_replaces_an_edited_unnamed_constraint(tweet):
    ip = tweet

    class FakeKernel:
        def __init__(self, cell):
            self.cell = cell

        def get_parent(self):
            return {"metadata": {"cellId": self.cell}}

    ip.kernel = FakeKernel("cell-7")
    try:
        ip.run_cell('%%assert GenerateTweet\nlen(tweet) <= 280\n"Shorter."\n')
        ip.run_cell('%%assert GenerateTweet\nlen(tweet) <= 200\n"Shorter!"\n')
        assert list(get_registry().constraints) == ["GenerateTweet_1"]
        assert get_registry().constraints["GenerateTweet_1"].spec.condition == "len(tweet) <= 200"
        ip.run_cell('%%assert GenerateTweet --name renamed\nlen(tweet) <= 200\n"Shorter!"\n')
        assert list(get_registry().constraints) == ["renamed"]
    finally:
        del ip.kernel


def test_condition_uses_notebook_helpers_resolved_at_check_time(tweet):
    ip = tweet
    ip.run_cell("BANNED = ['spam']\ndef clean(text):\n    return not any(w in text for w in BANNED)\n")
    ip.run_cell('%%assert GenerateTweet --name clean\nclean(tweet)\nf"Remove {[w for w in BANNED if w in tweet]}"\n')
    constraint = get_registry().constraints["clean"].constraint
    assert constraint.check({"tweet": "ham"}) is True
    ip.run_cell("BANNED = ['ham']")
    assert constraint.check({"tweet": "ham"}) is False
    assert constraint.feedback({"tweet": "ham"}) == "Remove ['ham']"


def test_lm_judge_is_usable_in_a_body_without_import(tweet):
    ip = tweet
    ip.run_cell('%%assert GenerateTweet --name engaging\nlm_judge("Is the tweet engaging?", tweet=tweet)\n'
                '"Make it more engaging."\n')
    constraint = get_registry().constraints["engaging"].constraint
    with dspy.context(lm=DummyLM([{"answer": "false"}])):
        assert constraint.check({"tweet": "meh"}) is False


def test_nothing_is_expanded_in_lines_or_bodies(tweet):
    ip = tweet
    ip.user_ns["foo"] = "bar"
    ip.user_ns["tweet"] = "NOTEBOOK VALUE"
    message = usage_error(ip, '%%assert GenerateTweet --name {foo}\nlen(tweet) < 280\n"x"\n')
    assert "'{foo}' is not a valid Python name" in message
    message = usage_error(ip, "%%signature $foo\nq -> a\n")
    assert "'$foo'" in message
    ip.run_cell('%%assert GenerateTweet --name echo\nlen(tweet) < 3\nf"got {tweet}"\n')
    assert get_registry().constraints["echo"].constraint.feedback({"tweet": "field value"}) == "got field value"


@pytest.mark.parametrize(
    ("cell", "pattern"),
    [
        ("%%assert GenerateTweat\nlen(tweet) < 280\n", r"^line 1: unknown signature 'GenerateTweat'; did you mean "
                                                       r"'GenerateTweet'\?"),
        ("%%assert GenerateTweet\nlen(tweet) < 280 and\\\n  'x' not in tweeet\n\"msg\"\n",
         r"^line 3: unknown name 'tweeet' in the condition.*did you mean 'tweet'\?"),
        ("%%assert GenerateTweet\nlen(tweet) < 280\nf\"too long: {twet}\"\n", r"^line 3: unknown name 'twet' in the "
                                                                              r"message.*'tweet'"),
        ("%%assert GenerateTweet\nlen(tweet) < 280\n42\n", r"^line 3: the second expression is the feedback message"),
        ("%%assert GenerateTweet\n\"msg\"\nlen(tweet) < 280\n", r"^line 2: the first expression is the condition"),
        ("%%assert GenerateTweet\nlen(tweet) < 280, \"msg\"\n", r"^line 2: the condition is a tuple"),
        ("%%assert GenerateTweet\nlen(tweet) < 280\n\"a\"\n\"b\"\n", r"^line 4: a %%assert body is one condition"),
        ("%%assert GenerateTweet\nn = len(tweet)\n", r"^line 2: expected an expression, got assign"),
        ("%%assert GenerateTweet\nlen(tweet) < 280 and (\n", r"^line 2: the body does not tokenise.*'\(' is never"),
        ("%%assert GenerateTweet\n", r"cell body is empty"),
        ("%%assert GenerateTweet\n\n# nothing\n", r"^line 2: the body is empty"),
        ("%%assert GenerateTweet --soft --hard\nlen(tweet) < 3\n", r"^line 1: choose one of --soft and --hard"),
        ("%%assert GenerateTweet --backtracks -1\nlen(tweet) < 3\n", r"--backtracks must be 0 or more"),
        ("%%assert GenerateTweet --name GenerateTweet\nlen(tweet) < 3\n", r"already a registered signature"),
        ("%%assert GenerateTweet --timeout -1\nlen(tweet) < 3\n", r"--timeout must be 0"),
        ("%%assert GenerateTweet --backtracks x\nlen(tweet) < 3\n", r"^line 1: argument --backtracks/-b: invalid int"),
    ],
)
def test_assert_errors_name_the_line_and_change_nothing(tweet, cell, pattern):
    message = usage_error(tweet, cell)
    assert re.search(pattern, message), message


# ---------------------------------------------------------------- %%compile


def _result(ip):
    rep = ip.user_ns["rep"]
    return rep if isinstance(rep, AblationResult) else rep.result


def test_compile_runs_the_five_settings_and_feedback_fixes_the_constraint(tweet, capsys):
    ip = tweet
    ip.run_cell(NO_HASHTAGS_CELL)
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE)
    out = capsys.readouterr().out
    result = _result(ip)
    assert list(result.settings) == ["vanilla", "infer_assert", "compile", "compile_assert", "c_infer_assert"]
    summary = result.summary()
    assert summary.loc["Vanilla", "no_hashtags"] == 0.0
    assert summary.loc["Infer w/ Assert", "no_hashtags"] == 100.0
    assert summary.loc["C+Infer w/ Assert", "no_hashtags"] == 100.0
    assert summary.loc["Vanilla", "quality"] == 0.0 and summary.loc["C+Infer w/ Assert", "quality"] == 100.0
    assert summary.loc["Infer w/ Assert", "lm_calls/ex"] == 2.0  # one failure, one backtrack per example
    stats = result.settings["infer_assert"].constraint_stats["no_hashtags"]
    assert (stats.checks, stats.first_try_passes, stats.passes_after_backtrack) == (2, 0, 2)
    # counterexample bootstrapping: the compile-with-assert demos show the feedback and the fix
    demos = result.demos["compile_assert"]["GenerateTweet"]
    assert demos and all(d["feedback"] == "Please revise the tweet to remove hashtag phrases." for d in demos)
    assert all(d["tweet"] == "clean tweet" and d["past_tweet"] == "#bad tweet" for d in demos)
    # NAME is the C+Infer w/ Assert program: compiled with assertions, backtracking on
    program = ip.user_ns["tweeter"]
    assert is_activated(program) and program.GenerateTweet.demos
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell("prediction = tweeter(question='cats')")
    assert ip.user_ns["prediction"].tweet == "clean tweet"
    record = get_registry().programs["tweeter"]
    assert [c.name for c in record.constraints] == ["no_hashtags"] and record.stale is None
    assert "tweeter: Pipeline with constraints no_hashtags" in out


def test_compile_with_selected_settings_and_no_compile_binds_the_activated_pipeline(tweet):
    ip = tweet
    ip.run_cell(NO_HASHTAGS_CELL)
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.replace("-o rep", "-o rep --settings vanilla,infer_assert --threads 2"))
    result = _result(ip)
    assert list(result.settings) == ["vanilla", "infer_assert"]
    assert is_activated(ip.user_ns["tweeter"]) and ip.user_ns["tweeter"].GenerateTweet.demos == []
    assert get_registry().programs["tweeter"].option_dict["settings"] == ["vanilla", "infer_assert"]


def test_compile_skips_constraints_on_signatures_the_pipeline_does_not_use(tweet, capsys):
    ip = tweet
    ip.run_cell("%%signature Other\nquestion -> answer\n")
    ip.run_cell('%%assert Other --name other_check\nlen(answer) > 0\n"Say something."\n')
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.replace("-o rep", "-o rep --settings vanilla"))
    assert "Note: constraint other_check targets Other, which tweeter does not use; skipped" in capsys.readouterr().out
    assert get_registry().programs["tweeter"].skipped


def test_compile_accepts_a_notebook_module_subclass(tweet):
    ip = tweet
    ip.run_cell(NO_HASHTAGS_CELL)
    ip.run_cell('''
class Tweeter(dspy.Module):
    def __init__(self):
        super().__init__()
        self.write = dspy.ChainOfThought(GenerateTweet)

    def forward(self, question):
        return self.write(question=question, context=retrieve(question))
''')
    lm = DummyLM({"remove hashtag": {"reasoning": "r", "tweet": "clean tweet"},
                  "question": {"reasoning": "r", "tweet": "#bad tweet"}})
    with dspy.context(lm=lm):
        ip.run_cell("%%compile tw --train trainset --dev devset --metric quality -o rep --settings vanilla,"
                    "infer_assert\nTweeter\n")
    summary = _result(ip).summary()
    assert summary.loc["Vanilla", "no_hashtags"] == 0.0 and summary.loc["Infer w/ Assert", "no_hashtags"] == 100.0
    assert isinstance(ip.user_ns["tw"], ip.user_ns["Tweeter"])
    assert get_registry().programs["tw"].steps[0].kind == "module"


def test_hard_assertion_failure_in_a_program_raises_normally(tweet):
    ip = tweet
    ip.run_cell('%%assert GenerateTweet --name impossible --hard --backtracks 1\n"zzz" in tweet\n"Say zzz."\n')
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.replace("-o rep", "-o rep --settings vanilla,infer_assert"))
        assert _result(ip).settings["infer_assert"].n_failed == 2  # recorded in the report, not raised
        with pytest.raises(DSPyAssertionError, match="impossible"):
            ip.run_cell("tweeter(question='cats')")


def test_compile_where_every_example_fails_raises_and_records_nothing(tweet):
    ip = tweet
    before = get_registry().snapshot_json()
    with dspy.context(lm=DummyLM([])), pytest.raises(CompileFailed, match="every example failed"):
        ip.run_cell(COMPILE.replace("-o rep", "--settings vanilla"))
    assert get_registry().snapshot_json() == before
    assert "tweeter" not in ip.user_ns


def test_interrupted_compile_stores_and_shows_the_partial_result_then_reraises(tweet, monkeypatch, capsys):
    ip = tweet

    def interrupted(*args, **kwargs):
        kwargs["settings"] = ("vanilla",)
        result = run_ablation(*args, **kwargs)
        result.interrupted = True
        return result

    monkeypatch.setattr("lmassert_magic.magics.compile.run_ablation", interrupted)
    with dspy.context(lm=feedback_dummy_lm()), pytest.raises(KeyboardInterrupt):
        ip.run_cell(COMPILE)
    record = get_registry().programs["tweeter"]
    assert record.interrupted and list(record.result.settings) == ["vanilla"]
    assert _result(ip) is record.result
    assert "tweeter" not in ip.user_ns
    assert "Interrupted: partial results stored (settings finished: vanilla)" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "body", "pattern"),
    [
        ("tweeter --train trainst --dev devset --metric quality", "retrieve >> GenerateTweet",
         r"^line 1: --train: no notebook variable named 'trainst'; did you mean 'trainset'\?"),
        ("tweeter --train trainset --dev devset", "retrieve >> GenerateTweet",
         r"^line 1: the following arguments are required: --metric"),
        ("tweeter --train trainset --dev devset --metric qualty", "retrieve >> GenerateTweet",
         r"did you mean 'quality'\?"),
        ("tweeter --train trainset --dev devset --metric quality --settings vanila", "retrieve >> GenerateTweet",
         r"^line 1: --settings: unknown setting 'vanila'"),
        ("tweeter --train trainset --dev devset --metric quality --optimizer mipro", "retrieve >> GenerateTweet",
         r"^line 1: argument --optimizer: invalid choice"),
        ("tweeter --train trainset --dev devset --metric quality", "retrieve >> GenerateTweat",
         r"^line 2: unknown step 'GenerateTweat'.*did you mean 'GenerateTweet'\?"),
        ("tweeter --train trainset --dev devset --metric quality", "GenerateTweet",
         r"^line 2: GenerateTweet needs input field\(s\) context"),
        ("tweeter --train trainset --dev devset --metric quality", "retrieve |> GenerateTweet",
         r"^line 2: invalid Python"),
        ("tweeter --train trainset --dev devset --metric quality", "retrieve | GenerateTweet",
         r"^line 2: join pipeline steps with >>"),
        ("tweeter --train trainset --dev devset --metric quality", "retrieve(3) >> GenerateTweet",
         r"^line 2: a pipeline step must be a name"),
        ("tweeter --train trainset --dev devset --metric quality", "", r"^line 2: the body is empty"),
        ("trainset --train trainset --dev devset --metric quality", "retrieve >> GenerateTweet",
         r"^line 1: 'trainset' is already a notebook variable"),
        ("tweeter --train quality --dev devset --metric quality", "retrieve >> GenerateTweet",
         r"--train must name a list of dspy.Example"),
        ("tweeter --train trainset --dev devset --metric trainset", "retrieve >> GenerateTweet",
         r"--metric 'trainset' is a list, not a function"),
        ("tweeter --train trainset --dev devset --metric quality -o tweeter", "retrieve >> GenerateTweet",
         r"-o must differ from NAME"),
        ("tweeter --train trainset --dev devset --metric quality --threads 0", "retrieve >> GenerateTweet",
         r"--threads must be 1 or more"),
        ("tweeter --train raw --dev devset --metric quality", "retrieve >> GenerateTweet",
         r"--train: item 0 is a dict, not a dspy.Example"),
        ("tweeter --train trainset --dev devset --metric quality", "DataThing",
         r"^line 2: DataThing is a list, not a signature, function or dspy.Module"),
    ],
)
def test_compile_errors_name_the_line_and_change_nothing(tweet, line, body, pattern):
    tweet.run_cell("raw = [{'question': 'q'}]\nDataThing = [1]")
    message = usage_error(tweet, f"%%compile {line}\n{body}\n")
    assert re.search(pattern, message), message


@pytest.mark.parametrize(
    ("body", "lines"),
    [
        ("retrieve >> GenerateTweet\n", [2, 2]),
        ("retrieve\n>> GenerateTweet\n", [2, 3]),
        ("retrieve\nGenerateTweet  # one step per line\n", [2, 3]),
        ("(retrieve >>\n GenerateTweet)\n", [2, 3]),
    ],
)
def test_pipeline_body_forms(tweet, body, lines):
    with dspy.context(lm=feedback_dummy_lm()):
        tweet.run_cell(f"%%compile tweeter --train trainset --dev devset --metric quality --settings vanilla\n{body}")
    steps = get_registry().programs["tweeter"].steps
    assert [(s.ref, s.kind, s.line) for s in steps] == [("retrieve", "callable", lines[0]),
                                                         ("GenerateTweet", "signature", lines[1])]


# ---------------------------------------------------------------- %lmassert


def test_lmassert_list_show_remove_reset(tweet, capsys):
    ip = tweet
    ip.run_cell(NO_HASHTAGS_CELL)
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.replace("-o rep", "--settings vanilla"))
    capsys.readouterr()
    ip.run_cell("%lmassert list")
    out = capsys.readouterr().out
    assert "GenerateTweet: question, context -> tweet" in out
    assert "no_hashtags: soft on GenerateTweet" in out and "tweeter: retrieve >> GenerateTweet" in out
    ip.run_cell("%lmassert show no_hashtags")
    assert 'not re.search(r"#\\w+", tweet)' in capsys.readouterr().out
    ip.run_cell("%lmassert show GenerateTweet")
    out = capsys.readouterr().out
    assert "constraints: no_hashtags" in out and "used by: tweeter" in out
    ip.run_cell("%lmassert show tweeter")
    assert "%%compile tweeter --train trainset" in capsys.readouterr().out
    ip.run_cell("%lmassert remove GenerateTweet")
    out = capsys.readouterr().out
    assert "removed constraint no_hashtags" in out and "deleted notebook variable GenerateTweet" in out
    assert "GenerateTweet" not in ip.user_ns and "no_hashtags" not in get_registry().constraints
    assert get_registry().programs["tweeter"].stale == "signature GenerateTweet was removed"
    ip.run_cell("%lmassert reset")
    assert get_registry().names() == [] and "tweeter" not in ip.user_ns


def test_lmassert_leaves_a_rebound_notebook_variable_alone(tweet):
    ip = tweet
    ip.run_cell("GenerateTweet = 'mine now'")
    ip.run_cell("%lmassert remove GenerateTweet")
    assert ip.user_ns["GenerateTweet"] == "mine now"


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("%lmassert lst", r"^line 1: unknown command 'lst'.*did you mean 'list'\?"),
        ("%lmassert show", r"^line 1: usage: %lmassert show NAME"),
        ("%lmassert show GenerateTweat", r"nothing is registered as 'GenerateTweat'; did you mean 'GenerateTweet'\?"),
        ("%lmassert remove nope", r"nothing is registered as 'nope'"),
        ("%lmassert export GenerateTweet /tmp/x", r"'GenerateTweet' is a signature; export takes a compiled program"),
        ("%lmassert export nothing /tmp/x", r"no compiled program named 'nothing'"),
        ("%lmassert reset now", r"usage: %lmassert reset"),
    ],
)
def test_lmassert_errors(tweet, line, pattern):
    message = usage_error(tweet, line)
    assert re.search(pattern, message), message


# ---------------------------------------------------------------- completion


def _complete(ip, line):
    return ip.complete("", line, cursor_pos=len(line))[1] if line.endswith(" ") else \
        ip.complete(line.split()[-1].split(",")[-1], line, cursor_pos=len(line))[1]


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")
def test_tab_completion_offers_registered_names(tweet):
    ip = tweet
    ip.run_cell(NO_HASHTAGS_CELL)
    assert "GenerateTweet" in _complete(ip, "%%assert Gen")
    assert "no_hashtags" in _complete(ip, "%%assert GenerateTweet --name no")
    assert "GenerateTweet" in _complete(ip, "%%signature Gen")
    assert "trainset" in _complete(ip, "%%compile tw --train tr")
    assert "quality" in _complete(ip, "%%compile tw --train trainset --metric qu")
    assert "random_search" in _complete(ip, "%%compile tw --optimizer ran")
    assert {"show", "export"} <= set(_complete(ip, "%lmassert "))
    assert "no_hashtags" in _complete(ip, "%lmassert show no")
    ip.run_cell("%unload_ext lmassert_magic")
    assert "GenerateTweet" not in _complete(ip, "%%assert GenerateT")


# ---------------------------------------------------------------- property: failing cells change nothing

CELLS = [
    GENERATE_TWEET_CELL,
    GENERATE_TWEET_CELL.replace("Generate an engaging", "Write a"),
    "%%signature GenerateTweet\nquestion, context: list[str] -> tweet\n",
    "%%signature Other\nquestion -> answer\n",
    NO_HASHTAGS_CELL,
    '%%assert GenerateTweet\nlen(tweet) <= 280\n"Shorter."\n',
    '%%assert Other --name nonempty --hard\nlen(answer) > 0\n',
    "%lmassert remove no_hashtags",
    "%lmassert remove GenerateTweet",
    "%%compile tweeter --train trainset --dev devset --metric quality --settings vanilla\nretrieve >> GenerateTweet\n",
    # failing cells
    "%%signature GenerateTweet\nquestion: str = In()\n",
    "%%signature Bad\nq: Nope = In()\na: str = Out()\n",
    "%%signature trainset\nq -> a\n",
    '%%assert GenerateTweet\nlen(tweeet) < 3\n"x"\n',
    '%%assert Missing\nTrue\n',
    '%%assert GenerateTweet --name Other\nTrue\n',
    "%lmassert remove nothing_here",
    "%%compile tweeter --train trainset --dev devset --metric quality\nGenerateTweet\n",
    "%%compile tweeter --train nope --dev devset --metric quality\nretrieve >> GenerateTweet\n",
]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cells=st.lists(st.sampled_from(CELLS), max_size=8))
def test_property_a_failing_cell_leaves_registry_and_namespace_unchanged(ip, cells):
    get_registry().reset()
    ip.run_cell(SETUP)
    with dspy.context(lm=feedback_dummy_lm()):
        for cell in cells:
            before, ns_before = get_registry().snapshot_json(), _public_ns(ip)
            try:
                ip.run_cell(cell)
            except UsageError as exc:
                assert type(exc) is UsageError
                assert get_registry().snapshot_json() == before
                assert _public_ns(ip) == ns_before
            else:
                assert get_registry().snapshot_json() != before


def compile_tweeter_with(ip, flags: str) -> None:
    """`%%compile tweeter` of the tweet pipeline with the hashtag constraint and these extra flags."""
    ip.run_cell(NO_HASHTAGS_CELL)
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(f"%%compile tweeter --train trainset --dev devset --metric quality -o rep {flags}\n"
                    "retrieve >> GenerateTweet\n")


def test_compile_options_reach_the_engine_and_the_bound_program(tweet):
    ip = tweet
    compile_tweeter_with(ip, "--settings infer_assert,compile_assert --budget per_constraint --seed 7 "
                             "--retry-temperature 0.4 --keep-soft-failures --max-errors 3 --counterexamples prompt")
    result = _result(ip)
    assert result.settings["compile_assert"].compile.counterexample_mode == "prompt"
    assert result.settings["compile_assert"].compile.keep_soft_failures is True
    config = ip.user_ns["tweeter"]._lmassert_config
    assert (config.budget, config.seed, config.retry_temperature) == ("per_constraint", 7, 0.4)
    options = dict(get_registry().programs["tweeter"].options)
    assert options["max_errors"] == 3 and options["counterexamples"] == "prompt"


def test_the_judge_economy_switches_reach_the_run_the_bound_program_and_the_record(tweet):
    ip = tweet
    compile_tweeter_with(ip, "--settings infer_assert --no-stop-on-repeat --batch-judges --no-stop-at-failing-judge")
    switches = {"stop_on_repeat": False, "batch_judges": True, "stop_at_failing_judge": False}
    assert {k: _result(ip).config[k] for k in switches} == switches
    config = ip.user_ns["tweeter"]._lmassert_config
    assert {k: getattr(config, k) for k in switches} == switches
    options = dict(get_registry().programs["tweeter"].options)
    assert {k: options[k] for k in switches} == switches


@pytest.mark.parametrize(
    "flags, pattern",
    [
        ("--max-errors 0", r"--max-errors must be 1 or more"),
        ("--retry-temperature 3", r"--retry-temperature must be between 0 and 2"),
        ("--budget lots", r"argument --budget: invalid choice"),
    ],
)
def test_bad_compile_options_name_the_option(tweet, flags, pattern):
    ip = tweet
    with pytest.raises(UsageError, match=pattern):
        ip.run_cell(f"%%compile tweeter --train trainset --dev devset --metric quality {flags}\n"
                    "retrieve >> GenerateTweet\n")
    assert "tweeter" not in get_registry().programs


# ---------------------------------------------------------------- %lmassert calibrate


JUDGE_CELL = '''%%assert GenerateTweet --name judged
lm_judge("Is this tweet engaging?", tweet=tweet)
"Make it engaging."
'''


def judge_lm(yes_when):
    """A scripted judge LM: answers yes when `yes_when(tweet)` holds for the judged text."""
    from lmassert_magic.testing import ScriptedLM

    def respond(messages):
        text = messages[-1]["content"]
        tweet = re.search(r"tweet: (.*)", text).group(1)
        return {"answer": bool(yes_when(tweet))}

    return ScriptedLM(respond)


def test_calibrate_measures_a_judge_against_labels_and_compile_shows_it(tweet, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LMASSERT_CACHE_DIR", str(tmp_path))
    ip = tweet
    ip.run_cell(JUDGE_CELL)
    # 10 labelled items; the judge says yes to anything with "!" and 3 of the 5 positives have one
    items = [({"tweet": f"fun tweet {i}!" if i < 3 else f"fun tweet {i}"}, True) for i in range(5)]
    items += [({"tweet": f"dull tweet {i}"}, False) for i in range(5)]
    ip.user_ns["labels"] = items
    with dspy.context(lm=judge_lm(lambda t: "!" in t)):
        ip.run_cell("%lmassert calibrate judged --labels labels")
    out = capsys.readouterr().out
    result = get_registry().calibration_of("judged")
    assert result.n == 10 and result.agreement.successes == 8
    assert "judged" in out and "80%" in out and "10 labelled items" in out
    # a compile carries it to the report
    with dspy.context(lm=DummyLM({"engaging": {"answer": True}, "remove hashtag": {"tweet": "clean tweet"},
                                  "question": {"tweet": "#bad tweet"}})):
        ip.run_cell(COMPILE.replace("-o rep", "-o rep --settings vanilla"))
    assert _result(ip).calibrations["judged"].agreement.successes == 8


def test_calibration_is_dropped_when_the_constraint_changes(tweet, tmp_path, monkeypatch):
    monkeypatch.setenv("LMASSERT_CACHE_DIR", str(tmp_path))
    ip = tweet
    ip.run_cell(JUDGE_CELL)
    ip.user_ns["labels"] = [({"tweet": "a!"}, True), ({"tweet": "b"}, False)]
    with dspy.context(lm=judge_lm(lambda t: "!" in t)):
        ip.run_cell("%lmassert calibrate judged --labels labels")
    assert get_registry().calibration_of("judged") is not None
    ip.run_cell(JUDGE_CELL.replace("Make it engaging.", "Make it livelier."))
    assert get_registry().calibration_of("judged") is None


@pytest.mark.parametrize(
    "line, pattern",
    [
        ("%lmassert calibrate judged", r"--labels"),
        ("%lmassert calibrate nope --labels labels", r"no constraint named 'nope'"),
        ("%lmassert calibrate judged --labels missing", r"missing"),
        ("%lmassert calibrate judged --labels bad", r"labelled item 0"),
    ],
)
def test_calibrate_errors_name_what_is_wrong_and_change_nothing(tweet, line, pattern):
    ip = tweet
    ip.run_cell(JUDGE_CELL)
    ip.user_ns["labels"] = [({"tweet": "a"}, True)]
    ip.user_ns["bad"] = ["not a pair"]
    before = get_registry().snapshot_json()
    with pytest.raises(UsageError, match=pattern):
        ip.run_cell(line)
    assert get_registry().snapshot_json() == before and get_registry().calibration_of("judged") is None
