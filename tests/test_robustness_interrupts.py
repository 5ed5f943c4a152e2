"""KeyboardInterrupt at random points of a `%%compile`: the registry stays consistent, the partial
report is there, nothing keeps running, and the next compile works.

Interrupts are raised from inside the scripted LM after a random number of calls (in the main thread,
in evaluation worker threads, and inside an `lm_judge` check on its own check thread) and from the
progress callback after a random number of events. Each trial then re-runs the same cell with a
healthy LM and expects a complete result.
"""

from __future__ import annotations

import json
import random
import re
import threading
from collections.abc import Callable
from typing import Any

import dspy
import pytest
from IPython.core.error import UsageError

from lmassert_magic.engine.ablation import SETTINGS
from lmassert_magic.registry import get_registry
from lmassert_magic.report import CompileReport
from lmassert_magic.report import progress as progress_module
from lmassert_magic.testing import ScriptedLM

from helpers import tweet_data_cell

N_DEV, N_TRAIN = 8, 4
MAX_CALLS_PER_EXAMPLE = 6  # (1 try + 2 backtracks) x (tweet + lm_judge)
TRIALS_LM = 16
TRIALS_PROGRESS = 8
TRIED: dict[str, int] = {"lm": 0, "progress": 0}

SETUP = tweet_data_cell(N_TRAIN, N_DEV)
CELLS = [
    '%%signature GenerateTweet\n"""Write a tweet."""\nquestion: str = In()\ncontext: list[str] = In()\n'
    'tweet: str = Out()\n',
    '%%assert GenerateTweet --name no_hashtags\nnot re.search(r"#\\w+", tweet)\n"Please remove hashtag phrases."\n',
    '%%assert GenerateTweet --name engaging --timeout 5\nlm_judge("Is it engaging?", tweet=tweet)\n"Be engaging."\n',
]
COMPILE = ("%%compile tweeter --train trainset --dev devset --metric quality -o rep --threads {threads}\n"
           "retrieve >> GenerateTweet\n")


def answer(messages: list[dict[str, Any]]) -> dict[str, Any]:
    if "yes/no question" in str(messages[0].get("content", "")):
        return {"answer": True}
    last = str(messages[-1].get("content", ""))
    q = (re.search(r"## question ## \]\]\n(\S+)", last) or re.search(r"(\S+)", "?")).group(1)
    return {"tweet": f"A clean tweet about {q}."} if "remove hashtag" in last else {"tweet": f"About {q} #wow"}


class CountingLM(ScriptedLM):
    """Answers like `answer`; raises KeyboardInterrupt on call number `stop_at` (never if None)."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.calls = 0
        self.stop_at = stop_at
        self.where: str | None = None
        self._count_lock = threading.Lock()
        super().__init__(self._respond)

    def _respond(self, messages: list[dict[str, Any]]) -> dict[str, Any]:
        with self._count_lock:
            self.calls += 1
            n = self.calls
        if n == self.stop_at:
            self.where = threading.current_thread().name
            raise KeyboardInterrupt
        return answer(messages)


@pytest.fixture
def notebook(ip):
    ip.run_cell(SETUP)
    for cell in CELLS:
        ip.run_cell(cell)
    # one complete compile first, so an interrupted one must leave an existing record consistent too
    lm = CountingLM()
    with dspy.context(lm=lm):
        ip.run_cell(COMPILE.format(threads=1))
    assert get_registry().programs["tweeter"].result.settings.keys() == set(SETTINGS)
    return ip, lm.calls


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t not in before and t.name.startswith("ThreadPoolExecutor")]


def interrupted_compile(ip, lm: CountingLM, threads: int, patch: Callable[[], Any] | None = None) -> bool:
    """Run the compile cell; True if it was interrupted (a late stop point lets it finish)."""
    before = {t for t in threading.enumerate()}
    try:
        with dspy.context(lm=lm):
            ip.run_cell(COMPILE.format(threads=threads))
    except KeyboardInterrupt:
        interrupted = True
    else:
        interrupted = False
    # nothing of the interrupted run goes on calling the LM after the cell returned: examples already
    # running may finish (at most 3 attempts with a judge each), none is started
    calls = lm.calls
    for t in new_threads(before):
        t.join(timeout=60)
    assert lm.calls <= calls + MAX_CALLS_PER_EXAMPLE * threads, f"{lm.calls - calls} LM calls after the cell returned"
    return interrupted


def check_consistent(ip, before: dict[str, Any], tweeter_before: Any, interrupted: bool) -> None:
    registry = get_registry()
    after = json.loads(registry.snapshot_json())
    # definitions untouched; exactly one committed change (the compile record)
    assert after["signatures"] == before["signatures"] and after["constraints"] == before["constraints"]
    assert after["revision"] == before["revision"] + 1
    assert set(after["programs"]) == {"tweeter"}
    record = registry.programs["tweeter"]
    report = ip.user_ns["rep"]
    assert isinstance(report, CompileReport) and report.result is record.result
    assert record.interrupted is interrupted is report.interrupted is record.result.interrupted
    finished = list(record.result.settings)
    assert finished == list(SETTINGS)[: len(finished)]  # settings that finished, in order, nothing half-done
    for key, res in record.result.settings.items():
        assert res.n == N_DEV and res.n_ok + res.n_failed == N_DEV, key
        assert after["programs"]["tweeter"]["results"][key]["examples"] == N_DEV
    if interrupted:
        assert ip.user_ns.get("tweeter") is tweeter_before  # NAME is not rebound to a partial program
        # ... and the registry does not claim a program the notebook never got (export would write it)
        assert record.program is None
        with pytest.raises(UsageError, match="interrupted"):
            ip.run_cell("%lmassert export tweeter /nonexistent/never-written")
        assert "Interrupted: this is a partial result" in report.html()
        assert "INTERRUPTED" in report.text()
        ip.run_cell("%lmassert show tweeter")  # the partial result can be looked at
    else:
        assert ip.user_ns["tweeter"] is record.program


def check_next_compile_works(ip) -> None:
    lm = CountingLM()
    with dspy.context(lm=lm):
        ip.run_cell(COMPILE.format(threads=2))
    record = get_registry().programs["tweeter"]
    assert not record.interrupted and list(record.result.settings) == list(SETTINGS)
    assert all(r.n == N_DEV and r.n_failed == 0 for r in record.result.settings.values())
    assert ip.user_ns["tweeter"] is record.program and record.stale is None
    # and the program bound to NAME runs
    with dspy.context(lm=lm):
        assert "#" not in ip.user_ns["tweeter"](question="cats").tweet


def test_interrupts_from_inside_the_lm(notebook, capsys):
    ip, full = notebook
    rng = random.Random(2024)
    where: set[str] = set()
    n_interrupted = 0
    for trial in range(TRIALS_LM):
        threads = 1 + trial % 3
        stop_at = rng.randint(1, full + 5)  # now and then after the end: the compile just finishes
        lm = CountingLM(stop_at)
        before = json.loads(get_registry().snapshot_json())
        tweeter_before = ip.user_ns.get("tweeter")
        interrupted = interrupted_compile(ip, lm, threads)
        assert interrupted == (lm.where is not None), (trial, stop_at, lm.calls)
        n_interrupted += interrupted
        where.add("main" if lm.where == "MainThread" else re.sub(r"[-_]\d+", "", lm.where or "none"))
        check_consistent(ip, before, tweeter_before, interrupted)
        check_next_compile_works(ip)
        TRIED["lm"] += 1
    capsys.readouterr()
    assert n_interrupted >= TRIALS_LM * 2 // 3
    # the interrupts hit the main thread, evaluation workers and the check threads of lm_judge
    assert {"main", "ThreadPoolExecutor", "lmassert-check-engaging"} <= where, where


def test_interrupts_from_the_progress_callback(notebook, monkeypatch, capsys):
    ip, _ = notebook
    rng = random.Random(7)
    state = {"events": 0, "stop_at": None}
    original = progress_module._Tracker.update

    def update(self, event):
        state["events"] += 1
        if state["events"] == state["stop_at"]:
            raise KeyboardInterrupt
        return original(self, event)

    monkeypatch.setattr(progress_module._Tracker, "update", update)
    phases = set()
    for trial in range(TRIALS_PROGRESS):
        state["events"], state["stop_at"] = 0, rng.randint(1, 60)
        lm = CountingLM()
        before = json.loads(get_registry().snapshot_json())
        tweeter_before = ip.user_ns.get("tweeter")
        interrupted = interrupted_compile(ip, lm, threads=1 + trial % 2)
        assert interrupted == (state["events"] >= state["stop_at"])
        check_consistent(ip, before, tweeter_before, interrupted)
        if interrupted:
            phases.add(len(get_registry().programs["tweeter"].result.settings))
        state["stop_at"] = None
        check_next_compile_works(ip)
        TRIED["progress"] += 1
    capsys.readouterr()
    assert len(phases) >= 3, phases  # interrupted in different settings


def test_an_interrupt_in_a_worker_stops_the_queued_examples():
    """50 queued examples, 2 threads, an interrupt at the 5th LM call (in a worker): the rest never start."""
    from lmassert_magic.engine.ablation import run_ablation

    class Tweet(dspy.Signature):
        """Write a tweet."""

        question: str = dspy.InputField()
        tweet: str = dspy.OutputField()

    lm = CountingLM(stop_at=5)
    lm.latency = 0.005  # so the queue is still long when the interrupt lands
    dev = [dspy.Example(question=f"d{i}").with_inputs("question") for i in range(50)]
    before = set(threading.enumerate())
    with dspy.context(lm=lm):
        result = run_ablation(dspy.Predict(Tweet), [], dev, lambda e, p, t=None: 1.0, settings="vanilla",
                              num_threads=2)
    assert result.interrupted and not result.settings
    calls = lm.calls
    for t in new_threads(before):
        t.join(timeout=60)
    assert lm.calls - calls <= 2, f"{lm.calls - calls} LM calls after run_ablation returned"
    assert lm.calls < 10


def test_at_least_20_interrupts_were_tried(request):
    selected = {item.name for item in request.session.items}
    if not {"test_interrupts_from_inside_the_lm", "test_interrupts_from_the_progress_callback"} <= selected:
        pytest.skip("the interrupt tests were not both selected")
    print(f"interrupt trials: {TRIED}")
    assert TRIED["lm"] == TRIALS_LM and TRIED["progress"] == TRIALS_PROGRESS
    assert sum(TRIED.values()) >= 20
