# ruff: noqa: I001  (imports kept in 2.5.43's order)
# Ported from DSPy 2.5.43: tests/dsp_LM/predict/test_retry.py
# (https://github.com/stanfordnlp/dspy/blob/2.5.43/tests/dsp_LM/predict/test_retry.py), the variant
# that also checks the prompt the retry sends. Runs in zero-edit mode (see conftest.py).
# Every change is marked "# CHANGED:".
import functools

import pydantic

import dspy
from dspy.primitives.assertions import assert_transform_module, backtrack_handler
from dspy.utils import DummyLM  # CHANGED: DSPDummyLM -> DummyLM (DSPy 3 has only the chat-adapter LMs)


# CHANGED: helper added. 2.5.43's legacy template rendered a retry as "Question: ...\n\nPrevious Answer: red\n\n
# Instructions: Try harder\n\nAnswer: blue"; DSPy 3's ChatAdapter renders the same fields as
# "[[ ## question ## ]]\n...\n\n[[ ## past_answer ## ]]\nred\n\n[[ ## feedback ## ]]\nTry harder".
def convo_text(convo):
    messages, outputs = convo
    return messages[-1]["content"] + "\n\n" + "".join(outputs)


def test_retry_simple():
    predict = dspy.Predict("question -> answer")
    retry_module = dspy.Retry(predict)

    # Test Retry has created the correct new signature
    for field in predict.signature.output_fields:
        assert f"past_{field}" in retry_module.new_signature.input_fields
    assert "feedback" in retry_module.new_signature.input_fields

    lm = DummyLM([{"answer": "blue"}])  # CHANGED: DSPDummyLM(["blue"]) -> DummyLM([{"answer": "blue"}])
    dspy.settings.configure(lm=lm)
    result = retry_module.forward(
        question="What color is the sky?",
        past_outputs={"answer": "red"},
        feedback="Try harder",
    )
    assert result.answer == "blue"

    print(lm.get_convo(-1))
    # CHANGED: the expected prompt in DSPy 3's chat format (see convo_text above).
    assert (
        "[[ ## question ## ]]\nWhat color is the sky?\n\n"
        "[[ ## past_answer ## ]]\nred\n\n"
        "[[ ## feedback ## ]]\nTry harder\n\n"
    ) in convo_text(lm.get_convo(-1))
    assert convo_text(lm.get_convo(-1)).endswith("[[ ## answer ## ]]\nblue")


def test_retry_forward_with_feedback():
    # First we make a mistake, then we fix it
    lm = DummyLM([{"answer": "red"}, {"answer": "blue"}])  # CHANGED: DSPDummyLM(["red", "blue"]) -> DummyLM
    dspy.settings.configure(lm=lm, trace=[])

    class SimpleModule(dspy.Module):
        def __init__(self):
            super().__init__()
            self.predictor = dspy.Predict("question -> answer")

        def forward(self, **kwargs):
            result = self.predictor(**kwargs)
            print(f"SimpleModule got {result.answer=}")
            dspy.Suggest(result.answer == "blue", "Please think harder")
            return result

    program = SimpleModule()
    program = assert_transform_module(
        program.map_named_predictors(dspy.Retry),
        functools.partial(backtrack_handler, max_backtracks=1),
    )

    result = program(question="What color is the sky?")

    assert result.answer == "blue"

    print(lm.get_convo(-1))
    # CHANGED: the expected prompt in DSPy 3's chat format (see convo_text above).
    assert (
        "[[ ## question ## ]]\nWhat color is the sky?\n\n"
        "[[ ## past_answer ## ]]\nred\n\n"
        "[[ ## feedback ## ]]\nPlease think harder\n\n"
    ) in convo_text(lm.get_convo(-1))
    assert convo_text(lm.get_convo(-1)).endswith("[[ ## answer ## ]]\nblue")


def test_retry_forward_with_typed_predictor():
    # First we make a mistake, then we fix it
    # CHANGED: DSPDummyLM(['{"answer":"red"}', '{"answer":"blue"}']) -> DummyLM with the `output` field named
    lm = DummyLM([{"output": '{"answer":"red"}'}, {"output": '{"answer":"blue"}'}])
    dspy.settings.configure(lm=lm, trace=[])

    class AnswerQuestion(dspy.Signature):
        """Answer questions with succinct responses."""

        class Input(pydantic.BaseModel):
            question: str

        class Output(pydantic.BaseModel):
            answer: str

        input: Input = dspy.InputField()
        output: Output = dspy.OutputField()

    class QuestionAnswerer(dspy.Module):
        def __init__(self):
            super().__init__()
            # CHANGED: dspy.TypedPredictor(AnswerQuestion) -> dspy.Predict(AnswerQuestion) (DSPy 3 removed
            # TypedPredictor; Predict parses typed fields itself).
            self.answer_question = dspy.Predict(AnswerQuestion)

        def forward(self, **kwargs):
            result = self.answer_question(input=AnswerQuestion.Input(**kwargs)).output
            dspy.Suggest(result.answer == "blue", "Please think harder")
            return result

    program = QuestionAnswerer()
    program = assert_transform_module(
        program.map_named_predictors(dspy.Retry),
        functools.partial(backtrack_handler, max_backtracks=1),
    )

    result = program(question="What color is the sky?")

    assert result.answer == "blue"
    # CHANGED: the expected prompt in DSPy 3's chat format (see convo_text above); DSPy 3 writes input
    # JSON with a space after each colon.
    assert (
        '[[ ## input ## ]]\n{"question": "What color is the sky?"}\n\n'
        '[[ ## past_output ## ]]\n{"answer": "red"}\n\n'
        "[[ ## feedback ## ]]\nPlease think harder\n\n"
    ) in convo_text(lm.get_convo(-1))
    assert convo_text(lm.get_convo(-1)).endswith('[[ ## output ## ]]\n{"answer":"blue"}')
