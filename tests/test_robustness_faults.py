"""LM faults and broken constraint code during a five-setting compile: nothing escapes, nothing is lost.

A scripted LM raises on some calls, returns text no adapter can parse on some, times out on others
(some dev questions always, plus seeded random faults on any call: teacher runs, retries, LM-judged
checks), and cancels some (asyncio.CancelledError, a BaseException, on fixed dev questions). The
compile must finish; per setting every example is accounted for (ok + failed = total); every failed
example is listed in the report with its cause. Checked through `run_ablation` and through the
`%%compile` magic.

Constraint code that raises, loops for long or returns a non-bool is reported against that
constraint (failure cause and the pass-rate table's error count), under a per-check time limit; a
check stuck for good neither starves the other checks nor keeps Python from exiting.
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any

import dspy
import pytest
from IPython.core.error import UsageError

from lmassert_magic import Constraint, ConstraintError, lm_judge
from lmassert_magic.engine.ablation import LABELS, SETTINGS, AblationResult, run_ablation
from lmassert_magic.registry import get_registry
from lmassert_magic.report import CompileReport
from lmassert_magic.report import html as H
from lmassert_magic.testing import ScriptedLM

from helpers import tweet_data_cell

N_DEV, N_TRAIN = 50, 10
RAISE, GARBAGE, TIMEOUT, CANCEL = "raise", "unparsable", "timeout", "cancelled"
#: Dev questions that always meet the same fault, so their failure and its cause are known in advance.
ALWAYS = {RAISE: {"d1", "d11", "d21", "d31", "d41"}, GARBAGE: {"d2", "d12", "d22", "d32", "d42"},
          TIMEOUT: {"d3", "d13", "d23", "d33", "d43"},
          CANCEL: {"d4", "d14", "d24", "d34", "d44"}}  # an async client cancelling its call (a BaseException)
CAUSE = {RAISE: "LM went away", GARBAGE: "AdapterParseError", TIMEOUT: "timed out", CANCEL: "CancelledError"}
#: Faults injected, by kind, over this module's tests (reported at the end).
INJECTED: collections.Counter[str] = collections.Counter()


class FaultyLM(ScriptedLM):
    """A ScriptedLM whose `respond` may also return raw text (sent as is, e.g. unparsable)."""

    def _format_answer_fields(self, answer: Any) -> str:
        return answer if isinstance(answer, str) else super()._format_answer_fields(answer)


def question_of(messages: list[dict[str, Any]]) -> str:
    m = re.search(r"## question ## \]\]\n(\S+)", str(messages[-1].get("content", "")))
    return m.group(1) if m else "?"


def faulty_respond(seed: int, rate: float = 0.04):
    """Tweets with hashtags unless told to remove them; LM-judge questions answered yes; faults as above."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def fault(kind: str, q: str, always: bool = False) -> Any:
        INJECTED[kind] += 1
        if kind == RAISE:
            raise ConnectionError(f"LM went away: connection reset by peer ({q})")
        if kind == CANCEL:
            raise asyncio.CancelledError(f"LM call cancelled ({q})")
        if kind == TIMEOUT:
            time.sleep(0.002)  # a client gives up after waiting; the wait itself is not what is tested
            raise TimeoutError(f"LM request timed out after 30 s ({q})")
        if always:  # neither the chat format nor JSON (even repaired) can read this
            return "I would rather not answer in your format."
        with lock:  # random junk, some of it half-readable (a JSON start that json_repair completes)
            return rng.choice(["I would rather not answer in your format.", "", "{\"tweet\": ", "[[ ## tweet",
                               "null", "<html><body>502 Bad Gateway</body></html>", "\x00\ufffd\u202e"])

    def respond(messages: list[dict[str, Any]]) -> Any:
        q = question_of(messages)
        for kind, questions in ALWAYS.items():
            if q in questions:
                return fault(kind, q, always=True)
        with lock:
            r = rng.random()
        if r < 3 * rate:
            return fault((RAISE, GARBAGE, TIMEOUT)[int(r / rate)], q)
        system = str(messages[0].get("content", ""))
        if "yes/no question" in system:  # an lm_judge check
            return {"answer": True}
        if "remove hashtag" in str(messages[-1].get("content", "")):
            return {"tweet": f"A clean tweet about {q}."}
        return {"tweet": f"A tweet about {q} #wow"}

    return respond


class Tweet(dspy.Signature):
    """Write an engaging tweet that answers the question."""

    question: str = dspy.InputField()
    tweet: str = dspy.OutputField()


def quality(example: Any, pred: Any, trace: Any = None) -> float:
    return float("#" not in pred.tweet)


def dev_and_train() -> tuple[list[dspy.Example], list[dspy.Example]]:
    dev = [dspy.Example(question=f"d{i}").with_inputs("question") for i in range(N_DEV)]
    train = [dspy.Example(question=f"t{i}").with_inputs("question") for i in range(N_TRAIN)]
    return dev, train


def check_accounted(result: AblationResult, report: CompileReport) -> None:
    """Every example of every setting accounted for; every failure shown with its cause."""
    assert not result.interrupted
    assert list(result.settings) == list(SETTINGS)
    failed = []
    for key, res in result.settings.items():
        assert res.n == N_DEV and [e.index for e in res.examples] == list(range(N_DEV)), key
        assert res.n_ok + res.n_failed == N_DEV, key
        assert all(e.ok == (e.error is None) for e in res.examples)
        by_question = {e.inputs["question"]: e for e in res.examples}
        for kind, questions in ALWAYS.items():
            for q in questions:  # these never got an answer: failed, with the fault as the cause
                assert not by_question[q].ok and CAUSE[kind] in by_question[q].error, (key, q, by_question[q].error)
        failed += [(LABELS[key], e) for e in res.examples if not e.ok]
    assert len(failed) >= len(SETTINGS) * sum(len(q) for q in ALWAYS.values())
    # the failures table lists each failed example once, with its cause
    table = report.tables["failures"]
    assert len(table) == len(failed)
    assert sorted(zip(table["setting"], table["index"])) == sorted((s, e.index) for s, e in failed)
    assert all(isinstance(cause, str) and cause.strip() for cause in table["error"])
    # the static HTML counts them all and shows the first ROW_LIMIT with their causes
    html = report.html()
    assert f"Failed examples ({len(failed)})" in html
    shown = H.failures_rows_html(H.failed_examples(result)[: H.ROW_LIMIT])
    assert shown in html
    for setting, e in failed[: H.ROW_LIMIT]:
        assert H.text_html(e.error) in html, (setting, e.index)
    # the widget pages through every one of them
    pager = report.widget().failures_pager
    pages = []
    for page in range(pager.pages):
        pager.go(page)
        pages.append(pager.body.value)
    every = "".join(pages)
    for _, e in failed:
        assert H.text_html(e.error) in every
    assert every.count('class="lmassert-failure"') == len(failed)
    # the terminal view counts them too
    assert f"Failed examples: {len(failed)}" in report.text()


# ---------------------------------------------------------------- through run_ablation


@pytest.mark.parametrize(("threads", "seed", "optimizer"), [(1, 11, "bootstrap"), (3, 12, "bootstrap"),
                                                             (2, 13, "random_search")])
def test_run_ablation_survives_lm_faults_and_accounts_for_every_example(threads, seed, optimizer):
    dev, train = dev_and_train()
    lm = FaultyLM(faulty_respond(seed))
    constraints = [
        Constraint("no_hashtags", lambda tweet: "#" not in tweet, "Please remove hashtag phrases.", target=Tweet),
        Constraint("engaging", lambda tweet: lm_judge("Is the tweet engaging?", tweet=tweet), "Make it engaging.",
                   target=Tweet),
    ]
    before = dict(INJECTED)
    with dspy.context(lm=lm):
        result = run_ablation(dspy.Predict(Tweet), train, dev, quality, constraints=constraints, num_threads=threads,
                              optimizer=optimizer, optimizer_kwargs={"num_candidate_programs": 2}
                              if optimizer == "random_search" else None)
    check_accounted(result, CompileReport(result))
    injected = {k: INJECTED[k] - before.get(k, 0) for k in (RAISE, GARBAGE, TIMEOUT, CANCEL)}
    assert all(n >= 5 * len(SETTINGS) for n in injected.values()), injected
    # faults also hit the compile (teacher runs) and the retries, and the run still produced demos
    assert result.demos["compile_assert"] and result.compile_counterexamples


# ---------------------------------------------------------------- through %%compile

SETUP = tweet_data_cell(N_TRAIN, N_DEV)
SIGNATURE = '''%%signature GenerateTweet
"""Write an engaging tweet that answers the question."""
question: str = In()
context: list[str] = In()
tweet: str = Out()
'''
NO_HASHTAGS = ('%%assert GenerateTweet --name no_hashtags\nnot re.search(r"#\\w+", tweet)\n'
               '"Please remove hashtag phrases."\n')
ENGAGING = ('%%assert GenerateTweet --name engaging\nlm_judge("Is the tweet engaging?", tweet=tweet)\n'
            '"Make it engaging."\n')


def test_compile_magic_survives_lm_faults_and_accounts_for_every_example(ip, capsys):
    for cell in (SETUP, SIGNATURE, NO_HASHTAGS, ENGAGING):
        ip.run_cell(cell)
    before = dict(INJECTED)
    with dspy.context(lm=FaultyLM(faulty_respond(21))):
        ip.run_cell("%%compile tweeter --train trainset --dev devset --metric quality -o rep --threads 2\n"
                    "retrieve >> GenerateTweet\n")
    out = capsys.readouterr().out
    report = ip.user_ns["rep"]
    assert isinstance(report, CompileReport) and "tweeter" in ip.user_ns
    record = get_registry().programs["tweeter"]
    assert record.result is report.result and not record.interrupted
    check_accounted(report.result, report)
    assert all(INJECTED[k] > before.get(k, 0) for k in (RAISE, GARBAGE, TIMEOUT, CANCEL))
    # the displayed report says how many failed, and why, for the first ones
    n_failed = sum(r.n_failed for r in report.result.settings.values())
    assert f"Failed examples: {n_failed}" in out
    first = H.failed_examples(report.result)[0][1]
    assert H.clean(first.error.splitlines()[0][:60]) in out
    # an LM-judged check hit by a fault is reported against that constraint
    judged = [e for r in report.result.settings.values() for e in r.examples
              if e.error and "constraint 'engaging' is broken" in e.error]
    assert judged, "no fault landed in an lm_judge check"


# ---------------------------------------------------------------- broken constraint code

#: name -> (condition, message, cause); the code breaks only on dev questions d0 and d1 (BREAKS_ON).
BROKEN = {
    "raises": ("explode(question)", '"Fix it."',
               r"constraint 'raises' is broken: condition raised ValueError: no tweets about d[01]"),
    "loops": ("spin(question)", '"Fix it."', r"constraint 'loops' is broken: condition did not finish within 0.2s"),
    "non_bool": ("len(tweet) if question in BREAKS_ON else True", '"Fix it."',
                 r"constraint 'non_bool' is broken: condition returned int \d+, expected True or False"),
    "none": ("print(tweet) if question in BREAKS_ON else True", '"Fix it."',
             r"constraint 'none' is broken: condition returned NoneType None, expected True or False"),
    "message": ("'#' not in tweet", "f\"Fix {tweet.no_such_attribute if question in BREAKS_ON else tweet}.\"",
                r"constraint 'message' is broken: message raised AttributeError"),
}
HELPERS = '''
import threading, time
BREAKS_ON = ("d0", "d1")
stop_spinning = threading.Event()

def explode(question):
    if question in BREAKS_ON:
        raise ValueError(f"no tweets about {question}")
    return True

def spin(question):
    while question in BREAKS_ON and not stop_spinning.is_set():  # would go on for long; the test ends it
        time.sleep(0.005)
    return True
'''
SMALL = tweet_data_cell(3, 4)


@pytest.mark.parametrize("name", list(BROKEN))
def test_broken_constraint_code_is_reported_against_that_constraint(ip, name):
    condition, message, cause = BROKEN[name]
    for cell in (SMALL, HELPERS, SIGNATURE, NO_HASHTAGS):
        ip.run_cell(cell)
    ip.run_cell(f"%%assert GenerateTweet --name {name} --timeout 0.2\n{condition}\n{message}\n")
    try:
        with dspy.context(lm=ScriptedLM(lambda m: {"tweet": "A tweet #wow"})):
            ip.run_cell("%%compile tweeter --train trainset --dev devset --metric quality -o rep "
                        "--settings vanilla,infer_assert,compile\nretrieve >> GenerateTweet\n")
    finally:
        ip.user_ns["stop_spinning"].set()
    report = ip.user_ns["rep"]
    rates = report.result.pass_rates().set_index(["setting", "constraint"])
    for key, res in report.result.settings.items():
        # a broken condition breaks its checks everywhere; a broken message only where a failure asks for it
        broken = name != "message" or key == "infer_assert"
        assert res.n == 4 and res.n_failed == (2 if broken else 0), key
        for e in res.examples:
            if broken and e.inputs["question"] in ("d0", "d1"):
                assert re.search(cause, e.error), e.error
            else:
                assert e.ok, e.error
        assert rates.loc[(LABELS[key], name), "errors"] == (2 if broken else 0), rates.loc[(LABELS[key], name)]
        assert rates.loc[(LABELS[key], "no_hashtags"), "errors"] == 0
    # the report shows the broken checks against that constraint, in its column
    header = re.findall(r'<th style="[^"]*" title="([^"]*)">', report.html())
    column = [t.split(" (")[0] for t in header].index(name)
    row = re.search(r'<tr><th[^>]*><span[^>]*></span>Infer w/ Assert</th>(.*?)</tr>', report.html()).group(1)
    cell = re.findall(r"<td[^>]*>(.*?)</td>", row)[1 + column]
    assert "2 broken" in cell, cell
    assert re.search(rf"Broken checks \(the constraint's own code failed\): .*{name}: [1-9]", report.text())


def test_a_check_broken_on_every_example_is_one_usage_error_naming_it(ip):
    for cell in (SMALL, HELPERS, SIGNATURE):
        ip.run_cell(cell)
    ip.run_cell("%%assert GenerateTweet --name fragile\nexplode('d0')\n")
    before = get_registry().snapshot_json()
    with dspy.context(lm=ScriptedLM(lambda m: {"tweet": "A tweet"})), \
            pytest.raises(UsageError, match=r"constraint 'fragile' is broken: condition raised ValueError"):
        ip.run_cell("%%compile tweeter --train trainset --dev devset --metric quality --settings vanilla\n"
                    "retrieve >> GenerateTweet\n")
    assert get_registry().snapshot_json() == before and "tweeter" not in ip.user_ns


def test_stuck_checks_do_not_starve_other_constraints():
    """More stuck checks than any worker pool has: a healthy constraint's check still runs."""
    stop = threading.Event()
    stuck = Constraint("stuck", lambda tweet: stop.wait(60) or True, timeout=0.02)
    healthy = Constraint("healthy", lambda tweet: "#" not in tweet, timeout=5)
    try:
        for _ in range(40):
            with pytest.raises(ConstraintError, match="did not finish within 0.02s"):
                stuck.check({"tweet": "x"})
        assert healthy.check({"tweet": "clean"}) is True
        assert healthy.check({"tweet": "#tag"}) is False
        workers = [t for t in threading.enumerate() if t.name.startswith("lmassert-check")]
        assert workers and all(t.daemon for t in workers), "a stuck check must not keep Python from exiting"
    finally:
        stop.set()


def test_python_exits_with_a_check_stuck_for_good(tmp_path):
    """A check that never returns (here: waits forever) must not hang the kernel's shutdown."""
    script = tmp_path / "stuck.py"
    script.write_text(textwrap.dedent('''
        import threading
        from lmassert_magic import Constraint, ConstraintError, lm_judge
        forever = threading.Event()
        c = Constraint("forever", lambda tweet: forever.wait(), timeout=0.05)
        try:
            c.check({"tweet": "x"})
        except ConstraintError as exc:
            print("reported:", exc)
    '''))
    root = str(__import__("pathlib").Path(__file__).resolve().parent.parent)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300,
                          env={"PYTHONPATH": root, "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    assert "reported: constraint 'forever' is broken: condition did not finish within 0.05s" in done.stdout


def test_faults_were_injected():
    print(f"faults injected: {dict(INJECTED)}")
    if not INJECTED:
        pytest.skip("the fault tests were not selected")
    assert all(INJECTED[k] > 0 for k in (RAISE, GARBAGE, TIMEOUT, CANCEL))
