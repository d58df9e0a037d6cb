"""Calibrated probabilities of malignancy and how well calibrated a run's scores are.

A classifier trained with the paper's malignant weight 15 (TSBN eq. 3) outputs scores that rank
images well but are not probabilities: most images score above 0.5. Each fold fits **Platt
scaling** (Platt 1999: a logistic regression of the label on the model's score, here on its logit
so that a = 1, b = 0 is the identity) on its *training* images' scores, never on the held-out
fold, applies it to the held-out scores (``predictions.csv`` column ``calibrated``) and records
its two numbers in ``metrics.json`` (``calibration``), from which ``ssl-bench predict`` calibrates
new images. scikit-learn fits it (``LogisticRegression``, effectively unpenalised).

Training scores of a network that fits its training images are more extreme than its held-out
ones, so a calibrator fitted on them may over-sharpen; the **expected calibration error** (ECE;
Naeini, Cooper & Hauskrecht, AAAI 2015; Guo et al., ICML 2017: the mean gap between the predicted
probability and the observed rate over equal-width bins, weighted by the share of images in each)
of the raw and the calibrated held-out probabilities shows whether it helped, and the reliability
diagram (``sklearn.calibration.calibration_curve``) shows where.
"""
from __future__ import annotations

import numpy as np
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression

#: the key of a fold's calibrator in ``metrics.json``
CALIBRATION_KEY = "calibration"
#: bins of the ECE and the reliability diagram (equal width over [0, 1])
N_BINS = 10
_EPS = 1e-6


def _logit(scores) -> np.ndarray:
    p = np.clip(np.asarray(scores, dtype=float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


def fit_platt(labels, scores) -> dict[str, float | str]:
    """Platt scaling fitted on ``(labels, scores)`` (a fold's training images): ``{"method":
    "platt", "a": ..., "b": ...}`` with ``calibrated = sigmoid(a * logit(score) + b)``. Scores of
    one class only, or all equal, give the identity (nothing to fit)."""
    y = np.asarray(labels, dtype=int)
    x = _logit(scores)
    if len(np.unique(y)) < 2 or np.ptp(x) == 0:
        return {"method": "platt", "a": 1.0, "b": 0.0}
    model = LogisticRegression(C=1e6, max_iter=1000).fit(x.reshape(-1, 1), y)
    return {"method": "platt", "a": float(model.coef_[0, 0]), "b": float(model.intercept_[0])}


def calibrate(calibration: dict, scores) -> np.ndarray:
    """The calibrated probabilities of ``scores`` under a fold's ``calibration`` (:func:`fit_platt`)."""
    z = float(calibration["a"]) * _logit(scores) + float(calibration["b"])
    return 1.0 / (1.0 + np.exp(-z))


def expected_calibration_error(labels, probabilities, n_bins: int = N_BINS) -> float:
    """ECE: sum over equal-width bins of (share of images in the bin) x |observed rate of
    malignancy - mean predicted probability|, with the bins of scikit-learn's
    ``calibration_curve`` (a probability on an edge belongs to the bin below it)."""
    y = np.asarray(labels, dtype=float)
    p = np.asarray(probabilities, dtype=float)
    if len(p) == 0:
        return float("nan")
    which = np.searchsorted(np.linspace(0.0, 1.0, n_bins + 1)[1:-1], p)
    total = 0.0
    for b in np.unique(which):
        inside = which == b
        total += inside.mean() * abs(y[inside].mean() - p[inside].mean())
    return float(total)


def reliability_curve(labels, probabilities, n_bins: int = N_BINS) -> tuple[np.ndarray, np.ndarray]:
    """``(mean predicted probability, observed rate)`` per non-empty bin, for a reliability diagram."""
    observed, predicted = calibration_curve(np.asarray(labels, dtype=int), np.asarray(probabilities, dtype=float),
                                            n_bins=n_bins, strategy="uniform")
    return predicted, observed
