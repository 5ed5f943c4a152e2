"""The paper's four DSPy 2.5 programs (examples/paper/), imports swapped, on DSPy 3.

Scripted LMs check the 2.5 idioms the programs rely on; the `embedded` test runs each program on two
dev examples of the embedded model.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import dspy
import pytest

from lmassert_magic.engine import run_record_of

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples" / "paper"))

import common  # noqa: E402
import longformqa  # noqa: E402
import multihopqa  # noqa: E402
import quizgen  # noqa: E402
import tweetgen  # noqa: E402

PROGRAMS = [tweetgen, quizgen, longformqa, multihopqa]


def field(text: str, name: str) -> str:
    match = re.search(rf"\[\[ ## {name} ## \]\]\n(.*?)(?:\n\n\[\[ ## |\n\nRespond|\Z)", text, flags=re.DOTALL)
    return match.group(1).strip() if match else ""


def scripted(rules):
    """respond(messages): the first rule whose key is in the system prompt answers from the last user message."""

    def respond(messages):
        system, user = messages[0]["content"], messages[-1]["content"]
        for key, rule in rules.items():
            if key in system:
                return rule(messages) if getattr(rule, "__name__", "") == "tweet" else rule(user)
        raise AssertionError(f"no rule for {system[:120]!r}")

    return respond


def count(lm, key):
    return sum(1 for m in lm.prompts if key in m[0]["content"])


def retried(lm, key):
    return sum(1 for m in lm.prompts if key in m[0]["content"] and "[[ ## feedback ## ]]" in m[-1]["content"])


QUERY = "Write a simple search query"


def query_rule(user):
    return {"reasoning": "r", "query": field(user, "question")[:60]}


# ---------------------------------------------------------------- TweetGen


def tweet_rules(answers):
    """Tweets state the answer once told (feedback), or once shown how (demos in the prompt)."""

    def tweet(messages):
        user = messages[-1]["content"]
        answer = answers[field(user, "question")]
        if "[[ ## feedback ## ]]" in user or len(messages) > 2:
            return {"reasoning": "r", "tweet": f"It was {answer}, and the story behind it is a good one."}
        return {"reasoning": "r", "tweet": "What a question! #trivia"}

    return {QUERY: query_rule, "Generate an engaging tweet": tweet,
            "Assess the quality of a tweet": lambda user: {"assessment_answer": "Yes"}}


def test_tweetgen_retries_the_tweet_never_the_queries(scripted_lm):
    train, dev = common.datasets("tweetgen", tweetgen.INPUTS, n_train=0, n_dev=2)
    lm = scripted_lm(scripted(tweet_rules({x.question: x.answer for x in dev})))
    with dspy.context(rm=common.retriever("tweetgen")):
        run = common.run_program(tweetgen.asserted_program(), dev)
    assert run.errors == []
    assert all(tweetgen.deterministic_checks(x, p) for x, p in zip(dev, run.predictions))
    assert count(lm, QUERY) == 4  # two hops per example, not asked again on the retry
    assert retried(lm, "Generate an engaging tweet") == 2
    # two hops, the tweet (its hashtag stops the pass before the judges), the retried tweet, two judges
    assert run.lm_calls == 2 * (2 + 1 + 1 + 2)
    record = run_record_of(run.predictions[0])
    assert record.all_passed and record.backtracks == 1


def test_tweetgen_asserted_teacher_bootstraps_demos_the_plain_one_cannot(scripted_lm):
    train, _ = common.datasets("tweetgen", tweetgen.INPUTS, n_train=3, n_dev=0)
    scripted_lm(scripted(tweet_rules({x.question: x.answer for x in train})))
    with dspy.context(rm=common.retriever("tweetgen")):
        demos = {}
        for label, teacher in (("asserted", tweetgen.asserted_program()), ("plain", tweetgen.plain_program())):
            optimizer = dspy.BootstrapFewShot(metric=tweetgen.overall_metric, max_bootstrapped_demos=2,
                                              max_labeled_demos=0)
            demos[label] = common.demos_of(optimizer.compile(tweetgen.plain_program(), teacher=teacher,
                                                             trainset=train))
    assert demos["asserted"]["generate_tweet.predict"] == 2
    assert demos["plain"]["generate_tweet.predict"] == 0  # its tweets never state the answer


def test_tweetgen_compiles_with_random_search_and_an_asserted_teacher(scripted_lm):
    train, dev = common.datasets("tweetgen", tweetgen.INPUTS, n_train=3, n_dev=2)
    answers = {x.question: x.answer for x in train + dev}
    scripted_lm(scripted(tweet_rules(answers)))
    with dspy.context(rm=common.retriever("tweetgen")):
        compiled = common.compile_program(tweetgen.plain_program(), tweetgen.asserted_program(), train, dev,
                                          tweetgen.overall_metric, num_candidate_programs=2, num_threads=1)
    assert common.demos_of(compiled)["generate_tweet.predict"] > 0
    assert type(compiled.generate_tweet.predict).__name__ == "Predict"  # the student stays plain


def _measure_tweetgen_scripted(scripted_lm, monkeypatch):
    """measure_tweetgen's DSPy 3 parts on a scripted model that follows feedback (no model, no DSPy 2.5.43)."""
    import measure_tweetgen

    train, dev = common.datasets("tweetgen", tweetgen.INPUTS, n_train=3, n_dev=2)
    lm = scripted_lm(scripted(tweet_rules({x.question: x.answer for x in train + dev})))
    monkeypatch.setattr(measure_tweetgen, "fresh_cache", lambda: None)  # the test's LM has no cache to empty
    with dspy.context(rm=common.retriever("tweetgen")):
        dspy3 = measure_tweetgen.measure_dspy3(2)
        demos = measure_tweetgen.bootstrap_demos(3)
    meta = {"command": "python examples/paper/measure_tweetgen.py --n 2 --train 3 --seed 0", "commit": "0" * 40,
            "date": "2026-01-01", "seed": 0, "n": 2, "train": 3, "model": "scripted", "cpu_count": 2,
            "versions": {"python": "3", "dspy": dspy.__version__}, "model seconds": 0.0}
    return lm, {"meta": meta, "dspy3": dspy3, "demos": demos}


def test_measure_tweetgen_records_calls_checks_and_the_teachers_traces(scripted_lm, monkeypatch):
    import measure_tweetgen

    lm, results = _measure_tweetgen_scripted(scripted_lm, monkeypatch)
    plain, asserted = results["dspy3"]["plain"], results["dspy3"]["asserted"]
    assert plain["calls by step"] == {"query": 4, "tweet": 2}
    assert asserted["calls by step"] == {"judge": 4, "query": 4, "tweet": 2, "tweet (retry)": 2}
    assert asserted["calls/ex"] == 6.0 and asserted["checks passed"]["passed"] == 2
    assert plain["checks passed"]["passed"] == 0 and plain["per check passed"]["no hashtags"] == 0
    low, high = asserted["checks passed"]["ci95"]
    assert 0 < low < high == 1.0  # Wilson, n=2
    teacher = results["demos"]["asserted teacher"]
    assert teacher["demos"]["generate_tweet.predict"] == 2 and teacher["traces passed"] == 2
    assert results["demos"]["plain teacher"]["traces passed"] == 0
    text = measure_tweetgen.render(results)
    assert "n=2" in text and "DSPy 2.5.43 was not run" in text and "Why none" not in text
    json.dumps(results)  # the JSON the script writes


def test_measure_tweetgen_says_why_the_asserted_teacher_gave_no_demos(scripted_lm, monkeypatch):
    import measure_tweetgen

    _, results = _measure_tweetgen_scripted(scripted_lm, monkeypatch)
    teacher = results["demos"]["asserted teacher"]
    teacher["demos"] = {"generate_tweet.predict": 0}
    for trace in teacher["traces"]:
        trace["score"], trace["checks"]["states the answer"] = 0.0, False
    text = measure_tweetgen.render(results)
    assert "Why none from the asserted teacher" in text and "'states the answer' in 2" in text


def test_paper_readme_tweetgen_section_is_generated_from_the_committed_json():
    import measure_tweetgen

    results = json.loads(measure_tweetgen.JSON_PATH.read_text())
    meta = results["meta"]
    assert meta["n"] > 2 and meta["commit"] != "unknown" and "seed" in meta
    assert measure_tweetgen.readme_block() == measure_tweetgen.render(results), (
        "examples/paper/README.md is stale: run `python examples/paper/measure_tweetgen.py --from-json`")


# ---------------------------------------------------------------- QuizGen


def test_quizgen_fixes_its_json_on_feedback(scripted_lm):
    _, dev = common.datasets("quizgen", quizgen.INPUTS, n_dev=2)

    def choices(user):
        answer = field(user, "correct_answer")
        if "[[ ## feedback ## ]]" in user:
            return {"reasoning": "r", "answer_choices": json.dumps({"A": answer, "B": "x", "C": "y", "D": "z"})}
        return {"reasoning": "r", "answer_choices": f"A) {answer} B) x"}

    lm = scripted_lm(scripted({"Generate answer choices": choices,
                               "Assess the quality of quiz": lambda user: {"assessment_answer": "Yes"}}))
    run = common.run_program(quizgen.asserted_program(), dev)
    assert run.errors == []
    assert all(quizgen.overall_metric(x, p) == 1.0 for x, p in zip(dev, run.predictions))
    assert retried(lm, "Generate answer choices") == 2


# ---------------------------------------------------------------- LongFormQA


def test_longformqa_adds_citations_on_feedback(scripted_lm):
    _, dev = common.datasets("longform", longformqa.INPUTS, n_dev=2)

    def paragraph(user):
        if "[[ ## feedback ## ]]" in user:
            return {"reasoning": "r", "paragraph": "It is known for this [1]. That is all [2]."}
        return {"reasoning": "r", "paragraph": "It is known for this. That is all. Nothing more."}

    lm = scripted_lm(scripted({QUERY: query_rule, "Generate a paragraph with citations": paragraph,
                               "Verify that the text": lambda user: {"reasoning": "r", "faithfulness": "True"}}),
                     )
    with dspy.context(rm=common.retriever("longform")):
        run = common.run_program(longformqa.asserted_program(), dev)
    assert run.errors == []
    assert all(longformqa.citations_check(p.paragraph) for p in run.predictions)
    assert retried(lm, "Generate a paragraph with citations") == 2
    assert count(lm, QUERY) == 4


def test_citation_rule_matches_the_original():
    assert longformqa.citations_check("A [1]. B. C [2].")
    assert not longformqa.citations_check("A [1]. B. C. D [2].")
    assert not longformqa.citations_check("No citation at all.")
    assert longformqa.extract_text_by_citation("A b [1]. C [2]. D [1].") == {"0": ["A b", "D"], "1": ["C"]}


# ---------------------------------------------------------------- MultiHopQA


def test_multihop_list_target_retries_the_repeated_hop(scripted_lm):
    _, dev = common.datasets("multihop", multihopqa.INPUTS, n_dev=2)

    def query(user):
        if "[[ ## feedback ## ]]" in user:  # a query of its own for each hop
            return {"reasoning": "r", "query": f"who wrote {field(user, 'context')[:40]}"}
        return {"reasoning": "r", "query": field(user, "question")}  # the question itself: not distinct

    lm = scripted_lm(scripted({QUERY: query, "Answer questions with short": lambda u: {"reasoning": "r",
                                                                                         "answer": "Velmora"}}))
    program = multihopqa.asserted_program()
    with dspy.context(rm=common.retriever("multihop")):
        run = common.run_program(program, dev)
    assert run.errors == []
    assert all(multihopqa.suggestions_passed(x, p) for x, p in zip(dev, run.predictions))
    assert retried(lm, QUERY) >= 2
    assert program.passed_suggestions == 2


# ---------------------------------------------------------------- the embedded model


@pytest.mark.embedded
@pytest.mark.parametrize("module", PROGRAMS, ids=lambda m: m.__name__)
def test_paper_program_runs_on_two_examples_of_the_embedded_model(module):
    from lmassert_magic.lm import local_lm, local_model_available

    if not local_model_available():
        pytest.skip("the embedded model is not installed")
    _, dev = common.datasets(module.STUDY, module.INPUTS, n_dev=2)
    with common.offline(module.STUDY, local_lm(max_tokens=256)):
        plain = common.run_program(module.plain_program(), dev)
        asserted = common.run_program(module.asserted_program(), dev)
    assert plain.n == asserted.n == 2
    # Every asserted call stays within its budget: at most max_backtracks + 1 = 3 attempts of each step it
    # retries, and the judges a program calls in forward, per attempt.
    assert asserted.per_example() <= 3 * max(plain.per_example(), 1) + 3 * 8
    for prediction in asserted.predictions:
        if prediction is not None:
            assert run_record_of(prediction) is not None


def test_run_all_prints_the_five_settings_next_to_the_paper(scripted_lm):
    import run_all

    train, dev = common.datasets("tweetgen", tweetgen.INPUTS, n_train=3, n_dev=2)
    scripted_lm(scripted(tweet_rules({x.question: x.answer for x in train + dev})))
    with dspy.context(rm=common.retriever("tweetgen")):
        table = run_all.five_settings(tweetgen, train, dev, candidates=1, threads=1)
    assert list(table) == list(common.SETTINGS)
    assert table["Vanilla"]["metrics"]["has answer"] == 0.0  # untold and unshown, the scripted model never says it
    assert table["Infer w/ Assert"]["metrics"]["has answer"] == 100.0
    assert table["Compile w/ Assert"]["demos"] > 0 and table["Compile w/ Assert"]["metrics"]["has answer"] == 100.0
    assert table["Compile"]["demos"] == 0  # the plain teacher's traces all fail the metric
    text = run_all.render("tweetgen", tweetgen, table, len(dev))
    assert "quality" in text and "/30.5" in text and "/45.0" in text
