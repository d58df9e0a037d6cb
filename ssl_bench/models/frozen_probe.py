"""Classifiers of the frozen evaluation protocols (``linear`` and ``knn`` transfers): a timm
backbone, frozen, whose globally pooled features feed a head fitted with scikit-learn.

- :class:`LinearProbeClassifier`: ``StandardScaler`` + ``LogisticRegression`` copied into float64
  buffers and a linear layer, so that ``sigmoid(forward(x))`` is ``predict_proba(features)[:, 1]``.
- :class:`KnnProbeClassifier`: the L2-normalised training features and their labels as buffers;
  the probability of malignancy is the share of malignant images among the ``k`` training images
  of highest cosine similarity (``KNeighborsClassifier(k, metric="cosine").predict_proba``),
  clipped to ``[EPS, 1 - EPS]`` so that the logit stays finite.

Both say what they are through ``architecture`` (the timm backbone's name and the head's sizes),
which :mod:`ssl_bench.models.classifiers` uses to rebuild them from ``model.pt``.
"""
from __future__ import annotations

from typing import Any, ClassVar, Sequence, cast

import numpy as np
import torch
from torch import nn

from ..registry import CLASSIFIERS
from .backbones import create_backbone, num_pooled_features, pooled_features
from .classifiers import PRETEXT

EPS = 1e-7  # kNN probabilities are clipped to [EPS, 1 - EPS] (finite logits)


class FrozenBackboneClassifier(nn.Module):
    """A timm backbone (1 input channel) used as a frozen feature extractor."""

    #: the backbone is the pretext stage's, never trained after it (models/classifiers.py)
    backbone_stage: ClassVar[str] = PRETEXT

    def __init__(self, backbone: str, module: nn.Module | None = None,
                 image_size: Sequence[int] | None = None):
        """``backbone``: the timm name (what ``model.pt`` records); ``module``: that backbone,
        trained (a fresh, randomly initialised one is built when omitted: ``load_state_dict``);
        ``image_size``: the run's ``(height, width)``, which sizes the backbones built for one
        input size (ViTs) when they are rebuilt."""
        super().__init__()
        self.image_size = None if image_size is None else [int(v) for v in image_size]
        if module is None:
            module = create_backbone(backbone, pretrained=None, in_chans=1, num_classes=1,
                                     image_size=self.image_size)
        self.backbone_name = str(backbone)
        self.backbone = module
        self.backbone.requires_grad_(False)
        self.num_features = num_pooled_features(module)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> pooled features ``(B, F)`` float32, the backbone in eval mode."""
        was_training = self.backbone.training
        self.backbone.eval()
        with torch.no_grad():
            f = pooled_features(self.backbone, cast(Any, self.backbone).forward_features(x)).float()
        self.backbone.train(was_training)
        return f


def _as64(a: Any, device: torch.device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), device=device)


@CLASSIFIERS.register("linear_probe")
class LinearProbeClassifier(FrozenBackboneClassifier):
    """Logistic regression on a frozen backbone's standardised pooled features."""

    feature_mean: torch.Tensor
    feature_scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor

    def __init__(self, backbone: str = "resnet50", num_features: int | None = None,
                 module: nn.Module | None = None, image_size: Sequence[int] | None = None):
        super().__init__(backbone, module, image_size)
        if num_features is not None and int(num_features) != self.num_features:
            raise ValueError(f"backbone has {self.num_features} pooled features, not {num_features}")
        n = self.num_features
        self.register_buffer("feature_mean", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("feature_scale", torch.ones(n, dtype=torch.float64))
        self.register_buffer("weight", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("bias", torch.zeros((), dtype=torch.float64))

    @property
    def architecture(self) -> dict[str, Any]:
        return {"name": self.name, "backbone": self.backbone_name, "num_features": self.num_features,
                "image_size": self.image_size}

    def set_linear(self, mean, scale, coef, intercept) -> None:
        """Copy in ``StandardScaler.mean_``, ``.scale_`` and ``LogisticRegression.coef_``, ``.intercept_``."""
        dev = self.weight.device
        with torch.no_grad():
            self.feature_mean.copy_(_as64(mean, dev).reshape(-1))
            self.feature_scale.copy_(_as64(scale, dev).reshape(-1))
            self.weight.copy_(_as64(coef, dev).reshape(-1))
            self.bias.copy_(_as64(intercept, dev).reshape(-1)[0])

    def head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled features ``(B, F)`` -> ``(B, 1)`` float64 logits."""
        z = (features.to(torch.float64) - self.feature_mean) / self.feature_scale
        return (z @ self.weight + self.bias).unsqueeze(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.head(features).to(torch.float32)


@CLASSIFIERS.register("knn_probe")
class KnnProbeClassifier(FrozenBackboneClassifier):
    """Cosine k-nearest neighbours on a frozen backbone's L2-normalised pooled features."""

    train_features: torch.Tensor
    train_labels: torch.Tensor

    def __init__(self, backbone: str = "resnet50", n_train: int = 1, k: int = 20,
                 num_features: int | None = None, module: nn.Module | None = None,
                 image_size: Sequence[int] | None = None):
        super().__init__(backbone, module, image_size)
        if int(k) != k or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        if int(n_train) != n_train or n_train < 1:
            raise ValueError(f"n_train must be a positive integer, got {n_train!r}")
        if num_features is not None and int(num_features) != self.num_features:
            raise ValueError(f"backbone has {self.num_features} pooled features, not {num_features}")
        self.k, self.n_train = int(k), int(n_train)
        self.register_buffer("train_features", torch.zeros(self.n_train, self.num_features))
        self.register_buffer("train_labels", torch.zeros(self.n_train))

    @property
    def architecture(self) -> dict[str, Any]:
        return {"name": self.name, "backbone": self.backbone_name, "num_features": self.num_features,
                "n_train": self.n_train, "k": self.k, "image_size": self.image_size}

    @staticmethod
    def normalise(features: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(features.float(), dim=1)

    def set_memory(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Store the training images' features (normalised here) and labels (0/1)."""
        if features.shape != self.train_features.shape:
            raise ValueError(f"expected features {tuple(self.train_features.shape)}, got {tuple(features.shape)}")
        with torch.no_grad():
            self.train_features.copy_(self.normalise(features))
            self.train_labels.copy_(labels.float().reshape(-1))

    def probability(self, features: torch.Tensor, leave_one_out: bool = False) -> torch.Tensor:
        """Share of malignant images among the ``min(k, n_train)`` most cosine-similar training images.

        ``leave_one_out``: ``features`` are the training images' own, in the stored order, and
        each is scored among the others (``min(k, n_train - 1)`` neighbours, itself excluded): a
        training image is otherwise its own nearest neighbour, and scores chosen on (the fold's
        operating point) would be optimistic."""
        sims = self.normalise(features) @ self.train_features.T
        k = min(self.k, self.n_train)
        if leave_one_out:
            if features.shape[0] != self.n_train:
                raise ValueError(f"leave-one-out needs the {self.n_train} training images' features, "
                                 f"got {features.shape[0]}")
            sims.fill_diagonal_(float("-inf"))
            k = min(self.k, self.n_train - 1)
        nearest = sims.topk(k, dim=1).indices
        return self.train_labels[nearest].to(torch.float64).mean(dim=1)

    @staticmethod
    def logits(p: torch.Tensor) -> torch.Tensor:
        """``(B,)`` probabilities -> ``(B, 1)`` float32 logits, clipped to ``[EPS, 1 - EPS]`` first."""
        p = p.clamp(EPS, 1 - EPS)
        return torch.log(p / (1 - p)).unsqueeze(1).to(torch.float32)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.features(x)
        with torch.autocast(device_type=x.device.type, enabled=False):
            return self.logits(self.probability(features))
