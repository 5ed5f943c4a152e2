"""progress_reporter: text and widget views, thread safety, fallbacks, interrupted runs."""

from __future__ import annotations

import random
import threading
from typing import Any

import dspy
import pytest

from lmassert_magic import Constraint
from lmassert_magic.engine.ablation import SETTINGS, ProgressEvent, run_ablation
from lmassert_magic.report import progress_reporter
from lmassert_magic.report.progress import TextProgress, WidgetProgress
from lmassert_magic.testing import ScriptedLM

E = ProgressEvent


def full_run(cb: Any, n_train: int = 6, n_dev: int = 5) -> None:
    """The events run_ablation sends for the five settings (C+Infer reuses the compiled program)."""
    for key in SETTINGS:
        if key in ("compile", "compile_assert"):
            for n in range(1, n_train + 1):
                cb(E(key, "compile", n, n_train))
        cb(E(key, "evaluate", 0, n_dev))
        for n in range(1, n_dev + 1):
            cb(E(key, "evaluate", n, n_dev))
        cb(E(key, "evaluate", n_dev, n_dev, finished=True))


def test_text_mode_prints_phases_and_ends(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_reporter(SETTINGS, 6, 5, mode="text") as cb:
        assert isinstance(cb.view, TextProgress)
        full_run(cb)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[lmassert] running 5 settings on 5 dev examples (6 train)"
    assert "[lmassert] Vanilla: evaluating 0/5" in out
    assert "[lmassert] Compile: compiling 1/6" in out
    assert "[lmassert] Compile: evaluating 0/5" in out
    done = [line for line in out if ": done: 5 examples in" in line]
    assert [d.split(":")[0] for d in done] == ["[lmassert] Vanilla", "[lmassert] Infer w/ Assert",
                                               "[lmassert] Compile", "[lmassert] Compile w/ Assert",
                                               "[lmassert] C+Infer w/ Assert"]
    assert not any("stopped" in line or "not run" in line for line in out)


def test_text_mode_quarter_milestones_for_long_phases(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_reporter(("vanilla",), 0, 100, mode="text") as cb:
        for n in range(101):
            cb(E("vanilla", "evaluate", n, 100))
    out = capsys.readouterr().out.splitlines()
    assert [line.split(" (")[0] for line in out if "evaluating" in line] == [
        "[lmassert] Vanilla: evaluating 0/100",
        "[lmassert] Vanilla: evaluating 25/100",
        "[lmassert] Vanilla: evaluating 50/100",
        "[lmassert] Vanilla: evaluating 75/100",
    ]
    assert out[-1] == "[lmassert] Vanilla: stopped (100/100)"  # never got finished=True


def test_auto_mode_without_a_kernel_is_text(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_reporter(("vanilla",), 0, 2) as cb:
        assert isinstance(cb.view, TextProgress)
        cb(E("vanilla", "evaluate", 2, 2, finished=True))
    assert "Vanilla: done: 2 examples" in capsys.readouterr().out


def test_off_mode_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_reporter(SETTINGS, 6, 5, mode="off") as cb:
        full_run(cb)
    assert capsys.readouterr().out == ""


def widget_state(view: WidgetProgress) -> dict[str, tuple[int, int, str, str]]:
    return {k: (b.value, b.max, b.bar_style, view.labels[k].value) for k, b in view.bars.items()}


def test_widget_mode_bars_per_setting() -> None:
    with progress_reporter(SETTINGS, 6, 5, mode="widget") as cb:
        view = cb.view
        assert isinstance(view, WidgetProgress)
        assert len(view.box.children) == 1 + len(SETTINGS)
        labels = [row.children[0].value for row in view.box.children[1:]]
        assert labels == ["Vanilla", "Infer w/ Assert", "Compile", "Compile w/ Assert", "C+Infer w/ Assert"]
        cb(E("compile", "compile", 3, 6))
        assert widget_state(view)["compile"] == (3, 6, "info", "compiling 3/6")
        cb(E("compile", "evaluate", 0, 5))  # a phase change always redraws
        assert widget_state(view)["compile"] == (0, 5, "", "evaluating 0/5")
        cb(E("compile", "evaluate", 5, 5, finished=True))
        assert widget_state(view)["compile"][2] == "success"
        assert view.labels["compile"].value.startswith("done: 5 examples in")
        assert "1/5 settings done" in view.title.value
        full_run(cb)
    state = widget_state(view)
    assert all(v[0] == 5 and v[2] == "success" for v in state.values())
    assert "5/5 settings done" in view.title.value


def test_interrupted_run_marks_unfinished_settings_stopped() -> None:
    with pytest.raises(KeyboardInterrupt), progress_reporter(SETTINGS, 6, 5, mode="widget") as cb:
        view = cb.view
        cb(E("vanilla", "evaluate", 5, 5, finished=True))
        cb(E("infer_assert", "evaluate", 2, 5))
        raise KeyboardInterrupt
    state = widget_state(view)
    assert state["vanilla"][2] == "success"
    assert state["infer_assert"][:3] == (2, 5, "warning") and state["infer_assert"][3] == "stopped (2/5)"
    assert state["compile"][2] == "warning"


def test_late_and_out_of_order_events_never_go_backwards(capsys: pytest.CaptureFixture[str]) -> None:
    with progress_reporter(("compile",), 6, 5, mode="widget") as cb:
        view = cb.view
        cb(E("compile", "evaluate", 4, 5))
        cb(E("compile", "evaluate", 2, 5))  # a slower worker thread reports late
        cb(E("compile", "compile", 6, 6))  # a stale event of the earlier phase
        row = view.rows["compile"]
        assert (row.phase, row.done) == ("evaluate", 4)
        cb(E("compile", "evaluate", 5, 5, finished=True))
        cb(E("compile", "evaluate", 1, 5))  # after the end
    assert widget_state(view)["compile"][:3] == (5, 5, "success")


def test_unknown_setting_and_unknown_total_get_rows() -> None:
    with progress_reporter(("vanilla",), 7, 5, mode="widget") as cb:
        view = cb.view
        cb(E("custom", "compile", 2, None))
        assert "custom" in view.bars and len(view.box.children) == 3
        assert widget_state(view)["custom"][:2] == (2, 7)  # total None: the train size


def test_thread_safety_many_workers() -> None:
    n_dev, workers = 400, 8
    with progress_reporter(("vanilla", "infer_assert"), 0, n_dev, mode="widget") as cb:
        view = cb.view
        errors: list[BaseException] = []
        counter = {"n": 0}
        lock = threading.Lock()
        start = threading.Barrier(workers)

        def work(seed: int) -> None:
            rnd = random.Random(seed)
            start.wait()
            try:
                for _ in range(n_dev // workers):
                    with lock:
                        counter["n"] += 1
                        n = counter["n"]
                    if rnd.random() < 0.3:
                        threading.Event().wait(0.0005)
                    cb(E("vanilla", "evaluate", n, n_dev))
                    cb(E("infer_assert", "evaluate", rnd.randint(0, n_dev), n_dev))
            except BaseException as exc:  # pragma: no cover - the test fails below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        cb(E("vanilla", "evaluate", n_dev, n_dev, finished=True))
    assert view.rows["vanilla"].done == n_dev
    assert widget_state(view)["vanilla"][:3] == (n_dev, n_dev, "success")
    assert view.rows["infer_assert"].phase == "stopped"
    assert widget_state(view)["infer_assert"][0] == view.rows["infer_assert"].done  # flushed at the end


def test_a_broken_widget_falls_back_to_text(capsys: pytest.CaptureFixture[str]) -> None:
    class Broken:
        max = 5

        def __setattr__(self, name: str, value: Any) -> None:
            raise RuntimeError("comm closed")

    with progress_reporter(("vanilla", "compile"), 6, 5, mode="widget") as cb:
        cb.view.bars["vanilla"] = Broken()
        cb(E("vanilla", "evaluate", 1, 5))  # must not raise
        cb(E("vanilla", "evaluate", 5, 5, finished=True))
    out = capsys.readouterr().out
    assert "[lmassert] Vanilla: done: 5 examples in" in out
    assert "[lmassert] Compile: not run" in out


def test_widgets_unavailable_falls_back_to_text(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    def boom(*a: Any, **k: Any) -> None:
        raise ImportError("no ipywidgets")

    monkeypatch.setattr(WidgetProgress, "__init__", boom)
    with progress_reporter(("vanilla",), 0, 3, mode="widget") as cb:
        assert isinstance(cb.view, TextProgress)
        cb(E("vanilla", "evaluate", 3, 3, finished=True))
    assert "Vanilla: done: 3 examples" in capsys.readouterr().out


class _Tweet(dspy.Signature):
    """Write a tweet."""

    question: str = dspy.InputField()
    tweet: str = dspy.OutputField()


def test_with_a_real_run_on_worker_threads() -> None:
    def respond(messages: list[dict[str, Any]]) -> dict[str, Any]:
        return {"tweet": "clean" if "remove hashtags" in ScriptedLM.last_message(messages) else "bad #tag"}

    c = Constraint("no_hashtags", lambda tweet: "#" not in tweet, "Please remove hashtags.", target=_Tweet)
    train = [dspy.Example(question=f"q{i}", tweet="t").with_inputs("question") for i in range(6)]
    dev = [dspy.Example(question=f"d{i}", tweet="t").with_inputs("question") for i in range(5)]
    with progress_reporter(SETTINGS, 6, 5, mode="widget") as cb, dspy.context(lm=ScriptedLM(respond, latency=0.01)):
        result = run_ablation(dspy.Predict(_Tweet), train, dev, lambda e, p, t=None: True, constraints=[c],
                              progress=cb, num_threads=4)
        view = cb.view
    assert not result.interrupted
    state = widget_state(view)
    assert all(v[:3] == (5, 5, "success") for v in state.values()), state


def test_text_milestones_say_time_spent_and_an_estimate_of_the_rest(capsys, monkeypatch) -> None:
    import lmassert_magic.report.progress as progress

    clock = iter(range(0, 10_000, 30))  # every reading of the clock is 30 s after the last
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    with progress_reporter(("vanilla",), 0, 40, mode="text") as cb:
        cb(E("vanilla", "evaluate", 0, 40))
        cb(E("vanilla", "evaluate", 10, 40))
    line = [line for line in capsys.readouterr().out.splitlines() if "10/40" in line][0]
    # the phase began at the first event; 10 examples took 30 s, so 30 more take 90 s
    assert line == "[lmassert] Vanilla: evaluating 10/40 (00:30 spent, about 01:30 left)"
