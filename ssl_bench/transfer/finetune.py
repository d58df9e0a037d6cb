"""Fine-tuning: the classic two-stage transfer of self-supervised learning.

Stage 1 trains the downstream backbone with the pretext task's head (a decoder for image tasks,
a projection head for embedding tasks) for ``train.pretext_epochs``; stage 2 drops the pretext
head, puts a freshly initialised classifier head on the backbone and fine-tunes the whole network
with the weighted BCE (TSBN eq. 3) for ``train.epochs``. With pretext ``none`` stage 1 is skipped:
the plain supervised baseline (TSBN Table II row "ResNet"); SimCLR, CR-F and GM-F are this
strategy with another pretext task.

With ``--pretext-data`` stage 1 trains on that pool instead of the fold's training images and is
cached (:func:`ssl_bench.training.pretext_cache.cached_pretext_stage`): every fold and label
fraction with the same pool and settings reuses one trained backbone.
"""
from __future__ import annotations

from torch import nn

from ..registry import TRANSFERS
from ..training.context import FitContext
from ..training.stages import pretrained_backbone, supervised_stage
from .base import TransferStrategy


@TRANSFERS.register("finetune")
class FineTune(TransferStrategy):
    """Two stages: pretext training of backbone + pretext head, then supervised fine-tuning."""

    accepts = ("image", "embedding", "masked", "none")
    separate_pretext_stage = True

    def fit(self, ctx: FitContext) -> nn.Module:
        backbone = pretrained_backbone(ctx)
        supervised_stage(ctx, backbone, ctx.config.train.epochs)
        return backbone
