"""DINOv2: iBOT's image- and patch-level self-distillation with untied heads, plus the KoLeo regulariser (Oquab et al. 2023).

Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR 2024. iBOT's
two losses (DINO's [CLS] self-distillation across the multi-crop views and the masked-patch
self-distillation of the global views, :mod:`ssl_bench.pretext.masked_distillation`), with a
projection head of its own for the patch tokens (the paper unties iBOT's shared head), plus the
KoLeo regulariser (Sablayrolles et al. 2019) on the student's [CLS] tokens of each global view,
``-mean_i log(min_{j != i} ||x_i - x_j||)`` of the L2-normalised tokens, which spreads them over
the batch: ``L = L_DINO + L_iBOT + koleo_weight * (KoLeo(view 1) + KoLeo(view 2))``,
``koleo_weight = 0.1`` (the paper's). Built on lightly (``DINOLoss``, ``IBOTPatchLoss``,
``KoLeoLoss``, ``DINOProjectionHead``, ``MaskedVisionTransformerTIMM``, ``random_block_mask``),
wired as lightly's ``examples/pytorch/dinov2.py`` and ``benchmarks/imagenet/vitb16/dinov2.py``
(with ``ibot_separate_head``); the choices for 1-channel mammograms are those of
:mod:`ssl_bench.pretext.masked_distillation` (the paper's Sinkhorn-Knopp centring, register
tokens, layer-wise learning-rate decay and resolution stage are left out; its centring is
lightly's moving mean, as its iBOT). Needs a ViT backbone (timm ``vision_transformer``), built
for the run's image size.
"""
from __future__ import annotations

import torch
from lightly.loss import KoLeoLoss

from ..registry import PRETEXTS
from .masked_distillation import MaskedSelfDistillation
from .views import MammoViews


@PRETEXTS.register("dinov2")
class DINOv2(MaskedSelfDistillation):
    """DINOv2 (Oquab et al. 2023): iBOT with untied heads plus the KoLeo regulariser, on a ViT (lightly).

    Args:
        koleo_weight: weight of the KoLeo regulariser on the student's global [CLS] tokens (0: none).
        separate_heads: a projection head of its own for the patch tokens (the paper's untied
            heads; False shares the [CLS] token's, as iBOT).
    """

    options_from = (MammoViews, MaskedSelfDistillation)  # the shared options' descriptions (list --verbose)

    def __init__(
        self,
        koleo_weight: float = 0.1,
        local_crops: int = 4,
        local_scale: float = 0.05,
        local_size: float = 0.5,
        momentum: float = 0.99,
        teacher_temp: float = 0.04,
        student_temp: float = 0.1,
        center_momentum: float = 0.9,
        hidden_dim: int = 1024,
        bottleneck_dim: int = 128,
        out_dim: int = 1024,
        separate_heads: bool = True,
        mask_probability: float = 0.5,
        mask_ratio_min: float = 0.1,
        mask_ratio_max: float = 0.5,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        if koleo_weight < 0:
            raise ValueError(f"koleo_weight must be >= 0, got {koleo_weight}")
        super().__init__(local_crops, local_scale, local_size, momentum, teacher_temp, student_temp,
                         center_momentum, hidden_dim, bottleneck_dim, out_dim, separate_heads, mask_probability,
                         mask_ratio_min, mask_ratio_max, crop_scale, blur_prob, jitter, noise_std, vflip_prob)
        self.koleo_weight = float(koleo_weight)
        self.koleo = KoLeoLoss()

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the student's, then the teacher's
        (:class:`~ssl_bench.pretext.masked_distillation.MaskedDistillationHead`); ``L_DINO + L_iBOT
        + koleo_weight * sum of KoLeo over the 2 global views``."""
        parts = self.split(outputs)
        cls_loss, patch_loss = self.distillation_losses(parts)
        first, second = parts.cls_tokens.chunk(2)
        return cls_loss + patch_loss + self.koleo_weight * (self.koleo(first) + self.koleo(second))
