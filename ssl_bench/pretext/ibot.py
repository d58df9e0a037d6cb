"""iBOT: masked image modelling with an online tokenizer, DINO plus a masked-patch self-distillation (Zhou et al. 2022).

Zhou, Wei, Wang, Shen, Xie, Yuille, Kong, "iBOT: Image BERT Pre-Training with Online Tokenizer",
ICLR 2022. The student ViT sees the global views with blocks of their patches replaced by a mask
token, and the local views; the teacher (its momentum copy) sees the global views whole. The loss
is ``L_[CLS] + L_MIM`` (the paper's equal weights): DINO's cross-entropy between the teacher's
and the student's [CLS] outputs across views, and the cross-entropy between the teacher's outputs
at the masked patches, which it sees, and the student's, which it has to infer (the teacher is
the online tokenizer). One projection head for the [CLS] and the patch tokens (the paper's shared
head). The machinery it shares with DINOv2, and the choices for 1-channel mammograms, are in
:mod:`ssl_bench.pretext.masked_distillation`; built on lightly (``DINOLoss``, ``IBOTPatchLoss``,
``DINOProjectionHead``, ``MaskedVisionTransformerTIMM``, ``random_block_mask``), wired as
lightly's ``benchmarks/imagenet/vitb16/ibot.py``. Needs a ViT backbone (timm
``vision_transformer``), built for the run's image size.
"""
from __future__ import annotations

import torch

from ..registry import PRETEXTS
from .masked_distillation import MaskedSelfDistillation
from .views import MammoViews


@PRETEXTS.register("ibot")
class IBOT(MaskedSelfDistillation):
    """iBOT (Zhou et al. 2022): DINO plus a masked-patch-token self-distillation, on a ViT (lightly).

    Args:
        separate_heads: a projection head of its own for the patch tokens (the paper shares one).
    """

    options_from = (MammoViews, MaskedSelfDistillation)  # the shared options' descriptions (list --verbose)

    def __init__(
        self,
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
        separate_heads: bool = False,
        mask_probability: float = 0.5,
        mask_ratio_min: float = 0.1,
        mask_ratio_max: float = 0.5,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        super().__init__(local_crops, local_scale, local_size, momentum, teacher_temp, student_temp,
                         center_momentum, hidden_dim, bottleneck_dim, out_dim, separate_heads, mask_probability,
                         mask_ratio_min, mask_ratio_max, crop_scale, blur_prob, jitter, noise_std, vflip_prob)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the student's, then the teacher's
        (:class:`~ssl_bench.pretext.masked_distillation.MaskedDistillationHead`); ``L_[CLS] + L_MIM``."""
        cls_loss, patch_loss = self.distillation_losses(self.split(outputs))
        return cls_loss + patch_loss
