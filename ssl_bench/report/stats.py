"""Significance tests for the leaderboard: DeLong's test for correlated ROC AUCs and a paired
bootstrap for accuracy, their patient-clustered counterparts, and Holm's adjustment.

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

Clustered data: a patient contributes 2-4 images (two views of each breast, which share the
breast's label), so images are not independent and the image-level tests above understate the
variance. The clustered functions take each image's patient id (``clusters``) and treat patients
as the independent units:

- Obuchowski (1997), "Nonparametric analysis of clustered ROC curve data", Biometrics 53:567-578:
  the clustered variance of the AUC and the covariance of two AUCs on the same images
  (:func:`obuchowski_covariance`, :func:`obuchowski_compare`); reduces to DeLong's with one image
  per patient.
- two AUCs on different patients (internal against external validation): independent, so the
  variance of their difference is the sum of their clustered variances
  (:func:`independent_auc_compare`);
- subgroups sharing patients (the CC and MLO views of one woman): each subgroup's AUC with its
  clustered variance and their covariance through the patients they share
  (:func:`subgroup_auc_covariance`), and the Wald test of equal AUCs across them
  (:func:`heterogeneity_test`);
- the cluster (patient) bootstrap, Davison & Hinkley (1997), "Bootstrap Methods and their
  Application", sec. 3.8: percentile intervals for any metric (:func:`cluster_bootstrap`), a
  paired version for the difference of two methods (:func:`paired_cluster_bootstrap`), and the
  accuracy test built on it (:func:`clustered_accuracy_test`).
- Holm (1979), "A simple sequentially rejective multiple test procedure", Scandinavian Journal of
  Statistics 6:65-70, for the p-values of several methods against one baseline
  (:func:`holm_adjust`).

Conventions: label 1 = positive (malignant); a higher score means more likely positive; tied
scores count one half. Two-sided tests throughout.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import stats

__all__ = [
    "ClusterBootstrap",
    "ClusteredAUCComparison",
    "DeLongComparison",
    "PairedClusterBootstrap",
    "auc_confidence_interval",
    "auc_variance",
    "cluster_bootstrap",
    "clustered_accuracy_test",
    "clustered_auc_confidence_interval",
    "clustered_auc_variance",
    "delong_compare",
    "delong_covariance",
    "delong_test",
    "heterogeneity_test",
    "holm_adjust",
    "independent_auc_compare",
    "obuchowski_compare",
    "obuchowski_covariance",
    "obuchowski_test",
    "paired_bootstrap_accuracy",
    "paired_cluster_bootstrap",
    "subgroup_auc_covariance",
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


def _z_test(aucs: np.ndarray, cov: np.ndarray,
            level: float) -> tuple[float, float, float, float, float, float, float, float]:
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


# --- Clustered data: several images per patient -------------------------------------------------


def _cluster_codes(clusters, size: int) -> tuple[np.ndarray, int]:
    """Integer codes 0..I-1 of the cluster (patient) of each image, and the number of clusters I."""
    c = np.asarray(clusters)
    if c.ndim != 1:
        raise ValueError(f"clusters must be one-dimensional, got shape {c.shape}")
    if c.size != size:
        raise ValueError(f"clusters hold {c.size} values for {size} labels")
    _, codes = np.unique(c, return_inverse=True)
    codes = codes.ravel()
    return codes, int(codes.max()) + 1 if codes.size else 0


def obuchowski_covariance(labels, clusters, *score_vectors) -> tuple[np.ndarray, np.ndarray]:
    """AUCs and their clustered covariance matrix (Obuchowski 1997) for score vectors measured on
    the same images, the images grouped in clusters (patients).

    Obuchowski (1997), "Nonparametric analysis of clustered ROC curve data", Biometrics 53:567-578.
    The AUC is DeLong's (the Mann-Whitney statistic over all positive-negative image pairs, ties
    one half); its variance treats the I clusters, not the images, as the independent units.
    With the placements V10(X_ij) (share of negative images below the positive image j of cluster
    i) and V01(Y_ik) (share of positive images above the negative image k), summed per cluster,
    ``A_i = V10(X_i.) - m_i AUC`` and ``B_i = V01(Y_i.) - n_i AUC`` (m_i positive and n_i negative
    images in cluster i, M and N in all, I10 and I01 clusters holding a positive or a negative):

        S10 = I10 / ((I10 - 1) M) sum_i A_i^2,   S01 = I01 / ((I01 - 1) N) sum_i B_i^2,
        S11 = I / (I - 1) sum_i A_i B_i,
        var(AUC) = S10 / M + S01 / N + 2 S11 / (M N),

    and for two AUCs r, s on the same images the same sums with ``A_i^r A_i^s``, ``B_i^r B_i^s``
    and ``S11 = (S11^{rs} + S11^{sr}) / 2`` give their covariance. These are the formulas of
    Obuchowski's own R code (``funcs_clusteredROC.R``, Cleveland Clinic, as adapted in the FDA
    iMRMC package's ``doAUCcluster``); the printed paper's equation numbers were not checked
    here. The test suite checks them against loops over clusters. S11 is the covariance of a
    positive and a negative image of the same patient, present when a patient holds both classes
    (one malignant breast, one benign). With one image per cluster every ``A_i B_i`` is zero and
    S10, S01 are DeLong's sample variances of the placements: the result is
    :func:`delong_covariance` exactly (tested to 1e-10). Placements from midranks as in Sun & Xu
    (2014), O(N log N).

    Returns ``(aucs (k,), S (k, k))``. Raises ValueError when the labels hold a single class or
    when fewer than two clusters hold a positive image, or fewer than two a negative one (the
    variance then has no degrees of freedom: ``I10 - 1 = 0``).
    """
    y, scores = _check(labels, *score_vectors)
    codes, n_clusters = _cluster_codes(clusters, y.size)
    if n_clusters < 2:
        raise ValueError(f"the clustered AUC variance needs at least 2 clusters, got {n_clusters}")
    aucs, v10, v01 = _placements(y, scores)
    m_i = np.bincount(codes[y], minlength=n_clusters)
    n_i = np.bincount(codes[~y], minlength=n_clusters)
    i10, i01 = int(np.count_nonzero(m_i)), int(np.count_nonzero(n_i))
    if i10 < 2 or i01 < 2:
        raise ValueError(
            "the clustered AUC variance needs at least 2 clusters holding a positive image and 2 "
            f"holding a negative one, got {i10} and {i01} of {n_clusters} clusters"
        )
    m, n = int(m_i.sum()), int(n_i.sum())
    k = scores.shape[0]
    # per-cluster sums of the placements, centred: (k, I)
    a = np.vstack([np.bincount(codes[y], weights=v10[r], minlength=n_clusters) for r in range(k)])
    b = np.vstack([np.bincount(codes[~y], weights=v01[r], minlength=n_clusters) for r in range(k)])
    a -= aucs[:, None] * m_i[None, :]
    b -= aucs[:, None] * n_i[None, :]
    s10 = i10 / ((i10 - 1) * m) * (a @ a.T)
    s01 = i01 / ((i01 - 1) * n) * (b @ b.T)
    s11 = n_clusters / (n_clusters - 1) * (a @ b.T)
    cov = s10 / m + s01 / n + (s11 + s11.T) / (m * n)
    return aucs, cov


def clustered_auc_variance(labels, scores, clusters) -> tuple[float, float]:
    """``(auc, var)``: the ROC AUC and its clustered variance (Obuchowski 1997), see
    :func:`obuchowski_covariance`. ``clusters`` holds each image's patient id."""
    aucs, cov = obuchowski_covariance(labels, clusters, scores)
    return float(aucs[0]), float(cov[0, 0])


def clustered_auc_confidence_interval(
    labels, scores, clusters, level: float = 0.95, method: str = "logit"
) -> tuple[float, float, float]:
    """``(auc, lo, hi)``: the ROC AUC with a Wald interval from its clustered variance
    (Obuchowski 1997); ``method`` as in :func:`auc_confidence_interval` (logit by default)."""
    _check_interval_args(level, method)
    auc, var = clustered_auc_variance(labels, scores, clusters)
    return _wald_interval(auc, var, level, method)


class ClusteredAUCComparison(NamedTuple):
    """Obuchowski's (1997) clustered test of ``H0: AUC_a == AUC_b`` on the same images (two-sided).
    """

    auc_a: float
    auc_b: float
    diff: float  # auc_a - auc_b
    se: float  # clustered standard error of the difference
    z: float
    p_value: float
    ci_low: float  # confidence interval of the difference at `level`
    ci_high: float
    n_clusters: int


def obuchowski_compare(
    labels, scores_a, scores_b, clusters, level: float = 0.95
) -> ClusteredAUCComparison:
    """Clustered z-test for two correlated ROC AUCs (two methods scored on the same images).

    ``z = (AUC_a - AUC_b) / sqrt(V_aa + V_bb - 2 V_ab)`` against a standard normal, with V the
    clustered covariance of :func:`obuchowski_covariance` (Obuchowski 1997); the zero-variance
    guard and the interval of the difference are those of :func:`delong_compare`, to which the
    test reduces with one image per cluster.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    aucs, cov = obuchowski_covariance(labels, clusters, scores_a, scores_b)
    n_clusters = int(np.unique(np.asarray(clusters)).size)
    return ClusteredAUCComparison(*_z_test(aucs, cov, level), n_clusters)


def independent_auc_compare(
    labels_a, scores_a, clusters_a, labels_b, scores_b, clusters_b, level: float = 0.95
) -> ClusteredAUCComparison:
    """Wald test of ``H0: AUC_a == AUC_b`` for two AUCs measured on different patients (a model's
    internal, cross-validated AUC against its AUC on an external cohort; two-sided).

    The samples share no patient, so the AUCs are independent and
    ``var(AUC_a - AUC_b) = V_a + V_b``, each the clustered variance of
    :func:`clustered_auc_variance` (Obuchowski 1997): ``z = (AUC_a - AUC_b) / sqrt(V_a + V_b)``,
    the interval ``diff +- z_{(1+level)/2} sqrt(V_a + V_b)`` (Hanley & McNeil 1983 with the
    correlation of unpaired samples, zero); the zero-variance guard is :func:`delong_compare`'s.
    ``n_clusters`` counts the patients of both samples. Raises ValueError as
    :func:`obuchowski_covariance` when either AUC has no clustered variance.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    auc_a, var_a = clustered_auc_variance(labels_a, scores_a, clusters_a)
    auc_b, var_b = clustered_auc_variance(labels_b, scores_b, clusters_b)
    n_clusters = int(np.unique(np.asarray(clusters_a)).size + np.unique(np.asarray(clusters_b)).size)
    return ClusteredAUCComparison(*_z_test(np.array([auc_a, auc_b]), np.diag([var_a, var_b]), level), n_clusters)


def obuchowski_test(labels, scores_a, scores_b, clusters) -> tuple[float, float, float]:
    """``(auc_a, auc_b, p_value)`` of Obuchowski's clustered two-sided test, the clustered
    counterpart of :func:`delong_test`. See :func:`obuchowski_compare`."""
    r = obuchowski_compare(labels, scores_a, scores_b, clusters)
    return r.auc_a, r.auc_b, r.p_value


def _centred_cluster_sums(y: np.ndarray, s: np.ndarray, codes: np.ndarray,
                          n_clusters: int) -> tuple[float, np.ndarray]:
    """``(auc, u)``: one score vector's AUC and each cluster's influence on it,
    ``u_i = A_i / M + B_i / N`` (:func:`obuchowski_covariance`'s centred placement sums, zero for a
    cluster without an image here)."""
    aucs, v10, v01 = _placements(y, s[None, :])
    a = np.bincount(codes[y], weights=v10[0], minlength=n_clusters)
    b = np.bincount(codes[~y], weights=v01[0], minlength=n_clusters)
    a -= aucs[0] * np.bincount(codes[y], minlength=n_clusters)
    b -= aucs[0] * np.bincount(codes[~y], minlength=n_clusters)
    return float(aucs[0]), a / int(y.sum()) + b / int((~y).sum())


def subgroup_auc_covariance(labels, scores, clusters, subgroups) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The AUC of each subgroup of the images and their clustered covariance, for subgroups that
    share patients (view: every patient has CC and MLO images) or do not (density: one per patient).

    Each subgroup's AUC is the Mann-Whitney statistic over its own positive-negative image pairs,
    its variance Obuchowski's (1997) on that subgroup alone (:func:`obuchowski_covariance`,
    exactly). Two subgroups are correlated through the patients they share; their covariance is
    the same estimator's cross-product over the patients (the linearisation Obuchowski's variance
    is the square of): with patient i's influence ``u_gi = A_gi / M_g + B_gi / N_g`` on subgroup
    g's AUC (its centred placement sums, zero where it has no image in g),
    ``cov(AUC_g, AUC_h) = I / (I - 1) sum_i u_gi u_hi`` over the I patients holding an image of g
    or h: zero for subgroups without a common patient. Checked against a patient bootstrap in the
    tests.

    Args:
        labels: 0/1 per image.
        scores: the score per image (higher: more likely positive).
        clusters: each image's patient.
        subgroups: each image's subgroup (any hashable values; every distinct value is one).

    Returns:
        ``(values, aucs, cov)``: the subgroup values whose AUC has a clustered variance (both
        classes, at least two patients holding each: :func:`obuchowski_covariance`), in sorted
        order, their AUCs ``(k,)`` and covariance ``(k, k)``.
    """
    y, s2 = _check(labels, scores)
    s = s2[0]
    codes, n_clusters = _cluster_codes(clusters, y.size)
    groups = np.asarray(subgroups)
    if groups.shape != y.shape:
        raise ValueError(f"subgroups hold {groups.size} values for {y.size} labels")
    values, aucs, variances, influence, present = [], [], [], [], []
    for value in sorted(set(groups.tolist())):
        member = groups == value
        yg = y[member]
        if np.unique(codes[member][yg]).size < 2 or np.unique(codes[member][~yg]).size < 2:
            continue
        auc, var = clustered_auc_variance(yg, s[member], codes[member])
        _, u = _centred_cluster_sums(yg, s[member], codes[member], n_clusters)
        values.append(value)
        aucs.append(auc)
        variances.append(var)
        influence.append(u)
        present.append(np.bincount(codes[member], minlength=n_clusters) > 0)
    k = len(values)
    cov = np.diag(np.asarray(variances, dtype=float))
    for g in range(k):
        for h in range(g + 1, k):
            shared = int(np.count_nonzero(present[g] | present[h]))
            cov[g, h] = cov[h, g] = shared / (shared - 1) * float(influence[g] @ influence[h])
    return np.asarray(values), np.asarray(aucs, dtype=float), cov


def heterogeneity_test(aucs, cov) -> tuple[float, int, float]:
    """Wald test that k correlated AUCs are equal (heterogeneity across subgroups).

    ``Q = (C a)' (C S C')^-1 (C a)`` with ``C`` the k - 1 contrasts of each AUC with the first
    (the statistic does not depend on which contrasts span the differences), referred to a
    chi-square with k - 1 degrees of freedom; with independent subgroups it is Cochran's Q of the
    AUCs weighted by their inverse variances. A singular ``C S C'`` (a subgroup AUC without
    variance) takes the pseudo-inverse.

    Args:
        aucs: the k AUCs.
        cov: their ``(k, k)`` covariance (:func:`subgroup_auc_covariance`).

    Returns:
        ``(Q, df, p)``; ``(nan, 0, nan)`` with fewer than two AUCs.
    """
    a = np.asarray(aucs, dtype=float)
    s = np.asarray(cov, dtype=float)
    k = a.size
    if k < 2:
        return math.nan, 0, math.nan
    c = np.hstack([-np.ones((k - 1, 1)), np.eye(k - 1)])
    d = c @ a
    q = float(d @ np.linalg.pinv(c @ s @ c.T) @ d)
    return q, k - 1, float(stats.chi2.sf(q, k - 1))


class ClusterBootstrap(NamedTuple):
    """A metric with its percentile interval from a cluster (patient) bootstrap."""

    estimate: float  # the metric on all images
    ci_low: float
    ci_high: float
    se: float  # standard deviation (ddof=1) of the valid bootstrap replicates
    n_valid: int  # resamples where the metric was defined
    n_dropped: int  # resamples dropped: a single class, or a non-finite metric


class PairedClusterBootstrap(NamedTuple):
    """The difference of a metric between two methods on the same images, by a paired cluster
    (patient) bootstrap: percentile interval and two-sided p-value of ``metric_a == metric_b``."""

    estimate_a: float
    estimate_b: float
    diff: float  # estimate_a - estimate_b
    ci_low: float  # percentile interval of the difference at `level`
    ci_high: float
    se: float  # standard deviation (ddof=1) of the valid bootstrap differences
    p_value: float
    n_valid: int
    n_dropped: int


def _resampler(clusters, size: int, n: int, seed: int | np.random.Generator):
    """Yield ``n`` index arrays, each the images of I clusters drawn with replacement from the I
    clusters (a cluster drawn twice contributes its images twice), from ``default_rng(seed)``."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    codes, n_clusters = _cluster_codes(clusters, size)
    if n_clusters < 2:
        raise ValueError(f"the cluster bootstrap needs at least 2 clusters, got {n_clusters}")
    order = np.argsort(codes, kind="stable")  # the images of cluster c: order[start[c]:][:count[c]]
    count = np.bincount(codes, minlength=n_clusters)
    start = np.cumsum(count) - count
    rng = np.random.default_rng(seed)
    for _ in range(n):
        drawn = rng.integers(0, n_clusters, size=n_clusters)
        lens = count[drawn]
        offsets = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        yield order[np.repeat(start[drawn], lens) + offsets]


def _check_bootstrap_args(labels, level: float, *vectors) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1 or y.size == 0:
        raise ValueError(f"labels must be a non-empty one-dimensional array, got shape {y.shape}")
    for v in map(np.asarray, vectors):
        if v.ndim != 1 or v.size != y.size:
            raise ValueError(f"scores hold {v.size} values for {y.size} labels")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    return y


def _percentile_interval(values: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(values, [0.5 - level / 2.0, 0.5 + level / 2.0])
    return float(lo), float(hi)


def _full_sample_estimate(metric, y, s) -> float:
    value = float(metric(y, s))
    if not math.isfinite(value):
        raise ValueError(f"the metric is not defined on the full sample (got {value})")
    return value


def cluster_bootstrap(
    labels, scores, clusters, metric, n: int = 2000, seed: int | np.random.Generator = 0,
    level: float = 0.95, require_both_classes: bool = True,
) -> ClusterBootstrap:
    """Percentile confidence interval of ``metric(labels, scores)`` by resampling clusters
    (patients) with replacement: the cluster bootstrap of Davison & Hinkley (1997), "Bootstrap
    Methods and their Application", sec. 3.8 (resampling the top-level units of hierarchical
    data; Field & Welsh 2007, "Bootstrapping clustered data", JRSS B 69:369-390), with the
    percentile interval of Efron & Tibshirani (1993), "An Introduction to the Bootstrap", ch. 13.

    ``metric`` is any ``f(labels, scores) -> float`` (e.g. ``sklearn.metrics.roc_auc_score``),
    called on the images of the drawn clusters. A resample is dropped, and counted in
    ``n_dropped``, when its labels hold a single class (with ``require_both_classes``, the
    default: AUC, AUPRC, sensitivity need both) or when the metric returns NaN or inf. ``seed``:
    an int, or a ``numpy.random.Generator`` (whose state the call advances); the same int seed
    gives the same result.
    """
    y = _check_bootstrap_args(labels, level, scores)
    s = np.asarray(scores)
    estimate = _full_sample_estimate(metric, y, s)
    values = []
    for idx in _resampler(clusters, y.size, n, seed):
        yb = y[idx]
        if require_both_classes and (yb == yb[0]).all():
            continue
        v = float(metric(yb, s[idx]))
        if math.isfinite(v):
            values.append(v)
    reps = np.asarray(values)
    if reps.size < 2:
        raise ValueError(f"the metric was defined on {reps.size} of {n} cluster resamples")
    return ClusterBootstrap(
        estimate, *_percentile_interval(reps, level), float(reps.std(ddof=1)), int(reps.size),
        n - int(reps.size),
    )


def paired_cluster_bootstrap(
    labels, scores_a, scores_b, clusters, metric, n: int = 2000,
    seed: int | np.random.Generator = 0, level: float = 0.95, require_both_classes: bool = True,
) -> PairedClusterBootstrap:
    """Paired cluster (patient) bootstrap of ``metric(labels, scores_a) - metric(labels, scores_b)``
    for two methods scored on the same images: each resample draws clusters with replacement and
    evaluates both methods on the same drawn images (Davison & Hinkley 1997, sec. 3.8; Efron &
    Tibshirani 1993, ch. 13 for the percentile interval, ch. 16 for bootstrap tests).

    Two-sided p-value from the bootstrap distribution of the B valid differences d*:
    ``p = min(1, 2 min(#{d* <= 0}, #{d* >= 0}) / B)``, at least ``1 / (B + 1)``: twice the share
    of resampled differences on the far side of zero, so that ``p < alpha`` exactly when the
    ``1 - alpha`` percentile interval excludes 0 (up to the quantiles' interpolation). Identical
    methods give ``p = 1``. A resample is dropped (``n_dropped``) when its labels hold a single
    class (with ``require_both_classes``) or either metric is NaN or inf.
    """
    y = _check_bootstrap_args(labels, level, scores_a, scores_b)
    a, b = np.asarray(scores_a), np.asarray(scores_b)
    est_a, est_b = _full_sample_estimate(metric, y, a), _full_sample_estimate(metric, y, b)
    diffs = []
    for idx in _resampler(clusters, y.size, n, seed):
        yb = y[idx]
        if require_both_classes and (yb == yb[0]).all():
            continue
        va, vb = float(metric(yb, a[idx])), float(metric(yb, b[idx]))
        if math.isfinite(va) and math.isfinite(vb):
            diffs.append(va - vb)
    d = np.asarray(diffs)
    if d.size < 2:
        raise ValueError(f"the metric was defined on {d.size} of {n} cluster resamples")
    tail = min(int(np.count_nonzero(d <= 0)), int(np.count_nonzero(d >= 0)))
    p = min(1.0, max(2.0 * tail / d.size, 1.0 / (d.size + 1)))
    return PairedClusterBootstrap(
        est_a, est_b, est_a - est_b, *_percentile_interval(d, level), float(d.std(ddof=1)), p,
        int(d.size), n - int(d.size),
    )


def clustered_accuracy_test(
    labels, scores_a, scores_b, clusters, threshold: float = 0.5, threshold_b: float | None = None,
    n: int = 2000, seed: int | np.random.Generator = 0, level: float = 0.95,
) -> PairedClusterBootstrap:
    """Accuracy of two methods at a threshold on the same images, and their difference with a
    paired patient-bootstrap interval and p-value (:func:`paired_cluster_bootstrap`): the
    clustered replacement of :func:`paired_bootstrap_accuracy`, which resamples images.

    An image is called positive when ``score >= threshold`` (``threshold_b`` for method b, e.g.
    each method's own Youden threshold from its training predictions; default: ``threshold``).
    Accuracy is image-level (correct images / images); the patients are resampled. Accuracy is
    defined on any resample, so none is dropped.
    """
    y = np.asarray(labels).astype(int).ravel()
    a = np.asarray(scores_a, dtype=float).ravel()
    b = np.asarray(scores_b, dtype=float).ravel()
    if not (y.size == a.size == b.size):
        raise ValueError(
            f"labels, scores_a, scores_b differ in length: {y.size}, {a.size}, {b.size}"
        )
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0/1")
    tb = threshold if threshold_b is None else threshold_b
    correct_a = ((a >= threshold).astype(int) == y).astype(float)
    correct_b = ((b >= tb).astype(int) == y).astype(float)
    return paired_cluster_bootstrap(
        y, correct_a, correct_b, clusters, _mean_of_scores, n=n, seed=seed, level=level,
        require_both_classes=False,
    )


def _mean_of_scores(labels, correct) -> float:
    return float(np.mean(correct))


def holm_adjust(p_values) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error rate), same order as the input.

    Holm (1979), "A simple sequentially rejective multiple test procedure", Scandinavian Journal of
    Statistics 6:65-70. With the m p-values sorted, ``p_(1) <= ... <= p_(m)``, the adjusted value
    is ``max_{j <= i} min(1, (m - j + 1) p_(j))``; rejecting where it is ``<= alpha`` is Holm's
    procedure at level alpha. NaN entries (e.g. the baseline's own row) stay NaN and are not
    counted in m. Tied p-values get equal adjusted values.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional, got shape {p.shape}")
    finite = ~np.isnan(p)
    if ((p[finite] < 0) | (p[finite] > 1)).any():
        raise ValueError("p-values must lie in [0, 1]")
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(finite)
    order = idx[np.argsort(p[idx], kind="stable")]
    m = order.size
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])
    out[order] = np.maximum.accumulate(stepped)
    return out
