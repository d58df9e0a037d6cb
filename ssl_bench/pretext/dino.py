"""DINO: self-distillation with no labels, a student matching a momentum teacher across crops (Caron et al. 2021).

Caron, Touvron, Misra, Jégou, Mairal, Bojanowski, Joulin, "Emerging Properties in
Self-Supervised Vision Transformers", ICCV 2021. Every image gives two global views and
``local_crops`` smaller local views (multi-crop); the student (backbone + DINO head: a 3-layer
MLP, an L2-normalised bottleneck and a weight-normalised last layer into ``out_dim``
prototypes) sees them all, the teacher (its momentum copy, no gradients) only the global ones.
The loss is the cross-entropy between the teacher's centred, sharpened softmax
(``teacher_temp``) of one view and the student's softmax (``student_temp``) of every other
view, averaged over the pairs; the centre is a moving average (``center_momentum``) of the
teacher's outputs. After every optimiser step the teacher moves towards the student with
momentum ``momentum`` -> 1 on a cosine schedule (:mod:`ssl_bench.pretext.momentum`). Built on
lightly: ``DINOLoss`` and ``DINOProjectionHead`` through :mod:`ssl_bench.pretext.distillation`
(which iBOT and DINOv2 share; the loss's centre updated in place, so that a captured CUDA graph
replays it); ``update_momentum`` and ``cosine_schedule`` through
:mod:`ssl_bench.pretext.momentum`; the teacher is kept by
:class:`ssl_bench.models.pretext_model.PretextModel`. In data-parallel training
(:mod:`ssl_bench.training.distributed`) the centre is the whole global batch's: lightly's
``center_mean`` all-reduces the batch centre whenever torch.distributed is initialised; the loss
itself is a mean over images.

Choices for 1-channel mammograms and small sets: views from :mod:`ssl_bench.pretext.views`
(batched on the device; crops centred on the breast, vertical flips only, gamma/gain intensity
jitter instead of colour jitter, blur and noise, no solarisation: it inverts bright tissue).
Global views cover ``crop_scale``..1 of the image (0.4, as SimCLR here; the paper's 0.32 for
ImageNet), local ones ``local_scale``..``crop_scale`` (0.05, the paper's) at ``local_size``
(0.5) of the image's height and width (the paper's 96 px for 224 px images is 0.43; at 768x384
a local view is 384x192 px, at the smoke profile's 64x32 it is 32x16); ``local_crops = 4``
(the paper's 6-10; each local view costs a quarter of a global one; 0 gives two-view DINO).
``out_dim = 1024`` prototypes, ``hidden_dim = 1024``, ``bottleneck_dim = 128`` (the paper's
65536, 2048 and 256 are for ImageNet); ``teacher_temp = 0.04`` throughout (the paper warms it
from 0.04 to 0.07 over 30 epochs, more than our pretext stages last), ``student_temp = 0.1``,
``center_momentum = 0.9`` (the paper's); ``momentum = 0.99`` (the paper's 0.996 is for hundreds
of epochs; our stages are a few hundred steps). The last layer is never frozen (the paper
freezes it for the first epoch).
"""
from __future__ import annotations

from typing import cast

import torch
from lightly.models.modules import DINOProjectionHead
from torch import nn

from ..errors import ConfigError
from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_momentum
from .distillation import InPlaceCenterDINOLoss, dino_head
from .views import MammoViews, MultiCrop
from .vit import is_vit_name


@PRETEXTS.register("dino")
class DINO(PretextTask):
    """DINO (Caron et al. 2021): a student matches a momentum teacher across multi-crop views (lightly).

    Args:
        local_crops: local views per image besides the two global ones (0: two-view DINO).
        local_scale: smallest area fraction of a local view's crop (local crops cover
            local_scale..crop_scale; below crop_scale).
        local_size: a local view's height and width as a fraction of the image's.
        momentum: the teacher's momentum at the start of the stage; it rises to 1 on a cosine
            schedule over the stage's steps.
        teacher_temp: softmax temperature of the teacher's (centred, sharpened) outputs.
        student_temp: softmax temperature of the student's outputs.
        center_momentum: momentum of the moving average that centres the teacher's outputs.
        hidden_dim: hidden width of the DINO head's MLP.
        bottleneck_dim: width of the head's L2-normalised bottleneck.
        out_dim: number of prototypes (the head's output width).
        crop_scale: smallest area fraction of a global view's crop (global crops cover
            crop_scale..1 of the image).
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"
    uses_teacher = True

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
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        check_dims(hidden_dim=hidden_dim, bottleneck_dim=bottleneck_dim, out_dim=out_dim)
        for name, value in (("teacher_temp", teacher_temp), ("student_temp", student_temp)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if not 0 <= center_momentum <= 1:
            raise ValueError(f"center_momentum must be in [0, 1], got {center_momentum}")
        self.hidden_dim, self.bottleneck_dim, self.out_dim = int(hidden_dim), int(bottleneck_dim), int(out_dim)
        self.momentum_start = check_momentum(momentum)
        self.momentum_end = 1.0
        self.crops = MultiCrop(local_crops, local_scale, local_size, crop_scale, vflip_prob, jitter, blur_prob,
                               noise_std)
        self.local_crops = self.crops.local_crops
        self.criterion = InPlaceCenterDINOLoss(
            output_dim=self.out_dim,
            warmup_teacher_temp=float(teacher_temp),
            teacher_temp=float(teacher_temp),
            student_temp=float(student_temp),
            center_momentum=float(center_momentum),
        )

    def check_backbone(self, backbone: str) -> None:
        # a timm ViT is built for the run's image size and refuses the smaller local crops (iBOT
        # and DINOv2 resample its position embedding for them: pretext/masked_distillation.py)
        if self.local_crops and is_vit_name(backbone):
            raise ConfigError(f"pretext dino's {self.local_crops} local crops are smaller than the image, which a "
                              f"ViT ({backbone}) built for the run's image size cannot take; use "
                              f"--set params.dino.local_crops=0 (two-view DINO), a CNN backbone, or pretext "
                              f"ibot / dinov2 (multi-crop on a ViT)")

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=self.crops(images), targets=None)

    def teacher_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        return views[:2]

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the student's on the 2 global and the local views, then the teacher's on
        the 2 global views."""
        n = 2 + self.local_crops
        if len(outputs) != n + 2 or any(o.dim() != 2 or o.shape != outputs[0].shape for o in outputs):
            shapes = [tuple(o.shape) for o in outputs]
            raise ValueError(f"DINO expects {n} student and 2 teacher (B, D) outputs; got {shapes}")
        if self.criterion.center.device != outputs[0].device:
            self.criterion.to(outputs[0].device)  # the centre follows the network (once)
        student = [o.float() for o in outputs[:n]]
        teacher = [o.float().detach() for o in outputs[n:]]
        return self.criterion(teacher, student)

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return dino_head(in_features, self.hidden_dim, self.bottleneck_dim, self.out_dim)

    def copy_teacher_head(self, head: nn.Module) -> nn.Module:
        """A new head with the student's weights (its weight-normalised last layer cannot be
        deep-copied)."""
        in_features = cast(DINOProjectionHead, head).layers[0].in_features
        teacher = self.build_embedding_head(in_features)
        teacher.load_state_dict(head.state_dict())
        return teacher
