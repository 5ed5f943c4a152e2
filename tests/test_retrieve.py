"""The BM25 retriever: contract (list of passages, k), determinism, a shared index, and DSPy interoperability.

Speed is measured by bench/retrieve.py, not asserted here.
"""

from __future__ import annotations

import copy

import dspy
import pytest

import lmassert_magic.retrieve as retrieve_module
from lmassert_magic.datasets import load_corpus, load_study, title_of
from lmassert_magic.retrieve import BM25Retriever, tokenize

TOY = [
    "Velmora | Velmora is a river town known for glass works.",
    "Kestin | Kestin is a mining town known for salt mines.",
    "Tarn River | The Tarn River flows into the Gray Sea.",
    "Glass Hall | The Glass Hall is an exhibition hall in Velmora.",
]


@pytest.fixture(scope="module")
def corpus_retriever() -> BM25Retriever:
    return BM25Retriever(load_corpus(), k=3)


class RetrieveStep(dspy.Module):
    """A program whose one step, `retrieve`, is the given retriever: what deepcopy and the index must survive."""

    def __init__(self, retriever: BM25Retriever) -> None:
        super().__init__()
        self.retrieve = retriever

    def forward(self, question: str) -> dspy.Prediction:
        return dspy.Prediction(context=self.retrieve(question))


def test_tokenize_lowercases_and_drops_stopwords():
    assert tokenize("Who directed 'The Salt Orchard'?") == ["directed", "salt", "orchard"]
    assert tokenize("") == []


def test_returns_k_passages_best_first():
    r = BM25Retriever(TOY, k=2)
    hits = r("What is Kestin known for?")
    assert len(hits) == 2
    assert hits[0] == TOY[1]
    assert all(isinstance(h, str) for h in hits)


def test_k_override_and_bounds():
    r = BM25Retriever(TOY, k=2)
    assert len(r("glass", k=3)) == 3
    assert r("glass", k=0) == []
    assert len(r("glass", k=100)) == len(TOY)
    with pytest.raises(ValueError, match="k must be"):
        r("glass", k=-1)
    with pytest.raises(ValueError, match="k must be"):
        BM25Retriever(TOY, k=-2)


def test_search_scores_are_sorted_and_ties_keep_corpus_order():
    r = BM25Retriever(TOY)
    hits = r.search("Velmora glass", k=4)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    # No known word: every score is 0 and the order is the corpus order.
    assert r.search("zzz qqq", k=4) == [(p, 0.0) for p in TOY]
    # Identical passages tie; the earlier one wins, every time.
    dup = BM25Retriever(["a | apple pie", "b | apple pie", "c | pear tart"])
    assert [title_of(p) for p in dup("apple", k=2)] == ["a", "b"]


def test_full_ranking_is_by_score_then_corpus_order_in_every_instance(corpus_retriever):
    """Determinism spelled out on the real corpus: whole rankings, where the zero-score ties are."""
    passages = load_corpus()
    position = {p: i for i, p in enumerate(passages)}
    other = BM25Retriever(passages, k=3)
    queries = [ex.question for ex in load_study("multihop").dev] + ["zzz qqq", "river town"]
    ties = 0
    for q in queries:
        ranking = corpus_retriever.search(q, k=len(passages))
        assert ranking == other.search(q, k=len(passages))
        keys = [(-score, position[p]) for p, score in ranking]
        assert keys == sorted(keys)
        ties += len(ranking) - len({score for _, score in ranking})
    assert ties > 0  # the rankings do contain ties, so their order is really checked


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least one passage"):
        BM25Retriever([])
    with pytest.raises(TypeError, match="query must be a str"):
        BM25Retriever(TOY)(["two", "queries"])  # type: ignore[arg-type]


def test_recall_at_3_on_tweetgen_questions(corpus_retriever):
    """The measured first-hop recall@3 is 1.0 on this corpus; the floor leaves room for corpus edits."""
    study = load_study("tweetgen")
    examples = study.train + study.dev
    hits = sum(ex.gold_titles[0] in {title_of(p) for p in corpus_retriever(ex.question)} for ex in examples)
    assert hits / len(examples) >= 0.95


def test_the_index_is_built_once_and_queries_never_rebuild_it(monkeypatch):
    built, tokenized = [], []
    real_bm25, real_tokenize = retrieve_module.BM25Okapi, retrieve_module.tokenize

    def counting_bm25(corpus):
        built.append(len(corpus))
        return real_bm25(corpus)

    def counting_tokenize(text):
        tokenized.append(text)
        return real_tokenize(text)

    monkeypatch.setattr(retrieve_module, "BM25Okapi", counting_bm25)
    monkeypatch.setattr(retrieve_module, "tokenize", counting_tokenize)
    r = BM25Retriever(TOY, k=2)
    assert built == [len(TOY)] and tokenized == TOY  # one index, each passage tokenised once
    tokenized.clear()

    clone = RetrieveStep(r).deepcopy()
    queries = ["glass works", "Kestin salt", "Tarn River sea"]
    for q in queries:
        r(q)
        r.search(q, k=4)
        r.scores(q)
        r.with_k(3)(q)
        copy.deepcopy(r)(q)
        clone(question=q)
        r.as_rm()(q, k=1)
    assert built == [len(TOY)]  # no query, copy or with_k built another index
    assert tokenized == [q for q in queries for _ in range(7)]  # only the query is tokenised, once per call


def test_with_k_and_copies_share_the_index():
    r = BM25Retriever(TOY, k=2)
    r5 = r.with_k(5)
    assert (r.k, r5.k) == (2, 5)
    assert r5._bm25 is r._bm25
    deep = copy.deepcopy(r)
    assert deep is not r and deep._bm25 is r._bm25 and deep.k == 2
    deep.k = 1
    assert r.k == 2
    assert len(r) == 4 and r.passages == tuple(TOY)


def test_works_as_a_step_inside_a_dspy_module():
    r = BM25Retriever(TOY, k=1)

    program = RetrieveStep(r)
    clone = program.deepcopy()
    assert clone.retrieve._bm25 is r._bm25
    assert clone(question="salt mines").context == [TOY[1]]


def test_dspy_retrieve_via_as_rm():
    r = BM25Retriever(TOY, k=2)
    with dspy.context(rm=r.as_rm()):
        pred = dspy.Retrieve(k=3)("Tarn River sea")
    assert pred.passages == r("Tarn River sea", k=3)
    assert pred.passages[0] == TOY[2]
