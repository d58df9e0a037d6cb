"""Classification metrics of the TSBN paper's Table II, computed with scikit-learn.

Malignant = positive class (label 1); a score is the predicted probability of malignancy and the
decision threshold is 0.5. Values are fractions in [0, 1]:
accuracy, sensitivity = TP/(TP+FN), specificity = TN/(TN+FP), Youden index = sens + spec - 1,
F1 of the malignant class, ROC AUC (NaN when a fold holds a single class).
"""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

METRICS = ("accuracy", "sensitivity", "specificity", "youden", "f1", "auc")


def compute_metrics(labels, scores, threshold: float = 0.5) -> dict[str, float]:
    """All Table II metrics for one set of held-out predictions."""
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


def pooled_auc(labels, scores) -> float:
    """ROC AUC over all held-out images of all folds (NaN when they hold a single class)."""
    y = np.asarray(labels, dtype=int)
    return float(roc_auc_score(y, np.asarray(scores, dtype=float))) if len(np.unique(y)) == 2 else math.nan


def summarize(fold_metrics: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """Mean and sample standard deviation (ddof=1) of each metric across folds."""
    mean, std = {}, {}
    for name in METRICS:
        values = np.array([m[name] for m in fold_metrics], dtype=float)
        mean[name] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
        std[name] = float(np.nanstd(values, ddof=1)) if np.isfinite(values).sum() > 1 else math.nan
    return mean, std
