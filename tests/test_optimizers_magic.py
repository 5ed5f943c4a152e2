"""`%%compile --optimizer gepa|refine` through a real shell, on a tiny scripted pipeline."""

from __future__ import annotations

import re

import pytest
from IPython.core.error import UsageError

from lmassert_magic.engine import defaults
from lmassert_magic.engine.runtime import is_activated
from lmassert_magic.registry import get_registry

from helpers import GENERATE_TWEET_CELL, tweet_data_cell

FIX_MESSAGE = "Please revise the tweet to remove hashtag phrases."
BETTER = "Write the tweet without any hashtags."

NO_HASHTAGS = f'''%%assert GenerateTweet --name no_hashtags
not re.search(r"#\\w+", tweet)
"{FIX_MESSAGE}"
'''


def respond(messages):
    """Tweets a hashtag unless the instructions, the retry feedback or Refine's hint say not to."""
    system, last = messages[0]["content"], messages[-1]["content"]
    if "new_instruction" in system:  # GEPA's reflection
        return {"new_instruction": BETTER if FIX_MESSAGE in last else "Write a tweet."}
    if "advice" in system:  # Refine's OfferFeedback
        return {"discussion": "a hashtag", "advice": {"self": FIX_MESSAGE}}
    told = BETTER in system or "remove hashtag" in last
    return {"tweet": "clean tweet" if told else "#bad tweet"}


@pytest.fixture
def tweet(ip, scripted_lm):
    ip.run_cell(tweet_data_cell(3, 2, train_prefix="q", fact="fact about ", answer="a"))
    ip.run_cell(GENERATE_TWEET_CELL)
    ip.run_cell(NO_HASHTAGS)
    scripted_lm(respond)
    return ip


def compile_cell(flags: str) -> str:
    return (f"%%compile tweeter --train trainset --dev devset --metric quality -o rep {flags}\n"
            "retrieve >> GenerateTweet\n")


def _rates(ip):
    result = ip.user_ns["rep"].result if hasattr(ip.user_ns["rep"], "result") else ip.user_ns["rep"]
    return result, {key: s.rate("no_hashtags").rate for key, s in result.settings.items()}


def test_compile_with_gepa_runs_the_five_settings(tweet, capsys):
    ip = tweet
    ip.run_cell(compile_cell("--optimizer gepa --max-metric-calls 12 --time-cap 300"))
    result, rates = _rates(ip)
    assert list(result.settings) == ["vanilla", "infer_assert", "compile", "compile_assert", "c_infer_assert"]
    assert rates["vanilla"] == 0.0 and rates["compile"] == 0.0 and rates["compile_assert"] == 1.0
    program = ip.user_ns["tweeter"]
    assert is_activated(program) and program.GenerateTweet.signature.instructions == BETTER
    options = dict(get_registry().programs["tweeter"].options)
    assert (options["optimizer"], options["max_metric_calls"], options["time_cap"]) == ("gepa", 12, 300.0)
    assert "tweeter: Pipeline with constraints no_hashtags" in capsys.readouterr().out
    report = ip.user_ns["rep"]  # the report says what GEPA did, as text and as HTML
    assert "GEPA: " in report.text() and "constraint feedback on" in report.text()
    assert "counterexamples shown in" not in report.text()  # bootstrapping's words do not describe GEPA
    assert "lmassert-compile-note" in report.html() and "constraint feedback off" in report.html()


def test_compile_with_gepa_takes_the_laptop_budget_by_default(tweet):
    tweet.run_cell(compile_cell("--optimizer gepa --settings compile_assert"))
    options = dict(get_registry().programs["tweeter"].options)
    assert options["max_metric_calls"] == defaults.GEPA_MAX_METRIC_CALLS
    assert options["time_cap"] == defaults.GEPA_TIME_CAP_SECONDS


def test_compile_with_refine_wraps_the_target_in_dspy_refine(tweet):
    ip = tweet
    ip.run_cell(compile_cell("--optimizer refine --settings vanilla,compile_assert"))
    _, rates = _rates(ip)
    assert rates == {"vanilla": 0.0, "compile_assert": 1.0}
    ip.run_cell("prediction = tweeter(question='cats')")
    assert ip.user_ns["prediction"].tweet == "clean tweet"


@pytest.mark.parametrize(
    "flags, pattern",
    [
        ("--optimizer gepx", r"^line 1: argument --optimizer: invalid choice: 'gepx'"),
        ("--optimizer gepa --max-metric-calls 0", r"^line 1: --max-metric-calls must be 1 or more"),
        ("--optimizer gepa --max-metric-calls many", r"^line 1: argument --max-metric-calls: invalid int"),
        ("--optimizer gepa --time-cap 0", r"^line 1: --time-cap must be a positive number of seconds"),
        ("--max-metric-calls 20", r"^line 1: --max-metric-calls applies to --optimizer gepa only"),
        ("--optimizer refine --time-cap 60", r"^line 1: --time-cap applies to --optimizer gepa only"),
    ],
)
def test_bad_optimizer_options_name_the_line_and_change_nothing(tweet, flags, pattern):
    ip = tweet
    ip.run_cell(compile_cell("--settings vanilla"))  # something in the registry that must stay as it was
    before = get_registry().snapshot_json()
    program = ip.user_ns["tweeter"]
    with pytest.raises(UsageError) as info:
        ip.run_cell(compile_cell(flags))
    assert type(info.value) is UsageError and "\n" not in str(info.value)
    assert re.search(pattern, str(info.value)), str(info.value)
    assert get_registry().snapshot_json() == before and ip.user_ns["tweeter"] is program
