"""A timm backbone with a pretext head on it, used by the finetune and multitask transfers.

Image pretext tasks (GSIM, context restoration) get a U-Net-style decoder over the backbone's
multi-scale features (the "ResNet50 + decoder" of TSBN's Table II); embedding tasks (SimCLR,
rotation) get the task's own head on the globally pooled features. The backbone keeps its
classifier, so the same module also gives classification logits (hard parameter sharing).
"""
from __future__ import annotations

import torch
from torch import nn

from ..pretext.base import PretextTask
from .backbones import classifier_logits, encode_multiscale, num_pooled_features, pooled_features
from .heads import UNetDecoder


class PretextModel(nn.Module):
    """``backbone`` (a timm classifier) + the pretext head that ``pretext`` needs."""

    def __init__(self, backbone: nn.Module, pretext: PretextTask):
        super().__init__()
        self.backbone = backbone
        self.kind = pretext.kind
        if self.kind == "image":
            self.head = UNetDecoder.for_backbone(backbone, out_chans=1)
        elif self.kind == "embedding":
            self.head = pretext.build_embedding_head(num_pooled_features(backbone))
        else:
            raise ValueError(f"a pretext task of kind '{self.kind}' has no head")

    def _pretext_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "image":
            intermediates, final = encode_multiscale(self.backbone, x)
            return self.head(intermediates, tuple(x.shape[-2:])), final
        final = self.backbone.forward_features(x)
        return self.head(pooled_features(self.backbone, final)), final

    def forward(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pretext outputs, one per input view (views are batched together in one pass)."""
        out, _ = self._pretext_and_features(torch.cat(views) if len(views) > 1 else views[0])
        return list(out.split([v.shape[0] for v in views]))

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pretext output and classification logits ``(B,)`` from one backbone pass."""
        out, final = self._pretext_and_features(x)
        return out, classifier_logits(self.backbone, final)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return classifier_logits(self.backbone, self.backbone.forward_features(x))
