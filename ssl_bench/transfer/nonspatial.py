"""The Non-spatial control (Table II row "Non-spatial"): gradient-boosted trees on each image's
position-free features, with no convolution and no pretext task.

On the fold's training images only (``ctx.images``, ``ctx.labels``) it computes the features of
:func:`ssl_bench.models.position_free.union` (intensity histogram and order statistics, moments and
entropy, connected components above several thresholds, gradient and Laplacian statistics,
local-maximum counts, row and column profiles, a thumbnail; pixels at or below ``threshold`` are
background), fits scikit-learn's ``HistGradientBoostingClassifier`` on them and copies its trees
into :class:`~ssl_bench.models.nonspatial_trees.NonSpatialTreesClassifier`, which maps ``(B, 1, H,
W)`` to logits like every classifier and reproduces ``predict_proba``. It is as strong as a shortcut
can be: on real data the detector of scanner, vendor and density shortcuts, on a phantom the
detector of a class that is readable without a lesion's shape. A deep model that does not beat
this row has not shown that it reads lesions.

Trees (Ke et al. 2017, LightGBM; scikit-learn's histogram implementation): ``max_iter`` boosting
iterations at ``learning_rate``, trees of at most ``max_leaf_nodes`` leaves with at least
``min_samples_leaf`` images each, L2 penalty ``l2_regularization`` on the leaf values; no early
stopping (every tree is fitted on the fold's training images).

Image weights (``class_weight``, passed as ``sample_weight``): ``"pos_weight"`` (default) weights
malignant images by ``train.pos_weight`` (15, TSBN eq. 3), as every deep row's BCE does, so the
threshold-0.5 metrics are comparable; ``"balanced"`` is scikit-learn's inverse class frequency;
``"none"`` weights every image 1. The weights enter the loss (gradients, hessians, leaf values),
not the features' bins: those are the unweighted quantiles of the training features, as scikit-learn
binned before it took weighted quantiles, which cost about 35 ms per feature here (254 weighted
percentiles in Python; 10 s per fit of 288 features against 1 s). The fits run on one OpenMP
thread: on ~300 images threads gain little, and on a shared CPU spinning OpenMP threads made a
fit 20-30 times slower.

Trees fit their training images almost perfectly, so the training images' own scores would put
the fold's operating point where no new image is; with ``score_folds`` >= 2 the training scores
(:meth:`NonSpatial.training_scores`) are out of fold instead: each training image scored by trees
fitted on the other ``score_folds - 1`` parts, stratified and grouped by patient (``ctx.patients``:
a training image's other views are no new image), or stratified only where the patients are unknown.
"""
from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold
from sklearn.utils.class_weight import compute_sample_weight
from threadpoolctl import threadpool_limits
from torch import nn

from ..errors import DataError
from ..models.nonspatial_trees import NonSpatialTreesClassifier
from ..registry import TRANSFERS
from ..training.context import FitContext
from .base import TransferStrategy
from .logistic import check_class_weight, class_weight_for

FEATURE_BATCH = 64  # images per feature pass (bounds memory at paper size)


class UnweightedBinsTrees(HistGradientBoostingClassifier):
    """``HistGradientBoostingClassifier`` whose feature bins ignore the sample weights (module
    docstring); the weights still weigh every image in the loss."""

    def _bin_data(self, X, *args, **kwargs):
        # (X, sample_weight, is_training_data) in scikit-learn 1.9; (X, is_training_data) in older releases
        if args:
            args = (None, *args[1:])
        if "sample_weight" in kwargs:
            kwargs["sample_weight"] = None
        return super()._bin_data(X, *args, **kwargs)


def image_features(classifier: NonSpatialTreesClassifier, images) -> np.ndarray:
    """``(N, F)`` float64 position-free features of ``images`` ``(N, 1, H, W)``, as the classifier
    computes them when scoring."""
    parts = [classifier.features(images[i : i + FEATURE_BATCH]).cpu() for i in range(0, images.shape[0], FEATURE_BATCH)]
    return torch.cat(parts).numpy() if parts else np.zeros((0, classifier.num_features))


@TRANSFERS.register("nonspatial")
class NonSpatial(TransferStrategy):
    """Non-spatial control: gradient-boosted trees on position-free features (intensities, components, edges).

    Args:
        threshold: pixels at or below it are background for the features, in [0, 1).
        class_weight: image weights: "pos_weight" (malignant images weighted by train.pos_weight),
            "balanced" (inverse class frequency) or "none".
        max_iter: boosting iterations (one tree each).
        learning_rate: boosting learning rate (shrinkage of each tree).
        max_leaf_nodes: most leaves of a tree.
        min_samples_leaf: fewest training images in a leaf.
        l2_regularization: L2 penalty on the leaf values.
        score_folds: the training images' scores, which set the operating point, are out of fold
            over this many parts (>= 2); 0: the trees' own scores.
    """

    accepts = ("none",)

    def __init__(self, threshold: float = 0.05, class_weight: str = "pos_weight", max_iter: int = 100,
                 learning_rate: float = 0.1, max_leaf_nodes: int = 31, min_samples_leaf: int = 20,
                 l2_regularization: float = 0.0, score_folds: int = 5):
        check_class_weight(class_weight)
        NonSpatialTreesClassifier(threshold)  # checks the threshold now, before any data
        if int(max_iter) != max_iter or max_iter < 1:
            raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
        if int(max_leaf_nodes) != max_leaf_nodes or max_leaf_nodes < 2:
            raise ValueError(f"max_leaf_nodes must be an integer >= 2, got {max_leaf_nodes!r}")
        if int(min_samples_leaf) != min_samples_leaf or min_samples_leaf < 1:
            raise ValueError(f"min_samples_leaf must be a positive integer, got {min_samples_leaf!r}")
        if not l2_regularization >= 0:
            raise ValueError(f"l2_regularization must be >= 0, got {l2_regularization!r}")
        if int(score_folds) != score_folds or score_folds < 0 or score_folds == 1:
            raise ValueError(f"score_folds must be 0 (the training images' own scores) or >= 2, got {score_folds!r}")
        self.threshold, self.class_weight = float(threshold), class_weight
        self.max_iter, self.learning_rate = int(max_iter), float(learning_rate)
        self.max_leaf_nodes, self.min_samples_leaf = int(max_leaf_nodes), int(min_samples_leaf)
        self.l2_regularization, self.score_folds = float(l2_regularization), int(score_folds)

    def weights(self, pos_weight: float) -> dict[int, float] | str | None:
        """scikit-learn's ``class_weight`` for this option (module docstring)."""
        return class_weight_for(self.class_weight, pos_weight)

    def trees(self, random_state: int) -> HistGradientBoostingClassifier:
        """An unfitted classifier with this transfer's options."""
        return UnweightedBinsTrees(
            max_iter=self.max_iter, learning_rate=self.learning_rate, max_leaf_nodes=self.max_leaf_nodes,
            min_samples_leaf=self.min_samples_leaf, l2_regularization=self.l2_regularization,
            early_stopping=False, random_state=random_state)

    def fit(self, ctx: FitContext) -> nn.Module:
        features = image_features(NonSpatialTreesClassifier(self.threshold), ctx.images)
        labels = ctx.labels.detach().cpu().numpy().astype(np.int64)
        if np.unique(labels).size < 2:
            raise DataError("transfer 'nonspatial' needs benign and malignant images among a fold's training "
                            "images; this fold has one class only")
        sample_weight = compute_sample_weight(self.weights(ctx.config.train.pos_weight), labels)
        random_state = int(torch.randint(0, 2**31 - 1, (1,)).item())  # the run seeds torch per (seed, fold)
        with threadpool_limits(limits=1, user_api="openmp"):
            model = self.trees(random_state).fit(features, labels, sample_weight=sample_weight)
        classifier = NonSpatialTreesClassifier.from_fitted(model, self.threshold).to(ctx.device)
        # for training_scores, inspection and tests; not part of the state_dict
        cast(Any, classifier).fitted = model
        cast(Any, classifier).fitted_on = (features, labels, sample_weight, random_state)
        return classifier.eval()

    def training_scores(self, classifier: nn.Module, ctx: FitContext, batch_size: int) -> np.ndarray:
        """Out-of-fold probabilities of the training images (module docstring), or with
        ``score_folds = 0`` (or too few malignant images to split) the classifier's own."""
        data = getattr(classifier, "fitted_on", None)
        if self.score_folds == 0 or not isinstance(data, tuple):
            return super().training_scores(classifier, ctx, batch_size)
        features, labels, sample_weight, random_state = data
        folds = min(self.score_folds, int(np.bincount(labels).min()))
        if folds < 2:
            return super().training_scores(classifier, ctx, batch_size)
        scores = np.empty(len(labels), dtype=np.float64)
        patients = ctx.patients if ctx.patients is not None and len(ctx.patients) == len(labels) else None
        if patients is not None:  # a patient's views together: the other views of a training image are no new image
            folds = min(folds, len(np.unique(patients[labels == 1])))
            if folds < 2:
                return super().training_scores(classifier, ctx, batch_size)
            splits = StratifiedGroupKFold(folds, shuffle=True, random_state=random_state).split(features, labels, patients)
        else:
            splits = StratifiedKFold(folds, shuffle=True, random_state=random_state).split(features, labels)
        with threadpool_limits(limits=1, user_api="openmp"):
            for train, test in splits:
                model = self.trees(random_state).fit(features[train], labels[train], sample_weight=sample_weight[train])
                scores[test] = model.predict_proba(features[test])[:, 1]
        return scores
