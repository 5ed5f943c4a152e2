"""The shipped case-study data: sizes, integrity, the two-hop property, determinism, and metric helpers."""

from __future__ import annotations

import filecmp
import functools
import subprocess
import sys
from collections import Counter

import dspy
import pytest

from lmassert_magic.datasets import (
    STUDIES,
    Study,
    answer_exact_match,
    answer_in_text,
    answer_passage_match,
    build,
    gold_passages_retrieved,
    load_corpus,
    load_study,
    title_of,
)


@functools.lru_cache(maxsize=1)
def passage_by_title() -> dict[str, str]:
    return {title_of(p): p for p in load_corpus()}


def all_examples(study: Study) -> list[dspy.Example]:
    return study.train + study.dev


@pytest.fixture(scope="module", params=STUDIES)
def study(request) -> Study:
    return load_study(request.param)


# ---------------------------------------------------------------------------------------------- corpus


def test_corpus_shape():
    corpus = load_corpus()
    assert 150 <= len(corpus) <= 300
    titles = [title_of(p) for p in corpus]
    assert len(set(titles)) == len(titles), "titles must be unique"
    for p in corpus:
        title, text = p.split(" | ", 1)
        assert title and text and " | " not in text
        assert 1 <= text.count(". ") + 1 <= 3, p  # 1-3 sentences


# ---------------------------------------------------------------------------------------------- every study


def test_sizes(study):
    assert len(all_examples(study)) >= 60
    assert len(study.dev) >= 30
    assert len(study.train) >= 30


def test_no_duplicate_questions_and_splits_disjoint(study):
    train_q = [e.question for e in study.train]
    dev_q = [e.question for e in study.dev]
    assert len(set(train_q)) == len(train_q)
    assert len(set(dev_q)) == len(dev_q)
    assert not set(train_q) & set(dev_q)


def test_no_question_shared_between_studies():
    seen: Counter[str] = Counter()
    for name in STUDIES:
        seen.update(e.question for e in all_examples(load_study(name)))
    assert [q for q, n in seen.items() if n > 1] == []


def test_example_fields(study):
    for ex in all_examples(study):
        assert set(ex.inputs().keys()) == {"question"}
        labels = ex.labels()
        assert {"answer", "gold_titles", "kind"} <= set(labels.keys())
        assert isinstance(ex.answer, str) and ex.answer.strip()
        assert ex.question.endswith("?")
        assert len(ex.question.split()) <= 20, ex.question
        assert len(ex.answer.split()) <= 4, ex.answer


def test_gold_titles_exist_and_contain_the_answer(study):
    by_title = passage_by_title()
    for ex in all_examples(study):
        assert ex.gold_titles, ex
        assert all(t in by_title for t in ex.gold_titles), ex.gold_titles
        # The answer is in the last gold passage (the only one for single-hop questions).
        assert answer_in_text(ex.answer, by_title[ex.gold_titles[-1]]), (ex.question, ex.answer)


def test_kinds_appear_in_both_splits(study):
    assert {e.kind for e in study.train} == {e.kind for e in study.dev}


# ---------------------------------------------------------------------------------------------- per study


def test_tweetgen_is_single_hop():
    assert all(len(e.gold_titles) == 1 for e in all_examples(load_study("tweetgen")))


def test_multihop_needs_two_hops():
    """The answer is not in the first-hop passage, is in the second, and the first names the bridge entity."""
    by_title = passage_by_title()
    for ex in all_examples(load_study("multihop")):
        assert len(ex.gold_titles) == 2 and ex.gold_titles[0] != ex.gold_titles[1]
        first, second = (by_title[t] for t in ex.gold_titles)
        bridge = ex.gold_titles[1]
        assert not answer_in_text(ex.answer, first), ex.question
        assert answer_in_text(ex.answer, second), ex.question
        assert answer_in_text(bridge, first.split(" | ", 1)[1]), ex.question
        # The question names the first-hop entity, never the bridge.
        assert not answer_in_text(bridge, ex.question), ex.question


def test_multihop_retrieval_with_the_question_alone_finds_hop_one_but_rarely_hop_two():
    """Measured: first hop in top-3 for 100%, both gold passages for 12.5%, so a second query matters."""
    study = load_study("multihop")
    retrieve = study.retriever(k=3)
    examples = all_examples(study)
    first = both = 0
    for ex in examples:
        top = {title_of(p) for p in retrieve(ex.question)}
        first += ex.gold_titles[0] in top
        both += set(ex.gold_titles) <= top
    assert first / len(examples) >= 0.95
    assert both / len(examples) <= 0.25


def test_longform_gold_titles():
    assert all(1 <= len(e.gold_titles) <= 2 for e in all_examples(load_study("longform")))
    assert any(len(e.gold_titles) == 2 for e in all_examples(load_study("longform")))


def test_quizgen_answer_types_have_enough_distractors():
    study = load_study("quizgen")
    for ex in all_examples(study):
        values = study.answer_values[ex.answer_type]
        assert ex.answer in values
        assert len(set(values)) >= 4, ex.answer_type  # room for three distractors of the same type


# ---------------------------------------------------------------------------------------------- loading API


def test_limit_keeps_the_first_n():
    full = load_study("longform")
    small = load_study("longform", limit=5)
    assert len(small.train) == len(small.dev) == 5
    assert [e.question for e in small.train] == [e.question for e in full.train[:5]]
    assert [e.question for e in small.dev] == [e.question for e in full.dev[:5]]
    assert len(load_study("longform", limit=10_000).dev) == len(full.dev)
    assert load_study("longform", limit=0).train == []
    with pytest.raises(ValueError, match="limit"):
        load_study("longform", limit=-1)


def test_unknown_study_names_the_valid_ones():
    with pytest.raises(ValueError) as err:
        load_study("hotpotqa")
    assert all(name in str(err.value) for name in STUDIES)


def test_loads_are_independent():
    a = load_study("quizgen")
    a.train[0].answer = "changed"
    assert load_study("quizgen").train[0].answer != "changed"


def test_retriever_is_shared_and_configurable(study):
    r2, r5 = study.retriever(k=2), study.retriever(k=5)
    assert (r2.k, r5.k) == (2, 5)
    assert r2._bm25 is r5._bm25
    assert len(r2(study.dev[0].question)) == 2


# ---------------------------------------------------------------------------------------------- build script


def test_build_is_deterministic_and_committed_data_is_current(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert build.main(["--out", str(a)]) == 0
    assert build.main(["--out", str(b)]) == 0
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(["corpus.json", *(f"{s}.json" for s in STUDIES)])
    match, mismatch, errors = filecmp.cmpfiles(a, b, names, shallow=False)
    assert (mismatch, errors) == ([], [])
    assert build.main(["--check"]) == 0, "run `python -m lmassert_magic.datasets.build` and commit data/"


def test_build_runs_as_a_module(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "lmassert_magic.datasets.build", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "multihop.json").read_bytes() == (build.DATA_DIR / "multihop.json").read_bytes()


def test_check_reports_stale_files(tmp_path):
    build.main(["--out", str(tmp_path)])
    (tmp_path / "tweetgen.json").write_text("{}\n")
    assert build.main(["--out", str(tmp_path), "--check"]) == 1


# ---------------------------------------------------------------------------------------------- metrics


def test_answer_exact_match_is_tolerant():
    ex = dspy.Example(question="q", answer="Port Halden").with_inputs("question")
    assert answer_exact_match(ex, dspy.Prediction(answer="port halden."))
    assert answer_exact_match(ex, dspy.Prediction(answer="He was born in Port Halden, on the coast."))
    assert not answer_exact_match(ex, dspy.Prediction(answer="Halden"))
    assert not answer_exact_match(ex, dspy.Prediction(reasoning="Port Halden"))  # no answer field
    assert answer_exact_match(ex, dspy.Prediction(answer="Halden"), frac=0.5)  # DSPy's F1 threshold


def test_answer_exact_match_field_and_plain_values():
    ex = dspy.Example(question="q", answer="1642").with_inputs("question")
    tweet_metric = functools.partial(answer_exact_match, field="tweet")
    assert tweet_metric(ex, dspy.Prediction(tweet="Velmora was founded in 1642!"))
    assert not tweet_metric(ex, dspy.Prediction(tweet="Founded in 16420?"))  # whole words only
    assert answer_exact_match(ex, "in 1642")
    assert answer_exact_match(ex, {"answer": "1642"})


def test_answer_in_text_accepts_lists_and_ignores_articles():
    assert answer_in_text(["Gray Sea", "Amber Sea"], "It flows into the Amber Sea.")
    assert answer_in_text("The Blue Harbour", "She painted Blue Harbour in 1902")
    assert not answer_in_text("Sea", "")


def test_passage_metrics():
    ex = load_study("multihop").dev[0]
    by_title = passage_by_title()
    context = [by_title[t] for t in ex.gold_titles]
    assert gold_passages_retrieved(ex, dspy.Prediction(context=context))
    assert not gold_passages_retrieved(ex, dspy.Prediction(context=context[:1]))
    assert gold_passages_retrieved(ex, {"passages": context}, field="passages")
    assert answer_passage_match(ex, dspy.Prediction(context=context))
    assert not answer_passage_match(ex, dspy.Prediction(context=context[:1]))
