"""Intervals and paired comparisons for the numbers a report shows (pure Python: no IPython, no DSPy).

Why this module exists: a rate from 20 examples is a guess, and a difference between two settings run on
the same 20 examples is a smaller guess. Every rate gets a 95% Wilson interval, every comparison of two
settings is paired by example with an interval on the difference, and a difference whose interval holds 0
is called noise, in words. The sentences are generated from the numbers, never typed.

How each interval is computed:

* a rate (successes of n): Wilson score interval, ``statsmodels.stats.proportion.proportion_confint``;
* the mean of a non-0/1 metric: ``scipy.stats.bootstrap`` (BCa, falling back to percentile when BCa is
  undefined), seeded so the same data always give the same interval;
* a paired difference of two rates (0/1 outcomes on the same examples): the envelope of Newcombe's
  square-and-add interval (method 10, built on ``statsmodels``' Wilson intervals) and the exact conditional
  interval (``statsmodels``' Clopper-Pearson on the examples that changed). The second excludes 0 exactly
  when the exact McNemar test gives p < 0.05, so the interval a table shows and the test its sentence
  quotes never disagree; the first keeps the coverage the conditional interval lacks (it treats the
  number of changed examples as known: 61% coverage at n=40 in a seeded simulation);
* a paired difference of another metric: ``scipy.stats.bootstrap(..., paired=True)`` with the same
  seeding, and an exact sign test over the examples that changed must agree before the difference is
  called distinguishable (see :func:`paired_difference`);
* Cohen's kappa: ``statsmodels.stats.inter_rater.cohens_kappa`` on the 2x2 table, with its asymptotic
  interval.
"""

from __future__ import annotations

import functools
import inspect
import math
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _sps
from statsmodels.stats.contingency_tables import mcnemar as _mcnemar
from statsmodels.stats.inter_rater import cohens_kappa as _sm_cohens_kappa
from statsmodels.stats.proportion import proportion_confint

from . import defaults

__all__ = [
    "Agreement",
    "PairedDiff",
    "Rate",
    "agreement",
    "cohens_kappa",
    "describe_difference",
    "mean_interval",
    "paired_difference",
    "proportion_interval",
    "rate_of",
]

NAN = float("nan")
N_RESAMPLES = 9999


def _check_confidence(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}")
    return float(confidence)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    try:
        return math.isnan(float(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"expected a number, True/False or None, got {type(value).__name__} {value!r:.40}") from exc


# ---------------------------------------------------------------------------------------------------- rates


def proportion_interval(successes: int, n: int, confidence: float = defaults.CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of `successes` out of `n`; (nan, nan) when n == 0.

    Wilson rather than the normal approximation because pass rates sit near 0% and 100% at small n, where
    the normal interval leaves [0, 1] or collapses to a point.
    """
    confidence = _check_confidence(confidence)
    if isinstance(successes, bool) or isinstance(n, bool):
        raise TypeError("successes and n must be counts, not True/False")
    if n < 0 or successes < 0 or successes > n:
        raise ValueError(f"need 0 <= successes <= n, got successes={successes!r}, n={n!r}")
    if n == 0:
        return NAN, NAN
    low, high = proportion_confint(int(successes), int(n), alpha=1 - confidence, method="wilson")
    return float(low), float(high)


@dataclass(frozen=True)
class Rate:
    """A share with its sample size and Wilson interval: the only form in which a report shows a rate."""

    successes: int
    n: int
    rate: float  # 0..1, nan when n == 0
    ci_low: float
    ci_high: float
    confidence: float = defaults.CONFIDENCE

    def holds(self, value: float) -> bool:
        """Whether `value` lies inside the interval (False when the interval is undefined)."""
        return self.ci_low <= value <= self.ci_high

    def __str__(self) -> str:
        if self.n == 0:
            return "n/a (n=0)"
        pct = round(self.confidence * 100)
        return f"{_pct(self.rate)} ({pct}% CI {_pct(self.ci_low, sign=False)}-{_pct(self.ci_high)}, n={self.n})"


def rate_of(successes: int, n: int, confidence: float = defaults.CONFIDENCE) -> Rate:
    """`successes` of `n` as a :class:`Rate` with its Wilson interval."""
    low, high = proportion_interval(successes, n, confidence)
    return Rate(int(successes), int(n), successes / n if n else NAN, low, high, confidence)


# ---------------------------------------------------------------------------------------------- bootstrap


@functools.cache
def _rng_keyword() -> str:
    """scipy >= 1.15 takes `rng`; older releases (down to the 1.11 we allow) take `random_state`."""
    return "rng" if "rng" in inspect.signature(_sps.bootstrap).parameters else "random_state"


def _bootstrap(data: tuple[np.ndarray, ...], statistic: Any, *, paired: bool, confidence: float, seed: int):
    """BCa bootstrap interval, or percentile when BCa is undefined (e.g. a jackknife with no spread).

    Returns (low, high, method). Warnings from scipy about degenerate resamples are not shown to a
    notebook user: the fallback is the answer to them.
    """
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                res = _sps.bootstrap(
                    data,
                    statistic,
                    n_resamples=N_RESAMPLES,
                    vectorized=True,
                    paired=paired,
                    confidence_level=confidence,
                    method=method,
                    **{_rng_keyword(): np.random.default_rng(seed)},
                )
            except (ValueError, FloatingPointError):
                continue
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high, method
    return NAN, NAN, "none"


def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def mean_interval(
    values: Iterable[float | None], confidence: float = defaults.CONFIDENCE, seed: int = defaults.STATS_SEED,
) -> tuple[float, float]:
    """Bootstrap interval of the mean of a metric that is not 0/1 (for 0/1 use :func:`proportion_interval`).

    Missing values (None, nan) are dropped. Degenerate cases, where resampling has nothing to vary:
    no values -> (nan, nan); one value, or all values equal -> (mean, mean). A point "interval" there
    means "no spread was observed", not certainty; the n shown next to it says how much that is worth.
    """
    confidence = _check_confidence(confidence)
    x = np.array([float(v) for v in values if not _is_missing(v)], dtype=float)
    if x.size == 0:
        return NAN, NAN
    mean = float(x.mean())
    if x.size < 2 or np.all(x == x[0]):
        return mean, mean
    low, high, _ = _bootstrap((x,), _mean, paired=False, confidence=confidence, seed=seed)
    return low, high


# ------------------------------------------------------------------------------------------ paired difference


@dataclass(frozen=True)
class PairedDiff:
    """b - a on the same examples: the mean difference, its interval, and whether it is told apart from 0."""

    mean_a: float
    mean_b: float
    diff: float  # mean of (b - a) over the kept pairs
    ci_low: float
    ci_high: float
    n: int  # pairs kept
    up: int  # examples where b > a
    down: int  # examples where b < a
    dropped: int  # pairs with a missing value on either side
    distinguishable: bool
    binary: bool  # every kept value is 0/1: rates, shown in percent and percentage points
    sign_p: float  # exact two-sided sign test over the changed examples (= McNemar on 0/1 data)
    mcnemar_p: float | None = None  # exact McNemar p-value (statsmodels), for 0/1 data only
    method: str = "bootstrap"  # "BCa", "percentile", "degenerate" or "none"
    confidence: float = defaults.CONFIDENCE
    name_a: str = "A"
    name_b: str = "B"

    @property
    def holds_zero(self) -> bool:
        """Whether the interval contains 0 (True when there is no interval)."""
        return not (self.ci_low > 0 or self.ci_high < 0)


def _sign_test(up: int, down: int) -> float:
    """Two-sided exact sign-test p over the examples that changed (`up` rose, `down` fell); 1.0 if none did.

    On 0/1 data the changed examples are the discordant pairs, and this is the exact McNemar test.
    """
    if up + down == 0:
        return 1.0
    return min(1.0, float(_sps.binomtest(up, up + down, 0.5).pvalue))


def _majority_agrees(mean_d: float, up: int, down: int) -> bool:
    """Whether most examples that changed moved the way the mean moved."""
    return (mean_d > 0 and up > down) or (mean_d < 0 and down > up)


def paired_difference(
    a: Sequence[float | None],
    b: Sequence[float | None],
    confidence: float = defaults.CONFIDENCE,
    seed: int = defaults.STATS_SEED,
    *,
    name_a: str = "A",
    name_b: str = "B",
) -> PairedDiff:
    """Compare two settings evaluated on the same examples, in the same order: b - a, paired by example.

    Pairing removes the example-to-example spread that both settings share, so it tells apart differences
    that two independent intervals would not. Pairs with None/nan on either side are dropped and counted.

    On 0/1 data (rates) the interval is :func:`_paired_rate_interval` (`method` "newcombe+exact"): it
    excludes 0 exactly when the exact McNemar test rules out chance, so the table and the sentence agree.
    On other metrics it is a paired bootstrap of mean(b) - mean(a); when all differences are equal there is
    nothing to resample: the interval is the point (d, d) and `method` is "degenerate".

    `distinguishable` (not noise at this n) needs the interval to exclude 0 *and* an exact test to agree:
    the sign test over the examples that changed (exact McNemar on 0/1 data) must give p < 1 - confidence,
    with most changed examples moving the way the mean moved. Why: a bootstrap interval is too narrow at
    small n; two examples with any same-sign differences give one that excludes 0. On rates the interval
    already carries the test. Identical a and b give d = 0: noise.
    """
    confidence = _check_confidence(confidence)
    if len(a) != len(b):
        raise ValueError(f"a and b must score the same examples: got {len(a)} and {len(b)} values")
    kept = [(float(x), float(y)) for x, y in zip(a, b) if not (_is_missing(x) or _is_missing(y))]
    dropped = len(a) - len(kept)
    common = dict(confidence=confidence, name_a=name_a, name_b=name_b, dropped=dropped)
    if not kept:
        return PairedDiff(
            NAN, NAN, NAN, NAN, NAN, 0, 0, 0, distinguishable=False, binary=False, sign_p=NAN, method="none", **common
        )
    xa = np.array([p[0] for p in kept])
    xb = np.array([p[1] for p in kept])
    d = xb - xa
    binary = bool(np.isin(xa, (0.0, 1.0)).all() and np.isin(xb, (0.0, 1.0)).all())
    mean_d = float(d.mean())
    up, down = int(np.sum(d > 0)), int(np.sum(d < 0))
    sign_p = _sign_test(up, down)
    mcnemar_p = _mcnemar_p(xa, xb) if binary else None

    if binary:
        low, high = _paired_rate_interval(xa, xb, confidence)
        method = "newcombe+exact"
    elif np.all(d == d[0]):
        low = high = mean_d
        method = "degenerate"
    else:

        def diff_of_means(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.mean(y, axis=axis) - np.mean(x, axis=axis)

        low, high, method = _bootstrap((xa, xb), diff_of_means, paired=True, confidence=confidence, seed=seed)
    excludes_zero = low > 0 or high < 0
    exact_p = mcnemar_p if mcnemar_p is not None else sign_p
    distinguishable = bool(excludes_zero and exact_p < 1 - confidence and _majority_agrees(mean_d, up, down))
    return PairedDiff(
        mean_a=float(xa.mean()),
        mean_b=float(xb.mean()),
        diff=mean_d,
        ci_low=low,
        ci_high=high,
        n=len(kept),
        up=up,
        down=down,
        distinguishable=distinguishable,
        binary=binary,
        sign_p=sign_p,
        mcnemar_p=mcnemar_p,
        method=method,
        **common,
    )


def _paired_rate_interval(a: np.ndarray, b: np.ndarray, confidence: float) -> tuple[float, float]:
    """Interval of mean(b) - mean(a) for paired 0/1 outcomes: the envelope of two intervals.

    Newcombe's square-and-add (1998, method 10) combines the two rates' Wilson intervals with a correction
    for their correlation; it covers about 95% down to n=4 but can exclude 0 where the exact McNemar test
    does not (3 of 4 examples rising: p = 0.25). The exact conditional interval (Clopper-Pearson on the share
    of changed examples that rose, scaled by how many changed) excludes 0 exactly when exact McNemar gives
    p < 1 - confidence. Taking the wider end of each makes "the interval holds 0" and "the test cannot rule
    out chance" one statement, at the price of a slightly conservative interval.
    """
    alpha = 1 - confidence
    n = len(a)
    both = int(np.sum((a == 1) & (b == 1)))
    a_only = int(np.sum((a == 1) & (b == 0)))
    b_only = int(np.sum((a == 0) & (b == 1)))
    neither = n - both - a_only - b_only
    rate_a, rate_b = (both + a_only) / n, (both + b_only) / n
    low_a, high_a = proportion_confint(both + a_only, n, alpha=alpha, method="wilson")
    low_b, high_b = proportion_confint(both + b_only, n, alpha=alpha, method="wilson")
    margins = (both + a_only) * (b_only + neither) * (both + b_only) * (a_only + neither)
    cross = both * neither - a_only * b_only
    corrected = cross - n / 2 if cross > n / 2 else (cross if cross < 0 else 0.0)
    phi = corrected / math.sqrt(margins) if margins > 0 else 0.0
    diff = rate_b - rate_a
    below = (rate_b - low_b) ** 2 - 2 * phi * (rate_b - low_b) * (high_a - rate_a) + (high_a - rate_a) ** 2
    above = (high_b - rate_b) ** 2 - 2 * phi * (high_b - rate_b) * (rate_a - low_a) + (rate_a - low_a) ** 2
    low, high = diff - math.sqrt(max(below, 0.0)), diff + math.sqrt(max(above, 0.0))
    changed = a_only + b_only
    if changed:
        share_low, share_high = proportion_confint(b_only, changed, alpha=alpha, method="beta")
        scale = changed / n
        low, high = min(low, scale * (2 * share_low - 1)), max(high, scale * (2 * share_high - 1))
    return max(float(low), -1.0), min(float(high), 1.0)


def _mcnemar_p(a: np.ndarray, b: np.ndarray) -> float:
    """Exact McNemar p-value on paired 0/1 outcomes; 1.0 when no example changed."""
    a_only = int(np.sum((a == 1) & (b == 0)))
    b_only = int(np.sum((a == 0) & (b == 1)))
    if a_only + b_only == 0:
        return 1.0
    table = [[int(np.sum((a == 1) & (b == 1))), a_only], [b_only, int(np.sum((a == 0) & (b == 0)))]]
    return float(_mcnemar(table, exact=True).pvalue)


# ------------------------------------------------------------------------------------------------ sentences


def _round0(x: float, digits: int) -> float:
    r = round(x, digits)
    return 0.0 if r == 0 else r  # never "-0"


def _pct(x: float, *, sign: bool = True) -> str:
    """0.4 -> '40%' (sign=False drops the % for the low end of a range)."""
    if not math.isfinite(x):
        return "n/a"
    return f"{_round0(x * 100, 0):.0f}" + ("%" if sign else "")


def _signed(x: float, digits: int) -> str:
    if not math.isfinite(x):
        return "n/a"
    r = _round0(x, digits)
    return f"{r:.{digits}f}" if r == 0 else f"{r:+.{digits}f}"


def _count(k: int, noun: str) -> str:
    return f"{k} {noun}" + ("" if k == 1 else "s")


def _plain(x: float) -> str:
    return "n/a" if not math.isfinite(x) else f"{_round0(x, 3):.3g}"


def describe_difference(label: str, diff: PairedDiff, unit: str = "points") -> str:
    """One sentence for a comparison, generated from its numbers, e.g.

    ``no_hashtags: Vanilla 40% -> Infer w/ Assert 85% (+45 points, 95% CI +20 to +70, n=20)``

    0/1 data are shown in percent and the difference in percentage points (`unit`); other metrics in their
    own values and `unit`. When the difference is not distinguishable the sentence says so in words.
    """
    head = f"{label}: " if label else ""
    if diff.n == 0:
        tail = f"; {_count(diff.dropped, 'pair')} had a missing value" if diff.dropped else ""
        return f"{head}{diff.name_a} vs {diff.name_b}: no example has a value in both settings (n=0){tail}."
    pct = round(diff.confidence * 100)
    if diff.binary:
        a, b = _pct(diff.mean_a), _pct(diff.mean_b)
        d, lo, hi = (_signed(v * 100, 0) for v in (diff.diff, diff.ci_low, diff.ci_high))
    else:
        a, b = _plain(diff.mean_a), _plain(diff.mean_b)
        d, lo, hi = (_signed(v, 2) for v in (diff.diff, diff.ci_low, diff.ci_high))
    unit_s = f" {unit}" if unit else ""
    ci = "no spread in the differences" if diff.method == "degenerate" else f"{pct}% CI {lo} to {hi}"
    text = f"{head}{diff.name_a} {a} -> {diff.name_b} {b} ({d}{unit_s}, {ci}, n={diff.n}"
    if diff.dropped:
        text += f", {_count(diff.dropped, 'pair')} dropped for a missing value"
    text += ")"
    if diff.distinguishable:
        return text + "."
    reason = ""
    if not diff.holds_zero:
        test = "exact McNemar" if diff.mcnemar_p is not None else "exact sign test"
        p = diff.mcnemar_p if diff.mcnemar_p is not None else diff.sign_p
        if not _majority_agrees(diff.diff, diff.up, diff.down):
            reason = f" (the mean moved one way, but {diff.up} examples rose and {diff.down} fell)"
        else:
            reason = f" ({test} p = {p:.2g}: too few examples changed to rule out chance)"
    return f"{text}: not distinguishable from noise at this n{reason}."


# ---------------------------------------------------------------------------------------------- agreement


def _as_bools(values: Sequence[Any], what: str) -> list[bool]:
    out = []
    for v in values:
        if isinstance(v, (bool, np.bool_)) or v in (0, 1):
            out.append(bool(v))
        else:
            raise TypeError(f"{what} must be True/False (or 0/1), got {type(v).__name__} {v!r:.40}")
    return out


def _table(labels: Sequence[Any], predictions: Sequence[Any]) -> np.ndarray:
    """2x2 counts: rows = label (True, False), columns = prediction (True, False)."""
    if len(labels) != len(predictions):
        raise ValueError(f"labels and predictions differ in length: {len(labels)} vs {len(predictions)}")
    y, p = _as_bools(labels, "labels"), _as_bools(predictions, "predictions")
    t = np.zeros((2, 2), dtype=int)
    for yi, pi in zip(y, p):
        t[0 if yi else 1, 0 if pi else 1] += 1
    return t


def _kappa_of_table(table: np.ndarray) -> tuple[float, float, float]:
    """(kappa, low, high) via statsmodels; nan when chance agreement is 1 (both raters constant, same class).

    There kappa is 0/0: nothing distinguishes agreement from chance, so no number is honest.
    """
    n = table.sum()
    if n == 0:
        return NAN, NAN, NAN
    p_e = float((table.sum(axis=1) * table.sum(axis=0)).sum()) / n**2
    if p_e >= 1:
        return NAN, NAN, NAN
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the variance is 0/0 on some tables; kappa itself is defined
        res = _sm_cohens_kappa(table)
    low, high = float(res.kappa_low), float(res.kappa_upp)
    if not (math.isfinite(low) and math.isfinite(high)):
        low = high = NAN
    return float(res.kappa), low, high


def cohens_kappa(labels: Sequence[Any], predictions: Sequence[Any]) -> float:
    """Cohen's kappa of two yes/no raters: agreement beyond what their yes-rates give by chance.

    nan when chance agreement is already 1 (both answer the same single class throughout).
    """
    return _kappa_of_table(_table(labels, predictions))[0]


@dataclass(frozen=True)
class Agreement:
    """How a yes/no instrument (an LM judge, a proxy) agrees with known labels."""

    n: int
    agreement: Rate
    kappa: float
    kappa_low: float  # statsmodels' asymptotic 95% interval on kappa; nan when undefined
    kappa_high: float
    yes_rate: float  # share of predictions that are True
    label_yes_rate: float  # share of labels that are True
    true_pos: int
    false_pos: int
    false_neg: int
    true_neg: int

    @property
    def majority_rate(self) -> float:
        """Agreement of a constant answer equal to the more common label: the floor to beat."""
        if self.n == 0:
            return NAN
        return max(self.label_yes_rate, 1 - self.label_yes_rate)


def agreement(labels: Sequence[Any], predictions: Sequence[Any], confidence: float = defaults.CONFIDENCE) -> Agreement:
    """Agreement rate (Wilson interval), Cohen's kappa and the confusion counts of predictions vs labels."""
    t = _table(labels, predictions)
    n = int(t.sum())
    tp, fn, fp, tn = int(t[0, 0]), int(t[0, 1]), int(t[1, 0]), int(t[1, 1])
    kappa, k_low, k_high = _kappa_of_table(t)
    return Agreement(
        n=n,
        agreement=rate_of(tp + tn, n, confidence),
        kappa=kappa,
        kappa_low=k_low,
        kappa_high=k_high,
        yes_rate=(tp + fp) / n if n else NAN,
        label_yes_rate=(tp + fn) / n if n else NAN,
        true_pos=tp,
        false_pos=fp,
        false_neg=fn,
        true_neg=tn,
    )
