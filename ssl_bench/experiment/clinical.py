"""Clinicians' metrics for a leaderboard: AUPRC, sensitivity at a fixed specificity, breast- and
patient-level scores aggregated from images, and a Youden operating point. Pure functions over
arrays, computed with scikit-learn; values are fractions in [0, 1].

Conventions as in :mod:`ssl_bench.report.stats`: label 1 = positive (malignant); a higher score
means more likely positive; an image is called positive when ``score >= threshold`` (the
convention of ``sklearn.metrics.roc_curve``, whose operating point at threshold t predicts
positive for ``score >= t``).

- AUPRC: Davis & Goadrich (2006), "The relationship between precision-recall and ROC curves",
  ICML; Saito & Rehmsmeier (2015), "The precision-recall plot is more informative than the ROC
  plot when evaluating binary classifiers on imbalanced datasets", PLoS ONE 10(3):e0118432.
- Youden (1950), "Index for rating diagnostic tests", Cancer 3(1):32-35: J = sens + spec - 1.
- Sensitivity at a fixed specificity: the empirical ROC curve read at a fixed false positive
  fraction, Pepe (2003), "The Statistical Evaluation of Medical Tests for Classification and
  Prediction", Oxford University Press.
- Breast- and patient-level scores: the mean or the max of the images' scores (both views of a
  breast share its label; a patient is malignant if any breast is).
- Decision curves: net benefit at a threshold probability, Vickers & Elkin (2006), Medical
  Decision Making 26(6):565-574.
- Probabilistic F1 (the RSNA Screening Mammography Breast Cancer Detection challenge, 2023, scored
  per breast): F1 with each prediction counting by its probability, pTP = sum of p over
  malignant, pFP = sum of p over benign, precision = pTP / (pTP + pFP), recall = pTP / positives.

These functions take no cluster ids; for intervals over patients pass them as the ``metric`` of
:func:`ssl_bench.report.stats.cluster_bootstrap`, e.g.
``functools.partial(sensitivity_at_specificity, specificity=0.9)``.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
from sklearn.metrics import average_precision_score, roc_curve

__all__ = [
    "GroupedScores",
    "OperatingPoint",
    "aggregate_scores",
    "auprc",
    "operating_point_at_specificity",
    "sensitivity_at_specificity",
    "youden_threshold",
]

_TOL = 1e-12  # slack on float comparisons of rates that are ratios of counts


def _labels_scores(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    """Validated 0/1 int labels holding both classes, and finite float scores of the same size."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {y.shape}")
    values = set(np.unique(y).tolist())
    if not values <= {0, 1}:
        raise ValueError(f"labels must be 0/1, got values {sorted(values)[:5]}")
    if len(values) < 2:
        raise ValueError("the metric needs both classes: labels hold a single class")
    s = np.asarray(scores, dtype=float)
    if s.shape != y.shape:
        raise ValueError(f"scores hold {s.size} values for {y.size} labels")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    return y.astype(int), s


def auprc(labels, scores) -> float:
    """Area under the precision-recall curve as average precision,
    ``AP = sum_n (R_n - R_{n-1}) P_n`` over the thresholds (scikit-learn's
    ``average_precision_score``: a step function, no interpolation, which the trapezoidal area
    would make optimistic; Davis & Goadrich 2006). Its chance level is the prevalence, not 0.5.
    """
    y, s = _labels_scores(labels, scores)
    return float(average_precision_score(y, s))


class OperatingPoint(NamedTuple):
    """A point of the empirical ROC curve: call positive when ``score >= threshold``."""

    threshold: float
    sensitivity: float  # true positive rate
    specificity: float  # 1 - false positive rate


def operating_point_at_specificity(labels, scores, specificity: float = 0.9) -> OperatingPoint:
    """The operating point of highest sensitivity among the empirical ROC curve's points whose
    specificity is at least ``specificity``; among equally sensitive points the most specific.

    Definition: the points are those of ``roc_curve(labels, scores, drop_intermediate=False)``,
    one per distinct score used as the threshold (plus "call nothing positive", specificity 1,
    sensitivity 0, threshold inf, so one point always qualifies). No interpolation between
    points: the result is achieved by an actual threshold on these scores, and the specificity
    reached is reported (it may exceed the target when no threshold hits it exactly).
    """
    if not 0.0 <= specificity <= 1.0:
        raise ValueError(f"specificity must be in [0, 1], got {specificity}")
    y, s = _labels_scores(labels, scores)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    ok = np.flatnonzero(1.0 - fpr >= specificity - _TOL)  # never empty: fpr[0] == 0
    best = ok[np.argmax(tpr[ok])]  # the first maximum: fpr never decreases, so the most specific
    return OperatingPoint(float(thresholds[best]), float(tpr[best]), float(1.0 - fpr[best]))


def sensitivity_at_specificity(labels, scores, specificity: float = 0.9) -> float:
    """Sensitivity at a fixed specificity (e.g. 0.90 or 0.95): the highest sensitivity among the
    empirical ROC points with specificity ``>= specificity``
    (:func:`operating_point_at_specificity` gives the threshold and the specificity reached)."""
    return operating_point_at_specificity(labels, scores, specificity).sensitivity


class GroupedScores(NamedTuple):
    """Scores aggregated per group (breast or patient), groups sorted by their keys."""

    keys: tuple[np.ndarray, ...]  # one array per key given, each (G,): the group's key values
    labels: np.ndarray  # (G,) int: max of the group's image labels
    scores: np.ndarray  # (G,) float: mean or max of the group's image scores
    sizes: np.ndarray  # (G,) int: images per group


def aggregate_scores(labels, scores, *keys, how: str = "mean") -> GroupedScores:
    """Aggregate image-level labels and scores to groups defined by one or more key arrays.

    Patient level: ``aggregate_scores(y, s, patient_id)``; breast level:
    ``aggregate_scores(y, s, patient_id, laterality)`` (the group is the pair; ``keys[0]`` of
    the result is then each breast's patient, the cluster id for the clustered tests of
    :mod:`ssl_bench.report.stats`). A group's label is the max of its images' labels (malignant if
    any image is); its score the ``mean`` or ``max`` of its images' scores (``how``). Labels are
    not required to hold both classes here.
    """
    if how not in ("mean", "max"):
        raise ValueError(f"how must be 'mean' or 'max', got {how!r}")
    if not keys:
        raise ValueError("give at least one key array (e.g. patient ids)")
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=float)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(
            f"labels and scores must be one-dimensional, of one size: {y.shape}, {s.shape}"
        )
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError("labels must be 0/1")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN or inf)")
    key_arrays = [np.asarray(k) for k in keys]
    for k in key_arrays:
        if k.shape != y.shape:
            raise ValueError(f"a key array holds {k.size} values for {y.size} labels")
    # one integer code per key, then one per distinct combination (lexicographic by key values)
    uniques, codes = zip(*(np.unique(k, return_inverse=True) for k in key_arrays))
    stacked = np.column_stack([c.ravel() for c in codes])
    combos, group = np.unique(stacked, axis=0, return_inverse=True)
    group = group.ravel()
    n_groups = combos.shape[0]
    sizes = np.bincount(group, minlength=n_groups)
    g_labels = np.zeros(n_groups, dtype=int)
    np.maximum.at(g_labels, group, y.astype(int))
    if how == "mean":
        g_scores = np.bincount(group, weights=s, minlength=n_groups) / sizes
    else:
        g_scores = np.full(n_groups, -np.inf)
        np.maximum.at(g_scores, group, s)
    g_keys = tuple(u[combos[:, j]] for j, u in enumerate(uniques))
    return GroupedScores(g_keys, g_labels, g_scores, sizes)


def youden_threshold(labels, scores) -> float:
    """The threshold maximising Youden's J = sensitivity + specificity - 1 = TPR - FPR (Youden
    1950) over the empirical ROC curve of these (training) predictions, to be used as a fixed
    operating point on other data: call positive when ``score >= threshold``.

    The candidates are the finite thresholds of ``roc_curve(labels, scores,
    drop_intermediate=False)``, i.e. the distinct scores; ties in J (within 1e-12) go to the
    higher threshold (fewer positive calls).
    """
    y, s = _labels_scores(labels, scores)
    fpr, tpr, thresholds = roc_curve(y, s, drop_intermediate=False)
    finite = np.isfinite(thresholds)  # drops the leading "call nothing positive" point
    j = np.where(finite, tpr - fpr, -np.inf)
    best = np.flatnonzero(j >= j.max() - _TOL)
    return float(thresholds[best[np.argmax(thresholds[best])]])


def probabilistic_f1(labels, probabilities) -> float:
    """The RSNA 2023 challenge's probabilistic F1: ``2 P R / (P + R)`` with precision ``P = pTP /
    (pTP + pFP)`` and recall ``R = pTP / #malignant``, where each unit counts by its probability
    (``pTP``: sum over malignant units, ``pFP``: over benign ones). NaN without a malignant unit;
    0 when every probability is 0."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    positives = int((y == 1).sum())
    if positives == 0:
        return float("nan")
    tp, fp = float(p[y == 1].sum()), float(p[y == 0].sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / (tp + fp), tp / positives
    return 2 * precision * recall / (precision + recall)


def net_benefit(labels, probabilities, thresholds) -> np.ndarray:
    """Decision-curve net benefit (Vickers & Elkin, Medical Decision Making 26(6), 2006) at each
    threshold probability ``pt``: ``TP/N - FP/N * pt / (1 - pt)``, calling a unit malignant when
    its probability is at least ``pt``; the net benefit of calling every unit malignant is that of
    probabilities all 1, of calling none 0."""
    y = np.asarray(labels, dtype=int)
    p = np.asarray(probabilities, dtype=float)
    pt = np.asarray(thresholds, dtype=float)
    called = p[None, :] >= pt[:, None]
    tp = (called & (y[None, :] == 1)).sum(axis=1)
    fp = (called & (y[None, :] == 0)).sum(axis=1)
    return tp / len(y) - fp / len(y) * pt / (1 - pt)
