"""Significance tests for the leaderboard: DeLong's test for correlated ROC AUCs and a paired
bootstrap for accuracy.

- DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas under two or more correlated
  receiver operating characteristic curves: a nonparametric approach", Biometrics 44:837-845.
  The AUC is the Mann-Whitney statistic; its variance (and the covariance of two AUCs measured on
  the same cases) comes from the structural components ("placements") of each case.
- Sun & Xu (2014), "Fast implementation of DeLong's algorithm for comparing the areas under
  correlated receiver operating characteristic curves", IEEE Signal Processing Letters
  21(11):1389-1393. The placements are computed from midranks in O(N log N) instead of O(m n).

Checked against pROC (Robin et al. 2011) on its ``aSAH`` data (``tests/test_stats.py``): the
variances of ``var(roc)`` and the statistic and p-value of ``roc.test(r.wfns, r.s100b)``
(Z = 2.20898, p = 0.0271758) agree to 1e-9.

Conventions: label 1 = positive (malignant); a higher score means more likely positive; tied
scores count one half. Two-sided tests throughout.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "DeLongComparison",
    "auc_confidence_interval",
    "auc_variance",
    "delong_compare",
    "delong_covariance",
    "delong_test",
    "paired_bootstrap_accuracy",
]


def _check(labels, *score_vectors) -> tuple[np.ndarray, np.ndarray]:
    """Validated labels (bool, positive = True) and a (k, N) float matrix of scores."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got values {sorted(values)[:5]}")
    y = y.astype(bool)
    if y.all() or not y.any():
        raise ValueError("the ROC AUC needs both classes: labels hold a single class")
    vectors = [np.asarray(s, dtype=float).ravel() for s in score_vectors]
    for v in vectors:
        if v.size != y.size:
            raise ValueError(f"scores hold {v.size} values for {y.size} labels")
    scores = np.vstack(vectors)
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return y, scores


def _placements(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AUCs (k,), positive placements V10 (k, m) and negative placements V01 (k, n).

    Sun & Xu (2014), Algorithm 1: with midranks Tz over all cases, Tx within positives and Ty
    within negatives, V10 = (Tz[pos] - Tx) / n is the share of negatives scored below each
    positive, V01 = 1 - (Tz[neg] - Ty) / m the share of positives scored above each negative.
    """
    pos, neg = scores[:, y], scores[:, ~y]
    m, n = pos.shape[1], neg.shape[1]
    tz = stats.rankdata(np.hstack([pos, neg]), axis=1)  # midranks: ties get their mean rank
    tx = stats.rankdata(pos, axis=1)
    ty = stats.rankdata(neg, axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return v10.mean(axis=1), v10, v01


def delong_covariance(labels, *score_vectors) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their DeLong covariance matrix for score vectors measured on the same cases.

    ``S = S10 / m + S01 / n`` (DeLong et al. 1988, eq. 2), with S10 and S01 the sample covariance
    matrices (ddof=1) of the positive and negative placements. Returns ``(aucs (k,), S (k, k))``.
    """
    y, scores = _check(labels, *score_vectors)
    aucs, v10, v01 = _placements(y, scores)
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(aucs), len(aucs)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(aucs), len(aucs)))
    return aucs, s10 / m + s01 / n


def auc_variance(labels, scores) -> tuple[float, float]:
    """``(auc, var)``: the ROC AUC and DeLong's estimate of its variance (pROC's ``var(roc)``)."""
    aucs, cov = delong_covariance(labels, scores)
    return float(aucs[0]), float(cov[0, 0])


class DeLongComparison(NamedTuple):
    """DeLong's test of ``H0: AUC_a == AUC_b`` on the same cases (two-sided)."""

    auc_a: float
    auc_b: float
    diff: float  # auc_a - auc_b
    se: float  # standard error of the difference
    z: float
    p_value: float
    ci_low: float  # confidence interval of the difference at `level`
    ci_high: float


def delong_compare(labels, scores_a, scores_b, level: float = 0.95) -> DeLongComparison:
    """DeLong's test for two correlated ROC AUCs, with the statistic and a CI of the difference.

    ``z = (AUC_a - AUC_b) / sqrt(S_aa + S_bb - 2 S_ab)`` against a standard normal (DeLong et al.
    1988, eq. 3 with contrast L = [1, -1]); placements by the fast algorithm of Sun & Xu (2014).
    When the variance of the difference is zero (identical score vectors, or two curves whose
    placements differ by a constant) the 0/0 is guarded: ``z = 0, p = 1`` when the AUCs are equal,
    else ``z = +-inf, p = 0``.
    """
    aucs, cov = delong_covariance(labels, scores_a, scores_b)
    return DeLongComparison(*_z_test(aucs, cov, level))


def _z_test(aucs: np.ndarray, cov: np.ndarray, level: float) -> tuple[float, ...]:
    """``(auc_a, auc_b, diff, se, z, p, ci_low, ci_high)`` of the Wald test of ``auc_a == auc_b``
    from the AUCs' 2 x 2 covariance matrix, with the zero-variance guard of :func:`delong_compare`.
    """
    diff = float(aucs[0] - aucs[1])
    var = float(cov[0, 0] + cov[1, 1] - 2.0 * cov[0, 1])
    se = math.sqrt(var) if var > 0 else 0.0
    if se <= 1e-12 * max(1.0, abs(diff)) or var <= 0:
        if abs(diff) <= 1e-12:
            z, p = 0.0, 1.0
        else:
            z, p = math.copysign(math.inf, diff), 0.0
        se = 0.0
    else:
        z = diff / se
        p = float(min(1.0, 2.0 * stats.norm.sf(abs(z))))
    q = float(stats.norm.ppf(0.5 + level / 2.0))
    return float(aucs[0]), float(aucs[1]), diff, se, z, p, diff - q * se, diff + q * se


def delong_test(labels, scores_a, scores_b) -> tuple[float, float, float]:
    """``(auc_a, auc_b, p_value)`` of DeLong's two-sided test for two correlated AUCs.

    Both score vectors must be measured on the same cases, in the same order (a paired design).
    ``p_value == 1.0`` for identical score vectors. See :func:`delong_compare` for the statistic.
    """
    r = delong_compare(labels, scores_a, scores_b)
    return r.auc_a, r.auc_b, r.p_value


def auc_confidence_interval(
    labels, scores, level: float = 0.95, method: str = "logit"
) -> tuple[float, float, float]:
    """``(auc, lo, hi)``: the ROC AUC with a Wald confidence interval from DeLong's variance.

    ``method="logit"`` (default) builds the interval on logit(AUC) with the delta-method standard
    error ``se / (AUC (1 - AUC))`` and maps it back, so it stays inside (0, 1) and is asymmetric
    near 1, where the plain interval undercovers (Pepe 2003, sec. 5.2; Qin & Hotilovac 2008).
    ``method="plain"`` is ``AUC +- z se`` clipped to [0, 1], as pROC's ``ci.auc(method="delong")``.
    An AUC of exactly 0 or 1 (no logit) falls back to the plain interval.
    """
    _check_interval_args(level, method)
    auc, var = auc_variance(labels, scores)
    return _wald_interval(auc, var, level, method)


def _check_interval_args(level: float, method: str) -> None:
    if method not in ("logit", "plain"):
        raise ValueError(f"method must be 'logit' or 'plain', got {method!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")


def _wald_interval(auc: float, var: float, level: float, method: str) -> tuple[float, float, float]:
    """``(auc, lo, hi)`` from an AUC and its variance: see :func:`auc_confidence_interval`."""
    se = math.sqrt(max(var, 0.0))
    q = float(stats.norm.ppf(0.5 + level / 2.0))
    if method == "logit" and 0.0 < auc < 1.0:
        centre = math.log(auc / (1.0 - auc))
        half = q * se / (auc * (1.0 - auc))
        lo, hi = (1.0 / (1.0 + math.exp(-(centre + s * half))) for s in (-1.0, 1.0))
        return auc, lo, hi
    return auc, max(0.0, auc - q * se), min(1.0, auc + q * se)


def paired_bootstrap_accuracy(labels, pred_a, pred_b, n: int = 2000, seed: int = 0) -> float:
    """Two-sided p-value for ``accuracy(a) == accuracy(b)`` by a paired bootstrap over images.

    Each image contributes ``d_i = [pred_a_i == y_i] - [pred_b_i == y_i]``; the accuracy
    difference is ``mean(d)``. Images are resampled with replacement ``n`` times (the same images
    for both classifiers: paired), and the null distribution is the bootstrap distribution shifted
    to mean zero (Efron & Tibshirani 1993, sec. 16.4):
    ``p = (1 + #{|mean(d*) - mean(d)| >= |mean(d)|}) / (n + 1)``. Identical correctness on every
    image gives ``p = 1``. ``pred_a`` and ``pred_b`` are predicted labels (0/1), e.g. score >= 0.5.
    """
    y = np.asarray(labels).astype(int).ravel()
    a = np.asarray(pred_a).astype(int).ravel()
    b = np.asarray(pred_b).astype(int).ravel()
    if not (y.size == a.size == b.size):
        raise ValueError(f"labels, pred_a, pred_b differ in length: {y.size}, {a.size}, {b.size}")
    if y.size == 0:
        raise ValueError("no images to compare")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    d = (a == y).astype(float) - (b == y).astype(float)
    observed = d.mean()
    if not d.any() or np.all(d == d[0]):
        # no paired difference or no variability: the bootstrap distribution is a point mass
        return 1.0 if observed == 0 else 1.0 / (n + 1)
    rng = np.random.default_rng(seed)
    extreme, done, chunk = 0, 0, max(1, min(n, 2_000_000 // d.size))
    while done < n:
        size = min(chunk, n - done)
        means = d[rng.integers(0, d.size, size=(size, d.size))].mean(axis=1)
        extreme += int(np.sum(np.abs(means - observed) >= abs(observed) - 1e-12))
        done += size
    return float(min(1.0, (1 + extreme) / (n + 1)))

