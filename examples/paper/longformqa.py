"""LongFormQA: the LM Assertions paper's cited-paragraph program for DSPy 2.4/2.5, on DSPy 3 with the imports swapped.

Original: `examples/longformqa/longformqa_assertions.ipynb` and `examples/longformqa/utils.py` in the
DSPy repository (tag 2.5.43,
https://github.com/stanfordnlp/dspy/blob/2.5.43/examples/longformqa/longformqa_assertions.ipynb),
section "LongFormQA" of the paper. Rewritten here following its structure: two query generators
and a `Retrieve` step as attributes, a `ChainOfThought` that writes a paragraph with citations
`[n].`, a suggestion that every 1-2 sentences carry a citation, and one suggestion per unfaithful
citation, judged by a `ChainOfThought(CheckCitationFaithfulness)` built inside `forward`; the
notebook's metrics and compile calls.

Changed from 2.5: the imports (`lmassert_magic.compat`; `dsp.utils.deduplicate` ->
`dspy.dsp.utils.deduplicate`, `dsp.utils.normalize_text` -> `dspy.evaluate.normalize_text`), the
offline LongFormQA study instead of HotPotQA, and a regular-expression sentence splitter instead
of NLTK's `sent_tokenize` (the citation rule itself is the original's).
"""

from __future__ import annotations

import re

import dspy
from dspy.dsp.utils import deduplicate
from dspy.evaluate import normalize_text

from lmassert_magic.compat import Retry, Suggest, assert_transform_module, backtrack_handler

STUDY = "longform"
INPUTS = ("question",)
CITATION = re.compile(r"\[(\d+)\]\.")


class GenerateSearchQuery(dspy.Signature):
    """Write a simple search query that will help answer a complex question."""

    context = dspy.InputField(desc="may contain relevant facts")
    question = dspy.InputField()
    query = dspy.OutputField()


class GenerateCitedParagraph(dspy.Signature):
    """Generate a paragraph with citations."""

    context = dspy.InputField(desc="may contain relevant facts")
    question = dspy.InputField()
    paragraph = dspy.OutputField(desc="includes citations")


class CheckCitationFaithfulness(dspy.Signature):
    """Verify that the text is based on the provided context."""

    context = dspy.InputField(desc="may contain relevant facts")
    text = dspy.InputField(desc="between 1 to 2 sentences")
    faithfulness = dspy.OutputField(desc="boolean indicating if text is faithful to context")


# ---------------------------------------------------------------- citation helpers (the notebook's utils.py)


def extract_text_by_citation(paragraph: str) -> dict[str, list[str]]:
    """Text before each `[n].`, keyed by the 0-based passage index as a string."""
    cited: dict[str, list[str]] = {}
    for part, number in re.findall(r"(.*?)\[(\d+)\]\.", paragraph, flags=re.DOTALL):
        cited.setdefault(str(int(number) - 1), []).append(part.strip())
    return cited


def _sentences(paragraph: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", paragraph.strip()) if s]


def correct_citation_format(paragraph: str) -> bool:
    """No two sentences in a row without a citation (so every 1-2 sentences carry one)."""
    uncited = [not CITATION.search(s) for s in _sentences(paragraph)]
    return not any(a and b for a, b in zip(uncited, uncited[1:]))


def has_citations(paragraph: str) -> bool:
    return bool(CITATION.search(paragraph))


def citations_check(paragraph: str) -> bool:
    return has_citations(paragraph) and correct_citation_format(paragraph)


def citation_faithfulness(example: object, pred: dspy.Prediction, trace: object) -> tuple[bool, list[dict] | None]:
    """(all cited texts faithful to their passage, the unfaithful ones); judged by a ChainOfThought made here."""
    paragraph, context = pred.paragraph, pred.context
    citation_dict = extract_text_by_citation(paragraph)
    if not citation_dict:
        return False, None
    context_dict = {str(i): passage.split(" | ", 1)[-1] for i, passage in enumerate(context)}
    results, unfaithful = [], []
    check_citation_faithfulness = dspy.ChainOfThought(CheckCitationFaithfulness)
    for number, texts in citation_dict.items():
        if number not in context_dict:
            continue
        current_context = context_dict[number]
        for text in texts:
            try:
                verdict = check_citation_faithfulness(context=current_context, text=text)
                faithful = str(verdict.faithfulness).strip().lower() == "true"
            except ValueError as exc:
                results.append(False)
                unfaithful.append({"paragraph": paragraph, "text": text, "error": str(exc)})
                continue
            results.append(faithful)
            if not faithful:
                unfaithful.append({"paragraph": paragraph, "text": text, "context": current_context})
    if not results:
        return False, None
    return all(results), unfaithful


# ---------------------------------------------------------------- programs


class LongFormQA(dspy.Module):
    def __init__(self, passages_per_hop: int = 3, max_hops: int = 2) -> None:
        super().__init__()
        self.generate_query = [dspy.ChainOfThought(GenerateSearchQuery) for _ in range(max_hops)]
        self.retrieve = dspy.Retrieve(k=passages_per_hop)
        self.generate_cited_paragraph = dspy.ChainOfThought(GenerateCitedParagraph)
        self.max_hops = max_hops

    def _answer(self, question: str) -> dspy.Prediction:
        context: list[str] = []
        for hop in range(self.max_hops):
            query = self.generate_query[hop](context=context, question=question).query
            context = deduplicate(context + self.retrieve(query).passages)
        pred = self.generate_cited_paragraph(context=context, question=question)
        return dspy.Prediction(context=context, paragraph=pred.paragraph)

    def forward(self, question: str) -> dspy.Prediction:
        return self._answer(question)


class LongFormQAWithAssertions(LongFormQA):
    def forward(self, question: str) -> dspy.Prediction:
        pred = self._answer(question)
        Suggest(citations_check(pred.paragraph),
                "Make sure every 1-2 sentences has citations. If any 1-2 sentences lack citations, add them in "
                "'text... [x].' format.",
                target_module=self.generate_cited_paragraph)
        _, unfaithful_outputs = citation_faithfulness(None, pred, None)
        if unfaithful_outputs:
            unfaithful_pairs = [(o["text"], o.get("context", "")) for o in unfaithful_outputs]
            for _, context in unfaithful_pairs:
                Suggest(len(unfaithful_pairs) == 0,
                        f"Make sure your output is based on the following context: '{context}'.",
                        target_module=self.generate_cited_paragraph)
        return pred


def plain_program() -> dspy.Module:
    return LongFormQA()


def asserted_program() -> dspy.Module:
    return assert_transform_module(LongFormQAWithAssertions().map_named_predictors(Retry), backtrack_handler)


# ---------------------------------------------------------------- metrics (the notebook's)


def cited_titles(paragraph: str, context: list[str]) -> list[str]:
    indices = [int(n) - 1 for n in CITATION.findall(paragraph) if 0 < int(n) <= len(context)]
    return [context[i].split(" | ")[0] for i in indices]


def calculate_recall(example: dspy.Example, pred: dspy.Prediction, trace: object = None) -> float:
    gold, found = set(example.gold_titles), set(cited_titles(pred.paragraph, pred.context))
    return len(gold & found) / len(gold) if gold else 0.0


def calculate_precision(example: dspy.Example, pred: dspy.Prediction, trace: object = None) -> float:
    gold, found = set(example.gold_titles), set(cited_titles(pred.paragraph, pred.context))
    return len(gold & found) / len(found) if found else 0.0


def answer_correctness(example: dspy.Example, pred: dspy.Prediction, trace: object = None) -> int:
    answers = [example.answer] if isinstance(example.answer, str) else list(example.answer)
    paragraph = normalize_text(pred.paragraph)
    return int(any(normalize_text(a) in paragraph for a in answers))


def faithfulness_metric(example: dspy.Example, pred: dspy.Prediction, trace: object = None) -> bool:
    return citation_faithfulness(None, pred, None)[0]


METRICS = {
    "citations every 1-2 sentences": lambda x, p, t=None: citations_check(p.paragraph),
    "citation faithful": faithfulness_metric,
    "answer correct": answer_correctness,
    "citation recall": calculate_recall,
    "citation precision": calculate_precision,
}
COMPILE_METRIC = answer_correctness
PAPER = {"citation faithful": (78.8, 90.8, 79.6, 81.2, 91.8)}
