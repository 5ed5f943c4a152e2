"""The report: text/HTML fallbacks, the widget's state, escaping of every LM string, large results.

Results are built two ways: by hand (exact numbers, any payload anywhere) and by a real
`run_ablation` over a scripted LM (the shapes the engine really produces).
"""

from __future__ import annotations

import math
import re
from html.parser import HTMLParser
from typing import Any

import dspy
import pytest

from lmassert_magic import Constraint
from lmassert_magic.engine.ablation import (
    COMPILE,
    COMPILE_ASSERT,
    INFER_ASSERT,
    SETTINGS,
    VANILLA,
    AblationResult,
    ExampleResult,
    SettingResult,
    run_ablation,
)
from lmassert_magic.engine.records import ConstraintStats, Counterexample, RunRecord
from lmassert_magic.report import WIDGET_MIME, CompileReport, widget_frontend_available
from lmassert_magic.report import html as H
from lmassert_magic.testing import ScriptedLM

# ------------------------------------------------------------------------------------------ builders


def stats(name: str, hard: bool, checks: int, first: int, after: int, backtracks: int = 0) -> ConstraintStats:
    """Counts of `checks` examples with one check each (so examples and checks agree)."""
    return ConstraintStats(name, hard, checks=checks, first_try_passes=first, passes_after_backtrack=after,
                           final_failures=checks - first - after, backtracks=backtracks,
                           examples=checks, passed_first=first, passed_final=first + after)


def hand_result(
    *,
    names: tuple[str, str] = ("no_hashtags", "short"),
    field: str = "tweet",
    output: str = "a tweet",
    feedback: str = "Please remove hashtags.",
    predictor: str = "generate",
    error: str = "DSPyAssertionError: assertion 'short' failed after 3 attempts",
    metric_name: str = "quality",
    n_dev: int = 4,
    n_demos: int = 3,
    n_cx: int = 2,
    interrupted: bool = False,
    settings: tuple[str, ...] = SETTINGS,
) -> AblationResult:
    """A result with exact counts: soft `names[0]` passes 1/4 in Vanilla and 4/4 with assertions."""
    soft, hard = names
    result = AblationResult(
        constraints=[Constraint(soft, lambda **k: True, hard=False), Constraint(hard, lambda **k: True, hard=True)],
        metric_name=metric_name, interrupted=interrupted, requested=SETTINGS,
    )
    for key in settings:
        with_assert = key in (INFER_ASSERT, "c_infer_assert")
        res = SettingResult(key, lm_calls=n_dev * (2 if with_assert else 1), tokens=100 * n_dev,
                            eval_seconds=1.5, compile_seconds=0.5 if key not in (VANILLA, INFER_ASSERT) else 0.0)
        for i in range(n_dev):
            record = RunRecord(
                constraints={
                    soft: stats(soft, False, 1, int(i == 0), int(with_assert and i > 0), int(with_assert)),
                    hard: stats(hard, True, 1, 1, 0),
                },
                counterexamples=[
                    Counterexample(soft, False, predictor, {"question": f"q{i}"}, {field: f"{output} #{j}"},
                                   feedback, {field: "fixed"} if j % 2 == 0 else None)
                    for j in range(n_cx if with_assert else 0)
                ],
            )
            failed = with_assert and i == n_dev - 1
            res.examples.append(ExampleResult(i, {"question": f"q{i}"}, {field: output}, float(i % 2), record,
                                              error if failed else None))
        result.settings[key] = res
    for key in (COMPILE, COMPILE_ASSERT):
        if key in settings:
            result.demos[key] = {predictor: [
                {"augmented": True, "question": f"q{i}", field: output,
                 **({"feedback": feedback, f"past_{field}": output + " #bad"} if key == COMPILE_ASSERT else {})}
                for i in range(n_demos)
            ]}
    return result


class _Tweet(dspy.Signature):
    """Write a tweet."""

    question: str = dspy.InputField()
    tweet: str = dspy.OutputField()


def scripted_run(tweet_first: str = "bad #tag", tweet_fixed: str = "clean tweet", **kw: Any) -> AblationResult:
    def respond(messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"tweet": tweet_fixed if "remove hashtags" in ScriptedLM.last_message(messages) else tweet_first}

    c = Constraint("no_hashtags", lambda tweet: "#" not in tweet, "Please remove hashtags.", target=_Tweet)
    train = [dspy.Example(question=f"q{i}", tweet="t").with_inputs("question") for i in range(6)]
    dev = [dspy.Example(question=f"d{i}", tweet="t").with_inputs("question") for i in range(5)]

    def quality(example: Any, pred: Any, trace: Any = None) -> bool:
        return "#" not in pred.tweet

    with dspy.context(lm=ScriptedLM(respond)):
        return run_ablation(dspy.Predict(_Tweet), train, dev, quality, constraints=[c], **kw)


@pytest.fixture(scope="module")
def real() -> AblationResult:
    return scripted_run()


# ------------------------------------------------------------------------------------------ HTML parsing


class Collect(HTMLParser):
    """Every tag, attribute and text node of an HTML fragment."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, attrs))

    handle_startendtag = handle_starttag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(fragment: str) -> Collect:
    p = Collect()
    p.feed(fragment)
    p.close()
    return p


def visible_text(fragment: str) -> str:
    return "".join(parse(fragment).text)


ALLOWED_TAGS = {"div", "span", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "b", "em",
                "small", "code", "br", "ul", "li", "p", "svg", "g", "rect", "text", "title", "line"}
ALLOWED_ATTRS = {"class", "style", "title", "width", "height", "x", "y", "x1", "x2", "y1", "y2", "fill",
                 "fill-opacity", "stroke", "stroke-dasharray", "stroke-width", "viewbox", "xmlns", "role",
                 "font-size", "font-weight", "text-anchor", "data-kind", "open"}


def assert_inert(fragment: str) -> Collect:
    """Only our own tags and attributes: nothing a payload could have injected."""
    p = parse(fragment)
    for tag, attrs in p.tags:
        assert tag in ALLOWED_TAGS, f"unexpected tag <{tag}> in output"
        for name, value in attrs:
            assert name in ALLOWED_ATTRS, f"unexpected attribute {name}={value!r} on <{tag}>"
            if name == "style":
                assert not re.search(r"url\(|expression|javascript|@import", value or "", re.I), value
    return p


def widget_html_values(widget: Any) -> list[str]:
    import ipywidgets as W

    out = []
    stack = [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, W.HTML):
            out.append(w.value)
        stack.extend(getattr(w, "children", ()))
    return out


# ------------------------------------------------------------------------------------------ display


def test_bundle_has_text_and_html_without_a_widget_frontend(real: AblationResult) -> None:
    assert not widget_frontend_available()  # pytest has no kernel
    bundle = CompileReport(real)._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "no_hashtags: 0% -> 100%" in bundle["text/plain"]
    assert 'class="lmassert-passrates"' in bundle["text/html"]
    assert "<script" not in bundle["text/html"]


def test_bundle_adds_the_widget_view_when_asked(real: AblationResult) -> None:
    report = CompileReport(real, widgets=True)
    bundle = report._repr_mimebundle_()
    assert bundle[WIDGET_MIME]["model_id"] == report.widget().model_id
    assert "text/html" in bundle and "text/plain" in bundle
    # the same widget is reused, so two displays share one model
    assert report._repr_mimebundle_()[WIDGET_MIME]["model_id"] == bundle[WIDGET_MIME]["model_id"]


def test_env_switch_turns_widgets_off(monkeypatch: pytest.MonkeyPatch, real: AblationResult) -> None:
    class FakeShell:
        kernel = object()

    monkeypatch.setattr("IPython.get_ipython", lambda: FakeShell())
    assert widget_frontend_available()
    assert WIDGET_MIME in CompileReport(real)._repr_mimebundle_()
    monkeypatch.setenv("LMASSERT_WIDGETS", "0")
    assert not widget_frontend_available()
    assert WIDGET_MIME not in CompileReport(real)._repr_mimebundle_()


def test_ipython_display_formatter_uses_the_bundle(bare_ip: Any, real: AblationResult) -> None:
    data, _ = bare_ip.display_formatter.format(CompileReport(real))
    assert "lmassert-chart" in data["text/html"]
    assert data["text/plain"].startswith("LM Assertions report")


# ------------------------------------------------------------------------------------------ content


def test_passrate_table_and_chart_from_a_real_run(real: AblationResult) -> None:
    html = CompileReport(real).html()
    assert_inert(html)
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    rows = re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)
    labels = [re.search(r"</span>(.*?)</th>", r).group(1) for r in rows]
    assert labels == ["Vanilla", "Infer w/ Assert", "Compile", "Compile w/ Assert", "C+Infer w/ Assert"]
    # no_hashtags: 0% without assertions at inference, 100% with
    rates = [re.findall(r">(\d+%|n/a)</td>", r)[0] for r in rows]
    assert rates == ["0%", "100%", "0%", "0%", "100%"]
    # LM calls per example: 1 without backtracking, 2 with one backtrack
    calls = [re.findall(r">(\d+\.\d)</td>", r)[1] for r in rows]
    assert calls == ["1.0", "2.0", "1.0", "1.0", "2.0"]
    assert "quality" in visible_text(table)
    svg = re.search(r'<svg class="lmassert-chart".*?</svg>', html, re.S).group(0)
    # one bar per setting for the metric and for the constraint
    assert len(re.findall(r'class="lmassert-bar"', svg)) == 10


def test_numbers_match_a_hand_built_result() -> None:
    result = hand_result()
    html = CompileReport(result).html()
    p = assert_inert(html)
    text = "".join(p.text)
    # soft passes 1/4 without assertions, 4/4 with; headline read aloud, like with like
    assert "no_hashtags: 25% -> 100% (Vanilla -> Infer w/ Assert), +1.0 LM calls per example" in text
    svg = re.search(r'<svg class="lmassert-chart".*?</svg>', html, re.S).group(0)
    widths = {
        re.search(r"<title>(.*?)</title>", m).group(1): float(re.search(r'width="([\d.]+)"', m).group(1))
        for m in re.findall(r'<rect class="lmassert-bar"[^>]*>.*?</rect>', svg, re.S)
    }
    assert widths["Vanilla — no_hashtags: 25%"] == pytest.approx(75.0)  # 25% of 300 px
    assert widths["Infer w/ Assert — no_hashtags: 100%"] == pytest.approx(300.0)
    assert widths["Vanilla — metric: quality: 50.0"] == pytest.approx(150.0)
    # hard bars are solid, soft ones dashed and light
    soft_bars = re.findall(r'<rect class="lmassert-bar"[^>]*><title>[^<]*no_hashtags', svg)
    hard_bars = re.findall(r'<rect class="lmassert-bar"[^>]*><title>[^<]*short', svg)
    assert len(soft_bars) == len(hard_bars) == 5
    assert all("stroke-dasharray" in b for b in soft_bars)
    assert not any("stroke-dasharray" in b or "fill-opacity" in b for b in hard_bars)
    assert re.search(r'data-kind="hard".*short · hard', svg, re.S)
    # metric, calls, tokens, time per setting
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    vanilla = visible_text(re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)[0])
    assert "Vanilla" in vanilla and "50.0" in vanilla and "100" in vanilla and "1.5 s" in vanilla


def test_demos_counterexamples_and_failures_sections() -> None:
    result = hand_result(n_demos=3, n_cx=2)
    html = CompileReport(result).html()
    assert_inert(html)
    demos = re.search(r'class="lmassert-section-demos".*?(?=<details class="lmassert-section-counterexamples")',
                      html, re.S).group(0)
    assert demos.count('class="lmassert-demo"') == 6
    assert demos.count('class="lmassert-from-cx"') == 3  # only Compile w/ Assert demos carry feedback
    assert "Please remove hashtags." in visible_text(demos)
    cx = html.split('class="lmassert-section-counterexamples"')[1]
    groups = re.findall(r'<details class="lmassert-cx-group"><summary>(.*?)</summary>', cx, re.S)
    assert len(groups) == 1
    # 2 per example x 4 examples x 2 asserted settings; every other one fixed
    assert "16 counterexamples, 8 fixed, 8 not fixed" in visible_text(groups[0])
    assert cx.count('class="lmassert-not-fixed"') == 8
    assert "a tweet #1" in visible_text(cx) and "fixed" in visible_text(cx)
    failures = re.search(r'<table class="lmassert-failures".*?</tbody>', html, re.S).group(0)
    ftext = visible_text(failures)
    assert ftext.count("DSPyAssertionError") == 2 and "#3" in ftext and "C+Infer w/ Assert" in ftext
    # failures open by default, demos closed
    assert re.search(r'<details class="lmassert-section-failures" open', html)
    assert not re.search(r'<details class="lmassert-section-demos" open', html)


def test_no_failures_section_is_closed_and_says_none(real: AblationResult) -> None:
    html = CompileReport(real).html()
    assert "No failed examples." in html
    assert not re.search(r'<details class="lmassert-section-failures" open', html)


def test_interrupted_result_says_so() -> None:
    result = hand_result(interrupted=True, settings=(VANILLA, INFER_ASSERT))
    report = CompileReport(result)
    html = report.html()
    assert 'class="lmassert-interrupted"' in html
    banner = visible_text(re.search(r'<div class="lmassert-interrupted".*?</div>', html, re.S).group(0))
    assert "partial result" in banner and "Compile, Compile w/ Assert, C+Infer w/ Assert" in banner
    assert "INTERRUPTED" in report.text()
    w = report.widget()
    assert w.children[1] is w.banner and "Interrupted" in w.banner.value
    assert report.interrupted


def test_complete_result_has_no_banner(real: AblationResult) -> None:
    report = CompileReport(real)
    assert "lmassert-interrupted" not in report.html()
    assert "INTERRUPTED" not in report.text()
    assert report.widget().banner not in report.widget().children


def test_interrupted_real_run(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}

    def progress(event: Any) -> None:
        if event.setting == COMPILE and event.phase == "evaluate":
            calls["n"] += 1
            raise KeyboardInterrupt

    result = scripted_run(progress=progress)
    assert result.interrupted and calls["n"] == 1
    report = CompileReport(result)
    assert "Interrupted" in visible_text(report.html())
    assert [s.label for s in result.settings.values()] == ["Vanilla", "Infer w/ Assert"]


def test_only_vanilla_still_has_a_summary_line() -> None:
    result = hand_result(settings=(VANILLA,))
    lines = CompileReport(result).headlines
    assert lines == ["Vanilla: no_hashtags 25%, short 100%, quality 50.0, 1.0 LM calls per example"]


def test_long_text_is_cut_with_an_expand_control() -> None:
    long = "x" * 1000 + "END"
    result = hand_result(output=long)
    html = CompileReport(result).html()
    assert_inert(html)
    details = re.findall(r'<details class="lmassert-more">.*?</details>', html, re.S)
    assert details and all(re.search(r"\(\+72\d chars\)", d) and "END" in d for d in details)
    assert any("(+723 chars)" in d for d in details)
    # the summary shows only the head
    assert "END" not in re.search(r"<summary.*?</summary>", details[0], re.S).group(0)


def test_nan_rates_show_as_not_checked() -> None:
    result = hand_result(settings=(VANILLA, INFER_ASSERT))
    for e in result.settings[VANILLA].examples:
        del e.record.constraints["short"]
    html = CompileReport(result).html()
    assert "n/a" in html and "not checked" in html
    assert math.isnan(result.summary().loc["Vanilla", "short"])


def test_tables_are_dataframes(real: AblationResult) -> None:
    report = CompileReport(real)
    assert set(report.tables) == {"summary", "pass_rates", "demos", "counterexamples", "examples", "failures"}
    assert list(report.summary().index) == [s.label for s in real.settings.values()]
    assert len(report.pass_rates()) == 5
    assert len(report.counterexamples()) == len(real.all_counterexamples()) > 0
    assert len(report.demos()) == sum(len(d) for p in real.demos.values() for d in p.values())
    failed = CompileReport(hand_result()).tables["failures"]
    assert list(failed["setting"]) == ["Infer w/ Assert", "C+Infer w/ Assert"]
    assert failed["error"].str.contains("DSPyAssertionError").all()


def test_text_report_for_a_terminal() -> None:
    text = CompileReport(hand_result()).text()
    assert text.splitlines()[0] == "LM Assertions report: 5 setting(s)"
    assert "no_hashtags (soft)" in text and "short (hard)" in text
    assert "Counterexamples: 16 (no_hashtags: 16, 8 fixed)" in text
    assert "Failed examples: 2" in text and "Infer w/ Assert #3: DSPyAssertionError" in text
    assert repr(CompileReport(hand_result())) == text


# ------------------------------------------------------------------------------------------ widget


def test_widget_tabs_titles_and_parts() -> None:
    w = CompileReport(hand_result()).widget()
    assert [w.tabs.get_title(i) for i in range(len(w.tabs.children))] == [
        "Pass rates", "Demos (6)", "Counterexamples", "Failures (2)"
    ]
    assert w.tabs.children[0].children == (w.passrates, w.chart)
    assert 'class="lmassert-passrates"' in w.passrates.value and "<svg" in w.chart.value
    assert "no_hashtags: 25% -> 100%" in visible_text(w.headline.value)
    assert w.children == (w.title, w.headline, w.tabs)
    assert visible_text(w.title.value) == "LM Assertions report — 5 settings, 4 dev examples"


def test_widget_counterexample_filter_and_pages() -> None:
    result = hand_result(n_cx=30)  # 240 counterexamples of one constraint
    result.compile_counterexamples = [
        Counterexample("short", True, "generate", {"question": "c"}, {"tweet": "long"}, "Be short.", None)
        for _ in range(3)
    ]
    w = CompileReport(result).widget()
    f = w.constraint_filter
    assert [v for _, v in f.options] == ["__all__", "short", "no_hashtags"]
    assert f.options[1][0] == "short (hard; 3, 0 fixed)"
    pager = w.cx_pager
    assert pager.position.value == "1–20 of 243" and pager.prev_button.disabled and not pager.next_button.disabled
    assert pager.body.value.count('class="lmassert-cx"') == 20
    pager.next_button.click()
    assert pager.position.value == "21–40 of 243" and not pager.prev_button.disabled
    f.value = "short"
    assert pager.position.value == "1–3 of 3" and pager.next_button.disabled
    assert visible_text(pager.body.value).count("Be short.") == 3
    assert pager.body.value.count('class="lmassert-not-fixed"') == 3
    f.value = "no_hashtags"
    w.phase_filter.value = "compile"
    assert pager.position.value == "0 of 0" and "No counterexamples." in pager.body.value
    w.phase_filter.value = "Infer w/ Assert"
    assert pager.position.value == "1–20 of 120"
    pager.go(10**6)
    assert pager.position.value == "101–120 of 120" and pager.next_button.disabled


def test_widget_demo_filter() -> None:
    w = CompileReport(hand_result(n_demos=25)).widget()
    assert w.demo_pager.position.value == "1–20 of 50"
    labels = [label for label, _ in w.demo_filter.options]
    assert labels == ["all (50)", "Compile · generate (25, 0 from counterexamples)",
                      "Compile w/ Assert · generate (25, 25 from counterexamples)"]
    w.demo_filter.value = w.demo_filter.options[2][1]
    assert w.demo_pager.position.value == "1–20 of 25"
    assert w.demo_pager.body.value.count('class="lmassert-from-cx"') == 20


def test_widget_failures_tab() -> None:
    w = CompileReport(hand_result()).widget()
    assert w.failures_pager.position.value == "1–2 of 2"
    assert visible_text(w.failures_pager.body.value).count("DSPyAssertionError") == 2


def test_large_result_renders_pages_not_everything() -> None:
    result = hand_result(n_dev=100, n_cx=5, n_demos=500)  # 1000 demos, 1000 counterexamples
    report = CompileReport(result)
    assert len(result.all_counterexamples()) == 1000
    w = report.widget()
    assert w.cx_pager.body.value.count('class="lmassert-cx"') == 20
    assert w.demo_pager.body.value.count('class="lmassert-demo"') == 20
    html = report.html()
    assert html.count('class="lmassert-cx"') == H.ROW_LIMIT
    assert html.count('class="lmassert-demo"') == 2 * H.ROW_LIMIT
    assert "25 of 1000 shown" in visible_text(html) and "25 of 500 shown" in visible_text(html)


# ------------------------------------------------------------------------------------------ escaping

PAYLOADS = [
    "<script>window.__xss=1</script>",
    "<img src=x onerror=\"window.__xss=1\">",
    "<svg onload=window.__xss=1>",
    "<svg/onload=alert(1)>",
    "<a href=\"javascript:alert(1)\">click</a>",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "<iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
    "<style>@import 'http://evil.example/x.css';</style>",
    "<div style=\"background:url(javascript:alert(1))\">",
    "\"><script>alert(1)</script>",
    "' onmouseover='alert(1)' x='",
    "\" onfocus=\"alert(1)\" autofocus=\"",
    "</title><script>alert(1)</script>",
    "</text></svg><img src=x onerror=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<body onload=alert(1)>",
    "<input autofocus onfocus=alert(1)>",
    "<object data=\"javascript:alert(1)\"></object>",
    "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<base href=\"javascript:/\">",
    "<!--<script>alert(1)</script>-->",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<scr<script>ipt>alert(1)</scr</script>ipt>",
    "<img src=x onerror=&#97;lert(1)>",
    "&lt;script&gt;alert(1)&lt;/script&gt;",
    "\uff1cscript\uff1ealert(1)\uff1c/script\uff1e",
    "<scr\u200bipt>alert(1)</script>",
    "\u202e<script>alert(1)</script>",
    "\x00<script>alert(1)</script>",
    "{{constructor.constructor('alert(1)')()}} ${alert(1)}",
    "javascript&colon;alert(1)",
]


def payload_result(p: str) -> AblationResult:
    result = hand_result(names=(p + "_soft", p + "_hard"), field=p, output=p, feedback=p, predictor=p, error=p,
                         metric_name=p)
    for res in result.settings.values():
        for e in res.examples:
            e.inputs = {p: p}
    result.demos[COMPILE_ASSERT][p].append({p: p, "feedback": p})
    return result


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payloads_stay_text_in_static_html(payload: str) -> None:
    html = CompileReport(payload_result(payload)).html()
    p = assert_inert(html)
    text = "".join(p.text)
    shown = H.clean(payload)
    # visible as text in: constraint names (table, chart, groups), fields, outputs, feedback, demos, errors, metric
    assert text.count(shown) >= 10
    assert shown + "_soft" in text and shown + "_hard" in text


@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_payloads_stay_text_in_every_widget_state(payload: str) -> None:
    w = CompileReport(payload_result(payload)).widget()
    seen = []
    for name in [v for _, v in w.constraint_filter.options]:
        w.constraint_filter.value = name
        seen += widget_html_values(w)
    for value in [v for _, v in w.demo_filter.options]:
        w.demo_filter.value = value
        seen += widget_html_values(w)
    for fragment in seen:
        assert_inert(fragment)
    assert H.clean(payload) in "".join(visible_text(f) for f in seen)


def test_invisible_characters_are_made_visible() -> None:
    assert H.esc("a\u202eb\u200bc\x00") == "a\\u202eb\\u200bc\\u0000"
    assert H.esc("line\nnext\ttab") == "line\nnext\ttab"


def test_escaping_check_can_fail() -> None:
    """The inertness check itself catches a raw payload (so the payload tests can fail)."""
    with pytest.raises(AssertionError):
        assert_inert('<span>ok</span><img src=x onerror="alert(1)">')
    with pytest.raises(AssertionError):
        assert_inert('<span onmouseover="alert(1)">x</span>')


# ------------------------------------------------------------------------------------------ nbconvert


def test_headless_run_exports_the_static_report(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A notebook run headless (nbclient) and exported to HTML shows the report without any widget JS."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nbconvert = pytest.importorskip("nbconvert")
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    monkeypatch.setenv("LMASSERT_WIDGETS", "0")  # what a headless runner sets: no frontend will draw widgets
    monkeypatch.setenv("PYTHONPATH", str(root))
    nb = nbformat.read(root / "tests" / "browser" / "report_demo.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    report = [o for o in outputs if "text/html" in o.get("data", {}) and "lmassert-report" in o["data"]["text/html"]]
    assert len(report) == 1 and WIDGET_MIME not in report[0]["data"]
    assert "LM Assertions report" in report[0]["data"]["text/plain"]
    html, _ = nbconvert.HTMLExporter().from_notebook_node(nb)
    assert 'class="lmassert-passrates"' in html and 'class="lmassert-chart"' in html
    assert "no_hashtags: 0% -&gt; 100%" in html
    # the LM's payload is in the export as text only
    assert "&lt;img src=x onerror=" in html and '<img src=x onerror="window.__xss' not in html
    # progress fell back to text lines
    streams = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "[lmassert] C+Infer w/ Assert: done: 8 examples" in streams
