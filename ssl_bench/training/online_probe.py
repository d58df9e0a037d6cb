"""Online probes: is pretraining still helping? A k-NN and a linear probe of the backbone's pooled
features, every ``train.probe_every`` epochs of a pretext stage, without a full fine-tune.

The field's frozen evaluation protocols (the linear probe of Zhang et al. 2016 and Chen et al.
2020, the weighted k-NN of Wu et al. 2018 / Caron et al. 2021) run during pretraining, as SSL
libraries monitor it (solo-learn's online linear classifier, lightly's k-NN benchmark module), on
the fold's own labelled training images only: they are split once per fold by patient
(scikit-learn's ``StratifiedGroupKFold``, the first of 4 splits, seeded by the run's seed: about three quarters of the training patients to fit the probes, a quarter to score
them, never a patient on both sides), and the held-out fold is never seen. Per probe epoch: the
backbone's pooled features of those images (eval mode, no gradient, so training is unchanged),
then scikit-learn's ``StandardScaler`` + ``LogisticRegression`` (balanced classes, ``C = 1``) and
``KNeighborsClassifier`` (cosine, ``k = min(20, fitting images)``), and the ROC AUC of each on the
scoring patients: ``probe_linear_auc`` and ``probe_knn_auc`` in the epoch's history row
(history.csv, the trackers, the training-curve figure). NaN where the scoring images hold one class.

Not probed (said in the docs): a pretext stage on a ``--pretext-data`` pool (cached and shared by
folds, its images unlabelled) and the workers of a data-parallel stage (a worker has no patients).
"""
from __future__ import annotations

import math
from typing import Any, cast

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn

from ..models.backbones import pooled_features
from .device import autocast
from .images import StreamedImages

PROBE_COLUMNS = ("probe_linear_auc", "probe_knn_auc")
SPLITS = 4  # the scoring patients are one of 4 patient-grouped, stratified folds of the training fold
MAX_K = 20


def probe_split(labels: np.ndarray, patients: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(fit, score)`` image indices: a stratified, patient-grouped split of the training images,
    about 3:1, or None when there are too few patients of a class to split.

    Args:
        labels: 0/1 per training image.
        patients: each training image's patient.
        seed: the split's seed.
    """
    per_class = [np.unique(patients[labels == c]).size for c in (0, 1)]
    if min(per_class) < 2:
        return None
    splits = StratifiedGroupKFold(n_splits=min(SPLITS, min(per_class)), shuffle=True, random_state=seed)
    fit, score = next(splits.split(np.zeros(len(labels)), labels, patients))
    return fit, score


@torch.no_grad()
def backbone_features(backbone: nn.Module, images: torch.Tensor | StreamedImages, device: torch.device,
                      amp_dtype: torch.dtype | None = None, batch_size: int = 64) -> np.ndarray:
    """The backbone's pooled pre-logit features of ``images`` ``(N, 1, H, W)``, in eval mode (its
    training mode is restored), as float64 ``(N, D)``."""
    was_training = backbone.training
    backbone.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True).float()
        with autocast(device, amp_dtype):
            final = cast(Any, backbone).forward_features(x)
        out.append(pooled_features(backbone, final).float().cpu())
    backbone.train(was_training)
    return torch.cat(out).numpy().astype(np.float64)


def probe_aucs(features: np.ndarray, labels: np.ndarray, fit: np.ndarray, score: np.ndarray) -> dict[str, float]:
    """The linear and the k-NN probe fitted on ``features[fit]``, their ROC AUC on ``features[score]``.

    Returns:
        ``{"probe_linear_auc": ..., "probe_knn_auc": ...}``; NaN where the scoring labels hold one class.
    """
    y_fit, y_score = labels[fit], labels[score]
    if np.unique(y_score).size < 2 or np.unique(y_fit).size < 2:
        return dict.fromkeys(PROBE_COLUMNS, math.nan)
    linear = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000))
    linear.fit(features[fit], y_fit)
    knn = KNeighborsClassifier(n_neighbors=min(MAX_K, len(fit)), metric="cosine")
    knn.fit(features[fit], y_fit)
    return {"probe_linear_auc": float(roc_auc_score(y_score, linear.predict_proba(features[score])[:, 1])),
            "probe_knn_auc": float(roc_auc_score(y_score, knn.predict_proba(features[score])[:, 1]))}


class OnlineProbe:
    """``probe(epoch)``: the probes' AUCs on every ``every``-th epoch (and nothing otherwise).

    Args:
        backbone: the backbone the pretext stage trains (read, never changed).
        images: the fold's training images ``(N, 1, H, W)``.
        labels: their labels.
        patients: their patients.
        every: probe every this many epochs (> 0).
        seed: the split's seed.
        device: where the features are computed.
        amp_dtype: the stage's autocast dtype.
    """

    def __init__(self, backbone: nn.Module, images: torch.Tensor | StreamedImages, labels: np.ndarray,
                 patients: np.ndarray, every: int, seed: int, device: torch.device,
                 amp_dtype: torch.dtype | None = None):
        self.backbone, self.images, self.labels = backbone, images, np.asarray(labels).astype(int)
        self.every, self.device, self.amp_dtype = int(every), device, amp_dtype
        self.split = probe_split(self.labels, np.asarray(patients).astype(str), seed)

    def __call__(self, epoch: int) -> dict[str, float]:
        if epoch % self.every:
            return {}
        if self.split is None:
            return dict.fromkeys(PROBE_COLUMNS, math.nan)
        features = backbone_features(self.backbone, self.images, self.device, self.amp_dtype)
        return probe_aucs(features, self.labels, *self.split)
