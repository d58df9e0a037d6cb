"""The logistic-regression fit that the linear probe (``linear``, :mod:`ssl_bench.transfer.frozen`)
copies into its torch classifier, with the ``class_weight`` options the toolkit's scikit-learn
transfers share."""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

CLASS_WEIGHTS = ("pos_weight", "balanced", "none")


def class_weight_for(option: str, pos_weight: float) -> dict[int, float] | str | None:
    """scikit-learn's ``class_weight`` for a ``class_weight`` option: ``pos_weight`` (the paper's
    malignant weight, TSBN eq. 3), ``balanced`` or ``none``."""
    return {"pos_weight": {0: 1.0, 1: float(pos_weight)}, "balanced": "balanced", "none": None}[option]


def check_class_weight(class_weight: str) -> None:
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {class_weight!r}")


def check_logistic_options(C: float, class_weight: str, max_iter: int) -> None:
    """The options a logistic-regression transfer shares, checked when it is built (a bad one is a
    ``ValueError`` the toolkit reports in one line)."""
    if not C > 0:
        raise ValueError(f"C must be positive, got {C!r}")
    check_class_weight(class_weight)
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")


def fit_scaled_logistic(features: np.ndarray, labels: np.ndarray, C: float, class_weight, max_iter: int):
    """``(scaler, model)``: standardised features and a logistic regression on them."""
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter)
    model.fit(scaler.transform(features), labels)
    return scaler, model
