"""DeLong's test (DeLong et al. 1988; Sun & Xu 2014) and the paired bootstrap of ssl_bench.report.stats.

Reference values: pROC's own test suite (xrobin/pROC, tests/testthat/test-roc.test.R and
test-var.R) on its ``aSAH`` data (Turck et al. 2010, 113 patients: 72 good and 41 poor outcomes):
``roc.test(r.wfns, r.s100b)`` gives Z = 2.20898359144091, p = 0.0271757822291882 and the
difference's CI [0.0104061769564846, 0.174214419249478]; ``var(r.wfns)`` = 0.00146991470882363.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from ssl_bench.report.stats import (
    auc_confidence_interval,
    auc_variance,
    delong_compare,
    delong_covariance,
    delong_test,
    paired_bootstrap_accuracy,
)

# aSAH (pROC): outcome (G = Good, P = Poor), then wfns (1-5), s100b, ndka for the 113 patients
ASAH_OUTCOME = (
    "GGGGPPGPGGPGPPGGPGPPPGPGGGGGGGGGPGGPPGPPGGGGGGGGGPPGGGPGGGPGPGGPPPGPPGPPPPGGGPPGPGGGGGGPGGGG"
    "GGGGGGGGPPPPPPGGGPGGG"
)
ASAH_WFNS = (
    "1 1 1 1 3 2 5 4 1 2 5 2 5 5 1 2 5 2 2 5 2 1 1 1 1 2 1 2 1 1 3 4 2 1 4 5 4 1 4 2 5 5 1 1 2 4 1 1"
    " 2 5 5 2 1 2 5 1 2 2 2 1 5 1 1 2 5 2 1 4 5 2 4 4 1 4 1 2 1 4 2 1 2 3 2 4 2 1 4 5 1 1 5 4 2 2 1 1"
    " 1 3 1 2 5 2 2 5 5 5 2 4 4 5 1 1 1"
)
ASAH_S100B = (
    ".13 .14 .1 .04 .13 .1 .47 .16 .18 .1 .12 .1 .44 .71 .04 .08 .49 .04 .07 .33 .09 .09 .07 .11 .07"
    " .17 .07 .11 .13 .19 .05 .16 .41 .14 .34 .35 .48 .09 .96 .25 .5 .46 .16 .07 .43 .45 .11 .08 .09"
    " .86 .52 .08 .06 .13 2.07 .1 .14 .15 .07 .06 .77 .05 .09 .3 .03 .09 .04 .23 .7 .09 .27 .71 .08"
    " .26 .08 .16 .09 .13 .1 .08 .11 .33 .11 .28 .07 .1 .32 .22 .07 .05 .24 .38 .1 .15 .08 .14 .1 .07"
    " .04 .19 .56 .14 .58 .32 .82 .74 .15 .47 .17 .44 .15 .5 .48"
)
ASAH_NDKA = (
    "3.01 8.54 8.09 10.42 17.4 12.75 6 13.2 15.54 6.01 15.96 17.86 5.18 8.9 13.41 20.75 11.6 16.11"
    " 32.37 54.82 32.41 49.94 40.34 9.47 6.29 12.53 6.54 6.3 80.3 12.8 9.8 9.81 9.85 18.21 5.03 14.04"
    " 21.93 8.02 7.42 8.38 6.59 9.63 13.12 7.96 14.34 41.43 7.63 7.06 12.59 13.56 3.87 9.44 7.66 12.98"
    " 419.19 27.19 22.27 9.95 21.22 11.73 10.4 58.83 6.39 11.09 12.22 13.67 17.21 22.63 12.9 9.7 21.57"
    " 8.23 72.57 15.54 10.51 10.6 14.57 5.19 9.63 4.61 21.48 17.3 12.71 9.44 11.07 19.46 10.83 5.37"
    " 11.97 7.75 9.83 10.55 28.49 8.53 12.57 12.9 46.83 11.68 12.67 9.01 9.57 34.06 11.72 14.26 47.61"
    " 11.67 24.58 10.33 13.87 15.89 22.43 6.79 13.45"
)


@pytest.fixture(scope="module")
def asah():
    y = np.array([c == "P" for c in ASAH_OUTCOME], dtype=int)
    cols = [np.array(s.split(), dtype=float) for s in (ASAH_WFNS, ASAH_S100B, ASAH_NDKA)]
    assert len(y) == 113 and y.sum() == 41 and all(len(c) == 113 for c in cols)
    return y, *cols


def test_asah_matches_proc_roc_test(asah):
    y, wfns, s100b, ndka = asah
    r = delong_compare(y, wfns, s100b)
    assert r.auc_a == pytest.approx(0.823678861788618, rel=1e-12)
    assert r.z == pytest.approx(2.20898359144091, rel=1e-9)
    assert r.p_value == pytest.approx(0.0271757822291882, rel=1e-9)
    assert (r.ci_low, r.ci_high) == pytest.approx((0.0104061769564846, 0.174214419249478), rel=1e-9)
    assert delong_test(y, wfns, s100b)[2] == pytest.approx(0.0271757822291882, rel=1e-9)
    # the other two pairs of pROC's suite, and the symmetry of a two-sided test
    assert delong_compare(y, wfns, ndka).z == pytest.approx(2.79777591868904, rel=1e-9)
    assert delong_compare(y, ndka, s100b).p_value == pytest.approx(0.164295175223054, rel=1e-9)
    rev = delong_compare(y, s100b, wfns)
    assert rev.z == pytest.approx(-r.z) and rev.p_value == pytest.approx(r.p_value)


def test_asah_variances_and_ci_match_proc(asah):
    y, wfns, s100b, ndka = asah
    assert auc_variance(y, wfns)[1] == pytest.approx(0.00146991470882363, rel=1e-9)
    assert auc_variance(y, ndka)[1] == pytest.approx(0.0031908105493913, rel=1e-9)
    assert auc_variance(y, s100b)[1] == pytest.approx(0.00266868245717244, rel=1e-9)
    # pROC's ci.auc(method="delong") is the plain Wald interval
    _, lo, hi = auc_confidence_interval(y, ndka, method="plain")
    assert (lo, hi) == pytest.approx((0.501244999271703, 0.722670989888189), rel=1e-9)
    auc, lo, hi = auc_confidence_interval(y, s100b)  # logit: inside (0, 1), asymmetric
    assert lo < auc < hi and (hi - auc) < (auc - lo)


def test_identical_scores_give_p_one(asah):
    y, wfns, *_ = asah
    auc_a, auc_b, p = delong_test(y, wfns, wfns)
    assert auc_a == auc_b and p == 1.0
    assert delong_compare(y, wfns, wfns.copy()).z == 0.0
    # a monotone transform leaves every placement unchanged: still 0/0, still p = 1
    assert delong_test(y, wfns, np.exp(wfns))[2] == 1.0


def test_fast_placements_match_brute_force_with_ties():
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 60)
    a = np.round(rng.normal(size=60) + y, 1)  # ties
    b = np.round(0.5 * a + rng.normal(size=60), 1)
    pos, neg = y == 1, y == 0

    def psi(x, z):
        return (x > z) + 0.5 * (x == z)

    v10 = [np.array([psi(x, s[neg]).mean() for x in s[pos]]) for s in (a, b)]
    v01 = [np.array([psi(s[pos], z).mean() for z in s[neg]]) for s in (a, b)]
    expected = np.cov(v10) / pos.sum() + np.cov(v01) / neg.sum()
    aucs, cov = delong_covariance(y, a, b)
    assert aucs == pytest.approx([roc_auc_score(y, a), roc_auc_score(y, b)], rel=1e-12)
    assert cov == pytest.approx(expected, rel=1e-10)


def _bootstrap_auc_diffs(y, a, b, n, rng):
    """Paired bootstrap of AUC(a) - AUC(b), stratified by class (pROC's default), vectorised."""
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    idx = np.hstack([rng.choice(pos, (n, pos.size)), rng.choice(neg, (n, neg.size))])

    def aucs(s):
        ranks = stats.rankdata(s[idx], axis=1)
        m = pos.size
        return (ranks[:, :m].sum(axis=1) - m * (m + 1) / 2) / (m * neg.size)

    return aucs(a) - aucs(b)


def test_delong_agrees_with_bootstrap_on_correlated_scores():
    rng = np.random.default_rng(0)
    n = 400
    y = (rng.random(n) < 0.35).astype(int)
    shared = rng.normal(size=n)  # the two classifiers' scores correlate through `shared`
    a = 1.0 * y + 0.8 * shared + rng.normal(size=n)
    b = 0.7 * y + 0.8 * shared + rng.normal(size=n)
    r = delong_compare(y, a, b)
    diffs = _bootstrap_auc_diffs(y, a, b, 3000, rng)
    assert r.se == pytest.approx(diffs.std(ddof=1), rel=0.10)
    p_boot = 2 * stats.norm.sf(abs(r.diff) / diffs.std(ddof=1))
    assert abs(r.p_value - p_boot) < 0.02
    # and one AUC's variance against the bootstrap of that AUC alone
    _, var = auc_variance(y, a)
    one = _bootstrap_auc_diffs(y, a, np.zeros(n), 3000, rng) - 0.5
    assert math.sqrt(var) == pytest.approx(one.std(ddof=1), rel=0.10)


def test_logit_ci_covers_like_plain_and_stays_in_unit_interval():
    y = np.array([0] * 30 + [1] * 30)
    s = np.r_[np.linspace(0, 0.6, 30), np.linspace(0.4, 1.0, 30)]  # AUC near 1
    auc, lo, hi = auc_confidence_interval(y, s)
    assert 0 < lo < auc < hi < 1
    perfect = auc_confidence_interval(y, np.r_[np.zeros(30), np.ones(30)])
    assert perfect == (1.0, 1.0, 1.0)


def test_input_validation():
    with pytest.raises(ValueError, match="single class"):
        delong_test([1, 1, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="0/1"):
        delong_test([0, 2, 1], [0.1, 0.2, 0.3], [0.3, 0.2, 0.1])
    with pytest.raises(ValueError, match="3 labels"):
        delong_test([0, 1, 1], [0.1, 0.2], [0.3, 0.2, 0.1])


def test_paired_bootstrap_accuracy():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    same = y.copy()
    same[:60] = 1 - same[:60]  # 80% accurate
    assert paired_bootstrap_accuracy(y, same, same) == 1.0
    better = y.copy()
    better[:15] = 1 - better[:15]  # 95% accurate, errors nested in `same`'s: b - c = 45
    p = paired_bootstrap_accuracy(y, better, same, n=2000, seed=0)
    assert p < 0.001
    # close to McNemar's normal approximation when the difference is moderate
    other = y.copy()
    flips = rng.choice(300, 52, replace=False)
    other[flips] = 1 - other[flips]
    p = paired_bootstrap_accuracy(y, other, same, n=4000, seed=3)
    ca, cb = other == y, same == y
    b, c = np.sum(ca & ~cb), np.sum(~ca & cb)
    p_mcnemar = 2 * stats.norm.sf(abs(b - c) / math.sqrt(b + c))
    assert abs(p - p_mcnemar) < 0.05
    # deterministic given the seed, symmetric in a and b
    again = paired_bootstrap_accuracy(y, other, same, seed=5)
    assert paired_bootstrap_accuracy(y, other, same, seed=5) == again
    assert paired_bootstrap_accuracy(y, same, other, n=4000, seed=3) == pytest.approx(p, abs=0.03)
