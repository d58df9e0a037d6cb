"""Pooled out-of-fold metrics of one run with patient-clustered 95% confidence intervals.

Images come 2-4 per patient and both views of a breast share its label, so intervals treat the
patient as the unit; each metric's spec (:mod:`ssl_bench.experiment.metric_specs`) says which
interval it gets: Obuchowski's (1997) clustered AUC variance at its level (logit interval; at
patient level one unit per cluster, where it is DeLong's: the pooled, breast- and patient-level
AUCs), or a patient bootstrap (percentile interval, every metric from one set of resamples:
AUPRC and the sensitivities at 90% / 95% specificity by :mod:`.curve_bootstrap`, the operating
point's sensitivity and specificity of images, breasts and patients and the breast-level
probabilistic F1 here). Point estimates are the
run's own (:func:`ssl_bench.experiment.metrics.pooled_metrics`), so the report and
``summary.json`` agree. Values are fractions.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..experiment.clinical import aggregate_scores
from ..experiment.metric_specs import BREAST, CLUSTERED_AUC, PATIENT, PATIENT_BOOTSTRAP, POOLED, metric_specs
from ..experiment.metrics import decision_levels, pooled_metrics
from .curve_bootstrap import bootstrap_intervals, cluster_weights
from .stats import clustered_auc_confidence_interval


def clustered_auc_interval(y: np.ndarray, s: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """The 95% interval of the AUC of scores ``s`` for labels ``y``, ``clusters`` (patients) as the
    unit (Obuchowski 1997, logit); ``(nan, nan)`` where it is undefined (one class, or a class held
    by fewer than two patients)."""
    try:
        _, lo, hi = clustered_auc_confidence_interval(y, s, clusters)
    except ValueError:  # one class, or a class held by fewer than two patients
        return math.nan, math.nan
    return lo, hi


def _levels(predictions: pd.DataFrame, aggregate: str) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``{level: (labels, scores, patient of each unit)}`` of images (``pooled``), breasts (where
    every image has a laterality) and patients."""
    y = predictions["label"].to_numpy(dtype=int)
    s = predictions["score"].to_numpy(dtype=float)
    patients = predictions["patient_id"].astype(str).to_numpy()
    out = {POOLED: (y, s, patients)}
    patient = aggregate_scores(y, s, patients, how=aggregate)
    out[PATIENT] = (patient.labels, patient.scores, patient.keys[0])
    sides = predictions["laterality"].fillna("").astype(str).to_numpy() if "laterality" in predictions else None
    if sides is not None and (sides != "").all():
        breast = aggregate_scores(y, s, patients, sides, how=aggregate)
        out[BREAST] = (breast.labels, breast.scores, breast.keys[0])
    return out


def pooled_with_intervals(predictions: pd.DataFrame, thresholds: dict[int, float], aggregate: str = "mean",
                          n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """``{metric: value, metric_lo: ..., metric_hi: ...}`` for every pooled metric, keyed as
    :func:`~ssl_bench.experiment.metrics.pooled_metrics` computes it (NaN where a metric or its
    interval is undefined, e.g. no laterality for breast level)."""
    out: dict[str, float] = {}
    point = pooled_metrics(predictions, thresholds, aggregate)
    levels = _levels(predictions, aggregate)
    patients = levels[POOLED][2]
    intervals = _bootstrap(predictions, thresholds, aggregate, n_boot, seed) if len(np.unique(patients)) > 1 else {}
    for spec in metric_specs(pooled=True):
        value, lo, hi = point[spec.compute], math.nan, math.nan
        if spec.interval == CLUSTERED_AUC and spec.level in levels and not math.isnan(value):
            lo, hi = clustered_auc_interval(*levels[spec.level])
        elif spec.interval == PATIENT_BOOTSTRAP and spec.compute in intervals and not math.isnan(value):
            lo, hi = intervals[spec.compute]
        out.update({spec.compute: value, f"{spec.compute}_lo": lo, f"{spec.compute}_hi": hi})
    return out


def _bootstrap(predictions: pd.DataFrame, thresholds: dict[int, float], aggregate: str, n_boot: int,
               seed: int) -> dict[str, tuple[float, float]]:
    """Patient-bootstrap intervals of AUPRC, the sensitivities at fixed specificity and the
    operating point's sensitivity and specificity, from one set of resamples."""
    y = predictions["label"].to_numpy(dtype=int)
    s = predictions["score"].to_numpy(dtype=float)
    patients = predictions["patient_id"].astype(str).to_numpy()
    out = {}
    if len(np.unique(y)) == 2:
        out = {k: (v.low, v.high) for k, v in bootstrap_intervals(y, s, patients, n_boot, seed).items()}
    called = s >= predictions["fold"].map(thresholds).to_numpy(dtype=float)
    units = {"": (y, called, cluster_weights(patients, n_boot, seed))}
    levels = decision_levels(predictions, thresholds, aggregate)
    for level, (groups, group_called, _) in levels.items():
        # the same seed and the same patients: every level resamples the same patients
        units[f"{level}_"] = (groups.labels, group_called, cluster_weights(groups.keys[0], n_boot, seed))
    for prefix, (labels, hit, weights) in units.items():
        for name, cls, mask in (("op_sensitivity", 1, hit), ("op_specificity", 0, ~hit)):
            total = weights @ (labels == cls)
            if (total > 0).sum() >= 2:
                rate = (weights @ ((labels == cls) & mask))[total > 0] / total[total > 0]
                out[prefix + name] = _percentile_interval(rate)
    if "breast" in levels:
        groups, _, probability = levels["breast"]
        weights = units["breast_"][2]
        tp = weights @ (probability * groups.labels)
        fp = weights @ (probability * (1 - groups.labels))
        positives = weights @ groups.labels
        valid = (positives > 0) & (tp > 0)
        if valid.sum() >= 2:
            precision, recall = tp[valid] / (tp[valid] + fp[valid]), tp[valid] / positives[valid]
            out["breast_pf1"] = _percentile_interval(2 * precision * recall / (precision + recall))
    return out


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    low, high = np.quantile(values, [0.025, 0.975])
    return float(low), float(high)
