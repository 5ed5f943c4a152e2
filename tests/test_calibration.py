"""Judge calibration against labelled items; the labelled TweetGen sets; the grounded_in_context proxy."""

from __future__ import annotations

import json

import pytest
from statsmodels.stats.inter_rater import cohens_kappa as sm_kappa
from statsmodels.stats.proportion import proportion_confint

from lmassert_magic.datasets import answer_in_text
from lmassert_magic.datasets.labelled import engaging_labelled, faithful_labelled
from lmassert_magic.engine.calibration import calibrate_judge, default_cache_dir
from lmassert_magic.engine.constraints import Constraint
from lmassert_magic.engine.proxies import grounded_in_context, names_and_numbers
from lmassert_magic.engine.stats import agreement


def _items(n: int = 40) -> list[tuple[dict, bool]]:
    return [({"i": i, "text": f"item {i}"}, i % 2 == 0) for i in range(n)]


class CountingJudge:
    """Right on items with i < n_right, wrong after; counts its calls."""

    def __init__(self, n_right: int, raise_on: frozenset[int] = frozenset()):
        self.n_right, self.raise_on, self.calls = n_right, raise_on, 0

    def __call__(self, i: int) -> bool:
        self.calls += 1
        if i in self.raise_on:
            raise RuntimeError(f"judge broke on {i}")
        truth = i % 2 == 0
        return truth if i < self.n_right else not truth


def test_agreement_of_a_judge_right_on_30_of_40(tmp_path):
    judge = CountingJudge(30)
    res = calibrate_judge(judge, _items(), name="scripted", model="m", prompt="p?", cache_dir=tmp_path)
    assert judge.calls == 40
    assert res.n == 40 and res.errors == 0
    assert res.agreement.successes == 30 and res.agreement.rate == pytest.approx(0.75)
    assert (res.agreement.ci_low, res.agreement.ci_high) == pytest.approx(proportion_confint(30, 40, method="wilson"))
    # items 30..39 are wrong: the 5 even ones answered False, the 5 odd ones True
    assert (res.true_pos, res.false_neg, res.false_pos, res.true_neg) == (15, 5, 5, 15)
    assert res.kappa == pytest.approx(sm_kappa([[15, 5], [5, 15]]).kappa)
    assert res.yes_rate == pytest.approx(0.5)
    assert not res.at_chance
    assert res.model == "m" and len(res.prompt_hash) == 12 and res.date[:4].isdigit()
    assert res.describe().startswith("judge 'scripted' agrees with 40 labelled items 75% of the time (95% CI ")


def test_an_always_yes_judge_is_at_chance(tmp_path):
    res = calibrate_judge(lambda **_: True, _items(), name="yes", model="smollm2", cache_dir=tmp_path)
    assert res.agreement.rate == pytest.approx(0.5) and res.kappa == pytest.approx(0.0) and res.yes_rate == 1.0
    assert res.at_chance
    text = res.describe()
    assert "50% of the time" in text and "kappa 0.00" in text and "at chance on smollm2" in text
    assert "yes to 100%" in text


def test_high_agreement_that_the_majority_class_also_reaches_is_at_chance(tmp_path):
    # 36 of 40 labels are True; a judge with kappa above 0.2 that cannot beat "always True" is still at chance
    items = [({"i": i}, i >= 4) for i in range(40)]

    def judge(i):
        return i != 0 and i >= 2  # right on 38 of 40

    res = calibrate_judge(judge, items, name="majority", cache_dir=tmp_path)
    assert res.kappa > 0.2
    assert res.agreement.holds(res.majority_rate)
    assert res.at_chance


def test_errors_are_counted_and_left_out(tmp_path):
    judge = CountingJudge(40, raise_on=frozenset({1, 2, 3}))
    items = [*_items(), ({"i": 2, "extra": 1}, True)]

    def wrapped(i, **_):
        return "yes" if i == 0 else judge(i)  # a non-bool answer is an error too

    res = calibrate_judge(wrapped, items, name="errors", cache_dir=tmp_path)
    assert res.items == 41 and res.errors == 5 and res.n == 36
    assert res.agreement.successes == 36
    assert any("judge broke on 1" in m for m in res.error_messages)
    assert any("expected True or False" in m for m in res.error_messages)
    assert res.predictions[0] is None and res.predictions[4] is True
    assert "5 of 41 items raised errors" in res.describe()


def test_cache_skips_the_judge_and_changed_inputs_invalidate(tmp_path):
    judge = CountingJudge(30)
    first = calibrate_judge(judge, _items(), name="cached", model="m", prompt="Is it faithful?", cache_dir=tmp_path)
    assert judge.calls == 40 and not first.from_cache

    again = calibrate_judge(judge, _items(), name="cached", model="m", prompt="Is it faithful?", cache_dir=tmp_path)
    assert judge.calls == 40 and again.from_cache
    assert again == first

    files = list(tmp_path.glob("*.json"))
    assert len(files) == 1
    payload = json.loads(files[0].read_text())
    assert payload["n"] == 40 and payload["date"] == first.date

    calibrate_judge(judge, _items(), name="cached", model="m", prompt="Is it supported?", cache_dir=tmp_path)
    assert judge.calls == 80  # changed prompt
    calibrate_judge(judge, _items(), name="cached", model="other", prompt="Is it faithful?", cache_dir=tmp_path)
    assert judge.calls == 120  # changed model
    calibrate_judge(judge, _items(38), name="cached", model="m", prompt="Is it faithful?", cache_dir=tmp_path)
    assert judge.calls == 158  # changed labelled items
    calibrate_judge(
        judge, _items(), name="cached", model="m", prompt="Is it faithful?", cache_dir=tmp_path, refresh=True
    )
    assert judge.calls == 198


def test_corrupt_cache_is_recomputed(tmp_path):
    judge = CountingJudge(40)
    calibrate_judge(judge, _items(), name="corrupt", cache_dir=tmp_path)
    (path,) = tmp_path.glob("*.json")
    path.write_text("{not json")
    res = calibrate_judge(judge, _items(), name="corrupt", cache_dir=tmp_path)
    assert judge.calls == 80 and not res.from_cache and res.agreement.rate == 1.0


def test_cache_dir_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("LMASSERT_CACHE_DIR", str(tmp_path / "root"))
    assert default_cache_dir() == tmp_path / "root" / "calibration"
    calibrate_judge(CountingJudge(40), _items(4), name="env")
    assert len(list((tmp_path / "root" / "calibration").glob("env-*.json"))) == 1


def test_constraint_as_judge_takes_its_name(tmp_path):
    items = faithful_labelled(10)
    c = Constraint(name="grounded", condition=lambda tweet, context: grounded_in_context(tweet, context))
    res = calibrate_judge(c, items, cache_dir=tmp_path)
    assert res.name == "grounded" and res.n == 10 and res.errors == 0

    broken = Constraint(name="broken", condition=lambda tweet: len(tweet) / 0 > 1)
    res = calibrate_judge(broken, items, cache_dir=tmp_path)
    assert res.errors == 10 and res.n == 0 and res.at_chance
    assert "ZeroDivisionError" in res.error_messages[0]


def test_plain_callable_needs_a_name(tmp_path):
    with pytest.raises(ValueError, match="name"):
        calibrate_judge(lambda **_: True, _items(), cache_dir=tmp_path)
    with pytest.raises(TypeError):
        calibrate_judge(lambda **_: True, [({"i": 1}, "yes")], name="x", cache_dir=tmp_path)


# ------------------------------------------------------------------------------------------ labelled sets


def test_faithful_labelled_is_balanced_and_labels_hold_by_construction():
    items = faithful_labelled(40, seed=0)
    assert len(items) == 40 and sum(label for _, label in items) == 20
    assert items == faithful_labelled(40, seed=0)
    assert items != faithful_labelled(40, seed=1)
    questions = [f["question"] for f, _ in items]
    assert len(set(questions)) == 40  # one example per item
    from lmassert_magic.datasets import load_study

    study = load_study("tweetgen")
    gold = {ex.question: ex.answer for ex in [*study.train, *study.dev]}
    for fields, label in items:
        assert set(fields) == {"question", "context", "tweet"}
        context = "\n".join(fields["context"])
        assert answer_in_text(gold[fields["question"]], context)  # the context supports the gold answer
        assert answer_in_text(gold[fields["question"]], fields["tweet"]) == label
    with pytest.raises(ValueError):
        faithful_labelled(81)


def test_engaging_labelled_pairs_differ_only_in_style():
    items = engaging_labelled(40, seed=0)
    assert len(items) == 40 and sum(label for _, label in items) == 20
    by_question: dict[str, dict[bool, str]] = {}
    for fields, label in items:
        by_question.setdefault(fields["question"], {})[label] = fields["tweet"]
    assert len(by_question) == 20
    for pair in by_question.values():
        lively, flat = pair[True], pair[False]
        assert "!" in lively and "?" in lively and "!" not in flat and "?" not in flat
        assert len(lively) > len(flat)
    with pytest.raises(ValueError):
        engaging_labelled(5)


# ---------------------------------------------------------------------------------------------- the proxy


def test_grounded_in_context_basics():
    ctx = ["The Violin Thief | The Violin Thief is a 1979 film directed by Nadia Ferro."]
    assert grounded_in_context('Who directed "The Violin Thief"? Nadia Ferro did, in 1979!', ctx)
    assert grounded_in_context("Nadia Ferro's 1979 film is a gem.", ctx)
    assert not grounded_in_context("The Violin Thief was directed by Agata Pell.", ctx)
    assert not grounded_in_context("Nadia Ferro directed it in 1981.", ctx)
    assert not grounded_in_context("Nadia Ferro directed it in 197.", ctx)
    # a possessive in the context: the tweet's "Tanner's" must still match it
    book = ["The Tanner's Daughter is a 1950 novel by Teodor Brun."]
    assert grounded_in_context('"The Tanner\'s Daughter" was written by Teodor Brun.', book)
    assert not grounded_in_context('"The Tanner\'s Daughter" was written by Agata Pell.', book)
    # documented limit: a wrong relation between grounded names passes
    assert grounded_in_context("Nadia Ferro wrote The Violin Thief.", ctx)
    assert names_and_numbers("Did you know? The Violin Thief is great. I agree.") == (["Violin Thief"], [])


def test_grounded_in_context_separates_faithful_labelled():
    items = faithful_labelled(40)
    labels = [label for _, label in items]
    preds = [grounded_in_context(f["tweet"], f["context"]) for f, _ in items]
    agr = agreement(labels, preds)
    # measured on seed 0: 40 of 40 (kappa 1.00); require clear separation, not a particular count
    assert agr.agreement.rate >= 0.9 and agr.kappa >= 0.8
    assert agr.agreement.ci_low > agr.majority_rate
