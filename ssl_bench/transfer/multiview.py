"""Multi-view fine-tuning: a breast's CC and MLO views through one shared backbone, fused late.

View-wise late fusion after Wu et al., "Deep Neural Networks Improve Radiologists' Performance in
Breast Cancer Screening", IEEE TMI 2019. Stage 1 is fine-tuning's pretext stage, unchanged (any
pretext task ``finetune`` accepts, ``--pretext-data`` too); stage 2 trains, on the fold's
**breasts**, a :class:`~ssl_bench.models.multiview.MultiViewFusion` over the pretrained backbone:
the pooled features of the CC and the MLO view side by side (a learned embedding for the view a
one-view breast lacks), a linear head to one logit, the whole network trained with the weighted
BCE (TSBN eq. 3) for ``train.epochs``. A unit's label is its breast's, the maximum of its images'.
Which images pair up, and what a breast with several CC or MLO images gives, is
:mod:`ssl_bench.data.breasts`; every image of a breast is scored with the breast's fused score.

A fold has about half as many units as images, so ``train.epochs`` over the units would take
half the optimiser steps of ``finetune`` on the same fold (measured on the phantom, quick
profile, CPU, seed 0, 3 folds: pooled breast AUC 0.58, against finetune's 0.88 [0.80, 0.92];
with the steps matched 0.85 [0.77, 0.90]). By default (``params.multiview.match_steps``) the stage therefore runs
``round(train.epochs * images / units)`` epochs: as many optimiser steps as fine-tuning takes on
the fold's images, each step reading twice the images; ``fit.breast_epochs`` records it.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data.breasts import one_view_each
from ..errors import ConfigError
from ..models.multiview import MultiViewFusion
from ..registry import TRANSFERS
from ..training.context import FitContext
from ..training.images import StreamedImages
from ..training.stages import pretrained_backbone, supervised_step
from ..training.view_pairs import unit_images
from .base import TransferStrategy


@TRANSFERS.register("multiview")
class MultiView(TransferStrategy):
    """Per breast: a shared backbone's CC and MLO features, fused late (Wu et al. 2019), after any pretext stage."""

    accepts = ("image", "embedding", "masked", "none")
    separate_pretext_stage = True
    takes_view_pairs = True

    def __init__(self, match_steps: bool = True):
        """
        Args:
            match_steps: run the breast stage for about as many optimiser steps as ``finetune`` takes on
                the fold's images (``train.epochs * images / units`` epochs); False: ``train.epochs``.
        """
        self.match_steps = bool(match_steps)

    def fit(self, ctx: FitContext) -> nn.Module:
        if isinstance(ctx.images, StreamedImages):
            raise ConfigError(
                "transfer 'multiview' holds its breasts' view pairs on the device, and this dataset is "
                "streamed (above data.memory_budget_gb): raise the budget or use another transfer"
            )
        pairs = ctx.view_pairs if ctx.view_pairs is not None else one_view_each(ctx.n_images)
        ctx.fit_info["breasts"] = pairs.counts()
        classifier = MultiViewFusion(
            ctx.config.model.backbone, module=pretrained_backbone(ctx), image_size=ctx.config.data.image_size
        )
        images = unit_images(ctx.images, pairs)
        labels = torch.from_numpy(pairs.unit_labels(ctx.labels.cpu().numpy())).float().to(ctx.device)
        step = supervised_step(ctx, classifier)
        epochs = ctx.config.train.epochs
        if self.match_steps and pairs.n_units:
            epochs = round(epochs * pairs.n_images / pairs.n_units)
        ctx.fit_info["breast_epochs"] = epochs
        classifier.train()
        ctx.train_on(images, labels, "finetune", epochs, step)
        return classifier
