"""The retry timeline: every attempt of every step of one run, as the engine records it and as the report shows it.

Runs use a scripted LM whose attempts are known in advance: a first tweet with a hashtag, a retry
that drops it but is too long, a last retry that is short and clean.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import dspy
import pytest

from lmassert_magic import Constraint, Suggest, activate_assertions, lm_judge
from lmassert_magic.engine import run_record_of
from lmassert_magic.engine.ablation import INFER_ASSERT, VANILLA, run_ablation
from lmassert_magic.engine.timeline import timeline_rows, wdiff, word_diff
from lmassert_magic.report import CompileReport

from helpers import FIX, Query, Tweet, hashtag_constraint

SHORT = "Keep the tweet under 20 characters."
LONG_CLEAN = "a clean tweet that is far too long for the limit"


def respond(messages: list[dict[str, Any]]) -> dict[str, str]:
    """Query step: a fixed query. Tweet step: hashtag first; without it but long after FIX; short after SHORT."""
    if "## query ##" in messages[0]["content"]:
        return {"query": "search q"}
    text = messages[-1]["content"]
    if SHORT in text:
        return {"tweet": "clean tweet"}
    if FIX in text:
        return {"tweet": LONG_CLEAN}
    return {"tweet": "great #news"}


def short_constraint() -> Constraint:
    return Constraint("short", lambda tweet: len(tweet) <= 20, SHORT, target=Tweet)


class TwoSteps(dspy.Module):
    """A query step, then the tweet step the constraints are on."""

    def __init__(self) -> None:
        super().__init__()
        self.query = dspy.Predict(Query)
        self.gen = dspy.Predict(Tweet)

    def forward(self, question: str) -> Any:
        self.query(question=question)
        return self.gen(question=question)


def known_run(scripted_lm: Any) -> Any:
    scripted_lm(respond)
    program = activate_assertions(TwoSteps(), constraints=[hashtag_constraint(), short_constraint()])
    return run_record_of(program(question="q1"))


# ---------------------------------------------------------------- what the engine records


def test_every_attempt_is_recorded_in_order_with_outputs_feedback_and_verdicts(scripted_lm):
    record = known_run(scripted_lm)
    got = [(a.seq, a.step, a.attempt, a.reason, a.outputs, a.feedback, a.verdicts, a.kept) for a in record.attempts]
    assert got == [
        (0, "query", 0, "first", {"query": "search q"}, [], {}, True),
        (1, "gen", 0, "first", {"tweet": "great #news"}, [], {"no_hashtags": False, "short": True}, False),
        (2, "gen", 1, "retry", {"tweet": LONG_CLEAN}, [FIX + "."], {"no_hashtags": True, "short": False}, False),
        (3, "gen", 2, "retry", {"tweet": "clean tweet"}, [FIX + ".", SHORT], {"no_hashtags": True, "short": True},
         True),
    ]
    assert all(a.inputs == {"question": "q1"} for a in record.attempts)
    assert all(a.error is None for a in record.attempts)


def test_each_attempt_carries_its_own_calls_and_tokens(scripted_lm):
    record = known_run(scripted_lm)
    assert [a.lm_calls for a in record.attempts] == [1, 1, 1, 1]
    assert sum(a.lm_calls for a in record.attempts) == record.lm_calls
    assert all(a.tokens > 0 and a.tokens == a.prompt_tokens + a.completion_tokens for a in record.attempts)
    assert sum(a.tokens for a in record.attempts) == record.tokens
    assert sum(a.prompt_tokens for a in record.attempts) == record.prompt_tokens
    # a retry's prompt carries the feedback and the past output: longer than the first try's
    assert record.attempts[2].prompt_tokens > record.attempts[1].prompt_tokens
    assert all(a.seconds >= 0 for a in record.attempts)
    assert all(a.cache_hits == 0 for a in record.attempts)


def test_the_async_path_records_the_same_attempts(scripted_lm):
    scripted_lm(respond)

    class AsyncTwoSteps(TwoSteps):
        async def aforward(self, question: str) -> Any:
            await self.query.acall(question=question)
            return await self.gen.acall(question=question)

    program = activate_assertions(AsyncTwoSteps(), constraints=[hashtag_constraint(), short_constraint()])
    record = run_record_of(asyncio.run(program.acall(question="q1")))
    expected = known_run(scripted_lm)
    assert [(a.seq, a.step, a.attempt, a.reason, a.outputs, a.feedback, a.verdicts, a.kept, a.lm_calls, a.tokens)
            for a in record.attempts] == [
        (a.seq, a.step, a.attempt, a.reason, a.outputs, a.feedback, a.verdicts, a.kept, a.lm_calls, a.tokens)
        for a in expected.attempts]


def test_judge_calls_and_their_tokens_count_towards_the_attempt_they_judged(scripted_lm):
    def answer(messages: list[dict[str, Any]]) -> dict[str, Any]:
        if "## answer ## ]]" in messages[-1]["content"].split("Respond with")[-1]:
            return {"answer": "a retry tweet" in messages[-1]["content"]}  # the first tweet is judged dull
        return {"tweet": "a retry tweet" if "Be lively" in messages[-1]["content"] else "a tweet"}

    scripted_lm(answer)
    engaging = Constraint("engaging", lambda tweet: lm_judge("Is the tweet engaging?", tweet=tweet), "Be lively.",
                          target=Tweet)
    record = run_record_of(activate_assertions(dspy.Predict(Tweet), constraints=[engaging])(question="q"))
    assert [(a.attempt, a.verdicts, a.lm_calls, a.judge_calls) for a in record.attempts] == [
        (0, {"engaging": False}, 1, 1), (1, {"engaging": True}, 1, 1)]
    assert sum(a.lm_calls + a.judge_calls for a in record.attempts) == record.lm_calls
    assert sum(a.tokens for a in record.attempts) == record.tokens


def test_cached_attempts_are_counted_as_cache_hits(scripted_lm):
    scripted_lm(respond, cache=True)
    program = activate_assertions(TwoSteps(), constraints=[hashtag_constraint(), short_constraint()])
    program(question="cached")
    record = run_record_of(program(question="cached"))
    assert [a.cache_hits for a in record.attempts] == [1, 1, 1, 1]
    assert sum(a.tokens for a in record.attempts) == record.tokens  # a cached answer still reports its tokens


def test_inline_backtrack_retries_the_target_and_reruns_the_steps_after_it(scripted_lm):
    def answer(messages: list[dict[str, Any]]) -> dict[str, str]:
        if "## query ##" in messages[0]["content"]:
            return {"query": "ok" if "Shorter query" in messages[-1]["content"] else "a very long query"}
        return {"tweet": "t"}

    scripted_lm(answer)

    class Program(TwoSteps):
        def forward(self, question: str) -> Any:
            query = self.query(question=question).query
            Suggest(len(query) < 10, "Shorter query", target_module=self.query)
            return self.gen(question=question + query)

    program = activate_assertions(Program())
    record = run_record_of(program(question="q"))
    got = [(a.step, a.attempt, a.reason, a.feedback, a.kept) for a in record.attempts]
    assert got == [
        ("query", 0, "first", [], False),
        ("query", 1, "retry", ["Shorter query"], True),
        ("gen", 0, "first", [], True),
    ]
    (name,) = record.attempts[0].verdicts
    assert record.attempts[0].verdicts[name] is False and record.attempts[1].verdicts[name] is True


def test_a_step_after_a_retried_step_is_a_rerun(scripted_lm):
    def answer(messages: list[dict[str, Any]]) -> dict[str, str]:
        if "## query ##" in messages[0]["content"]:
            return {"query": "ok" if "Shorter query" in messages[-1]["content"] else "a very long query"}
        return {"tweet": "t"}

    scripted_lm(answer)

    class Program(TwoSteps):
        def forward(self, question: str) -> Any:
            query = self.query(question=question).query
            tweet = self.gen(question=question + query).tweet
            Suggest(len(query) < 10, "Shorter query", target_module=self.query)
            return dspy.Prediction(tweet=tweet)

    program = activate_assertions(Program())
    record = run_record_of(program(question="q"))
    got = [(a.step, a.attempt, a.reason, a.inputs, a.kept) for a in record.attempts]
    assert got == [
        ("query", 0, "first", {"question": "q"}, False),
        ("gen", 0, "first", {"question": "qa very long query"}, False),
        ("query", 1, "retry", {"question": "q"}, True),
        ("gen", 1, "rerun", {"question": "qok"}, True),
    ]


# ---------------------------------------------------------------- the word diff


def test_word_diff_uses_words_and_marks_what_changed():
    ops = word_diff("great #news", LONG_CLEAN)
    assert wdiff(ops) == "[-great #news-] {+" + LONG_CLEAN + "+}"
    assert wdiff(word_diff(LONG_CLEAN, "clean tweet")) == "[-a-] clean tweet [-that is far too long for the limit-]"
    assert word_diff("same words", "same words") == [("equal", "same words")]


# ---------------------------------------------------------------- the rows and the DataFrame


def test_rows_give_the_diff_and_the_flips_against_the_steps_previous_attempt(scripted_lm):
    rows = timeline_rows(known_run(scripted_lm))
    assert [r.flipped for r in rows] == [[], [], [("no_hashtags", False, True), ("short", True, False)],
                                         [("short", False, True)]]
    assert rows[0].diff == {} and rows[1].diff == {}  # a first attempt has nothing to differ from
    assert wdiff(rows[2].diff["tweet"]) == "[-great #news-] {+" + LONG_CLEAN + "+}"
    assert wdiff(rows[3].diff["tweet"]) == "[-a-] clean tweet [-that is far too long for the limit-]"


@pytest.fixture(scope="module")
def ablation() -> Any:
    lm = __import__("lmassert_magic.testing", fromlist=["ScriptedLM"]).ScriptedLM(respond)
    dev = [dspy.Example(question=f"d{i}").with_inputs("question") for i in range(3)]
    with dspy.context(lm=lm):
        return run_ablation(TwoSteps(), [], dev, lambda ex, pred, trace=None: 1.0,
                            constraints=[hashtag_constraint(), short_constraint()], settings=[VANILLA, INFER_ASSERT])


def test_report_timeline_is_one_row_per_attempt(ablation):
    frame = CompileReport(ablation).timeline(1, setting="infer_assert")
    assert list(frame.index) == [0, 1, 2, 3] and frame.index.name == "seq"
    assert list(frame.step) == ["query", "gen", "gen", "gen"]
    assert list(frame.attempt) == [0, 0, 1, 2]
    assert list(frame.reason) == ["first", "first", "retry", "retry"]
    assert list(frame.kept) == [True, False, False, True]
    assert frame.outputs[3] == {"tweet": "clean tweet"}
    assert frame.feedback[2] == [FIX + "."] and frame.feedback[3] == [FIX + ".", SHORT]
    assert frame["diff"][2] == "tweet: [-great #news-] {+" + LONG_CLEAN + "+}"
    assert frame.flipped[2] == ["no_hashtags: fail -> pass", "short: pass -> fail"]
    assert frame.flipped[3] == ["short: fail -> pass"]
    assert frame.failed[1] == ["no_hashtags"] and frame.passed[1] == ["short"]
    assert list(frame.lm_calls) == [1, 1, 1, 1]
    assert frame.tokens.sum() == ablation.settings[INFER_ASSERT].examples[1].record.tokens
    assert {"inputs", "judge_calls", "cache_hits", "prompt_tokens", "completion_tokens", "seconds",
            "error"} <= set(frame.columns)


def test_report_timeline_finds_settings_by_label_and_examples_by_inputs(ablation):
    report = CompileReport(ablation)
    by_label = report.timeline(2, setting="Infer w/ Assert")
    by_example = report.timeline(dspy.Example(question="d2").with_inputs("question"), setting=INFER_ASSERT)
    assert by_label.equals(by_example)
    vanilla = report.timeline(2, setting="vanilla")
    assert list(vanilla.attempt) == [0, 0]  # observed, never retried
    assert vanilla.failed[1] == ["no_hashtags"]


def test_report_timeline_defaults_to_the_assertion_setting_and_a_failing_example(ablation):
    report = CompileReport(ablation)
    assert report.timeline().equals(report.timeline(0, setting=INFER_ASSERT))


def test_report_timeline_names_what_is_wrong(ablation):
    report = CompileReport(ablation)
    with pytest.raises(ValueError, match="no setting 'compile'.*Vanilla, Infer w/ Assert"):
        report.timeline(0, setting="compile")
    with pytest.raises(ValueError, match="example 7.*3 dev examples"):
        report.timeline(7, setting=VANILLA)
    with pytest.raises(ValueError, match="no dev example has the inputs"):
        report.timeline({"question": "nope"}, setting=VANILLA)


# ---------------------------------------------------------------- the views: HTML, text, widget

from test_report import assert_inert, payload_result, visible_text  # noqa: E402  (helpers, not tests)


def attempt_rows(html: str) -> list[str]:
    """Each attempt's row (rows hold tables of their own: cut at the next attempt or the table's end)."""
    parts = html.split('<tr class="lmassert-attempt')[1:]
    return ['<tr class="lmassert-attempt' + p.split("</tbody>")[0] for p in parts]


def test_timeline_html_shows_each_attempt_with_feedback_diff_flips_and_costs(ablation):
    record = ablation.settings[INFER_ASSERT].examples[1].record
    html = CompileReport(ablation).trace(1, setting=INFER_ASSERT)._repr_html_()
    assert_inert(html)
    rows = attempt_rows(html)
    assert len(rows) == 4
    assert ["lmassert-kept" in r for r in rows] == [True, False, False, True]
    first, retry, last = visible_text(rows[1]), visible_text(rows[2]), visible_text(rows[3])
    assert "gen" in first and "first try" in first and "great #news" in first
    assert "retry 1" in retry and FIX + "." in retry
    assert "retry 2" in last and SHORT in last
    deleted = re.findall(r'<span class="lmassert-del"[^>]*>(.*?)</span>', rows[2])
    inserted = re.findall(r'<span class="lmassert-ins"[^>]*>(.*?)</span>', rows[2])
    assert deleted == ["great #news"] and inserted == [LONG_CLEAN]
    assert "no_hashtags fail → pass" in retry and "short pass → fail" in retry
    assert "short fail → pass" in last
    assert f"{record.attempts[2].tokens} tokens" in retry and "1 LM call" in retry
    head = visible_text(html.split('<table class="lmassert-timeline-table"', 1)[0])
    assert "Infer w/ Assert" in head and "#1" in head and "d1" in head


def test_timeline_text_for_a_terminal(ablation):
    text = repr(CompileReport(ablation).trace(1, setting=INFER_ASSERT))
    assert "Infer w/ Assert · #1" in text
    assert "[-great #news-] {+" + LONG_CLEAN + "+}" in text
    assert "flipped: no_hashtags: fail -> pass, short: pass -> fail" in text
    assert "feedback: " + FIX + "." in text


def test_static_report_has_a_timeline_section_per_setting_failing_examples_first(ablation):
    html = CompileReport(ablation).html()
    section = html.split('class="lmassert-section-timelines"', 1)[1]
    groups = re.findall(r'<details class="lmassert-timeline-group"[^>]*><summary[^>]*>(.*?)</summary>', section,
                        re.S)
    assert [visible_text(g) for g in groups] == [
        "Vanilla · 3 examples in trouble or retried",
        "Infer w/ Assert · 3 examples in trouble or retried",
    ]
    summaries = [visible_text(s) for s in re.findall(
        r'<details class="lmassert-timeline"[^>]*><summary[^>]*>(.*?)</summary>', html, re.S)]
    assert summaries[:3] == ["#0 · fails no_hashtags · no retry", "#1 · fails no_hashtags · no retry",
                             "#2 · fails no_hashtags · no retry"]
    assert summaries[3:] == ["#0 · 2 retries", "#1 · 2 retries", "#2 · 2 retries"]
    assert len(attempt_rows(html)) == 3 * 2 + 3 * 4


def test_widget_timeline_tab_picks_setting_and_example_failing_first(ablation):
    w = CompileReport(ablation).widget()
    titles = [w.tabs.get_title(i) for i in range(len(w.tabs.children))]
    assert "Timeline" in titles
    tab = w.timeline
    assert w.tabs.children[titles.index("Timeline")] is tab
    assert tab.setting.value == INFER_ASSERT
    assert [label for label, _ in tab.example.options] == ["#0 · 2 retries", "#1 · 2 retries", "#2 · 2 retries"]
    tab.example.value = 1
    assert len(attempt_rows(tab.body.value)) == 4 and "d1" in visible_text(tab.body.value)
    tab.setting.value = VANILLA
    assert tab.example.options[0][0] == "#0 · fails no_hashtags · no retry"
    assert len(attempt_rows(tab.body.value)) == 2


@pytest.mark.parametrize("payload", ["<script>window.__xss=1</script>", "<img src=x onerror=\"window.__xss=1\">",
                                     "\" onmouseover=\"alert(1)\" x=\"", "\u202e<b>x</b>"])
def test_timeline_payloads_stay_text(payload: str) -> None:
    report = CompileReport(payload_result(payload))  # every string of its timelines is the payload
    fragments = [report.html(), report.trace(0, setting=INFER_ASSERT)._repr_html_()]
    w = report.widget()
    for _, key in w.timeline.setting.options:
        w.timeline.setting.value = key
        for _, index in w.timeline.example.options:
            w.timeline.example.value = index
            fragments.append(w.timeline.body.value)
    from lmassert_magic.report import html as H

    for fragment in fragments:
        assert_inert(fragment)
        assert H.clean(payload) in visible_text(fragment)
    assert H.clean(payload) in repr(report.trace(0, setting=INFER_ASSERT))
