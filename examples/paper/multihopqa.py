"""MultiHopQA: the LM Assertions paper's SimplifiedBaleen for DSPy 2.4/2.5, on DSPy 3 with the imports swapped.

Original: `examples/qa/hotpot/hotpotqa_with_assertions.ipynb` in the DSPy repository (tag 2.5.43,
https://github.com/stanfordnlp/dspy/blob/2.5.43/examples/qa/hotpot/hotpotqa_with_assertions.ipynb),
section "MultiHopQA" of the paper. Rewritten here following its structure: a list of two query
generators and a `Retrieve` step as attributes, a `ChainOfThought` answerer, two suggestions per
hop (query under 100 characters; query distinct from the earlier ones) whose `target_module` is the
*list* `self.generate_query`, the `passed_suggestions` counter, and the notebook's metrics and
compile calls.

Changed from 2.5: the imports (`lmassert_magic.compat`; `dsp.utils` -> `dspy.dsp.utils`;
`dspy.evaluate.answer_exact_match_str` is `dspy.evaluate.metrics._answer_match` in DSPy 3) and
the offline MultiHop study instead of HotPotQA.
"""

from __future__ import annotations

import threading

import dspy
from dspy.dsp.utils import deduplicate
from dspy.evaluate.metrics import _answer_match as answer_exact_match_str

from lmassert_magic.compat import Retry, Suggest, assert_transform_module, backtrack_handler

STUDY = "multihop"
INPUTS = ("question",)


class GenerateAnswer(dspy.Signature):
    """Answer questions with short factoid answers."""

    context = dspy.InputField(desc="may contain relevant facts")
    question = dspy.InputField()
    answer = dspy.OutputField(desc="often between 1 and 5 words")


class GenerateSearchQuery(dspy.Signature):
    """Write a simple search query that will help answer a complex question."""

    context = dspy.InputField(desc="may contain relevant facts")
    question = dspy.InputField()
    query = dspy.OutputField()


def validate_query_distinction_local(previous_queries: list[str], query: str) -> bool:
    """Whether `query` differs from every earlier query (token F1 below 0.8)."""
    if not previous_queries:
        return True
    return not answer_exact_match_str(query, previous_queries, frac=0.8)


def all_queries_distinct(prev_queries: list[str]) -> bool:
    return all(validate_query_distinction_local(prev_queries[:i], q) for i, q in enumerate(prev_queries))


class SimplifiedBaleen(dspy.Module):
    def __init__(self, passages_per_hop: int = 2, max_hops: int = 2) -> None:
        super().__init__()
        self.generate_query = [dspy.ChainOfThought(GenerateSearchQuery) for _ in range(max_hops)]
        self.retrieve = dspy.Retrieve(k=passages_per_hop)
        self.generate_answer = dspy.ChainOfThought(GenerateAnswer)
        self.max_hops = max_hops
        self.passed_suggestions = 0  # for evaluating assertions only (the notebook's counter)
        self._counter_lock = threading.Lock()  # the notebook evaluated with 10 threads

    def _count(self, prev_queries: list[str]) -> None:
        if all_queries_distinct(prev_queries):
            with self._counter_lock:
                self.passed_suggestions += 1

    def forward(self, question: str) -> dspy.Prediction:
        context: list[str] = []
        prev_queries = [question]
        for hop in range(self.max_hops):
            query = self.generate_query[hop](context=context, question=question).query
            prev_queries.append(query)
            context = deduplicate(context + self.retrieve(query).passages)
        self._count(prev_queries)
        pred = self.generate_answer(context=context, question=question)
        return dspy.Prediction(context=context, answer=pred.answer, queries=prev_queries[1:])


class SimplifiedBaleenAssertions(SimplifiedBaleen):
    def forward(self, question: str) -> dspy.Prediction:
        context: list[str] = []
        prev_queries = [question]
        for hop in range(self.max_hops):
            query = self.generate_query[hop](context=context, question=question).query
            Suggest(len(query) <= 100, "Query should be short and less than 100 characters",
                    target_module=self.generate_query)
            Suggest(validate_query_distinction_local(prev_queries, query),
                    "Query should be distinct from: " + "; ".join(f"{i + 1}) {q}" for i, q in enumerate(prev_queries)),
                    target_module=self.generate_query)
            prev_queries.append(query)
            context = deduplicate(context + self.retrieve(query).passages)
        self._count(prev_queries)
        pred = self.generate_answer(context=context, question=question)
        return dspy.Prediction(context=context, answer=pred.answer, queries=prev_queries[1:])


def plain_program() -> dspy.Module:
    return SimplifiedBaleen()


def asserted_program() -> dspy.Module:
    return assert_transform_module(SimplifiedBaleenAssertions().map_named_predictors(Retry), backtrack_handler)


# ---------------------------------------------------------------- metrics (the notebook's)


def validate_context_and_answer_and_hops(example: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return bool(dspy.evaluate.answer_exact_match(example, pred) and dspy.evaluate.answer_passage_match(example, pred))


def gold_passages_retrieved(example: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    gold = set(map(dspy.evaluate.normalize_text, example.gold_titles))
    found = set(map(dspy.evaluate.normalize_text, [c.split(" | ")[0] for c in pred.context]))
    return gold.issubset(found)


def suggestions_passed(example: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    """The notebook's `passed_suggestions`, per example: every query short and distinct from the earlier ones."""
    queries = [example.question, *pred.queries]
    return all(len(q) <= 100 for q in pred.queries) and all_queries_distinct(queries)


METRICS = {
    "suggestions passed": suggestions_passed,
    "answer correct": dspy.evaluate.answer_exact_match,
    "gold passages retrieved": gold_passages_retrieved,
}
COMPILE_METRIC = validate_context_and_answer_and_hops
PAPER = {"suggestions passed": (66.2, 88.0, 63.4, 71.6, 91.6), "answer correct": (41.6, 43.0, 40.4, 46.2, 45.4)}
