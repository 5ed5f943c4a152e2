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
    ALL_CONSTRAINTS,
    C_INFER_ASSERT,
    COMPILE,
    COMPILE_ASSERT,
    INFER_ASSERT,
    SETTINGS,
    VANILLA,
    AblationResult,
    CompileSummary,
    ExampleResult,
    SettingResult,
    run_ablation,
)
from lmassert_magic.engine.calibration import CalibrationResult, calibrate_judge
from lmassert_magic.engine.records import Attempt, ConstraintStats, Counterexample, RunRecord
from lmassert_magic.engine.stats import agreement, rate_of
from lmassert_magic.report import WIDGET_MIME, CompileReport, widget_frontend_available
from lmassert_magic.report import html as H
from lmassert_magic.testing import ScriptedLM

html_unescape = __import__("html").unescape

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


def table_rows(table: str) -> list[str]:
    """The body rows of one rendered table."""
    return re.findall(r"<tr[^>]*>(.*?)</tr>", table.split("<tbody>")[1], re.S)


def cells(row: str) -> list[str]:
    """The visible text of each cell (th or td) of a row."""
    return [visible_text(c) for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]


def comparison(result: AblationResult, base: str, setting: str, measure: str) -> Any:
    """One row of the engine's comparisons() frame."""
    frame = result.comparisons()
    rows = frame[(frame["base"] == base) & (frame["setting"] == setting) & (frame["measure"] == measure)]
    assert len(rows) == 1
    return rows.iloc[0]


def hand_calibration(name: str, labels: list[bool], predictions: list[bool], model: str = "",
                     at_chance: bool = True) -> CalibrationResult:
    """A calibration built by hand (no disk): the engine's agreement numbers, the flag as given."""
    a = agreement(labels, predictions)
    return CalibrationResult(
        name=name, n=a.n, items=a.n, errors=0, agreement=a.agreement, kappa=a.kappa, kappa_low=a.kappa_low,
        kappa_high=a.kappa_high, yes_rate=a.yes_rate, label_yes_rate=a.label_yes_rate, majority_rate=a.majority_rate,
        true_pos=a.true_pos, false_pos=a.false_pos, false_neg=a.false_neg, true_neg=a.true_neg, model=model,
        prompt_hash="", labels_hash="", date="", at_chance=at_chance,
    )


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
    # the engine's generated sentences, every one of them, in the text and (escaped) in the HTML
    headlines = real.headlines()
    assert headlines and all(line in bundle["text/plain"] for line in headlines)
    assert all(H.esc(line) in bundle["text/html"] for line in headlines)
    before, after = real.settings[VANILLA].rate("no_hashtags"), real.settings[INFER_ASSERT].rate("no_hashtags")
    line = next(x for x in headlines if x.startswith("no_hashtags: Vanilla"))
    assert line.startswith(f"no_hashtags: Vanilla {before.rate:.0%} -> Infer w/ Assert {after.rate:.0%} (")
    assert f"n={before.n})" in line or f"n={before.n}:" in line or f"n={before.n}," in line
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


def test_bundle_honours_include_and_exclude(monkeypatch: pytest.MonkeyPatch, real: AblationResult) -> None:
    """IPython's `include` / `exclude`: a view left out is not in the bundle, nor rendered at all."""
    report = CompileReport(real, widgets=True)
    assert set(report._repr_mimebundle_(include={"text/plain"})) == {"text/plain"}
    assert set(report._repr_mimebundle_(exclude={"text/html", WIDGET_MIME})) == {"text/plain"}
    assert set(report._repr_mimebundle_(include={"text/html", WIDGET_MIME}, exclude={WIDGET_MIME})) == {"text/html"}
    assert set(report._repr_mimebundle_(include=set(), exclude=set())) == {"text/plain", "text/html", WIDGET_MIME}
    monkeypatch.setattr(CompileReport, "html", lambda self: pytest.fail("the excluded HTML was rendered"))
    assert "text/plain" in report._repr_mimebundle_(exclude={"text/html"})


def test_ipython_display_formatter_uses_the_bundle(bare_ip: Any, real: AblationResult) -> None:
    data, _ = bare_ip.display_formatter.format(CompileReport(real))
    assert "lmassert-chart" in data["text/html"]
    assert data["text/plain"].startswith("LM Assertions report")


# ------------------------------------------------------------------------------------------ content


def test_passrate_table_and_chart_from_a_real_run(real: AblationResult) -> None:
    html = CompileReport(real).html()
    assert_inert(html)
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    rows = table_rows(table)
    labels = [re.search(r"</span>(.*?)</th>", r).group(1) for r in rows]
    assert labels == ["Vanilla", "Infer w/ Assert", "Compile", "Compile w/ Assert", "C+Infer w/ Assert"]
    # no_hashtags: 0% without assertions at inference, 100% with; each with the engine's interval and n
    rates = [real.settings[k].rate("no_hashtags") for k in SETTINGS]
    assert [r.rate for r in rates] == [0.0, 1.0, 0.0, 0.0, 1.0]
    assert [cells(r)[2] for r in rows] == [str(r).replace(" (", "(", 1) for r in rates]
    assert all(r.n == 5 for r in rates)
    # LM calls per example: 1 without backtracking, 2 with one backtrack (in the cost table)
    costs = re.search(r'<table class="lmassert-costs".*?</table>', html, re.S).group(0)
    calls = [cells(r)[1] for r in table_rows(costs)]
    assert calls == ["1.00", "2.00", "1.00", "1.00", "2.00"]
    assert calls == [f"{real.settings[k].per_example(real.settings[k].lm_calls):.2f}" for k in SETTINGS]
    assert "quality" in visible_text(table)
    svg = re.search(r'<svg class="lmassert-chart".*?</svg>', html, re.S).group(0)
    # one bar per setting for the metric and for the constraint (one constraint: no "all constraints")
    assert real.measures() == ["no_hashtags"]
    assert len(re.findall(r'class="lmassert-bar"', svg)) == 10
    assert len(re.findall(r'<g class="lmassert-ci"', svg)) == 10  # and a 95% interval on each


def test_numbers_match_a_hand_built_result() -> None:
    result = hand_result()
    html = CompileReport(result).html()
    p = assert_inert(html)
    text = "".join(p.text)
    # soft passes 1/4 without assertions, 4/4 with; the engine's sentence, like with like, with n and interval
    vanilla, infer = result.settings[VANILLA], result.settings[INFER_ASSERT]
    assert (vanilla.rate("no_hashtags").successes, infer.rate("no_hashtags").successes) == (1, 4)
    diff = comparison(result, "Vanilla", "Infer w/ Assert", "no_hashtags")
    line = next(x for x in result.headlines() if x.startswith("no_hashtags: Vanilla"))
    assert line.startswith(
        f"no_hashtags: Vanilla {vanilla.rate('no_hashtags').rate:.0%} -> Infer w/ Assert "
        f"{infer.rate('no_hashtags').rate:.0%} ({diff['diff']:+.0f} points, 95% CI {diff['ci_low']:+.0f} to "
        f"{diff['ci_high']:+.0f}, n={diff['n']})"
    )
    assert line in text
    extra = infer.per_example(infer.lm_calls) - vanilla.per_example(vanilla.lm_calls)
    assert f"against {vanilla.per_example(vanilla.lm_calls):.2f} for Vanilla ({extra:+.2f})" in text
    svg = re.search(r'<svg class="lmassert-chart".*?</svg>', html, re.S).group(0)
    widths = {
        re.search(r"<title>(.*?)</title>", m).group(1): float(re.search(r'width="([\d.]+)"', m).group(1))
        for m in re.findall(r'<rect class="lmassert-bar"[^>]*>.*?</rect>', svg, re.S)
    }
    assert widths[f"Vanilla — no_hashtags: {vanilla.rate('no_hashtags')}"] == pytest.approx(75.0)  # 25% of 300 px
    assert widths[f"Infer w/ Assert — no_hashtags: {infer.rate('no_hashtags')}"] == pytest.approx(300.0)
    low, high = vanilla.metric_interval(result.seed)
    metric_tip = f"Vanilla — metric: quality: 50.0 (95% CI {100 * low:.1f}-{100 * high:.1f}, n=4)"
    assert widths[metric_tip] == pytest.approx(150.0)
    # hard bars are solid, soft ones dashed and light
    soft_bars = re.findall(r'<rect class="lmassert-bar"[^>]*><title>[^<]*no_hashtags', svg)
    hard_bars = re.findall(r'<rect class="lmassert-bar"[^>]*><title>[^<]*short', svg)
    assert len(soft_bars) == len(hard_bars) == 5
    assert all("stroke-dasharray" in b for b in soft_bars)
    assert not any("stroke-dasharray" in b or "fill-opacity" in b for b in hard_bars)
    assert re.search(r'data-kind="hard".*short · hard', svg, re.S)
    # metric and rates per setting; calls, tokens, time in the cost table
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    row = visible_text(table_rows(table)[0])
    assert "Vanilla" in row and "50.0" in row and "100%" in row
    costs = re.search(r'<table class="lmassert-costs".*?</table>', html, re.S).group(0)
    assert cells(table_rows(costs)[0])[0] == "Vanilla" and cells(table_rows(costs)[0])[-1] == "1.5 s"


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
    res = result.settings[VANILLA]
    low, high = res.metric_interval(result.seed)
    assert lines == [
        f"Vanilla: no_hashtags {res.rate('no_hashtags')}, short {res.rate('short')}, "
        f"all constraints {res.rate(ALL_CONSTRAINTS)}, quality 50.0 (95% CI {100 * low:.1f}-{100 * high:.1f}, n=4), "
        "1.00 LM calls per example"
    ]
    assert str(res.rate("no_hashtags")) == "25% (95% CI 5-70%, n=4)"  # Wilson, 1 of 4


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
    assert set(report.tables) == {"summary", "pass_rates", "comparisons", "demos", "counterexamples", "examples",
                                  "failures"}
    assert list(report.summary().index) == [s.label for s in real.settings.values()]
    assert len(report.pass_rates()) == 5
    assert len(report.comparisons()) == 3 * 2  # three pairs x (no_hashtags, the metric)
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


# ------------------------------------------------------------------------------------------ numbers with n and CI


def passrate_cells(html: str) -> dict[str, dict[str, str]]:
    """setting label -> {column header: visible cell text} of the pass-rate table."""
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    head = re.search(r"<thead>(.*?)</thead>", table, re.S).group(1)
    names = [visible_text(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", head, re.S)]
    out = {}
    for row in table_rows(table):
        values = cells(row)
        out[values[0]] = dict(zip(names, values))
    return out


def test_every_rate_shows_the_engines_interval_and_n_in_table_text_and_chart() -> None:
    result = hand_result()
    report = CompileReport(result)
    html, text = report.html(), report.text()
    table = passrate_cells(html)
    svg = re.search(r'<svg class="lmassert-chart".*?</svg>', html, re.S).group(0)
    tips = re.findall(r"<title>(.*?)</title>", svg)
    assert result.measures() == ["no_hashtags", "short", ALL_CONSTRAINTS]
    for key, res in result.settings.items():
        row = table[res.label]
        for name in result.measures():
            rate = res.rate(name)
            assert rate.n == 4 and "(95% CI " in str(rate)
            header = next(h for h in row if h.startswith(name))
            assert row[header] == str(rate).replace(" (", "(", 1), (key, name)  # "25%(95% CI 5-70%, n=4)"
            assert str(rate) in text, (key, name)
            assert f"{res.label} — {name}: {str(rate)}" in tips
        low, high = res.metric_interval(result.seed)
        metric = f"{100 * res.metric:.1f} (95% CI {100 * low:.1f}-{100 * high:.1f}, n={res.n})"
        assert row[next(h for h in row if h.startswith("quality"))] == metric.replace(" (", "(", 1)
        assert metric in text
    # the numbers themselves: Wilson on 1 of 4 and 3 of 4 (all constraints: the last example raised)
    assert table["Vanilla"]["no_hashtagssoft · Suggest"] == "25%(95% CI 5-70%, n=4)"
    assert table["Infer w/ Assert"]["all constraintsevery constraint"] == "75%(95% CI 30-95%, n=4)"
    assert result.settings[INFER_ASSERT].rate(ALL_CONSTRAINTS).successes == 3


def test_a_cell_tells_examples_and_checks_apart() -> None:
    """A multi-hop step checks a constraint twice per example: the rate is per example, checks are raw."""
    result = hand_result(settings=(VANILLA,))
    for i, e in enumerate(result.settings[VANILLA].examples):
        # two checks per example; example 0 fails one of them on the returned output
        e.record.constraints["short"] = ConstraintStats(
            "short", True, checks=2, first_try_passes=1 if i == 0 else 2, final_failures=1 if i == 0 else 0,
            examples=1, passed_first=0 if i == 0 else 1, passed_final=0 if i == 0 else 1)
    html = CompileReport(result).html()
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    tips = [html_unescape(t) for t in re.findall(r'<td style="[^"]*" title="([^"]*)">', table)]
    short = next(t for t in tips if t.startswith("examples: 3 of 4"))
    assert "examples: 3 of 4 pass on the returned output (3 of 4 on the first try)" in short
    assert "checks: 7 of 8 passed (7 first try, 0 after backtracking)" in short
    assert result.settings[VANILLA].rate("short").rate == 0.75  # per example, not 7/8 per check
    assert passrate_cells(html)["Vanilla"]["shorthard · Assert"].startswith("75%(")


def test_chart_draws_the_interval_as_a_whisker_on_each_bar() -> None:
    result = hand_result()
    svg = re.search(r'<svg class="lmassert-chart".*?</svg>', CompileReport(result).html(), re.S).group(0)
    # every bar is followed by its whisker: (bar, whisker) pairs in drawing order
    pairs = re.findall(r'<rect class="lmassert-bar" x="([\d.]+)"[^>]*><title>(.*?)</title></rect>'
                       r'<g class="lmassert-ci"><title>(.*?)</title><line x1="([\d.]+)" y1="[\d.]+" x2="([\d.]+)"',
                       svg)
    n_bars = len(re.findall(r'class="lmassert-bar"', svg))
    assert n_bars == 5 * 4  # the metric, two constraints and "all constraints", per setting
    assert len(pairs) == n_bars
    assert len(re.findall(r'data-kind="all"', svg)) == 1 and "all constraints · every constraint" in svg
    by_tip = {tip: (float(x0), float(x1), float(x2)) for x0, tip, tip2, x1, x2 in pairs if tip == tip2}
    assert len(by_tip) == n_bars
    for res in result.settings.values():
        for name in result.measures():
            rate = res.rate(name)
            x0, x1, x2 = by_tip[f"{res.label} — {name}: {rate}"]
            assert x1 == pytest.approx(x0 + 300 * rate.ci_low, abs=0.06)  # the whisker spans the Wilson interval
            assert x2 == pytest.approx(x0 + 300 * rate.ci_high, abs=0.06)
            assert x1 < x2
        low, high = res.metric_interval(result.seed)
        tip = next(t for t in by_tip if t.startswith(f"{res.label} — metric: quality"))
        x0, x1, x2 = by_tip[tip]
        assert (x1, x2) == (pytest.approx(x0 + 300 * low, abs=0.06), pytest.approx(x0 + 300 * high, abs=0.06))


def test_comparisons_say_noise_in_words_and_distinguishable_when_it_is() -> None:
    for n_dev, noisy in ((4, True), (20, False)):
        result = hand_result(n_dev=n_dev)
        report = CompileReport(result)
        html, text = report.html(), report.text()
        section = re.search(r'<details class="lmassert-section-comparisons".*?</details>', html, re.S).group(0)
        frame = result.comparisons()
        rows = table_rows(re.search(r'<table class="lmassert-comparisons".*?</table>', section, re.S).group(0))
        assert len(rows) == len(frame) == 3 * 4  # three pairs x (two constraints, all constraints, the metric)
        for (_, expected), row in zip(frame.iterrows(), rows):
            shown = cells(row)
            assert shown[0] == f"{expected['base']} → {expected['setting']}"
            assert shown[1].startswith(expected["measure"]) and shown[6] == str(expected["n"])
            if expected["distinguishable"]:
                assert shown[-1] == "distinguishable at this n" and "noise" not in shown[-1]
            else:
                assert shown[-1] == "noise: not distinguishable from noise at this n"
        hashtags = comparison(result, "Vanilla", "Infer w/ Assert", "no_hashtags")
        assert hashtags["diff"] > 0 and bool(hashtags["distinguishable"]) is not noisy
        row = next(r for r in rows if cells(r)[:2] == ["Vanilla → Infer w/ Assert", "no_hashtags"])
        shown = cells(row)
        assert shown[4] == f"{hashtags['diff']:+.0f} points"
        assert shown[5] == f"{hashtags['ci_low']:+.0f} to {hashtags['ci_high']:+.0f}"
        assert ("not distinguishable from noise" in shown[-1]) is noisy
        # the text report has the same verdict on the same row
        line = next(x for x in text.splitlines() if x.startswith("Vanilla → Infer w/ Assert") and "no_hashtags" in x)
        assert ("not distinguishable from noise" in line) is noisy and f"{hashtags['diff']:+.0f} points" in line
        # and the widget tab holds the same table as the static report
        assert report.widget().comparisons.value in html
    # rates that did not move get a real interval around 0 (what n examples allow), not a point "interval"
    short = comparison(result, "Vanilla", "Infer w/ Assert", "short")
    assert short["diff"] == 0 and short["ci_low"] < 0 < short["ci_high"] and not short["distinguishable"]
    assert "no spread in the differences" not in visible_text(html)


def test_costs_per_example_counted_apart() -> None:
    result = hand_result()
    for i, res in enumerate(result.settings.values()):
        res.cache_hits, res.observe_lm_calls = 4 * i, 2 * (i + 1)
        res.prompt_tokens, res.completion_tokens = 300 * (i + 1), 40 * (i + 1)
    report = CompileReport(result)
    html, text = report.html(), report.text()
    costs = re.search(r'<table class="lmassert-costs".*?</table>', html, re.S)
    head = [visible_text(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", costs.group(0).split("<tbody>")[0], re.S)]
    assert head[1].startswith("LM calls") and "cache hits included" in head[1]
    assert head[3].startswith("judge calls") and "only measuring" in head[3]
    for row, res in zip(table_rows(costs.group(0)), result.settings.values()):
        values = cells(row)
        assert values[0] == res.label
        assert values[1:6] == [f"{res.per_example(res.lm_calls):.2f}", f"{res.per_example(res.cache_hits):.2f}",
                               f"{res.per_example(res.observe_lm_calls):.2f}",
                               f"{res.per_example(res.prompt_tokens):,.0f}",
                               f"{res.per_example(res.completion_tokens):,.0f}"]
        assert values[6] == f"{res.seconds:.1f} s"
    note = visible_text(html[costs.end():costs.end() + 1200])
    assert "Seconds depend on the cache" in note and "counted the same way in every setting" in note
    summary = result.summary()
    table = text.split("Cost per example")[1]
    for label, line in zip(summary.index, table.splitlines()[2:7]):
        assert line.startswith(label)
        assert f"{summary.loc[label, 'observe_calls/ex']:.2f}" in line
        assert f"{summary.loc[label, 'cache_hits/ex']:.2f}" in line
    assert "seconds depend on the cache" in text


def compiled_result() -> AblationResult:
    result = hand_result()
    failures = ["LMError: connection reset <b>", "DSPyAssertionError: assertion 'short' failed", "ValueError: x",
                "KeyError: 'tweet'"]
    result.settings[COMPILE].compile = CompileSummary(6, 0, [], 0, "retry", False)
    result.settings[COMPILE_ASSERT].compile = CompileSummary(6, 5, failures, 2, "prompt", False)
    result.settings[C_INFER_ASSERT].compile = CompileSummary(6, 5, failures, 2, "prompt", False)
    result.settings[COMPILE_ASSERT].compile_lm_calls = result.settings[C_INFER_ASSERT].compile_lm_calls = 31
    return result


def test_compile_failures_dropped_demos_and_counterexample_mode_are_shown() -> None:
    result = compiled_result()
    report = CompileReport(result)
    html, text, w = report.html(), report.text(), report.widget()
    assert_inert(html)
    section = re.search(r'<details class="lmassert-section-costs" open.*?</details>', html, re.S)
    assert section, "a compile with failed training examples opens its section"
    table = re.search(r'<table class="lmassert-compile".*?</table>', section.group(0), re.S).group(0)
    rows = {cells(r)[0]: (r, cells(r)) for r in table_rows(table)}
    assert list(rows) == ["Compile", "Compile w/ Assert", "C+Infer w/ Assert"]
    raw, shown = rows["Compile w/ Assert"]
    summary = result.settings[COMPILE_ASSERT].compile
    assert shown[1] == str(summary.n_examples) and shown[2] == f"{summary.n_failed} of {summary.n_examples}"
    why = re.findall(r"<li>(.*?)</li>", raw, re.S)
    assert [visible_text(x) for x in why] == summary.failures[:3]  # the first few, escaped
    assert "&lt;b&gt;" in raw and "and 2 more" in shown[3]
    assert shown[4].startswith(f"{summary.dropped_soft_failures} trace(s) passed the metric but still failed a soft")
    assert shown[5] == "also in the normal prompt's instructions"
    assert "31 LM calls" in shown[6]
    assert rows["Compile"][1][2] == "0 of 6" and rows["Compile"][1][5].startswith("none")
    assert rows["Compile"][1][4] == "none: constraints are off while compiling the baseline"
    # a retry-mode compile says where its counterexamples go, as in DSPy 2.5; kept soft failures say so
    result.settings[COMPILE_ASSERT].compile = CompileSummary(6, 0, [], 0, "retry", True)
    other = CompileReport(result).html()
    row = cells(next(r for r in table_rows(re.search(r'<table class="lmassert-compile".*?</table>', other,
                                                        re.S).group(0)) if "Compile w/ Assert</th>" in r))
    assert row[5] == "retry prompts only, as in DSPy 2.5" and "were kept as demos" in row[4]
    # the warning near the top names the failed training examples once (the two settings share a compile)
    warning = visible_text(re.search(r'<div class="lmassert-warning".*?</div>', html, re.S).group(0))
    assert warning.count("5 of 6 training examples failed while compiling") == 1
    assert "!! Compile w/ Assert: 5 of 6 training examples failed while compiling" in text
    line = next(x for x in text.splitlines() if x.strip().startswith("Compile w/ Assert: 6 training examples run, 5 "
                                                                      "failed"))
    assert "LMError: connection reset <b>" in line and "and 2 more" in line
    assert "2 trace(s) dropped as demos" in line and "also in the normal prompt's instructions" in line
    # the widget shows the same compile table
    assert w.compile.value in html and w.compile in w.tabs.children[2].children


def test_calibration_is_shown_next_to_a_judges_pass_rate(tmp_path: Any) -> None:
    result = hand_result()
    labels = [True, False] * 10
    # a judge that says yes to everything: 50% agreement, kappa 0 -> at chance
    yes_man = calibrate_judge(lambda **f: True, [({"i": i}, y) for i, y in enumerate(labels)], name="no_hashtags",
                              model="local-135m", cache_dir=tmp_path)
    # a judge that reads the label: perfect agreement
    oracle = calibrate_judge(lambda label, **f: label, [({"i": i, "label": y}, y) for i, y in enumerate(labels)],
                             name="short", model="local-135m", cache_dir=tmp_path)
    assert yes_man.at_chance and not oracle.at_chance
    result.calibrations = {"no_hashtags": yes_man, "short": oracle}
    report = CompileReport(result)
    html, text = report.html(), report.text()
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    heads = {parse(h).text[0]: visible_text(h)
             for h in re.findall(r"<th[^>]*>(.*?)</th>", table.split("<tbody>")[0], re.S)}
    assert f"judge agreement {yes_man.agreement}, kappa 0.00: at chance on this model (local-135m)" in heads[
        "no_hashtags"]
    assert str(yes_man.agreement) == "50% (95% CI 30-70%, n=20)"
    assert f"judge agreement {oracle.agreement}, kappa 1.00: better than chance on this model" in heads["short"]
    assert "at chance on this model" not in heads["short"]
    assert "judge" not in heads["all constraints"] and "judge" not in heads["quality"]  # nothing invented
    # the calibration list, the chart group and the text say it too
    cal = visible_text(re.search(r'<div class="lmassert-calibration".*?</div>', html, re.S).group(0))
    assert "its pass rates say nothing about the outputs" in cal and yes_man.describe() in cal
    assert "no_hashtags · soft · judge at chance on this model" in html
    assert (f"Judge no_hashtags: judge agreement {yes_man.agreement}, kappa 0.00: at chance on this model "
            "(local-135m)") in text
    w = report.widget()
    assert w.tabs.children[0].children == (w.passrates, w.calibration, w.chart)
    assert w.calibration.value in html


def test_uncalibrated_judges_get_no_agreement() -> None:
    html = CompileReport(hand_result()).html()
    table = re.search(r'<table class="lmassert-passrates".*?</table>', html, re.S).group(0)
    svg = re.search(r'<svg class="lmassert-chart".*?</svg>', html, re.S).group(0)
    assert "judge" not in visible_text(table) and "judge" not in visible_text(svg)
    assert "agreement" not in visible_text(html) and "kappa" not in visible_text(html)
    assert 'class="lmassert-calibration"' not in html and "lmassert-judge" not in html


def test_stray_predictor_calls_warn_and_seed_and_config_head_the_report() -> None:
    result = hand_result()
    result.seed = 7
    result.config = {"max_backtracks": 2, "budget": "shared", "retry_temperature": 0.7}
    quiet = CompileReport(result)
    assert 'class="lmassert-warning"' not in quiet.html() and "!!" not in quiet.text()
    result.settings[INFER_ASSERT].stray_predictor_calls = 3
    report = CompileReport(result)
    html, text = report.html(), report.text()
    warning = visible_text(re.search(r'<div class="lmassert-warning".*?</div>', html, re.S).group(0))
    assert "Infer w/ Assert: 3 predictor call(s) ran outside any program run" in warning
    assert "not checked by any constraint" in warning
    assert "!! Infer w/ Assert: 3 predictor call(s)" in text
    config = visible_text(re.search(r'<div class="lmassert-config".*?</div>', html, re.S).group(0))
    assert config == "seed 7 · max_backtracks=2 · budget=shared · retry_temperature=0.7"
    assert text.splitlines()[1].strip() == config
    w = report.widget()
    assert w.children == (w.title, w.warnings, w.headline, w.tabs) and w.warnings.value in html


def test_every_widget_fragment_is_in_the_static_report() -> None:
    """Parity: the widget shows the static report's own fragments (same numbers, same escaping)."""
    result = compiled_result()
    result.calibrations = {"no_hashtags": hand_calibration("no_hashtags", [True, False] * 5, [True] * 10)}
    result.settings[INFER_ASSERT].stray_predictor_calls = 1
    report = CompileReport(result)
    html = report.html()
    w = report.widget()
    for part in (w.title, w.warnings, w.headline, w.passrates, w.calibration, w.chart, w.comparisons, w.costs,
                 w.compile):
        assert part.value and part.value in html, part


# ------------------------------------------------------------------------------------------ widget


def test_widget_tabs_titles_and_parts() -> None:
    result = hand_result()
    w = CompileReport(result).widget()
    assert [w.tabs.get_title(i) for i in range(len(w.tabs.children))] == [
        "Pass rates", "Comparisons", "Cost & compile", "Demos (6)", "Counterexamples", "Timeline", "Failures (2)"
    ]
    assert w.tabs.children[0].children == (w.passrates, w.chart)  # no calibration: no empty box either
    assert w.tabs.children[1] is w.comparisons and w.tabs.children[2].children == (w.costs, w.compile)
    assert 'class="lmassert-passrates"' in w.passrates.value and "<svg" in w.chart.value
    assert 'class="lmassert-comparisons"' in w.comparisons.value
    assert [visible_text(li) for li in re.findall(r"<li.*?</li>", w.headline.value)] == result.headlines()
    assert w.children == (w.title, w.headline, w.tabs)
    title = parse(w.title.value).text
    assert title == ["LM Assertions report — 5 settings, 4 dev examples", H.config_text(result)]
    assert title[1].startswith(f"seed {result.seed}")


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
    for key in (COMPILE, COMPILE_ASSERT, C_INFER_ASSERT):
        result.settings[key].compile = CompileSummary(6, 2, [p, "ValueError: " + p], 1, "prompt")
    result.calibrations = {p + "_soft": hand_calibration(p + "_soft", [True, False] * 5, [True] * 10, model=p)}
    result.config = {"budget": p, "max_backtracks": 2}
    result.settings[INFER_ASSERT].stray_predictor_calls = 1
    for res in result.settings.values():  # a retried step whose every string is the payload (the timelines)
        for e in res.examples:
            e.record.attempts = [
                Attempt(0, p, 0, "first", {p: p}, [], {p: p + " one"}, {p: False}, error=p),
                Attempt(1, p, 1, "retry", {p: p}, [p], {p: p + " two"}, {p: True}, kept=True),
            ]
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
    for _, key in w.timeline.setting.options:
        w.timeline.setting.value = key
        for _, index in w.timeline.example.options:
            w.timeline.example.value = index
            seen.append(w.timeline.body.value)
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
    import html as html_module
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
    assert 'class="lmassert-comparisons"' in html and 'class="lmassert-ci"' in html
    # the engine's sentence: 8 dev examples, every first draft has hashtags, every retry removes them
    plain = report[0]["data"]["text/plain"]
    line = next(x for x in plain.splitlines() if x.strip().startswith("no_hashtags: Vanilla"))
    assert line.strip().startswith("no_hashtags: Vanilla 0% -> Infer w/ Assert 100% (+100 points")
    assert "n=8" in line
    assert html_module.escape(line.strip(), quote=True) in html
    assert f"{rate_of(0, 8)}" in plain  # Vanilla's no_hashtags rate, 0 of 8, with its Wilson interval
    # the LM's payload is in the export as text only
    assert "&lt;img src=x onerror=" in html and '<img src=x onerror="window.__xss' not in html
    # progress fell back to text lines
    streams = "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")
    assert "[lmassert] C+Infer w/ Assert: done: 8 examples" in streams


def test_threads_with_an_lm_that_may_batch_requests_are_named_as_what_the_figures_depend_on() -> None:
    result = hand_result()
    for requests, warned in (("batched", True), ("unknown (a server may batch parallel requests)", True),
                             ("one at a time", False)):
        result.config = {"num_threads": 2, "lm": "local/model", "lm_requests": requests}
        report = CompileReport(result)
        html, text = report.html(), report.text()
        assert ("can differ from a run with another number of threads" in visible_text(html)) is warned
        assert ("!! 2 evaluation threads" in text) is warned
        config = visible_text(re.search(r'<div class="lmassert-config".*?</div>', html, re.S).group(0))
        assert f"lm_requests={requests}" in config
    result.config = {"num_threads": 1, "lm_requests": "batched"}
    assert "number of threads" not in CompileReport(result).text()


def test_describe_backtrack_shows_every_field_in_full():
    from lmassert_magic.engine.records import Counterexample
    from lmassert_magic.report.text import describe_backtrack

    long_context = "x" * 500
    fixed = Counterexample("no_hashtags", False, "tweet", {"context": long_context}, {"tweet": "hi #tag"},
                           "Remove hashtags.", {"tweet": "hi"})
    text = describe_backtrack(fixed)
    assert long_context in text and "hi #tag" in text and "Remove hashtags." in text
    assert text.endswith("output after the retry:\n  tweet: hi")
    unfixed = Counterexample("under_280", True, "tweet", {}, {"tweet": "y" * 300}, "Shorter.")
    assert "(hard) failed" in describe_backtrack(unfixed)
    assert describe_backtrack(unfixed).endswith("not fixed: the retry budget ran out")
