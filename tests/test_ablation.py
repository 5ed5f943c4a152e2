"""Assertion-aware compilation and the five-setting ablation, checked against hand counts."""

from __future__ import annotations

import math
import re

import dspy
import pytest

from lmassert_magic import Assert, Constraint, Suggest, activate_assertions
from lmassert_magic.engine import assertion_log, run_record_of
from lmassert_magic.engine.ablation import (
    C_INFER_ASSERT,
    COMPILE,
    COMPILE_ASSERT,
    INFER_ASSERT,
    LABELS,
    SETTINGS,
    VANILLA,
    ProgressEvent,
    normalize_settings,
    run_ablation,
)
from lmassert_magic.engine.compile import assertion_aware_metric

from helpers import (
    FIX,
    Tweet,
    TweetStep,
    activated_tweeter,
    compile_tweeter,
    hashtag_constraint,
    metric,
    no_hashtags,
    question_of,
)


def respond(messages):
    """Hashtags unless the prompt carries the feedback or a demo showing a clean tweet."""
    last = messages[-1]["content"]
    q = question_of(messages)
    demos = " ".join(m["content"] for m in messages[:-1])
    if FIX in last or "clean" in demos:
        return {"tweet": f"clean answer-{q}"}
    return {"tweet": f"answer-{q} #wow"}


#: Optimizer options for the compiled settings: two bootstrapped demos, no labelled ones.
TWO_BOOTSTRAPPED_DEMOS = {"max_bootstrapped_demos": 2, "max_labeled_demos": 0}


def ablate_tweeter(train, dev, **options):
    """`run_ablation` of `Predict(Tweet)` with `metric` and the hashtag constraint, the call most tests here make."""
    return run_ablation(dspy.Predict(Tweet), train, dev, metric, constraints=[hashtag_constraint()], **options)


@pytest.fixture
def data():
    train = [dspy.Example(question=f"t{i}").with_inputs("question") for i in range(8)]
    dev = [dspy.Example(question=f"d{i}").with_inputs("question") for i in range(10)]
    return train, dev


def test_five_settings_against_hand_counts(scripted_lm, data):
    train, dev = data
    lm = scripted_lm(respond)
    result = ablate_tweeter(train, dev, optimizer_kwargs=TWO_BOOTSTRAPPED_DEMOS)
    assert list(result.settings) == list(SETTINGS)
    rates = result.pass_rates().set_index("setting")
    n = len(dev)

    # Vanilla: one call each, every tweet has a hashtag
    vanilla = result.settings[VANILLA]
    assert vanilla.lm_calls == n
    assert rates.loc["Vanilla", "checks"] == n and rates.loc["Vanilla", "pass_rate"] == 0
    # Infer w/ Assert: fail, backtrack once with feedback, pass
    infer = result.settings[INFER_ASSERT]
    assert infer.lm_calls == 2 * n
    assert rates.loc["Infer w/ Assert", "passes_after_backtrack"] == n
    assert rates.loc["Infer w/ Assert", "backtracks"] == n
    # Compile: demos come from a teacher without assertions, so they carry hashtags
    assert rates.loc["Compile", "pass_rate"] == 0
    assert result.demos[COMPILE]["self"]
    assert all("#" in d["tweet"] for d in result.demos[COMPILE]["self"])
    # Compile w/ Assert: demos are fixed traces that carry the feedback and the past output
    demos = result.demos[COMPILE_ASSERT]["self"]
    assert len(demos) == 2
    for d in demos:
        assert FIX in d["feedback"] and "#wow" in d["past_tweet"] and no_hashtags(d["tweet"])
    assert rates.loc["Compile w/ Assert", "first_try_passes"] == n
    assert rates.loc["C+Infer w/ Assert", "pass_rate"] == 100
    assert result.settings[C_INFER_ASSERT].lm_calls == n  # demos fixed it first time: no backtracks

    # counterexamples of compile: both outputs recorded
    cx = result.compile_counterexamples
    assert len(cx) >= 2 and all(c.fixed and "#wow" in c.failing_outputs["tweet"] for c in cx)
    assert all(not no_hashtags(c.failing_outputs["tweet"]) and no_hashtags(c.fixed_outputs["tweet"]) for c in cx)

    # summary table numbers equal recomputed ones
    summary = result.summary()
    for _key, res in result.settings.items():
        finals = [no_hashtags(e.outputs["tweet"]) for e in res.examples]
        assert summary.loc[res.label, "no_hashtags"] == pytest.approx(100 * sum(finals) / n)
        assert summary.loc[res.label, "metric"] == pytest.approx(100 * sum(metric(e, p) for e, p in zip(
            dev, [dspy.Prediction(**x.outputs) for x in res.examples])) / n)
        assert summary.loc[res.label, "lm_calls/ex"] == res.lm_calls / n
        assert res.n_ok + res.n_failed == n
    assert summary.loc["C+Infer w/ Assert", "no_hashtags"] > summary.loc["Vanilla", "no_hashtags"]
    assert any(line.startswith("no_hashtags: Vanilla 0% -> Infer w/ Assert 100%") for line in result.headlines())
    assert len(lm.prompts) > 0


def test_hard_failures_are_accounted_not_raised(scripted_lm, data):
    _, dev = data
    scripted_lm(lambda m: {"tweet": "always #bad"})
    hard = Constraint("no_hashtags", no_hashtags, FIX, hard=True, target=Tweet)
    result = run_ablation(dspy.Predict(Tweet), [], dev, metric, constraints=[hard], settings="vanilla,infer_assert")
    infer = result.settings[INFER_ASSERT]
    assert infer.n_failed == len(dev) and infer.n_ok == 0
    assert all("DSPyAssertionError" in e.error for e in infer.examples)
    assert infer.constraint_stats["no_hashtags"].final_failures == len(dev)
    assert result.settings[VANILLA].n_failed == 0


def test_lm_faults_are_accounted(scripted_lm, data):
    _, dev = data

    def flaky(messages):
        q = question_of(messages)
        if q in ("d3", "d7"):
            raise ConnectionError("LM went away")
        return {"tweet": "fine"}

    scripted_lm(flaky)
    result = ablate_tweeter([], dev, settings=["vanilla"])
    vanilla = result.settings[VANILLA]
    assert vanilla.n_ok == 8 and vanilla.n_failed == 2
    assert {e.index for e in vanilla.examples if not e.ok} == {3, 7}
    assert all("LM went away" in e.error for e in vanilla.examples if not e.ok)


def test_interrupt_leaves_a_consistent_partial_result(scripted_lm, data):
    train, dev = data
    scripted_lm(respond)

    def progress(event: ProgressEvent):
        if event.setting == COMPILE and event.phase == "evaluate" and event.done == 3:
            raise KeyboardInterrupt

    result = ablate_tweeter(train, dev, progress=progress)
    assert result.interrupted
    assert list(result.settings) == [VANILLA, INFER_ASSERT]
    assert all(r.n == len(dev) for r in result.settings.values())
    # and the next run works
    again = ablate_tweeter(train, dev, settings="compile")
    assert not again.interrupted and again.settings[COMPILE].n == len(dev)


def test_progress_events_cover_every_example(scripted_lm, data):
    train, dev = data
    scripted_lm(respond)
    events: list[ProgressEvent] = []
    ablate_tweeter(train, dev, settings="vanilla,compile_assert", progress=events.append, num_threads=4)
    finished = [e for e in events if e.finished]
    assert [e.setting for e in finished] == [VANILLA, COMPILE_ASSERT]
    done = {e.setting: max(x.done for x in events if x.setting == e.setting and x.phase == "evaluate")
            for e in finished}
    assert done == {VANILLA: len(dev), COMPILE_ASSERT: len(dev)}
    assert any(e.phase == "compile" for e in events)


def test_settings_names_and_errors():
    assert normalize_settings("C+Infer w/ Assert, vanilla") == (VANILLA, C_INFER_ASSERT)
    assert normalize_settings(None) == SETTINGS
    with pytest.raises(ValueError, match="unknown setting 'fancy'"):
        normalize_settings("fancy")


def test_assertion_aware_metric_penalises_soft_and_zeroes_hard(scripted_lm):
    scripted_lm(lambda m: {"tweet": "x #tag"})
    soft = activated_tweeter(max_backtracks=0)
    pred = soft(question="q")
    aware = assertion_aware_metric(lambda e, p, t=None: 1.0, soft_penalty=0.25)
    assert aware(None, pred) == 0.75
    hard = activated_tweeter(Constraint("h", no_hashtags, "x", hard=True, target=Tweet), max_backtracks=0,
                             mode="observe")
    assert aware(None, hard(question="q")) == 0.0
    assert aware(None, dspy.Prediction(tweet="plain")) == 1.0


def test_random_search_compile_with_assertions(scripted_lm, data):
    train, _ = data
    scripted_lm(respond)
    outcome = compile_tweeter(train, optimizer="random_search", num_candidate_programs=2, max_bootstrapped_demos=2)
    demos = outcome.demos["self"]
    assert demos and all(no_hashtags(d["tweet"]) for d in demos)
    assert outcome.lm_calls > 0 and outcome.counterexamples


def test_compiled_program_saves_loads_and_runs_either_way(scripted_lm, data, tmp_path):
    train, _ = data
    scripted_lm(respond)
    outcome = compile_tweeter(train, max_bootstrapped_demos=2)
    path = tmp_path / "compiled.json"
    outcome.program.save(str(path))
    loaded = dspy.Predict(Tweet)
    loaded.load(str(path))
    assert [dict(d)["tweet"] for d in loaded.demos] == [d["tweet"] for d in outcome.demos["self"]]
    plain = loaded(question="z")
    assert no_hashtags(plain.tweet)
    asserted = activate_assertions(loaded, constraints=[hashtag_constraint()])
    out = asserted(question="z")
    assert out.tweet == plain.tweet and run_record_of(out).constraints["no_hashtags"].first_try_passes == 1
    assert len(assertion_log(asserted)) == 1


def test_empty_devset_and_missing_trainset_are_errors():
    with pytest.raises(ValueError, match="dev set is empty"):
        run_ablation(dspy.Predict(Tweet), [], [], metric)
    with pytest.raises(ValueError, match="train set"):
        run_ablation(dspy.Predict(Tweet), [], [dspy.Example(question="q").with_inputs("question")], metric,
                     settings="compile")


def test_summary_marks_unchecked_constraints_nan(scripted_lm, data):
    _, dev = data

    def down(messages):
        raise ConnectionError("LM down")

    scripted_lm(down)  # every example fails before its step returns: the constraint is never checked
    other = Constraint("never_checked", lambda tweet: True, target=Tweet)
    result = run_ablation(dspy.Predict(Tweet), [], dev[:2], metric, constraints=[other], settings="vanilla")
    assert result.settings[VANILLA].n_failed == 2
    assert math.isnan(result.summary().loc["Vanilla", "never_checked"])


def test_summary_tokens_per_example_come_from_the_tally(scripted_lm, data):
    _, dev = data
    scripted_lm(lambda m: {"tweet": "x"})
    result = ablate_tweeter([], dev[:2], settings="vanilla")
    tokens = result.settings[VANILLA].tokens
    assert tokens > 0 and result.summary().loc["Vanilla", "tokens/ex"] == tokens / 2


def test_uncopyable_constraint_still_bootstraps_demos(scripted_lm, data):
    import threading

    train, dev = data
    scripted_lm(respond)
    lock = threading.Lock()  # makes copy.deepcopy of anything holding it fail

    def guarded_check(tweet):
        with lock:
            return no_hashtags(tweet)

    c = Constraint("no_hashtags", guarded_check, FIX + ".", target=Tweet)
    result = run_ablation(dspy.Predict(Tweet), train, dev[:2], metric, constraints=[c], settings="compile_assert",
                          optimizer_kwargs=TWO_BOOTSTRAPPED_DEMOS)
    assert len(result.demos[COMPILE_ASSERT]["self"]) == 2


def test_attribute_wise_copy_stays_activated_and_bound_to_itself(scripted_lm):
    import threading

    scripted_lm(respond)

    class Holder(dspy.Module):
        def __init__(self):
            super().__init__()
            self.lock = threading.Lock()  # forces DSPy's attribute-by-attribute deepcopy fallback
            self.gen = dspy.Predict(Tweet)

        def forward(self, question):
            return self.gen(question=question)

    program = activate_assertions(Holder(), constraints=[hashtag_constraint()])
    copy = program.deepcopy()
    assert copy.gen is not program.gen
    out = copy(question="q1")
    assert no_hashtags(out.tweet)
    assert len(assertion_log(copy)) == 1 and len(assertion_log(program)) == 0


# ================================================================ settings that mean what they say (issue 14)


class InlineTweeter(TweetStep):
    def forward(self, question):
        tweet = self.gen(question=question).tweet
        Suggest(no_hashtags(tweet), FIX + ".", name="inline_no_hashtags")
        return dspy.Prediction(tweet=tweet)


def test_inline_constraints_get_rows_in_every_setting(scripted_lm, data):
    train, dev = data
    scripted_lm(respond)
    result = run_ablation(InlineTweeter(), train, dev[:4], metric,
                          optimizer_kwargs=TWO_BOOTSTRAPPED_DEMOS)
    rates = result.pass_rates()
    rows = rates[rates.constraint == "inline_no_hashtags"].set_index("setting")
    assert list(rows.index) == [LABELS[k] for k in SETTINGS]
    assert rows.loc["Vanilla", "pass_rate"] == 0 and rows.loc["Infer w/ Assert", "pass_rate"] == 100
    assert "inline_no_hashtags" in result.summary().columns
    assert any(line.startswith("inline_no_hashtags") for line in result.headlines())


def test_baselines_never_enforce_and_count_observing_calls_apart(scripted_lm, data):
    _, dev = data

    def respond_with_judge(messages):
        text = messages[-1]["content"]
        if "## answer ## ]]" in text.split("Respond with")[-1]:
            return {"answer": True}
        return {"tweet": "tweet #tag"}

    scripted_lm(respond_with_judge)
    from lmassert_magic import lm_judge

    judged = Constraint("engaging", lambda tweet: lm_judge("Is it engaging?", tweet=tweet), "Be fun.",
                        target=Tweet)

    class Hard(TweetStep):
        def forward(self, question):
            tweet = self.gen(question=question).tweet
            Assert(no_hashtags(tweet), FIX, name="hard_inline")
            return dspy.Prediction(tweet=tweet)

    result = run_ablation(Hard(), [], dev[:3], metric, constraints=[judged], settings="vanilla")
    vanilla = result.settings[VANILLA]
    assert vanilla.n_failed == 0  # an inline Assert is observed, never raised, in a baseline
    assert vanilla.lm_calls == 3  # the program's own calls
    assert vanilla.observe_lm_calls == 3  # the judge measuring each output
    assert vanilla.constraint_stats["hard_inline"].passed_final == 0


def test_headlines_compare_like_with_like(scripted_lm, data):
    train, dev = data
    scripted_lm(respond)
    result = ablate_tweeter(train, dev[:4], optimizer_kwargs=TWO_BOOTSTRAPPED_DEMOS)
    pairs = {tuple(re.findall(r"(Vanilla|Infer w/ Assert|Compile w/ Assert|C\+Infer w/ Assert|Compile) \d+%", h))
             for h in result.headlines() if h.startswith("no_hashtags")}
    assert pairs == {("Vanilla", "Infer w/ Assert"), ("Compile", "Compile w/ Assert"),
                     ("Compile w/ Assert", "C+Infer w/ Assert")}


def test_records_reach_the_tables_when_the_program_returns_no_prediction(scripted_lm, data):
    _, dev = data
    scripted_lm(lambda m: {"tweet": "x #tag"})

    class ReturnsDict(TweetStep):
        def forward(self, question):
            return {"tweet": self.gen(question=question).tweet}

    result = run_ablation(ReturnsDict(), [], dev[:3], lambda e, p, t=None: 1.0, constraints=[hashtag_constraint()],
                          settings="vanilla")
    vanilla = result.settings[VANILLA]
    assert vanilla.constraint_stats["no_hashtags"].examples == 3
    assert all(e.record is not None for e in vanilla.examples)


# ================================================================ numbers a workshop can trust (issue 15)

import uuid  # noqa: E402

from scipy import stats as scipy_stats  # noqa: E402
from statsmodels.stats.proportion import proportion_confint  # noqa: E402

from lmassert_magic.engine.ablation import ALL_CONSTRAINTS  # noqa: E402


def _mixed(messages):
    """d0-d5 answer with a hashtag unless given feedback; d6-d9 answer clean at once but too long."""
    last = messages[-1]["content"]
    q = question_of(messages)
    n = int(q.lstrip("d").split("-")[0])
    if n < 6:
        return {"tweet": f"answer-{q}" if FIX in last else f"answer-{q} #wow"}
    return {"tweet": f"answer-{q} " + "long " * 10}


def _two_constraints():
    short = Constraint("short", lambda tweet: len(tweet) < 40, "Shorter.", target=Tweet, max_backtracks=0)
    return [hashtag_constraint(), short]


def test_pass_rates_carry_n_and_wilson_intervals_and_an_all_constraints_row(scripted_lm, data):
    _, dev = data
    scripted_lm(_mixed)
    result = run_ablation(dspy.Predict(Tweet), [], dev, metric, constraints=_two_constraints(),
                          settings="vanilla,infer_assert")
    rates = result.pass_rates().set_index(["setting", "constraint"])
    row = rates.loc[("Vanilla", "no_hashtags")]
    assert (row["n"], row["passed"]) == (10, 4)
    low, high = proportion_confint(4, 10, method="wilson")
    assert row["ci_low"] == pytest.approx(100 * low) and row["ci_high"] == pytest.approx(100 * high)
    # all constraints: the share of examples passing every one (not a mean of the rates)
    everything = rates.loc[("Infer w/ Assert", ALL_CONSTRAINTS)]
    assert (everything["n"], everything["passed"]) == (10, 6)
    assert rates.loc[("Vanilla", ALL_CONSTRAINTS), "passed"] == 0
    summary = result.summary()
    assert summary.loc["Infer w/ Assert", ALL_CONSTRAINTS] == pytest.approx(60.0)
    assert summary.loc["Vanilla", "no_hashtags ci_low"] == pytest.approx(100 * low)
    assert summary.loc["Vanilla", "n"] == 10


def test_metric_interval_is_wilson_for_0_1_scores_and_bootstrap_otherwise(scripted_lm, data):
    _, dev = data
    scripted_lm(_mixed)
    def clean(example, pred, trace=None):
        return "#" not in pred.tweet

    result = run_ablation(dspy.Predict(Tweet), [], dev, clean, constraints=[hashtag_constraint()], settings="vanilla")
    summary = result.summary()
    low, high = proportion_confint(4, 10, method="wilson")
    assert summary.loc["Vanilla", "clean ci_low"] == pytest.approx(100 * low)

    def graded(example, pred, trace=None):
        return len(pred.tweet) / 100

    result = run_ablation(dspy.Predict(Tweet), [], dev, graded, constraints=[hashtag_constraint()], settings="vanilla",
                          seed=3)
    values = [len(e.outputs["tweet"]) / 100 for e in result.settings[VANILLA].examples]
    expected = scipy_stats.bootstrap((values,), lambda x, axis=-1: x.mean(axis=axis), confidence_level=0.95,
                                     n_resamples=9999, rng=__import__("numpy").random.default_rng(3), method="BCa")
    summary = result.summary()
    assert summary.loc["Vanilla", "graded ci_low"] == pytest.approx(100 * expected.confidence_interval.low)
    assert summary.loc["Vanilla", "graded ci_high"] == pytest.approx(100 * expected.confidence_interval.high)


def test_comparisons_are_paired_by_example_and_noise_is_called_noise(scripted_lm, data):
    _, dev = data
    scripted_lm(_mixed)
    result = run_ablation(dspy.Predict(Tweet), [], dev, metric, constraints=_two_constraints(),
                          settings="vanilla,infer_assert")
    cmp = result.comparisons().set_index(["base", "setting", "measure"])
    fixed = cmp.loc[("Vanilla", "Infer w/ Assert", "no_hashtags")]
    assert (fixed["n"], fixed["up"], fixed["down"]) == (10, 6, 0)
    assert fixed["diff"] == pytest.approx(60.0) and bool(fixed["distinguishable"])
    same = cmp.loc[("Vanilla", "Infer w/ Assert", "short")]  # never retried: identical outputs
    assert same["diff"] == 0 and not bool(same["distinguishable"])
    text = "\n".join(result.headlines())
    assert "no_hashtags: Vanilla 40% -> Infer w/ Assert 100% (+60 points" in text
    assert "short: Vanilla 60% -> Infer w/ Assert 60% (0 points" in text and "not distinguishable from noise" in text


def test_headlines_follow_the_numbers_not_a_template(scripted_lm, data):
    _, dev = data
    scripted_lm(_mixed)
    result = ablate_tweeter([], dev[:3], settings="vanilla,infer_assert")
    line = next(h for h in result.headlines() if h.startswith("no_hashtags"))
    assert "Vanilla 0% -> Infer w/ Assert 100% (+100 points" in line
    assert "not distinguishable from noise at this n" in line  # 3 examples cannot tell


def test_costs_do_not_depend_on_which_setting_ran_first(scripted_lm, data):
    _, dev = data
    tag = uuid.uuid4().hex[:8]  # fresh prompts: DSPy's cache is process-wide
    dev = [dspy.Example(question=f"d{i}-{tag}").with_inputs("question") for i in range(4)]
    scripted_lm(_mixed, cache=True)
    alone = ablate_tweeter([], dev, settings="infer_assert").settings[INFER_ASSERT]
    tag = uuid.uuid4().hex[:8]
    dev = [dspy.Example(question=f"d{i}-{tag}").with_inputs("question") for i in range(4)]
    after = ablate_tweeter([], dev, settings="vanilla,infer_assert").settings[INFER_ASSERT]
    assert after.cache_hits == 4 and alone.cache_hits == 0  # Vanilla warmed the first attempts
    assert (after.lm_calls, after.prompt_tokens, after.completion_tokens, after.tokens) == (
        alone.lm_calls, alone.prompt_tokens, alone.completion_tokens, alone.tokens)


def test_the_seed_is_kept_with_the_result(scripted_lm, data):
    _, dev = data
    scripted_lm(_mixed)
    result = ablate_tweeter([], dev[:2], settings="vanilla", seed=11)
    assert result.seed == 11


def test_quality_changes_name_the_constraints_whose_retries_changed_answers(scripted_lm, data):
    _, dev = data

    def respond(messages):
        last = messages[-1]["content"]
        q = question_of(messages)
        if FIX in last:  # the fix removes the hashtag and, for d0-d2, the answer with it
            return {"tweet": "a clean tweet" if q in ("d0", "d1", "d2") else f"answer-{q}"}
        return {"tweet": f"answer-{q} #wow"}

    scripted_lm(respond)
    result = ablate_tweeter([], dev[:5], settings="vanilla,infer_assert")
    changes = result.quality_changes(VANILLA, INFER_ASSERT)
    assert list(changes["index"]) == [0, 1, 2]
    assert all(r == ["no_hashtags"] for r in changes["retried_for"])
    note = result.explain_quality(VANILLA, INFER_ASSERT)
    assert note.startswith("metric fell on 3 of 5 examples and rose on 0 from Vanilla to Infer w/ Assert")
    assert "no_hashtags (3)" in note


def test_a_record_the_result_cannot_carry_is_a_counted_warning(scripted_lm, data):
    _, dev = data
    scripted_lm(lambda m: {"tweet": "x"})

    class ReturnsText(TweetStep):
        def forward(self, question):
            return self.gen(question=question).tweet

    result = run_ablation(ReturnsText(), [], dev[:3], lambda e, p, t=None: 1.0, constraints=[hashtag_constraint()],
                          settings="vanilla")
    warnings = result.settings[VANILLA].warnings
    assert len(warnings) == 1 and next(iter(warnings.values())) == 3
    assert "cannot carry its record" in next(iter(warnings))
    assert result.settings[VANILLA].constraint_stats["no_hashtags"].examples == 3  # still counted


def test_failed_everywhere_names_the_one_exception_type_all_examples_raised():
    from lmassert_magic.engine.ablation import AblationResult, ExampleResult, SettingResult

    def setting(key, *types):
        return SettingResult(key, [ExampleResult(i, {}, {}, 0.0, None, f"{t}: x" if t else None, t)
                                   for i, t in enumerate(types)])

    same = AblationResult(settings={"vanilla": setting("vanilla", "PipelineError", "PipelineError")})
    mixed = AblationResult(settings={"vanilla": setting("vanilla", "PipelineError"),
                                     "compile": setting("compile", "TimeoutError")})
    some_ok = AblationResult(settings={"vanilla": setting("vanilla", "PipelineError", None)})
    assert same.failed_everywhere() == "PipelineError"
    assert mixed.failed_everywhere() == ""
    assert some_ok.failed_everywhere() is None
    assert AblationResult().failed_everywhere() is None


def test_truncated_responses_are_counted_per_setting_not_logged(scripted_lm, data, caplog):
    """DSPy warns once per response cut at max_tokens; a run counts them per setting instead."""
    import logging

    train, dev = data
    scripted_lm(respond)
    dspy_lm_logger = logging.getLogger("dspy.clients.lm")

    class CutShort(dspy.Module):
        def __init__(self):
            super().__init__()
            self.step = dspy.Predict(Tweet)

        def forward(self, question):
            if question in ("d0", "d1", "d2"):  # as DSPy logs it for a response with finish_reason "length"
                dspy_lm_logger.warning("LM response was truncated; increase max_tokens or inspect history.")
            return self.step(question=question)

    with caplog.at_level(logging.WARNING):
        result = run_ablation(CutShort(), train, dev, metric, constraints=[hashtag_constraint()],
                              settings=("vanilla", "infer_assert"))
    counts = {key: s.truncated_responses for key, s in result.settings.items()}
    assert counts == {"vanilla": 3, "infer_assert": 3}
    assert not [r for r in caplog.records if "truncated" in r.getMessage()]
    dspy_lm_logger.warning("LM response was truncated outside a run")
    assert [r for r in caplog.records if "truncated" in r.getMessage()]  # the filter is gone after the run

    from lmassert_magic.report import CompileReport

    text = CompileReport(result).text()
    assert "!! Vanilla: 3 LM response(s) stopped at the LM's max_tokens" in text


def _judged_tweet_constraints() -> list[Constraint]:
    """Two LM judges on `Tweet`: the economies of issue 16 change how often they are asked."""
    from lmassert_magic import lm_judge

    return [Constraint("engaging", lambda tweet: lm_judge("Is the tweet engaging?", tweet=tweet), "Be lively.",
                       target=Tweet),
            Constraint("faithful", lambda tweet: lm_judge("Is the tweet faithful?", tweet=tweet), "Stay true.",
                       target=Tweet)]


def _judges_say_no(repeating: bool):
    """A scripted LM whose judges always say no; its writer repeats itself or writes a new tweet each time."""
    written = [0]

    def respond(messages):
        if "## answer ## ]]" in messages[-1]["content"].split("Respond with")[-1]:
            return {"answer": False}
        written[0] += 1
        return {"tweet": "dull tweet" if repeating else f"dull tweet {written[0]}"}

    return respond


@pytest.mark.parametrize("economy", [{"stop_at_failing_judge": False}, {"stop_on_repeat": False},
                                     {"batch_judges": True}])
def test_the_judge_economies_reach_the_asserted_runs_and_the_compile_teacher(scripted_lm, data, economy):
    train, dev = data
    lm = scripted_lm(_judges_say_no(repeating="stop_on_repeat" in economy))

    def calls(**options) -> tuple[int, int, int]:
        """LM calls of: the ablation's Infer w/ Assert, its compile with assertions, a direct activated run."""
        result = run_ablation(dspy.Predict(Tweet), train[:2], dev[:2], metric, constraints=_judged_tweet_constraints(),
                              settings="infer_assert,compile_assert", max_backtracks=3, **options)
        before = len(lm.prompts)
        direct = activate_assertions(dspy.Predict(Tweet), 3, constraints=_judged_tweet_constraints(), **options)
        for example in dev[:2]:
            direct(**example.inputs())
        return (result.settings[INFER_ASSERT].lm_calls, result.settings[COMPILE_ASSERT].compile_lm_calls,
                len(lm.prompts) - before)

    default, changed = calls(), calls(**economy)
    assert changed[2] != default[2]  # the option changes what a run asks the LM...
    assert changed[0] == changed[2] and default[0] == default[2]  # ...and the ablation's asserted run is that run
    assert changed[1] != default[1]  # the teacher of the compile with assertions runs the same way
    assert all(result_config_key in run_ablation_config(economy) for result_config_key in economy)


def run_ablation_config(options: dict) -> dict:
    """The run's recorded configuration (shown above the report's tables)."""
    train = [dspy.Example(question="t").with_inputs("question")]
    dev = [dspy.Example(question="d").with_inputs("question")]
    return run_ablation(dspy.Predict(Tweet), train, dev, metric, constraints=[hashtag_constraint()],
                        settings="vanilla", **options).config
