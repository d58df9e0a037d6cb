"""Classification metrics of the TSBN paper's Table II, computed with scikit-learn, and the
pooled metrics clinicians read.

Malignant = positive class (label 1); a score is the predicted probability of malignancy and the
paper's decision threshold is 0.5. Values are fractions in [0, 1]:
accuracy, sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), Youden index = sens + spec - 1,
F1 of the malignant class, ROC AUC (NaN when a fold holds a single class). Each fold also
reports accuracy, sensitivity and specificity at its own operating point (``op_*``, threshold
``op_threshold`` chosen on its training predictions: :mod:`.operating_point`).

Pooled over all held-out images of all folds (:func:`pooled_metrics`): ROC AUC, AUPRC (average
precision), sensitivity at 90% and 95% specificity, AUC at breast level (a breast's views
aggregated by mean or max) and at patient level, sensitivity/specificity at each fold's
operating point for images, breasts and patients (a breast or a patient called malignant when its
aggregated score reaches its fold's threshold), and the RSNA 2023 probabilistic F1 per breast (of
the calibrated probabilities where the run recorded them: :mod:`.calibration`).

Which of these is a metric, and how it is named, shown and given an interval, is declared once in
:mod:`.metric_specs`; this module computes them.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from .clinical import GroupedScores, aggregate_scores, auprc, probabilistic_f1, sensitivity_at_specificity
from .metric_specs import OPERATING, PAPER, PAPER_THRESHOLD, metric_specs
from .operating_point import degenerate_reason

AGGREGATES = ("mean", "max")


def threshold_statistics(labels, scores, threshold: float = PAPER_THRESHOLD) -> dict[str, float]:
    """The statistics a fold metric's ``compute`` names, for one set of held-out predictions
    called malignant from ``threshold``: Table II's at 0.5."""
    y = np.asarray(labels, dtype=int)
    s = np.asarray(scores, dtype=float)
    pred = (s >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    sens = tp / (tp + fn) if tp + fn else math.nan
    spec = tn / (tn + fp) if tn + fp else math.nan
    auc = roc_auc_score(y, s) if len(np.unique(y)) == 2 else math.nan
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "sensitivity": float(sens),
        "specificity": float(spec),
        "youden": float(sens + spec - 1),
        "f1": float(f1_score(y, pred, pos_label=1, zero_division=0)),
        "auc": float(auc),
    }


def fold_metrics(labels, scores, op_threshold: float) -> dict[str, float | str]:
    """A held-out fold's metrics (every fold metric of :mod:`.metric_specs`): those at 0.5, then
    ``op_threshold`` (chosen on the fold's training predictions) and those at it, and
    ``degenerate`` (the reason, or ``""``)."""
    at = {PAPER: threshold_statistics(labels, scores),
          OPERATING: threshold_statistics(labels, scores, op_threshold)}
    return {
        **{spec.name: at[PAPER][spec.compute] for spec in metric_specs(threshold=PAPER)},
        "op_threshold": float(op_threshold),
        **{spec.name: at[OPERATING][spec.compute] for spec in metric_specs(threshold=OPERATING)},
        "degenerate": degenerate_reason(scores),
    }


def pooled_metrics(predictions: pd.DataFrame, thresholds: dict[int, float], aggregate: str = "mean") -> dict[str, float]:
    """The pooled metrics (keyed by their specs' ``compute``, :mod:`.metric_specs`) over all
    held-out predictions (columns ``label``, ``score``, ``patient_id``, ``fold`` and, for breast
    level, ``laterality``; ``calibrated`` where recorded);
    ``thresholds``: each fold's operating threshold. A metric that needs both classes is NaN when
    they are not there; breast-level metrics are NaN without a laterality for every image."""
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}")
    y = predictions["label"].to_numpy(dtype=int)
    s = predictions["score"].to_numpy(dtype=float)
    out = dict.fromkeys((spec.compute for spec in metric_specs(pooled=True)), math.nan)
    called = s >= predictions["fold"].map(thresholds).to_numpy(dtype=float)
    out["op_sensitivity"], out["op_specificity"] = _sensitivity_specificity(y, called)
    levels = decision_levels(predictions, thresholds, aggregate)
    for level, (groups, group_called, probability) in levels.items():
        sens, spec = _sensitivity_specificity(groups.labels, group_called)
        out[f"{level}_op_sensitivity"], out[f"{level}_op_specificity"] = sens, spec
        if level == "breast":
            out["breast_pf1"] = probabilistic_f1(groups.labels, probability)
    if len(np.unique(y)) < 2:
        return out
    out.update(auc=float(roc_auc_score(y, s)), auprc=auprc(y, s),
               sens_at_spec90=sensitivity_at_specificity(y, s, 0.90),
               sens_at_spec95=sensitivity_at_specificity(y, s, 0.95))
    for level, (groups, _, _) in levels.items():
        out[f"{level}_auc"] = _auc_or_nan(groups.labels, groups.scores)
    return out


def _sensitivity_specificity(labels: np.ndarray, called: np.ndarray) -> tuple[float, float]:
    sens = float(called[labels == 1].mean()) if (labels == 1).any() else math.nan
    spec = float(1 - called[labels == 0].mean()) if (labels == 0).any() else math.nan
    return sens, spec


def decision_levels(predictions: pd.DataFrame, thresholds: dict[int, float], aggregate: str = "mean"
                    ) -> dict[str, tuple[GroupedScores, np.ndarray, np.ndarray]]:
    """``{"patient" | "breast": (grouped scores, called, probability)}``: the units' aggregated
    scores (:func:`~.clinical.aggregate_scores`), whether each is called malignant (its score at
    least the mean of its images' fold thresholds: one fold per patient with patient-grouped
    folds) and its probability of malignancy (the aggregated calibrated probability where the run
    recorded one, else the aggregated score). Breast level only where every image has a laterality."""
    y = predictions["label"].to_numpy(dtype=int)
    s = predictions["score"].to_numpy(dtype=float)
    t = predictions["fold"].map(thresholds).to_numpy(dtype=float)
    p = predictions["calibrated"].to_numpy(dtype=float) if "calibrated" in predictions else np.full(len(s), np.nan)
    p = p if np.isfinite(p).all() else s
    keys: dict[str, tuple[np.ndarray, ...]] = {"patient": (predictions["patient_id"].astype(str).to_numpy(),)}
    if "laterality" in predictions and (predictions["laterality"].fillna("").astype(str) != "").all():
        keys["breast"] = (keys["patient"][0], predictions["laterality"].astype(str).to_numpy())
    out = {}
    for level, key in keys.items():
        groups = aggregate_scores(y, s, *key, how=aggregate)
        threshold = aggregate_scores(y, t, *key, how="mean").scores
        probability = aggregate_scores(y, p, *key, how=aggregate).scores
        out[level] = (groups, groups.scores >= threshold, probability)
    return out


def _auc_or_nan(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores)) if len(np.unique(labels)) == 2 else math.nan


def pooled_auc(labels, scores) -> float:
    """ROC AUC over all held-out images of all folds (NaN when they hold a single class)."""
    y = np.asarray(labels, dtype=int)
    return float(roc_auc_score(y, np.asarray(scores, dtype=float))) if len(np.unique(y)) == 2 else math.nan


def summarize(fold_metrics: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) across folds of each fold metric they all hold."""
    mean, std = {}, {}
    names = [s.name for s in metric_specs(pooled=False) if all(s.name in f for f in fold_metrics)]
    for name in names:
        values = np.array([m[name] for m in fold_metrics], dtype=float)
        mean[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        std[name] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else math.nan
    return mean, std
