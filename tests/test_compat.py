"""Zero-edit mode: `lmassert_magic.compat.install()` / `uninstall()` and `%lmassert compat on|off`."""

from __future__ import annotations

import functools
import importlib
import sys
import textwrap

import dspy
import pytest

import lmassert_magic
from lmassert_magic import compat
from lmassert_magic.engine import compat as engine_compat

NAMES = ("Assert", "Suggest", "Retry", "Constraint", "DSPyAssertionError", "DSPySuggestionError", "noop_handler",
         "bypass_suggest_handler", "bypass_assert_handler", "assert_no_except_handler", "backtrack_handler",
         "handle_assert_forward", "default_assertion_handler", "assert_transform_module", "retry")

# A DSPy 2.5 program exactly as 2.5's examples wrote it (imports included), run as a fresh module.
LEGACY_PROGRAM = textwrap.dedent(
    """
    import functools

    import dspy
    from dspy.predict import Retry
    from dspy.primitives.assertions import assert_transform_module, backtrack_handler


    class GenerateTweet(dspy.Signature):
        \"\"\"Write a tweet answering the question.\"\"\"

        question = dspy.InputField()
        tweet = dspy.OutputField()


    class Tweeter(dspy.Module):
        def __init__(self):
            super().__init__()
            self.generate_tweet = dspy.ChainOfThought(GenerateTweet)

        def forward(self, question):
            tweet = self.generate_tweet(question=question).tweet
            dspy.Suggest("#" not in tweet, "Please revise the tweet to remove hashtag phrases following it.",
                         target_module=self.generate_tweet)
            dspy.Assert(len(tweet) <= 280, "Please ensure the tweet is within 280 characters.")
            return dspy.Prediction(tweet=tweet)


    tweeter = assert_transform_module(Tweeter().map_named_predictors(Retry), backtrack_handler)
    tweeter_one_retry = Tweeter().activate_assertions(functools.partial(backtrack_handler, max_backtracks=1))
    """
)


class QuestionAnswerStep(dspy.Module):
    """One `Predict("question -> answer")` step, `predictor`; subclasses write `forward`."""

    def __init__(self):
        super().__init__()
        self.predictor = dspy.Predict("question -> answer")


@pytest.fixture(autouse=True)
def _off_afterwards():
    compat.uninstall()
    yield
    compat.uninstall()


def fixes_hashtags(messages):
    content = messages[-1]["content"]
    return {"reasoning": "r", "tweet": "clean tweet" if "remove hashtag" in content else "great #news"}


def test_off_by_default_nothing_is_added():
    assert not compat.installed()
    for name in NAMES:
        assert not hasattr(dspy, name), name
    with pytest.raises(ImportError):
        importlib.import_module("dspy.primitives.assertions")


def test_install_makes_the_25_names_importable_and_uninstall_removes_them():
    added = compat.install()
    assert compat.installed()
    assert "dspy.Assert" in added and "dspy.primitives.assertions" in added
    for name in NAMES[:-1]:
        assert getattr(dspy, name) is getattr(engine_compat, name), name
    assert dspy.retry.Retry is engine_compat.Retry
    from dspy.predict import Retry
    from dspy.predict.retry import Retry as Retry2
    from dspy.primitives.assertions import assert_transform_module, backtrack_handler

    assert Retry is Retry2 is engine_compat.Retry
    assert backtrack_handler is engine_compat.backtrack_handler
    assert assert_transform_module is engine_compat.assert_transform_module
    assert compat.install() == []  # idempotent

    removed = compat.uninstall()
    assert len(removed) == len(added)
    assert not compat.installed()
    for name in NAMES:
        assert not hasattr(dspy, name), name
    assert not hasattr(dspy.predict, "Retry")
    assert not hasattr(importlib.import_module("dspy.predict.retry"), "Retry")
    assert "dspy.primitives.assertions" not in sys.modules
    with pytest.raises(ImportError):
        importlib.import_module("dspy.primitives.assertions")


def test_never_shadows_a_name_dspy_defines(monkeypatch):
    own = object()
    monkeypatch.setattr(dspy, "Suggest", own, raising=False)
    added = compat.install()
    assert dspy.Suggest is own
    assert "dspy.Suggest" not in added and "dspy.Assert" in added
    compat.uninstall()
    assert dspy.Suggest is own


def test_uninstall_leaves_a_name_someone_else_replaced_meanwhile():
    compat.install()
    mine = object()
    dspy.Retry = mine
    compat.uninstall()
    assert dspy.Retry is mine
    del dspy.Retry


def test_an_unmodified_dspy25_program_runs_in_zero_edit_mode(scripted_lm, tmp_path, monkeypatch):
    lm = scripted_lm(fixes_hashtags)
    lmassert_magic.compat.install()  # the one added line
    path = tmp_path / "legacy_tweets.py"
    path.write_text(LEGACY_PROGRAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("legacy_tweets")
    try:
        assert module.tweeter(question="news?").tweet == "clean tweet"
        assert len(lm.prompts) == 2
        assert module.tweeter_one_retry(question="news?").tweet == "clean tweet"
        assert all(type(p).__name__ == "Retry" for _, p in module.tweeter.named_predictors())
    finally:
        sys.modules.pop("legacy_tweets", None)


def test_the_same_program_fails_without_zero_edit_mode(tmp_path, monkeypatch):
    path = tmp_path / "legacy_tweets_off.py"
    path.write_text(LEGACY_PROGRAM)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ImportError):
        importlib.import_module("legacy_tweets_off")
    sys.modules.pop("legacy_tweets_off", None)


# ---------------------------------------------------------------- %lmassert compat


def test_magic_turns_it_on_and_off(ip, capsys):
    ip.run_cell("%lmassert compat on")
    assert "dspy.Assert" in capsys.readouterr().out
    assert compat.installed() and dspy.Suggest is engine_compat.Suggest
    ip.run_cell("%lmassert compat on")
    assert "already on" in capsys.readouterr().out
    ip.run_cell("%lmassert compat off")
    assert "removed" in capsys.readouterr().out
    assert not compat.installed() and not hasattr(dspy, "Suggest")


def test_magic_rejects_other_states(ip):
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match="compat on|off"):
        ip.run_cell("%lmassert compat maybe")


def test_unload_ext_turns_it_off(bare_ip):
    bare_ip.run_cell("%load_ext lmassert_magic")
    bare_ip.run_cell("%lmassert compat on")
    assert compat.installed()
    bare_ip.run_cell("%unload_ext lmassert_magic")
    assert not compat.installed()
    assert not hasattr(dspy, "Assert")


def test_a_notebook_runs_a_dspy25_cell_after_the_magic(ip, scripted_lm):
    scripted_lm(fixes_hashtags)
    ip.run_cell("%lmassert compat on")
    ip.run_cell(LEGACY_PROGRAM)
    ip.run_cell("out = tweeter(question='news?')")
    assert ip.user_ns["out"].tweet == "clean tweet"


# ---------------------------------------------------------------- the 2.5 API beyond the ported tests


def test_is_metric_failures_reach_the_programs_counters(scripted_lm):
    from lmassert_magic.compat import Suggest, assert_transform_module

    scripted_lm(lambda m: {"answer": "red"})

    class Program(QuestionAnswerStep):
        def forward(self, question):
            pred = self.predictor(question=question)
            Suggest(pred.answer == "blue", "Say blue.", is_metric=True)
            Suggest(pred.answer == "red", "never fails", is_metric=True)
            return pred

    program = assert_transform_module(Program())
    program._suggest_failures, program._assert_failures = 0, 0  # what 2.5's BootstrapFewShot set on students
    program(question="sky?")
    assert program._suggest_failures == 3  # three attempts, each failing the is_metric suggestion
    assert program._assert_failures == 0


def test_retry_of_a_chain_of_thought_adds_past_fields_for_every_output():
    from lmassert_magic.compat import Retry

    retry = Retry(dspy.ChainOfThought("question -> answer"))
    assert {"past_reasoning", "past_answer", "feedback"} <= set(retry.new_signature.input_fields)
    assert list(retry.signature.output_fields) == ["reasoning", "answer"]


def test_retry_follows_a_changed_signature_and_survives_copy_save_and_load(tmp_path, scripted_lm):
    from lmassert_magic.compat import Retry

    lm = scripted_lm(lambda m: {"answer": "blue"})
    retry = Retry(dspy.Predict("question -> answer"))
    retry.signature = retry.signature.with_instructions("Answer in one word.")
    retry.demos = [dspy.Example(question="grass?", answer="green")]
    retry.forward(question="sky?", past_outputs={"answer": "red"}, feedback="Be right.")
    assert "Answer in one word." in lm.prompts[-1][0]["content"] and "Be right." in lm.prompts[-1][-1]["content"]
    copy = retry.deepcopy()
    assert copy.demos == retry.demos and copy.module is not retry.module
    retry.save(str(tmp_path / "r.json"))
    plain = dspy.Predict("question -> answer")
    plain.load(str(tmp_path / "r.json"))
    assert [dict(d)["answer"] for d in plain.demos] == ["green"]


def test_transforming_twice_does_not_stack_two_handlers(scripted_lm):
    from lmassert_magic.compat import assert_transform_module, backtrack_handler, noop_handler

    lm = scripted_lm(lambda m: {"answer": "red"})

    class Program(QuestionAnswerStep):
        def forward(self, question):
            pred = self.predictor(question=question)
            engine_compat.Assert(pred.answer == "blue", "Say blue.")
            return pred

    program = assert_transform_module(Program(), noop_handler)
    assert program(question="q").answer == "red"
    assert_transform_module(program, functools.partial(backtrack_handler, max_backtracks=1))
    with pytest.raises(dspy_assertion_error()):
        program(question="q")
    assert len(lm.prompts) == 1 + 2  # the noop call, then one call with one retry


def dspy_assertion_error():
    return engine_compat.DSPyAssertionError


def test_a_target_naming_the_predictor_a_retry_wraps_still_finds_the_step(scripted_lm):
    from lmassert_magic.compat import Retry, Suggest, assert_transform_module

    lm = scripted_lm(lambda m: {"answer": "blue" if "Say blue." in m[-1]["content"] else "red"})
    original = dspy.Predict("question -> answer")

    class Program(dspy.Module):
        def __init__(self):
            super().__init__()
            self.predictor = original

        def forward(self, question):
            pred = self.predictor(question=question)
            Suggest(pred.answer == "blue", "Say blue.", target_module=original)  # held before the Retry mapping
            return pred

    program = assert_transform_module(Program().map_named_predictors(Retry))
    assert program(question="q").answer == "blue" and len(lm.prompts) == 2


def test_declared_constraints_stay_on_a_step_mapped_to_retry(scripted_lm):
    from lmassert_magic import Constraint, activate_assertions
    from lmassert_magic.compat import assert_transform_module

    lm = scripted_lm(lambda m: {"answer": "blue" if "Say blue." in m[-1]["content"] else "red"})

    class Holder(QuestionAnswerStep):
        def forward(self, question):
            return self.predictor(question=question)

    program = activate_assertions(Holder(), constraints=[Constraint("blue", lambda answer: answer == "blue",
                                                                    "Say blue.", target="predictor")])
    assert_transform_module(program)
    assert type(program.predictor).__name__ == "Retry"
    assert program(question="sky?").answer == "blue" and len(lm.prompts) == 2
