"""The pipeline module: wiring by field name, naming of predictors, save/load, compilation."""

from __future__ import annotations

import copy

import dspy
import pytest
from dspy.utils import DummyLM

from lmassert_magic.pipeline import (
    ORIGIN_ATTR,
    Pipeline,
    PipelineError,
    Step,
    call_kwargs,
    check_wiring,
    instantiate_module,
    match_signature,
    tag_predictors,
)


class Tweet(dspy.Signature):
    """Write a tweet."""

    question: str = dspy.InputField()
    context: list[str] = dspy.InputField()
    tweet: str = dspy.OutputField()


class Answer(dspy.Signature):
    """Answer the question."""

    question: str = dspy.InputField()
    answer: str = dspy.OutputField()


def retrieve(question):
    return [f"fact about {question}"]


def test_non_dict_result_goes_to_the_single_missing_input_of_the_next_step():
    program = Pipeline([Step.call("retrieve", retrieve), Step.predict("Tweet", Tweet)])
    lm = DummyLM([{"tweet": "hello"}])
    with dspy.context(lm=lm):
        out = program(question="cats")
    assert out.tweet == "hello"
    assert out.context == ["fact about cats"]
    assert "question" not in out  # inputs are not echoed
    assert "fact about cats" in lm.history[-1]["messages"][-1]["content"]


def test_dict_result_is_merged_and_later_steps_see_it():
    seen = {}

    def fmt(tweet, question, suffix="!"):
        seen.update(tweet=tweet, question=question, suffix=suffix)
        return {"final": tweet + suffix}

    program = Pipeline([
        Step.call("ctx", lambda question: {"context": [question.upper()]}),
        Step.predict("Tweet", Tweet),
        Step.call("fmt", fmt),
    ])
    with dspy.context(lm=DummyLM([{"tweet": "hi"}])):
        out = program(question="cats")
    assert out.final == "hi!"
    assert out.context == ["CATS"]
    assert seen == {"tweet": "hi", "question": "cats", "suffix": "!"}


def test_default_parameter_is_passed_only_when_the_field_exists():
    def f(question, k=3):
        return {"k_used": k}

    assert call_kwargs(f, {"question": "q"}) == {"question": "q"}
    assert call_kwargs(f, {"question": "q", "k": 5}) == {"question": "q", "k": 5}


def test_var_keyword_receives_every_field():
    def f(question, **rest):
        return rest

    assert call_kwargs(f, {"question": "q", "a": 1, "b": 2}) == {"question": "q", "a": 1, "b": 2}


def test_positional_only_parameter_cannot_be_wired():
    def f(question, /):
        return question

    with pytest.raises(PipelineError, match="positional-only"):
        call_kwargs(f, {"question": "q"})


def test_missing_parameter_names_the_step_and_the_available_fields():
    def needs(query):
        return [query]

    program = Pipeline([Step.call("needs", needs), Step.predict("Tweet", Tweet)])
    with pytest.raises(PipelineError, match=r"step needs needs field\(s\) query; the pipeline has question"):
        program(question="q")


def test_none_result_is_an_error():
    program = Pipeline([Step.call("oops", lambda question: None), Step.predict("Tweet", Tweet)])
    with pytest.raises(PipelineError, match="returned None"):
        program(question="q")


def test_non_dict_from_the_last_step_is_an_error():
    program = Pipeline([Step.call("only", lambda question: "x")])
    with pytest.raises(PipelineError, match="last step"):
        program(question="q")


def test_non_dict_with_two_missing_inputs_is_an_error():
    program = Pipeline([Step.call("r", lambda topic: ["c"]), Step.predict("Tweet", Tweet)])
    with pytest.raises(PipelineError, match="question, context missing"):
        program(topic="t")


def test_non_dict_with_no_missing_input_is_an_error():
    program = Pipeline([Step.call("r", lambda question: ["c"]), Step.predict("Tweet", Tweet)])
    with pytest.raises(PipelineError, match="no missing input"):
        program(question="q", context=["already"])


def test_non_dict_feeds_the_single_missing_parameter_of_a_next_callable():
    program = Pipeline([
        Step.call("a", lambda question: 41),
        Step.call("b", lambda number, question: {"result": number + 1}),
    ])
    assert program(question="q").result == 42


def test_missing_signature_input_is_an_error():
    program = Pipeline([Step.predict("Tweet", Tweet)])
    with pytest.raises(PipelineError, match=r"Tweet needs input field\(s\) context"):
        program(question="q")


def test_predictors_are_named_after_signatures_and_repeats_get_a_suffix():
    program = Pipeline([Step.predict("Answer", Answer), Step.predict("Answer_2", Answer), Step.predict("Tweet", Tweet,
                                                                                                           cot=True)])
    names = [n for n, _ in program.named_predictors()]
    assert names == ["Answer", "Answer_2", "Tweet.predict"]
    assert all(getattr(p, ORIGIN_ATTR) in {"Answer", "Tweet"} for _, p in program.named_predictors())


def test_duplicate_and_reserved_step_names_are_rejected():
    with pytest.raises(PipelineError, match="unique"):
        Pipeline([Step.predict("Answer", Answer), Step.predict("Answer", Answer)])
    with pytest.raises(PipelineError, match="clashes"):
        Pipeline([Step.predict("forward", Answer)])
    with pytest.raises(PipelineError, match="at least one"):
        Pipeline([])
    with pytest.raises(PipelineError, match="not callable"):
        Step.call("x", 42)


def test_cot_step_adds_reasoning_to_the_flow():
    program = Pipeline([Step.predict("Answer", Answer, cot=True),
                        Step.call("show", lambda reasoning: {"r": reasoning})])
    with dspy.context(lm=DummyLM([{"reasoning": "because", "answer": "42"}])):
        out = program(question="q")
    assert out.answer == "42" and out.r == "because"


def test_module_callable_becomes_a_submodule_with_its_predictors():
    inner = dspy.Predict(Answer)
    program = Pipeline([Step.call("inner", inner), Step.call("post", lambda answer: {"upper": answer.upper()})])
    assert [n for n, _ in program.named_predictors()] == ["inner"]
    with dspy.context(lm=DummyLM([{"answer": "yes"}])):
        out = program(question="q")
    assert out.upper == "YES"


def test_deepcopy_shares_callables_but_copies_predictors():
    calls = []

    class Stateful:
        def __call__(self, question):
            calls.append(question)
            return ["c"]

    func = Stateful()
    program = Pipeline([Step.call("r", func), Step.predict("Tweet", Tweet)])
    clone = program.deepcopy()
    assert clone.steps[0].func is func
    assert clone.Tweet is not program.Tweet
    assert copy.deepcopy(program).steps[0] is program.steps[0]


def test_save_and_load_round_trip(tmp_path):
    program = Pipeline([Step.call("retrieve", retrieve), Step.predict("Tweet", Tweet)])
    program.Tweet.demos = [dspy.Example(question="q", context=["c"], tweet="t")]
    path = tmp_path / "p.json"
    program.save(str(path))
    fresh = Pipeline([Step.call("retrieve", retrieve), Step.predict("Tweet", Tweet)])
    assert fresh.Tweet.demos == []
    fresh.load(str(path))
    assert [d["tweet"] for d in fresh.Tweet.demos] == ["t"]


def test_bootstrap_fewshot_compiles_a_pipeline():
    program = Pipeline([Step.call("retrieve", retrieve), Step.predict("Tweet", Tweet)])
    trainset = [dspy.Example(question=f"q{i}", tweet="ok").with_inputs("question") for i in range(2)]
    lm = DummyLM({"question": {"tweet": "ok"}})
    with dspy.context(lm=lm):
        compiled = dspy.BootstrapFewShot(metric=lambda e, p, t=None: p.tweet == "ok",
                                          max_bootstrapped_demos=2).compile(program, trainset=trainset)
    demos = compiled.Tweet.demos
    assert len(demos) == 2
    assert demos[0]["context"] == ["fact about q0"]


def test_check_wiring_reports_inputs_nothing_provides_until_the_first_callable():
    steps = [Step.predict("Tweet", Tweet)]
    problems = check_wiring(steps, ["question"])
    assert problems and problems[0][0] == 0 and "context" in problems[0][1]
    assert check_wiring([Step.call("r", retrieve), Step.predict("Tweet", Tweet)], ["question"]) == []
    problems = check_wiring([Step.call("r", lambda query: []), Step.predict("Tweet", Tweet)], ["question"])
    assert problems == [(0, problems[0][1])] and "query" in problems[0][1]
    assert check_wiring([Step.predict("Answer", Answer), Step.call("f", lambda answer: answer)], ["question"]) == []


class UsesSignatures(dspy.Module):
    def __init__(self):
        super().__init__()
        self.think = dspy.ChainOfThought(Tweet)
        self.other = dspy.Predict("a -> b")

    def forward(self, question, context):
        return self.think(question=question, context=context)


def test_tag_predictors_matches_chain_of_thought_to_its_registered_signature():
    program = instantiate_module(UsesSignatures)
    found = tag_predictors(program, {"Tweet": Tweet, "Answer": Answer})
    assert found == {"think.predict": "Tweet"}
    assert getattr(program.think.predict, ORIGIN_ATTR) == "Tweet"
    assert match_signature(Answer, {"Tweet": Tweet, "Answer": Answer}) == "Answer"
    assert match_signature(None, {"Tweet": Tweet}) is None


def test_instantiate_module_copies_instances_and_reports_constructor_arguments():
    instance = UsesSignatures()
    copied = instantiate_module(instance)
    assert copied is not instance and isinstance(copied, UsesSignatures)

    class NeedsArgs(dspy.Module):
        def __init__(self, k):
            super().__init__()

    with pytest.raises(PipelineError, match="needs arguments"):
        instantiate_module(NeedsArgs)
    with pytest.raises(PipelineError, match="not a dspy.Module"):
        instantiate_module(42)


def test_an_activated_module_step_gets_only_the_arguments_its_forward_takes():
    from lmassert_magic import Constraint, activate_assertions
    class Answerer(dspy.Module):
        def __init__(self):
            super().__init__()
            self.answer = dspy.Predict(Answer)

        def forward(self, question):
            return self.answer(question=question)

    short = Constraint("short", lambda answer: len(answer) < 50, "Shorter.", target=Answer)
    step = activate_assertions(Answerer(), constraints=[short])
    assert call_kwargs(step, {"question": "q", "context": ["c"]}) == {"question": "q"}
    program = Pipeline([Step.call("answerer", step)])
    with dspy.context(lm=DummyLM([{"answer": "yes"}])):
        out = program(question="cats", context=["c"])
    assert out.answer == "yes"
    records = step._lmassert_config.log.records
    assert len(records) == 1 and records[0].constraints["short"].passed_final == 1


def test_awaited_pipeline_runs_the_same_steps_with_async_calls():
    """`await pipeline.acall(...)` (the async evaluation, `%%compile --async`) gives what a sync call gives;
    predictors are awaited, an async callable is awaited, a plain one is called, a module's `acall` awaited."""
    import asyncio

    async def shout(tweet):
        return {"loud": tweet.upper()}

    inner = dspy.Predict(Answer)
    program = Pipeline([Step.call("retrieve", retrieve), Step.predict("Tweet", Tweet), Step.call("shout", shout),
                        Step.call("inner", inner)])
    answers = [{"tweet": "hello"}, {"answer": "yes"}]
    with dspy.context(lm=DummyLM(list(answers))):
        out = asyncio.run(program.acall(question="cats"))
    assert (out.tweet, out.context, out.loud, out.answer) == ("hello", ["fact about cats"], "HELLO", "yes")
    with pytest.raises(PipelineError, match="returned None"):
        asyncio.run(Pipeline([Step.call("nothing", lambda question: None),
                              Step.predict("Tweet", Tweet)]).acall(question="q"))
