"""QuizGen: the LM Assertions paper's quiz-choices program for DSPy 2.4/2.5, on DSPy 3 with the imports swapped.

Original: `examples/quiz/quiz_assertions.ipynb` in the DSPy repository (tag 2.5.43,
https://github.com/stanfordnlp/dspy/blob/2.5.43/examples/quiz/quiz_assertions.ipynb), section
"QuizGen" of the paper. Rewritten here following its structure: one `ChainOfThought` that writes
`number_of_choices` answer choices as JSON, three suggestions (valid JSON, the correct answer among
the choices, plausible distractors judged by `dspy.Predict(AssessQuizChoices)` inside `forward`)
with the notebook's messages, its metrics and its compile calls.

Changed from 2.5: the imports (`lmassert_magic.compat` for `Retry`, `Suggest`,
`assert_transform_module`, `backtrack_handler`), the offline QuizGen study instead of HotPotQA,
and `is_plausibility_yes` tolerating an empty answer.
"""

from __future__ import annotations

import json

import dspy

from lmassert_magic.compat import Retry, Suggest, assert_transform_module, backtrack_handler

STUDY = "quizgen"
INPUTS = ("question", "answer")
number_of_choices = "4"


class GenerateAnswerChoices(dspy.Signature):
    """Generate answer choices in JSON format that include the correct answer and plausible distractors for the specified question."""  # noqa: E501

    question = dspy.InputField()
    correct_answer = dspy.InputField()
    number_of_choices = dspy.InputField()
    answer_choices = dspy.OutputField(desc="JSON key-value pairs")


class AssessQuizChoices(dspy.Signature):
    """Assess the quality of quiz answer choices along specified dimensions."""

    question = dspy.InputField()
    answer_choices = dspy.InputField()
    assessment_question = dspy.InputField()
    assessment_answer = dspy.OutputField(desc="Yes or No")


PLAUSIBLE = "Are the distractors in the answer choices plausible and not easily identifiable as incorrect?"


def format_checker(choice_string: str) -> bool:
    """A JSON object whose keys and values are all strings."""
    try:
        choices = json.loads(choice_string)
    except (json.JSONDecodeError, TypeError):
        return False
    return isinstance(choices, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in choices.items())


def is_correct_answer_included(correct_answer: str, generated_choices: str) -> bool:
    try:
        choices = json.loads(generated_choices)
    except (json.JSONDecodeError, TypeError):
        return False
    return isinstance(choices, dict) and correct_answer in choices.values()


def is_plausibility_yes(assessment_answer: str) -> bool:
    words = str(assessment_answer).split()
    return bool(words) and words[0].strip(".,!:;").lower() == "yes"


class QuizAnswerGenerator(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generate_choices = dspy.ChainOfThought(GenerateAnswerChoices)

    def forward(self, question: str, answer: str) -> dspy.Prediction:
        choices = self.generate_choices(question=question, correct_answer=answer,
                                        number_of_choices=number_of_choices).answer_choices
        return dspy.Prediction(choices=choices)


class QuizAnswerGeneratorWithAssertions(dspy.Module):
    def __init__(self) -> None:
        super().__init__()
        self.generate_choices = dspy.ChainOfThought(GenerateAnswerChoices)

    def forward(self, question: str, answer: str) -> dspy.Prediction:
        choice_string = self.generate_choices(question=question, correct_answer=answer,
                                              number_of_choices=number_of_choices).answer_choices
        Suggest(format_checker(choice_string),
                "The format of the answer choices should be in JSON format. Please revise accordingly.",
                target_module=self.generate_choices)
        Suggest(is_correct_answer_included(answer, choice_string),
                "The answer choices do not include the correct answer to the question. Please revise accordingly.",
                target_module=self.generate_choices)
        plausibility = dspy.Predict(AssessQuizChoices)(question=question, answer_choices=choice_string,
                                                       assessment_question=PLAUSIBLE)
        Suggest(is_plausibility_yes(plausibility.assessment_answer),
                "The answer choices are not plausible distractors or are too easily identifiable as incorrect. "
                "Please revise to provide more challenging and plausible distractors.",
                target_module=self.generate_choices)
        return dspy.Prediction(choices=choice_string)


def plain_program() -> dspy.Module:
    return QuizAnswerGenerator()


def asserted_program() -> dspy.Module:
    return assert_transform_module(QuizAnswerGeneratorWithAssertions().map_named_predictors(Retry), backtrack_handler)


# ---------------------------------------------------------------- metrics (the notebook's)


def _plausible(question: str, choices: str) -> bool:
    assessment = dspy.Predict(AssessQuizChoices)(question=question, answer_choices=choices,
                                                 assessment_question=PLAUSIBLE)
    return is_plausibility_yes(assessment.assessment_answer)


def format_valid_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return format_checker(pred.choices)


def is_correct_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return is_correct_answer_included(gold.answer, pred.choices)


def plausibility_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return _plausible(gold.question, pred.choices)


def overall_metric(gold: dspy.Example, pred: dspy.Prediction, trace: object = None) -> float:
    """The paper's validity: the mean of the three checks if the JSON is valid and has the answer, else 0."""
    valid, correct = format_checker(pred.choices), is_correct_answer_included(gold.answer, pred.choices)
    if not (valid and correct):
        return 0.0
    return (valid + correct + _plausible(gold.question, pred.choices)) / 3.0


METRICS = {
    "valid JSON": format_valid_metric,
    "has answer": is_correct_metric,
    "plausible": plausibility_metric,
    "validity": overall_metric,
}
COMPILE_METRIC = overall_metric
PAPER = {"validity": (30.5, 70.5, 81.7, 80.5, 87.2)}
