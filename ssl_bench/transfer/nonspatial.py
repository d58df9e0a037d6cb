"""The non-spatial baseline (Table II row "Non-spatial"): a logistic regression on each image's
intensity histogram and global statistics, with no convolution and no pretext task.

On the fold's training images (``ctx.images``, ``ctx.labels``) it computes the features of
:class:`ssl_bench.models.nonspatial.NonSpatialClassifier` (the breast's intensity histogram over
``bins`` bins, mean, standard deviation, skewness, kurtosis, percentiles 50 to 100, breast area;
pixels at or below ``threshold`` are background), fits scikit-learn's ``StandardScaler`` and
``LogisticRegression`` (L2, lbfgs, inverse strength ``C``) on them, and copies both into the
classifier, which then maps ``(B, 1, H, W)`` to logits on the device like every classifier and
reproduces ``predict_proba``. A deep model that does not beat this row learned no more than the
breast's density and brightness.

Class weights (``class_weight``): ``"pos_weight"`` (default) weights malignant images by
``train.pos_weight`` (15, TSBN eq. 3), so the logistic loss is the same weighted BCE every deep
row minimises and the threshold-0.5 metrics are comparable; ``"balanced"`` is scikit-learn's
inverse class frequency; ``"none"`` weights every image 1. The AUC depends on it only through the
fitted coefficients.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..errors import DataError
from ..models.nonspatial import NonSpatialClassifier
from ..registry import TRANSFERS
from ..training.context import FitContext
from .base import TransferStrategy

CLASS_WEIGHTS = ("pos_weight", "balanced", "none")
FEATURE_BATCH = 64  # images per feature pass (bounds the float64 sort's memory at paper size)


def image_features(classifier: NonSpatialClassifier, images: torch.Tensor) -> np.ndarray:
    """``(N, F)`` float64 features of ``images`` ``(N, 1, H, W)``, computed on their device."""
    parts = [classifier.features(images[i : i + FEATURE_BATCH]).cpu() for i in range(0, images.shape[0], FEATURE_BATCH)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, classifier.num_features))


def class_weight_for(option: str, pos_weight: float) -> dict[int, float] | str | None:
    """scikit-learn's ``class_weight`` for a ``class_weight`` option of a logistic-regression
    transfer: ``pos_weight`` (the paper's malignant weight), ``balanced`` or ``none``."""
    return {"pos_weight": {0: 1.0, 1: float(pos_weight)}, "balanced": "balanced", "none": None}[option]


def check_logistic_options(C: float, class_weight: str, max_iter: int) -> None:
    """The options a logistic-regression transfer shares, checked when it is built (a bad one is a
    ``ValueError`` the toolkit reports in one line)."""
    if not C > 0:
        raise ValueError(f"C must be positive, got {C!r}")
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {class_weight!r}")
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")


def fit_scaled_logistic(features: np.ndarray, labels: np.ndarray, C: float, class_weight, max_iter: int):
    """``(scaler, model)``: standardised features and a logistic regression on them, the fit that
    the non-spatial baseline and the linear probe copy into their torch classifiers."""
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter)
    model.fit(scaler.transform(features), labels)
    return scaler, model


@TRANSFERS.register("nonspatial")
class NonSpatial(TransferStrategy):
    """Non-spatial baseline: logistic regression on the intensity histogram and global statistics."""

    accepts = ("none",)

    def __init__(self, C: float = 1.0, bins: int = 32, threshold: float = 0.05,
                 class_weight: str = "pos_weight", max_iter: int = 1000):
        check_logistic_options(C, class_weight, max_iter)
        NonSpatialClassifier(bins, threshold)  # checks bins and threshold now, before any data
        self.C, self.bins, self.threshold = float(C), int(bins), float(threshold)
        self.class_weight, self.max_iter = class_weight, int(max_iter)

    def weights(self, pos_weight: float) -> dict[int, float] | str | None:
        """scikit-learn's ``class_weight`` for this option (module docstring)."""
        return class_weight_for(self.class_weight, pos_weight)

    def fit(self, ctx: FitContext) -> nn.Module:
        classifier = NonSpatialClassifier(self.bins, self.threshold).to(ctx.device)
        features = image_features(classifier, ctx.images)
        labels = ctx.labels.detach().cpu().numpy().astype(np.int64)
        if np.unique(labels).size < 2:
            raise DataError("transfer 'nonspatial' needs benign and malignant images among a fold's training "
                            "images; this fold has one class only")
        scaler, model = fit_scaled_logistic(features, labels, self.C, self.weights(ctx.config.train.pos_weight),
                                            self.max_iter)
        classifier.set_linear(scaler.mean_, scaler.scale_, model.coef_, model.intercept_)
        classifier.fitted = (scaler, model)  # for inspection and tests; not part of the state_dict
        return classifier.eval()
