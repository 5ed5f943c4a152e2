"""Constraints as DSPy 3 optimizer signals: the Refine/BestOfN reward, the GEPA feedback metric, and
compiling with GEPA or Refine in the five settings (scripted LM throughout)."""

from __future__ import annotations

import asyncio

import dspy
import pytest

from lmassert_magic import Constraint
from lmassert_magic.engine.ablation import run_ablation
from lmassert_magic.engine.compile import prepare_program
from lmassert_magic.engine.context import OBSERVE
from lmassert_magic.engine.optimizers import ALL_OPTIMIZERS, compile_dspy3, refine_program
from lmassert_magic.engine.signals import constraint_reward, gepa_accepts_objectives, gepa_metric

from helpers import FIX, Tweet, TweetStep, hashtag_constraint, metric, question_of

SHORT = "Keep the tweet under 40 characters."
ANSWER = "State the answer in the tweet."


def short_constraint(**options) -> Constraint:
    return Constraint("short", lambda tweet: len(tweet) < 40, SHORT, target=Tweet, **options)


def answer_constraint(**options) -> Constraint:
    return Constraint("has_answer", lambda question, tweet: f"answer-{question}" in tweet, ANSWER, target=Tweet,
                      **options)


def examples(n: int, prefix: str = "q") -> list[dspy.Example]:
    return [dspy.Example(question=f"{prefix}{i}").with_inputs("question") for i in range(n)]


# ---------------------------------------------------------------- the reward


def test_reward_is_the_share_of_constraints_passed():
    reward = constraint_reward([hashtag_constraint(), short_constraint(), answer_constraint()])
    args = {"question": "q1"}
    assert reward(args, dspy.Prediction(tweet="answer-q1 is here")) == 1.0
    assert reward(args, dspy.Prediction(tweet="answer-q1 #news")) == pytest.approx(2 / 3)
    assert reward(args, dspy.Prediction(tweet="#news " + "x" * 50)) == 0.0


def test_reward_is_zero_when_a_hard_constraint_fails_whatever_the_others_do():
    reward = constraint_reward([hashtag_constraint(), short_constraint(hard=True), answer_constraint()])
    args = {"question": "q1"}
    assert reward(args, dspy.Prediction(tweet="answer-q1 and then a much, much longer text")) == 0.0
    assert reward(args, dspy.Prediction(tweet="answer-q1 #news")) == pytest.approx(2 / 3)


def test_a_broken_check_counts_as_failed_not_as_a_crash():
    broken = Constraint("broken", lambda tweet: 1 / 0, "never", target=Tweet)
    reward = constraint_reward([hashtag_constraint(), broken])
    assert reward({"question": "q"}, dspy.Prediction(tweet="clean")) == 0.5


def test_reward_drives_dspy_refine(scripted_lm):
    def respond(messages):
        text = " ".join(m["content"] for m in messages)
        if "advice" in messages[0]["content"]:  # Refine's OfferFeedback step
            return {"discussion": "it used a hashtag", "advice": {"self": FIX}}
        return {"tweet": "clean tweet" if FIX in text else "great #news"}

    scripted_lm(respond)
    refine = dspy.Refine(dspy.Predict(Tweet), N=3, reward_fn=constraint_reward([hashtag_constraint()]),
                         threshold=1.0)
    assert refine(question="q").tweet == "clean tweet"


# ---------------------------------------------------------------- the GEPA metric


def _run_with_trace(program, **inputs):
    with dspy.context(trace=[]):
        prediction = program(**inputs)
        trace = list(dspy.settings.trace)
    return prediction, trace


def _hashtag_lm(scripted_lm):
    return scripted_lm(lambda m: {"tweet": f"answer-{question_of(m)} #news"})


def test_gepa_metric_feedback_names_exactly_the_failed_constraints(scripted_lm):
    _hashtag_lm(scripted_lm)
    constraints = [hashtag_constraint(), short_constraint(), answer_constraint()]
    program = dspy.Predict(Tweet)
    prediction, trace = _run_with_trace(program, question="q1")
    gold = examples(1, "q")[0].copy(question="q1")
    out = gepa_metric(constraints)(gold, prediction, trace, None, None)
    assert out.score == pytest.approx(2 / 3)
    assert "no_hashtags" in out.feedback and FIX in out.feedback
    assert "short" not in out.feedback and SHORT not in out.feedback
    assert "has_answer" not in out.feedback and ANSWER not in out.feedback


def test_gepa_metric_with_a_task_metric_weighs_both_and_gates_on_hard(scripted_lm):
    _hashtag_lm(scripted_lm)
    gold = dspy.Example(question="q1").with_inputs("question")
    prediction, trace = _run_with_trace(dspy.Predict(Tweet), question="q1")
    soft = gepa_metric([hashtag_constraint(), short_constraint()], metric)
    assert soft(gold, prediction, trace, None, None).score == pytest.approx(0.75)  # metric 1, half the constraints
    wrong = dspy.Example(question="q2").with_inputs("question")  # the metric fails: constraints still count
    assert soft(wrong, prediction, trace, None, None).score == pytest.approx(0.25)
    weighted = gepa_metric([hashtag_constraint(), short_constraint()], metric, constraint_weight=0.2)
    assert weighted(gold, prediction, trace, None, None).score == pytest.approx(0.9)
    hard = gepa_metric([hashtag_constraint(hard=True), short_constraint()], metric)
    out = hard(gold, prediction, trace, "self", trace)
    assert out.score == 0.0 and "no_hashtags (hard)" in out.feedback


def test_gepa_metric_reads_verdicts_from_the_run_record_of_an_activated_program(scripted_lm):
    lm = _hashtag_lm(scripted_lm)
    constraints = [hashtag_constraint(), short_constraint()]
    program = prepare_program(dspy.Predict(Tweet), constraints, mode=OBSERVE, max_backtracks=0)
    prediction, trace = _run_with_trace(program, question="q1")
    calls = len(lm.prompts)
    out = gepa_metric(constraints)(examples(1)[0], prediction, trace, None, None)
    assert "no_hashtags" in out.feedback and "short" not in out.feedback
    assert len(lm.prompts) == calls  # verdicts come from the record: nothing is checked twice


def test_gepa_metric_without_a_trace_checks_the_program_outputs(scripted_lm):
    _hashtag_lm(scripted_lm)
    prediction = dspy.Predict(Tweet)(question="q1")
    out = gepa_metric([hashtag_constraint(), answer_constraint()])(
        dspy.Example(question="q1").with_inputs("question"), prediction)
    assert out.score == 0.5 and "no_hashtags" in out.feedback and "has_answer" not in out.feedback


def test_gepa_metric_gives_one_objective_per_constraint_when_gepa_takes_several(scripted_lm):
    _hashtag_lm(scripted_lm)
    prediction, trace = _run_with_trace(dspy.Predict(Tweet), question="q1")
    out = gepa_metric([hashtag_constraint(), short_constraint()], metric)(examples(1)[0], prediction, trace,
                                                                          None, None)
    assert gepa_accepts_objectives()  # the installed gepa does; the metric follows what it finds
    assert out.objective_scores == {"no_hashtags": 0.0, "short": 1.0, "metric": 0.0}


def test_gepa_metric_takes_the_five_arguments_gepa_requires():
    dspy.GEPA(metric=gepa_metric([hashtag_constraint()]), max_metric_calls=1, reflection_lm=dspy.LM("openai/x"))


# ---------------------------------------------------------------- Refine around the target predictors


class TwoSteps(dspy.Module):
    """A query step without constraints, then the tweet step the constraints target."""

    def __init__(self):
        super().__init__()
        self.query = dspy.Predict("question -> query")
        self.gen = dspy.Predict(Tweet)

    def forward(self, question):
        query = self.query(question=question).query
        return self.gen(question=query)


def _refine_lm(scripted_lm):
    def respond(messages):
        text = " ".join(m["content"] for m in messages)
        if "advice" in messages[0]["content"]:
            return {"discussion": "a hashtag", "advice": {"self": FIX}}  # Refine names its one predictor "self"
        if "query" in messages[0]["content"] and "tweet" not in messages[0]["content"]:
            return {"query": "the query"}
        return {"tweet": "clean tweet" if FIX in text else "great #news"}

    return scripted_lm(respond)


def test_refine_program_wraps_only_the_predictors_the_constraints_target(scripted_lm):
    lm = _refine_lm(scripted_lm)
    program = TwoSteps()
    refined = refine_program(program, [hashtag_constraint()], n=3)
    assert refined is not program and type(program.gen) is dspy.Predict  # the original is untouched
    assert type(refined.query) is dspy.Predict and type(refined.gen) is not dspy.Predict
    assert [name for name, _ in refined.named_predictors()] == ["query", "gen"]
    assert refined(question="q").tweet == "clean tweet"
    assert len(lm.prompts) == 4  # query, failing tweet, Refine's advice, fixed tweet


def test_an_observed_refined_step_is_judged_on_the_output_refine_returns(scripted_lm):
    _refine_lm(scripted_lm)
    constraints = [hashtag_constraint()]
    runnable = prepare_program(refine_program(TwoSteps(), constraints, n=3), constraints, mode=OBSERVE)
    prediction = runnable(question="q")
    record = prediction._lmassert_record
    assert prediction.tweet == "clean tweet"
    assert record.passed("no_hashtags") is True and record.constraints["no_hashtags"].checks == 1
    assert record.lm_calls == 4  # the step's attempts and Refine's advice call count as the run's calls


def test_a_refined_step_called_asynchronously_still_refines(scripted_lm):
    _refine_lm(scripted_lm)
    refined = refine_program(TwoSteps(), [hashtag_constraint()], n=3)
    assert asyncio.run(refined.gen.acall(question="q")).tweet == "clean tweet"


def test_refine_attempts_repeat_exactly_with_the_cache(scripted_lm):
    lm = _refine_lm(scripted_lm)
    lm._cache_responses = True
    refined = refine_program(TwoSteps(), [hashtag_constraint()], n=3)
    first = refined(question="q").tweet
    calls = len(lm.prompts)
    assert refined(question="q").tweet == first and len(lm.prompts) == calls


# ---------------------------------------------------------------- compiling with GEPA and Refine


class OneStep(TweetStep):
    def forward(self, question):
        return self.gen(question=question)


BETTER = "Write the tweet without any hashtags."


def gepa_lm(scripted_lm):
    """The program tweets a hashtag unless its instructions say not to; reflection proposes that instruction
    only when the feedback it is shown names the hashtag constraint's message."""

    def respond(messages):
        system = messages[0]["content"]
        if "new_instruction" in system:  # GEPA's reflection
            shown = messages[-1]["content"]
            return {"new_instruction": BETTER if FIX in shown else "Write a tweet."}
        question = question_of(messages)
        return {"tweet": f"answer-{question}" + ("" if BETTER in system else " #news")}

    return scripted_lm(respond)


def test_compile_with_gepa_uses_the_constraint_feedback(scripted_lm):
    lm = gepa_lm(scripted_lm)
    outcome = compile_dspy3(OneStep(), examples(3, "t"), metric, optimizer="gepa",
                            constraints=[hashtag_constraint()], with_assertions=True, max_metric_calls=12)
    assert outcome.program.gen.signature.instructions == BETTER
    assert outcome.instructions == {"gen": BETTER}
    reflections = [p for p in lm.prompts if "new_instruction" in p[0]["content"]]
    assert reflections and FIX in reflections[0][-1]["content"]
    assert outcome.lm_calls == len(lm.prompts)
    assert any("metric calls" in note for note in outcome.notes)


def test_compile_with_gepa_without_assertions_never_shows_constraint_feedback(scripted_lm):
    lm = gepa_lm(scripted_lm)
    outcome = compile_dspy3(OneStep(), examples(3, "t"), metric, optimizer="gepa",
                            constraints=[hashtag_constraint()], with_assertions=False, max_metric_calls=12)
    assert all(FIX not in p[-1]["content"] for p in lm.prompts)
    assert outcome.program.gen.signature.instructions != BETTER


def test_five_settings_with_gepa(scripted_lm):
    gepa_lm(scripted_lm)
    result = run_ablation(OneStep(), examples(3, "t"), examples(2, "d"), metric,
                          constraints=[hashtag_constraint()], optimizer="gepa",
                          optimizer_kwargs={"max_metric_calls": 12})
    rates = {key: s.rate("no_hashtags").rate for key, s in result.settings.items()}
    assert rates["vanilla"] == 0.0 and rates["compile"] == 0.0
    assert rates["compile_assert"] == 1.0 and rates["c_infer_assert"] == 1.0
    assert result.config["optimizer"] == "gepa"
    assert result.settings["compile_assert"].compile_lm_calls > 0


def test_five_settings_with_refine(scripted_lm):
    _refine_lm(scripted_lm)
    result = run_ablation(TwoSteps(), examples(2, "t"), examples(2, "d"), lambda ex, pred, trace=None: 1.0,
                          constraints=[hashtag_constraint()], optimizer="refine")
    rates = {key: s.rate("no_hashtags").rate for key, s in result.settings.items()}
    # backtracking fixes the tweet with its feedback; Refine with its advice; Compile is the plain program
    assert rates == {"vanilla": 0.0, "infer_assert": 1.0, "compile": 0.0, "compile_assert": 1.0,
                     "c_infer_assert": 1.0}
    assert "dspy.Refine" in " ".join(result.settings["compile_assert"].compile.notes)


def test_five_settings_with_refine_evaluated_async_give_the_same_rates(scripted_lm):
    _refine_lm(scripted_lm)
    runs = [run_ablation(TwoSteps(), examples(2, "t"), examples(2, "d"), lambda ex, pred, trace=None: 1.0,
                         constraints=[hashtag_constraint()], optimizer="refine", settings="compile_assert",
                         **options) for options in ({}, {"concurrency": 2})]
    threaded, concurrent = ({k: s.rate("no_hashtags").rate for k, s in r.settings.items()} for r in runs)
    assert threaded == concurrent == {"compile_assert": 1.0}


def test_unknown_optimizer_and_bad_budgets_are_errors():
    assert ALL_OPTIMIZERS[:2] == ("bootstrap", "random_search")
    with pytest.raises(ValueError, match="unknown optimizer"):
        compile_dspy3(OneStep(), examples(1), metric, optimizer="simba")
    with pytest.raises(ValueError, match="max_metric_calls"):
        compile_dspy3(OneStep(), examples(1), metric, optimizer="gepa", max_metric_calls=0)
    with pytest.raises(ValueError, match="time_cap"):
        compile_dspy3(OneStep(), examples(1), metric, optimizer="gepa", time_cap=-1)
    with pytest.raises(ValueError, match="n must be"):
        refine_program(OneStep(), [hashtag_constraint()], n=0)
