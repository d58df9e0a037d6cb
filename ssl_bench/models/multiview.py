"""The view-fused classifier of the ``multiview`` transfer: one timm backbone, shared by a breast's
CC and MLO views, whose pooled features are fused late, view-aware, by a linear head.

View-wise late fusion after Wu et al., "Deep Neural Networks Improve Radiologists' Performance in
Breast Cancer Screening", IEEE TMI 2019: each view goes through the same network, the per-view
features are concatenated in a fixed view order and a head reads them. Here the input of a unit
(:mod:`ssl_bench.data.breasts`) is ``(B, 2, H, W)``, channel 0 its CC view and channel 1 its MLO
view; ``logit = head([f_CC, f_MLO])`` with ``f`` the backbone's pooled features, and a view the
unit lacks comes as an all-zero channel (a blank image holds no breast), whose features are
replaced by a learned embedding of that missing view (one per slot). Both views go through the
backbone as one batch of ``2 B`` images, the missing ones too (fixed shapes, no host sync), so the
BatchNorm statistics see the blank slots of one-view units as well.
"""

from __future__ import annotations

from typing import Any, ClassVar, Sequence, cast

import torch
from torch import nn

from ..registry import CLASSIFIERS
from .backbones import create_backbone, num_pooled_features, pooled_features
from .classifiers import FINETUNED

N_VIEWS = 2  # the CC and MLO slots (ssl_bench.data.breasts.VIEW_SLOTS)


@CLASSIFIERS.register("multiview_fusion")
class MultiViewFusion(nn.Module):
    """Late fusion of a shared timm backbone's pooled CC and MLO features, a learned embedding for a
    missing view, a linear head to one logit."""

    #: the classifier scores units of a breast's two views, ``(B, 2, H, W)``, not single images:
    #: the fold, ``predict`` and the contract checks give it view pairs (ssl_bench.data.breasts)
    takes_view_pairs: ClassVar[bool] = True
    #: ``ssl-bench export``: the backbone was fine-tuned with the fusion, through the fusion's head,
    #: never its own (exported without one)
    backbone_stage: ClassVar[str] = FINETUNED
    backbone_head_trained: ClassVar[bool] = False
    name: ClassVar[str] = "multiview_fusion"  # set by the registry

    def __init__(
        self,
        backbone: str = "resnet18",
        num_features: int | None = None,
        module: nn.Module | None = None,
        image_size: Sequence[int] | None = None,
    ):
        """``backbone``: the timm name (what ``model.pt`` records); ``module``: that backbone,
        trained (a fresh one is built when omitted: ``load_state_dict``); ``image_size``: the
        run's ``(height, width)``, which sizes the backbones built for one input size (ViTs)."""
        super().__init__()
        self.image_size = None if image_size is None else [int(v) for v in image_size]
        if module is None:
            module = create_backbone(backbone, pretrained=None, in_chans=1, num_classes=1, image_size=self.image_size)
        self.backbone_name = str(backbone)
        self.backbone = module
        self.num_features = num_pooled_features(module)
        if num_features is not None and int(num_features) != self.num_features:
            raise ValueError(f"backbone has {self.num_features} pooled features, not {num_features}")
        # zero-initialised: before training a missing view adds nothing to the logit
        self.missing = nn.Parameter(torch.zeros(N_VIEWS, self.num_features))
        self.head = nn.Linear(N_VIEWS * self.num_features, 1)

    @property
    def architecture(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backbone": self.backbone_name,
            "num_features": self.num_features,
            "image_size": self.image_size,
        }

    def view_features(self, views: torch.Tensor) -> torch.Tensor:
        """``(B, 2, H, W)`` -> ``(B, 2, F)``: each slot's pooled features, the missing embedding
        where the slot is all zeros."""
        b = views.shape[0]
        single = views.transpose(0, 1).reshape(N_VIEWS * b, 1, *views.shape[-2:])  # all CC, then all MLO
        net = cast(Any, self.backbone)
        features = pooled_features(self.backbone, net.forward_features(single))
        features = features.reshape(N_VIEWS, b, -1).transpose(0, 1)
        present = views.flatten(2).amax(-1) > 0
        return torch.where(present[..., None], features, self.missing.to(features.dtype))

    def forward(self, views: torch.Tensor) -> torch.Tensor:
        if views.dim() != 4 or views.shape[1] != N_VIEWS:
            raise ValueError(
                f"{type(self).__name__} takes a breast's views as (B, {N_VIEWS}, H, W) (CC, MLO), "
                f"got {tuple(views.shape)}"
            )
        return self.head(self.view_features(views).flatten(1))
