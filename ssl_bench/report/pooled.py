"""Pooled out-of-fold metrics of one run with patient-clustered 95% confidence intervals.

Images come 2-4 per patient and both views of a breast share its label, so intervals treat the
patient as the unit: the pooled, breast-level and patient-level AUCs get Obuchowski's (1997)
clustered variance (logit interval; at patient level one unit per cluster, where it is
DeLong's), and AUPRC, the sensitivities at 90% / 95% specificity and the operating point's
sensitivity and specificity a patient bootstrap (percentile interval, all from one set of
resamples: :mod:`.curve_bootstrap`). Point estimates are the
run's own (:func:`ssl_bench.experiment.metrics.pooled_metrics`), so the report and
``summary.json`` agree. Values are fractions.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from ..experiment.clinical import aggregate_scores
from ..experiment.metrics import pooled_metrics
from .curve_bootstrap import bootstrap_intervals, cluster_weights
from .stats import clustered_auc_confidence_interval

#: pooled AUCs with a clustered (Obuchowski) interval
CLUSTERED_AUCS = ("auc", "breast_auc", "patient_auc")


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
    """``{auc name: (labels, scores, patient of each unit)}`` at image, breast and patient level."""
    y = predictions["label"].to_numpy(dtype=int)
    s = predictions["score"].to_numpy(dtype=float)
    patients = predictions["patient_id"].astype(str).to_numpy()
    out = {"auc": (y, s, patients)}
    patient = aggregate_scores(y, s, patients, how=aggregate)
    out["patient_auc"] = (patient.labels, patient.scores, patient.keys[0])
    sides = predictions["laterality"].fillna("").astype(str).to_numpy() if "laterality" in predictions else None
    if sides is not None and (sides != "").all():
        breast = aggregate_scores(y, s, patients, sides, how=aggregate)
        out["breast_auc"] = (breast.labels, breast.scores, breast.keys[0])
    return out


def pooled_with_intervals(predictions: pd.DataFrame, thresholds: dict[int, float], aggregate: str = "mean",
                          n_boot: int = 1000, seed: int = 0) -> dict[str, float]:
    """``{metric: value, metric_lo: ..., metric_hi: ...}`` for every pooled metric (NaN where a
    metric or its interval is undefined, e.g. no laterality for breast level)."""
    out: dict[str, float] = {}
    point = pooled_metrics(predictions, thresholds, aggregate)
    levels = _levels(predictions, aggregate)
    y, s, patients = levels["auc"]
    intervals = _bootstrap(predictions, thresholds, n_boot, seed) if len(np.unique(patients)) > 1 else {}
    for name, value in point.items():
        lo = hi = math.nan
        if name in CLUSTERED_AUCS and name in levels and not math.isnan(value):
            lo, hi = clustered_auc_interval(*levels[name])
        elif name in intervals and not math.isnan(value):
            lo, hi = intervals[name]
        out.update({name: value, f"{name}_lo": lo, f"{name}_hi": hi})
    return out


def _bootstrap(predictions: pd.DataFrame, thresholds: dict[int, float], n_boot: int,
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
    weights = cluster_weights(patients, n_boot, seed)
    for name, cls, hit in (("op_sensitivity", 1, called), ("op_specificity", 0, ~called)):
        total = weights @ (y == cls)
        if (total > 0).sum() >= 2:
            rate = (weights @ ((y == cls) & hit))[total > 0] / total[total > 0]
            low, high = np.quantile(rate, [0.025, 0.975])
            out[name] = (float(low), float(high))
    return out
