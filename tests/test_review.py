"""Demo review: accept or reject each demo of the compiled program, pin an attempt from the timeline;
the program is rebound in one registry transaction, the notebook variable follows, export writes the choice.

Also `%lmassert trace`, the timeline from a cell.
"""

from __future__ import annotations

import importlib.util
import json
import re
import uuid
from typing import Any

import dspy
import pytest
from test_magics import usage_error
from test_report import assert_inert, visible_text

from lmassert_magic.engine.ablation import program_to_bind, run_ablation
from lmassert_magic.engine.runtime import is_activated
from lmassert_magic.registry import get_registry
from lmassert_magic.report import CompileReport

from helpers import GENERATE_TWEET_CELL, NO_HASHTAGS_CELL, feedback_dummy_lm, hashtag_constraint, tweet_data_cell

FEEDBACK = "Please revise the tweet to remove hashtag phrases."
COMPILE = '''%%compile tweeter --train trainset --dev devset --metric quality -o rep
retrieve >> GenerateTweet
'''


@pytest.fixture
def compiled(ip):
    for cell in (tweet_data_cell(3, 2, train_prefix="q", fact="fact about ", answer="a"), GENERATE_TWEET_CELL,
                 NO_HASHTAGS_CELL):
        ip.run_cell(cell)
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE)
    return ip


def questions(program: Any) -> list[str]:
    return [d["question"] for d in program.GenerateTweet.demos]


def load_module(path: Any) -> Any:
    spec = importlib.util.spec_from_file_location(f"exported_{uuid.uuid4().hex}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------- what a review starts from


def test_the_review_lists_the_bound_programs_demos(compiled):
    report = compiled.user_ns["rep"]
    frame = report.demo_review()
    assert list(frame.id) == ["GenerateTweet:1", "GenerateTweet:2", "GenerateTweet:3"]
    assert set(frame.kind) == {"counterexample"} and set(frame.status) == {"accepted"}
    assert [f["question"] for f in frame.fields] == questions(compiled.user_ns["tweeter"])


# ---------------------------------------------------------------- rejecting, from a cell


def test_a_rejected_demo_is_gone_from_the_rebound_and_the_exported_program(compiled, tmp_path, capsys):
    ip = compiled
    kept = questions(ip.user_ns["tweeter"])
    del kept[1]
    revision = get_registry().revision
    capsys.readouterr()
    ip.run_cell("%lmassert review tweeter --reject GenerateTweet:2")
    assert "tweeter rebound: 2 demos (1 rejected by hand)" in capsys.readouterr().out
    program = ip.user_ns["tweeter"]
    assert questions(program) == kept and is_activated(program)
    record = get_registry().programs["tweeter"]
    assert record.program is program and get_registry().revision == revision + 1  # one transaction
    assert record.review.rejected == frozenset({"GenerateTweet:2"})

    ip.run_cell(f"%lmassert export tweeter {tmp_path}")
    state = json.loads((tmp_path / "tweeter.json").read_text())
    assert [d["question"] for d in state["GenerateTweet"]["demos"]] == kept
    assert questions(load_module(tmp_path / "tweeter.py").load_program()) == kept
    assert "demos changed by hand" in capsys.readouterr().out

    ip.run_cell("%lmassert show tweeter")
    assert "demos changed by hand: rejected GenerateTweet:2 (counterexample)" in capsys.readouterr().out

    ip.run_cell("%lmassert review tweeter --accept GenerateTweet:2")
    assert len(questions(ip.user_ns["tweeter"])) == 3
    ip.run_cell("%lmassert show tweeter")
    assert "demos: as compiled" in capsys.readouterr().out


def test_review_without_a_change_lists_the_demos_and_their_status(compiled, capsys):
    compiled.run_cell("%lmassert review tweeter --reject GenerateTweet:3")
    capsys.readouterr()
    compiled.run_cell("%lmassert review tweeter")
    out = capsys.readouterr().out
    assert re.search(r"GenerateTweet:1\s+counterexample\s+accepted", out)
    assert re.search(r"GenerateTweet:3\s+counterexample\s+rejected", out)


def test_reset_drops_every_hand_change(compiled):
    compiled.run_cell("%lmassert review tweeter --reject GenerateTweet:1 --reject GenerateTweet:2")
    assert len(questions(compiled.user_ns["tweeter"])) == 1
    compiled.run_cell("%lmassert review tweeter --reset")
    assert len(questions(compiled.user_ns["tweeter"])) == 3
    assert not get_registry().programs["tweeter"].review.changed


def test_a_variable_the_user_rebound_is_left_alone(compiled, capsys):
    ip = compiled
    ip.user_ns["tweeter"] = "mine"
    ip.run_cell("%lmassert review tweeter --reject GenerateTweet:1")
    assert ip.user_ns["tweeter"] == "mine"
    assert len(questions(get_registry().programs["tweeter"].program)) == 2
    assert "the notebook variable tweeter no longer holds the compiled program; left alone" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("%lmassert review tweeter --reject GenerateTweet:9",
         r"^line 1: no demo GenerateTweet:9 in tweeter; its demos: GenerateTweet:1, GenerateTweet:2, GenerateTweet:3$"),
        ("%lmassert review GenerateTweet --reject x",
         r"'GenerateTweet' is a signature; review takes a compiled program"),
        ("%lmassert review nope", r"no compiled program named 'nope'"),
        ("%lmassert review tweeter --pin 0:99 --setting infer_assert",
         r"example 0 of Infer w/ Assert has no attempt 99"),
        ("%lmassert review tweeter --pin zero", r"--pin takes EXAMPLE:ATTEMPT"),
        ("%lmassert review tweeter --reject GenerateTweet:1 --reset", r"--reset cannot be combined"),
        ("%lmassert review tweeter extra", r"usage: %lmassert review PROGRAM"),
    ],
)
def test_review_errors_name_what_is_wrong_and_change_nothing(compiled, line, pattern):
    message = usage_error(compiled, line)
    assert re.search(pattern, message), message


# ---------------------------------------------------------------- rejecting, from Python and the widget


def test_report_review_goes_through_the_registry_and_moves_the_variable(compiled):
    ip = compiled
    report = ip.user_ns["rep"]
    program = report.review(reject=["GenerateTweet:1"])
    assert ip.user_ns["tweeter"] is program and get_registry().programs["tweeter"].program is program
    assert len(questions(program)) == 2
    assert len(questions(report.review(accept=["GenerateTweet:1"]))) == 3


def test_a_bad_review_from_python_changes_nothing(compiled):
    ip = compiled
    report, before, snapshot = ip.user_ns["rep"], ip.user_ns["tweeter"], get_registry().snapshot_json()
    with pytest.raises(ValueError, match="no demo GenerateTweet:7"):
        report.review(reject=["GenerateTweet:7"])
    assert ip.user_ns["tweeter"] is before and get_registry().snapshot_json() == snapshot
    assert set(report.demo_review().status) == {"accepted"}


def test_the_widget_demos_tab_rejects_and_accepts(compiled):
    ip = compiled
    w = ip.user_ns["rep"].widget()
    panel = w.review
    assert list(panel.toggles) == ["GenerateTweet:1", "GenerateTweet:2", "GenerateTweet:3"]
    panel.toggles["GenerateTweet:3"].value = "reject"
    assert len(questions(ip.user_ns["tweeter"])) == 2
    assert "tweeter rebound" in visible_text(panel.status.value)
    panel.toggles["GenerateTweet:3"].value = "accept"
    assert len(questions(ip.user_ns["tweeter"])) == 3


def test_an_older_report_cannot_rebind_a_newer_compile(compiled):
    ip = compiled
    old = ip.user_ns["rep"]
    with dspy.context(lm=feedback_dummy_lm()):
        ip.run_cell(COMPILE.replace("-o rep", "-o rep2"))
    snapshot = get_registry().snapshot_json()
    with pytest.raises(ValueError, match="tweeter was compiled again"):
        old.review(reject=["GenerateTweet:1"])
    assert get_registry().snapshot_json() == snapshot


# ---------------------------------------------------------------- pinning an attempt from the timeline


def kept_tweet_attempt(report: Any, example: int, setting: str) -> int:
    frame = report.timeline(example, setting=setting)
    return int(frame.index[frame.kept & (frame.step == "GenerateTweet")][0])


def test_an_attempt_is_pinned_as_a_demo_of_its_step(compiled):
    ip = compiled
    report = ip.user_ns["rep"]
    seq = kept_tweet_attempt(report, 0, "infer_assert")
    program = report.pin(0, seq, setting="infer_assert")
    assert ip.user_ns["tweeter"] is program
    pinned = program.GenerateTweet.demos[-1]
    assert len(program.GenerateTweet.demos) == 4
    assert (pinned["question"], pinned["tweet"]) == ("d0", "clean tweet")
    assert pinned["feedback"] == FEEDBACK and pinned["past_tweet"] == "#bad tweet"  # it was a retry
    row = report.demo_review().iloc[-1]
    assert (row.id, row.kind, row.status) == ("GenerateTweet:pin1", "pinned", "pinned")
    assert "Infer w/ Assert" in row.source and "#0" in row.source
    # rejecting a pinned demo unpins it
    assert len(report.review(reject=["GenerateTweet:pin1"]).GenerateTweet.demos) == 3


def test_pin_from_a_cell_and_from_the_timeline_tab(compiled, capsys):
    ip = compiled
    report = ip.user_ns["rep"]
    seq = kept_tweet_attempt(report, 1, "infer_assert")
    ip.run_cell(f"%lmassert review tweeter --pin 1:{seq} --setting infer_assert")
    assert questions(ip.user_ns["tweeter"])[-1] == "d1"
    tab = report.widget().timeline
    tab.setting.value = "infer_assert"
    tab.example.value = 0
    tab.attempt.value = kept_tweet_attempt(report, 0, "infer_assert")
    tab.pin_button.click()
    assert questions(ip.user_ns["tweeter"])[-2:] == ["d1", "d0"]
    assert "pinned" in visible_text(tab.pin_status.value)
    assert "GenerateTweet:pin2" in list(report.widget().review.toggles)


# ---------------------------------------------------------------- the static report: read-only


def test_static_report_shows_the_review_read_only(compiled):
    report = compiled.user_ns["rep"]
    report.review(reject=["GenerateTweet:2"])
    html = report.html()
    assert_inert(html)  # no input, button or script: nothing to click without a kernel
    block = html.split('class="lmassert-review"', 1)[1]
    assert "rejected by hand" in visible_text(block) and "GenerateTweet:2" in visible_text(block)
    assert "read-only" in visible_text(block).lower()


# ---------------------------------------------------------------- Python alone (no registry, no magics)


def test_review_of_a_plain_python_result():
    c = hashtag_constraint()
    train = [dspy.Example(question=f"q{i}", tweet="t").with_inputs("question") for i in range(3)]
    dev = [dspy.Example(question=f"d{i}", tweet="t").with_inputs("question") for i in range(2)]

    def metric(example: Any, pred: Any, trace: Any = None) -> bool:
        return "#" not in pred.tweet

    from lmassert_magic.testing import ScriptedLM

    from helpers import Tweet, fixes_on_feedback

    with dspy.context(lm=ScriptedLM(fixes_on_feedback)):
        result = run_ablation(dspy.Predict(Tweet), train, dev, metric, constraints=[c],
                              settings=["infer_assert", "compile_assert", "c_infer_assert"])
    report = CompileReport(result)
    assert len(report.demo_review()) == 3
    program = report.review(reject=["self:1"])
    assert [d["question"] for d in program.demos] == ["q1", "q2"] and is_activated(program)
    assert program_to_bind(result, dspy.Predict(Tweet), [c]).demos  # the result itself is untouched


# ---------------------------------------------------------------- %lmassert trace


def test_trace_shows_one_examples_timeline(compiled, capsys):
    ip = compiled
    capsys.readouterr()
    ip.run_cell("%lmassert trace tweeter 1 --setting infer_assert")
    out = capsys.readouterr().out
    assert "Infer w/ Assert · #1 · 1 retry" in out
    assert "feedback: " + FEEDBACK in out
    assert "[-#bad-] {+clean+} tweet" in out and "flipped: no_hashtags: fail -> pass" in out
    ip.run_cell("%lmassert trace tweeter")  # the assertion setting, its first example in trouble
    assert capsys.readouterr().out.startswith("C+Infer w/ Assert · #0")


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ("%lmassert trace tweeter 9", r"^line 1: example 9 is out of range: the run has 2 dev examples \(0-1\)$"),
        ("%lmassert trace tweeter 0 --setting nope", r"no setting 'nope' in this run; it ran: Vanilla, "),
        ("%lmassert trace tweeter first", r"EXAMPLE must be a dev-set index \(0, 1, ...\), got 'first'"),
        ("%lmassert trace GenerateTweet", r"'GenerateTweet' is a signature; trace takes a compiled program"),
        ("%lmassert trace", r"usage: %lmassert trace PROGRAM \[EXAMPLE\] \[--setting S\]"),
        ("%lmassert show tweeter --setting vanilla", r"--setting belongs to trace and review"),
    ],
)
def test_trace_errors_name_what_is_wrong(compiled, line, pattern):
    message = usage_error(compiled, line)
    assert re.search(pattern, message), message


@pytest.mark.parametrize("payload", ["<script>window.__xss=1</script>", "<img src=x onerror=\"window.__xss=1\">",
                                     "\" onmouseover=\"alert(1)\" x=\"", "\u202e<b>x</b>"])
def test_review_payloads_stay_text(payload):
    from test_report import payload_result, widget_html_values

    from lmassert_magic.report import html as H

    from helpers import Tweet

    program = dspy.Predict(Tweet)
    program.demos = [dspy.Example(question=payload, tweet=payload, augmented=True),
                     dspy.Example(question="q", tweet=payload, feedback=payload, augmented=True)]
    report = CompileReport(payload_result(payload), program=program)
    report.review(reject=["self:2"])
    fragments = [report.html(), *widget_html_values(report.widget())]
    for fragment in fragments:
        assert_inert(fragment)
    panel = "".join(visible_text(f) for f in widget_html_values(report.widget().review))
    assert H.clean(payload) in panel and "rejected by hand" in panel
