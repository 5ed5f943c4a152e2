"""engine.stats: intervals checked against the libraries, paired comparisons on cases with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.inter_rater import cohens_kappa as sm_kappa
from statsmodels.stats.proportion import proportion_confint

from lmassert_magic.engine.stats import (
    agreement,
    cohens_kappa,
    describe_difference,
    mean_interval,
    paired_difference,
    proportion_interval,
    rate_of,
)

# ------------------------------------------------------------------------------------------- proportions


@pytest.mark.parametrize(
    ("k", "n", "conf"), [(0, 20, 0.95), (8, 20, 0.95), (20, 20, 0.95), (3, 7, 0.9), (40, 41, 0.99)]
)
def test_proportion_interval_is_wilson(k, n, conf):
    low, high = proportion_interval(k, n, conf)
    exp_low, exp_high = proportion_confint(k, n, alpha=1 - conf, method="wilson")
    assert (low, high) == pytest.approx((exp_low, exp_high))
    # Wilson, not the normal approximation: the two differ at these n
    normal = proportion_confint(k, n, alpha=1 - conf, method="normal")
    assert (low, high) != pytest.approx(normal)


def test_proportion_interval_empty_and_invalid():
    assert all(math.isnan(x) for x in proportion_interval(0, 0))
    with pytest.raises(ValueError):
        proportion_interval(5, 4)
    with pytest.raises(ValueError):
        proportion_interval(1, 4, confidence=1.0)


def test_rate_of():
    r = rate_of(17, 20)
    assert r.rate == pytest.approx(17 / 20)
    assert (r.ci_low, r.ci_high) == pytest.approx(proportion_confint(17, 20, method="wilson"))
    assert r.holds(0.7) and not r.holds(0.5)
    assert str(r) == f"85% (95% CI {round(r.ci_low * 100)}-{round(r.ci_high * 100)}%, n=20)"
    empty = rate_of(0, 0)
    assert math.isnan(empty.rate) and not empty.holds(0.5)


# --------------------------------------------------------------------------------------------- bootstrap


def test_mean_interval_matches_scipy_bootstrap():
    x = np.random.default_rng(7).gamma(2.0, size=25)
    low, high = mean_interval(x, confidence=0.9, seed=3)
    ref = sps.bootstrap(
        (x,), np.mean, confidence_level=0.9, method="BCa", n_resamples=9999, rng=np.random.default_rng(3)
    ).confidence_interval
    assert (low, high) == pytest.approx((ref.low, ref.high))
    assert low < x.mean() < high
    assert mean_interval(x, confidence=0.9, seed=3) == (low, high)  # seeded: the same numbers every run


def test_mean_interval_drops_missing_and_handles_degenerate():
    x = [1.0, 2.5, None, 4.0, float("nan"), 3.0]
    assert mean_interval(x) == mean_interval([1.0, 2.5, 4.0, 3.0])
    assert mean_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)
    assert mean_interval([5.0]) == (5.0, 5.0)
    assert all(math.isnan(v) for v in mean_interval([]))


# -------------------------------------------------------------------------------------- paired differences


def test_shifted_by_one_is_distinguishable_and_matches_paired_bootstrap():
    rng = np.random.default_rng(0)
    a = rng.normal(10, 3, size=30)  # large spread between examples...
    b = a + 1 + rng.normal(0, 0.2, size=30)  # ...and a small, consistent paired shift
    d = paired_difference(a, b, seed=5)

    ref = sps.bootstrap(
        (a, b),
        lambda x, y, axis=-1: np.mean(y, axis=axis) - np.mean(x, axis=axis),
        paired=True,
        vectorized=True,
        method="BCa",
        n_resamples=9999,
        rng=np.random.default_rng(5),
    ).confidence_interval
    assert (d.ci_low, d.ci_high) == pytest.approx((ref.low, ref.high))
    assert d.diff == pytest.approx(float(np.mean(b - a)))
    assert d.ci_low < 1 < d.ci_high
    assert d.distinguishable and not d.holds_zero
    assert d.n == 30 and d.dropped == 0 and not d.binary and d.mcnemar_p is None


def test_identical_settings_are_noise():
    a = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1]
    d = paired_difference(a, list(a), name_a="Vanilla", name_b="Compile")
    assert d.diff == 0 and d.holds_zero and not d.distinguishable
    assert d.mcnemar_p == 1.0
    text = describe_difference("no_hashtags", d)
    assert "not distinguishable from noise" in text
    assert text.startswith("no_hashtags: Vanilla 60% -> Compile 60% (0 points")


def test_clearly_separated_rates_are_distinguishable():
    a = [0] * 17 + [1] * 3
    b = [1] * 18 + [0] * 2
    d = paired_difference(a, b, name_a="Vanilla", name_b="Infer w/ Assert")
    pairs = list(zip(a, b))
    table = [[pairs.count((1, 1)), pairs.count((1, 0))], [pairs.count((0, 1)), pairs.count((0, 0))]]
    assert d.mcnemar_p == pytest.approx(mcnemar(table, exact=True).pvalue)
    assert d.binary and d.distinguishable and d.ci_low > 0
    assert d.diff == pytest.approx((sum(b) - sum(a)) / 20)
    text = describe_difference("no_hashtags", d)
    expected = (
        f"no_hashtags: Vanilla {round(100 * sum(a) / 20)}% -> Infer w/ Assert {round(100 * sum(b) / 20)}% "
        f"(+{round(100 * d.diff)} points, 95% CI +{round(100 * d.ci_low)} to +{round(100 * d.ci_high)}, n=20)."
    )
    assert text == expected
    assert "noise" not in text


def test_few_flips_are_not_distinguishable_even_when_the_bootstrap_excludes_zero():
    # 5 examples that all flip: a bootstrap has no spread to resample (it gave the point [+100, +100]);
    # by coin flips p = 2 * 0.5**5, and the rate interval says the same by holding 0
    d = paired_difference([0] * 5, [1] * 5)
    assert d.method == "newcombe+exact" and d.ci_low < 0 < d.ci_high and d.ci_high == 1.0
    assert d.mcnemar_p == pytest.approx(sps.binomtest(5, 5, 0.5).pvalue)
    assert not d.distinguishable
    assert "not distinguishable from noise" in describe_difference("x", d)
    # with 8 such examples chance is ruled out (p = 2 * 0.5**8 < 0.05)
    assert paired_difference([0] * 8, [1] * 8).distinguishable
    # a continuous difference from two examples: the bootstrap interval excludes 0, the sign test does not agree
    two = paired_difference([1.0, 2.0], [1.5, 2.1])
    assert not two.holds_zero and not two.distinguishable
    assert two.sign_p == pytest.approx(sps.binomtest(2, 2, 0.5).pvalue)


def test_mean_up_while_most_examples_go_down_is_not_called_a_gain():
    a = [0.0] * 20
    b = [-0.1] * 12 + [3.0] * 8
    d = paired_difference(a, b)
    assert d.diff > 0 and not d.holds_zero  # the bootstrap alone would call it a gain
    assert not d.distinguishable
    assert (d.up, d.down) == (8, 12)
    assert "8 examples rose and 12 fell" in describe_difference("latency", d, unit="s")


def test_missing_pairs_are_dropped_and_counted():
    a = [1, 0, None, 1, float("nan"), 0, 1]
    b = [1, 1, 1, None, 0, 1, 1]
    d = paired_difference(a, b)
    assert d.n == 4 and d.dropped == 3
    assert d.mean_a == pytest.approx(np.mean([1, 0, 0, 1]))
    assert "3 pairs dropped" in describe_difference("x", d)
    none = paired_difference([None], [1])
    assert none.n == 0 and none.dropped == 1 and not none.distinguishable
    assert "n=0" in describe_difference("x", none)
    with pytest.raises(ValueError):
        paired_difference([1, 0], [1])


def test_describe_non_rate_metric_uses_its_unit():
    rng = np.random.default_rng(1)
    a = rng.uniform(1, 3, size=15)
    b = a + 2.0 + rng.normal(0, 0.05, size=15)
    d = paired_difference(a, b, name_a="Vanilla", name_b="C+Infer w/ Assert")
    text = describe_difference("seconds", d, unit="s")
    assert f"(+{d.diff:.2f} s, 95% CI +{d.ci_low:.2f} to +{d.ci_high:.2f}, n=15)." in text


# ---------------------------------------------------------------------------------------------- agreement


def test_kappa_on_a_known_table_matches_formula_and_statsmodels():
    # rows = label (T, F), columns = prediction (T, F)
    tp, fn, fp, tn = 12, 3, 5, 20
    labels = [True] * (tp + fn) + [False] * (fp + tn)
    preds = [True] * tp + [False] * fn + [True] * fp + [False] * tn
    n = len(labels)
    p_o = (tp + tn) / n
    p_e = ((tp + fn) * (tp + fp) + (fp + tn) * (fn + tn)) / n**2
    expected = (p_o - p_e) / (1 - p_e)
    assert cohens_kappa(labels, preds) == pytest.approx(expected)
    assert cohens_kappa(labels, preds) == pytest.approx(sm_kappa([[tp, fn], [fp, tn]]).kappa)

    agr = agreement(labels, preds)
    assert (agr.true_pos, agr.false_neg, agr.false_pos, agr.true_neg) == (tp, fn, fp, tn)
    assert agr.agreement.rate == pytest.approx(p_o)
    assert agr.yes_rate == pytest.approx((tp + fp) / n)
    assert agr.majority_rate == pytest.approx(max(tp + fn, fp + tn) / n)
    assert agr.kappa_low < agr.kappa < agr.kappa_high


def test_kappa_perfect_chance_and_degenerate():
    labels = [True, False] * 10
    assert cohens_kappa(labels, labels) == pytest.approx(1.0)
    assert cohens_kappa(labels, [True] * 20) == pytest.approx(0.0)  # always yes: agreement is all chance
    assert cohens_kappa(labels, [not x for x in labels]) == pytest.approx(-1.0)
    # both raters constant and equal: chance agreement is 1, kappa is 0/0
    assert math.isnan(cohens_kappa([True] * 10, [True] * 10))
    agr = agreement([True] * 10, [True] * 10)
    assert agr.agreement.rate == 1.0 and math.isnan(agr.kappa)
    with pytest.raises(ValueError):
        agreement([True], [True, False])
    with pytest.raises(TypeError):
        agreement(["yes"], [True])


# ------------------------------------------------------- paired rates: the interval and the test tell one story


def _all_paired_tables(n: int):
    """Every 2x2 table of n paired 0/1 outcomes, as (a, b) lists."""
    for both in range(n + 1):
        for a_only in range(n + 1 - both):
            for b_only in range(n + 1 - both - a_only):
                neither = n - both - a_only - b_only
                a = [1] * both + [1] * a_only + [0] * b_only + [0] * neither
                b = [1] * both + [0] * a_only + [1] * b_only + [0] * neither
                yield a, b


@pytest.mark.parametrize("n", [2, 4, 5, 8, 12, 20])
def test_paired_rate_interval_excludes_zero_exactly_when_the_exact_test_rules_out_chance(n):
    # The report calls a difference noise when its interval holds 0; the sentence also quotes exact McNemar.
    # Both must say the same thing for every table (a bootstrap interval excluded 0 where p was 0.25).
    for a, b in _all_paired_tables(n):
        d = paired_difference(a, b)
        significant = d.mcnemar_p < 0.05
        assert (not d.holds_zero) == d.distinguishable, (a, b, d)
        if not d.holds_zero:
            assert significant, (a, b, d)


def test_paired_rate_interval_contains_the_exact_conditional_interval():
    # Clopper-Pearson on the examples that changed, scaled to the difference: it excludes 0 iff exact McNemar does
    for a, b in _all_paired_tables(12):
        d = paired_difference(a, b)
        up, down = d.up, d.down
        if up + down == 0:
            assert d.ci_low < 0 < d.ci_high  # nothing changed: 0 is inside, with the spread 12 examples allow
            continue
        lo, hi = proportion_confint(up, up + down, alpha=0.05, method="beta")
        scale = (up + down) / d.n
        assert d.ci_low <= scale * (2 * lo - 1) + 1e-9 and d.ci_high >= scale * (2 * hi - 1) - 1e-9


@pytest.mark.parametrize(("n", "p_up", "p_down"), [(40, 0.25, 0.05), (40, 0.05, 0.0), (20, 0.3, 0.05), (10, 0.3, 0.1)])
def test_paired_rate_interval_covers_the_true_difference_about_95_percent_of_the_time(n, p_up, p_down):
    # The exact conditional interval alone covers 61% at (40, 0.05, 0.0): it treats the number of changed examples as
    # known. Seeded simulation: 400 draws, coverage must reach 0.93 (a 95% interval at 400 draws: about +-2 points).
    rng = np.random.default_rng(11)
    truth = p_up - p_down
    covered = 0
    draws = 400
    for _ in range(draws):
        up, down, both, neither = rng.multinomial(n, [p_up, p_down, 0.3, 1 - p_up - p_down - 0.3])
        a = [0] * up + [1] * down + [1] * both + [0] * neither
        b = [1] * up + [0] * down + [1] * both + [0] * neither
        d = paired_difference(a, b)
        covered += d.ci_low - 1e-12 <= truth <= d.ci_high + 1e-12
    assert covered / draws >= 0.93
