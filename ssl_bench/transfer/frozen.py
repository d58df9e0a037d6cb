"""Frozen evaluation: the standard protocols of self-supervised learning, which judge the
pretext stage's features without fine-tuning them.

Both transfers run the pretext stage of ``finetune`` (:func:`~ssl_bench.training.stages.pretrained_backbone`:
``train.pretext_epochs`` of the pretext task on the downstream backbone; with pretext ``none``
the backbone as ``model.pretrained`` initialised it, the random-init or ImageNet control), then
freeze the backbone, put it in eval mode and extract each training image's globally pooled
features (:func:`ssl_bench.models.backbones.pooled_features`), on which scikit-learn fits:

- ``linear`` (linear probe): ``StandardScaler`` + ``LogisticRegression`` (L2, lbfgs, inverse
  strength ``C``); ``C`` is chosen from the grid ``Cs`` by cross-validation within the fold's
  training images, grouped by patient (:func:`~ssl_bench.transfer.logistic.choose_C`), unless
  ``params.linear.C`` fixes it; the fold records the choice in ``metrics.json`` (``fit``); class
  weights (:mod:`ssl_bench.transfer.logistic`): ``"pos_weight"`` (default)
  weights malignant images by ``train.pos_weight`` (TSBN eq. 3), ``"balanced"``, ``"none"``;
- ``knn``: ``k`` nearest neighbours (default 20) by cosine similarity of the L2-normalised
  features; the probability of malignancy is the share of malignant images among them. The
  training images' own scores (the fold's operating point is chosen on them) are leave-one-out:
  each among the other training images, as a new image would be.

The classifier returned (:mod:`ssl_bench.models.frozen_probe`) is the frozen backbone with a head
reproducing the scikit-learn model's probability; its ``architecture`` dict rebuilds it from
``model.pt`` for ``ssl-bench predict``. ``train.epochs`` is not used (no supervised stage).
"""
from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torch import nn

from ..errors import DataError
from ..models.frozen_probe import FrozenBackboneClassifier, KnnProbeClassifier, LinearProbeClassifier
from ..registry import TRANSFERS
from ..training.context import FitContext
from ..training.scoring import probabilities
from ..training.stages import pretrained_backbone
from .base import TransferStrategy
from .logistic import DEFAULT_CS, check_grid, check_logistic_options, choose_C, class_weight_for, fit_scaled_logistic

FEATURE_BATCH = 64  # images per feature pass


def frozen_features(classifier: FrozenBackboneClassifier, ctx: FitContext) -> torch.Tensor:
    """``(N, F)`` float32 pooled features of the fold's training images, on ``ctx.device``,
    computed as the classifier computes them when scoring (eval mode, the run's autocast)."""
    parts = []
    for i in range(0, ctx.images.shape[0], FEATURE_BATCH):
        with ctx.autocast():
            parts.append(classifier.features(ctx.images[i : i + FEATURE_BATCH].float()))
    return torch.cat(parts)


def training_labels(ctx: FitContext, name: str) -> np.ndarray:
    labels = ctx.labels.detach().cpu().numpy().astype(np.int64)
    if np.unique(labels).size < 2:
        raise DataError(f"transfer '{name}' needs benign and malignant images among a fold's training "
                        f"images; this fold has one class only")
    return labels


class FrozenTransfer(TransferStrategy):
    accepts = ("image", "embedding", "masked", "none")
    separate_pretext_stage = True  # finetune's stage 1, which --pretext-data may run on a pool

    def frozen_backbone(self, ctx: FitContext) -> nn.Module:
        backbone = pretrained_backbone(ctx)
        return backbone.to(ctx.device).eval().requires_grad_(False)


@TRANSFERS.register("linear")
class LinearProbe(FrozenTransfer):
    """Linear probe: logistic regression on the frozen backbone's pooled features after the pretext stage.

    Args:
        C: inverse strength of the logistic regression's L2 penalty (> 0); None (the default):
            chosen from Cs by cross-validation within the fold's training images, grouped by patient.
        Cs: the grid C is chosen from (positive numbers).
        cv_folds: inner folds of that cross-validation (fewer when a class has fewer patients).
        class_weight: "pos_weight" (malignant images weighted by train.pos_weight), "balanced" or
            "none".
        max_iter: most iterations of the lbfgs solver.
    """

    def __init__(self, C: float | None = None, Cs: tuple[float, ...] = DEFAULT_CS, cv_folds: int = 5,
                 class_weight: str = "pos_weight", max_iter: int = 1000):
        check_logistic_options(C, class_weight, max_iter)
        self.Cs = check_grid(Cs, cv_folds)
        self.C = None if C is None else float(C)
        self.cv_folds, self.class_weight, self.max_iter = int(cv_folds), class_weight, int(max_iter)

    def weights(self, pos_weight: float):
        return class_weight_for(self.class_weight, pos_weight)

    def fit(self, ctx: FitContext) -> nn.Module:
        classifier = LinearProbeClassifier(ctx.config.model.backbone, module=self.frozen_backbone(ctx),
                                           image_size=ctx.config.data.image_size).to(ctx.device)
        features = frozen_features(classifier, ctx).cpu().numpy().astype(np.float64)
        labels = training_labels(ctx, self.name)
        weights = self.weights(ctx.config.train.pos_weight)
        if self.C is None:  # on the fold's training images only, grouped by patient
            C, chosen = choose_C(features, labels, ctx.patients, self.Cs, weights, self.max_iter, self.cv_folds)
        else:
            C, chosen = self.C, {"C": self.C, "chosen": "fixed (params.linear.C)"}
        ctx.fit_info.update(linear_probe=chosen)
        scaler, model = fit_scaled_logistic(features, labels, C, weights, self.max_iter)
        classifier.set_linear(scaler.mean_, scaler.scale_, model.coef_, model.intercept_)
        cast(Any, classifier).fitted = (scaler, model)  # for inspection and tests; not part of the state_dict
        return classifier.eval()


@TRANSFERS.register("knn")
class KnnProbe(FrozenTransfer):
    """k-nearest neighbours (cosine) on the frozen backbone's L2-normalised pooled features after the pretext stage.

    Args:
        k: neighbours (cosine similarity) whose share of malignant images is the score.
    """

    def __init__(self, k: int = 20):
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        self.k = int(k)

    def fit(self, ctx: FitContext) -> nn.Module:
        backbone = self.frozen_backbone(ctx)
        n = int(ctx.images.shape[0])
        training_labels(ctx, self.name)
        classifier = KnnProbeClassifier(ctx.config.model.backbone, n_train=n, k=self.k, module=backbone,
                                        image_size=ctx.config.data.image_size).to(ctx.device)
        classifier.set_memory(frozen_features(classifier, ctx), ctx.labels)
        return classifier.eval()

    def training_scores(self, classifier: nn.Module, ctx: FitContext, batch_size: int) -> np.ndarray:
        """Each training image scored leave-one-out, among the other training images (as a new image
        is scored); with itself among its neighbours every image would get at least 1/k of its own
        label, and the fold's operating point would be chosen on optimistic scores."""
        knn = cast(KnnProbeClassifier, classifier)
        probability = knn.probability(frozen_features(knn, ctx), leave_one_out=True)
        return probabilities(knn.logits(probability)).cpu().numpy().astype(np.float64)
