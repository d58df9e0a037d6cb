"""The self-distillation pieces DINO, iBOT and DINOv2 share: lightly's losses with their centres
updated in place, and lightly's DINO projection head.

DINO (Caron et al. 2021) scores the student's softmax against the teacher's centred, sharpened
softmax of the [CLS] outputs (lightly's ``DINOLoss``); iBOT (Zhou et al. 2022) and DINOv2 (Oquab et
al. 2023) score the masked patch tokens the same way (lightly's ``IBOTPatchLoss``). Both centres
are moving averages of the teacher's outputs, which lightly replaces at every update
(``center.data = ...``, ``Center.update`` assigns a new tensor); a captured CUDA graph would not
replay that, so the losses here write the same values into the centre in place. In data-parallel
training lightly's ``center_mean`` all-reduces the batch centre whenever torch.distributed is
initialised. The head is lightly's ``DINOProjectionHead`` (a 3-layer MLP, an L2-normalised
bottleneck, a weight-normalised last layer into the prototypes).
"""
from __future__ import annotations

import warnings

import torch
from lightly.loss import DINOLoss, IBOTPatchLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.modules import center as lightly_center


class InPlaceCenterDINOLoss(DINOLoss):
    """lightly's ``DINOLoss`` with the centre updated in place (the same values; CUDA-graph safe)."""

    @torch.no_grad()
    def update_center(self, teacher_out: torch.Tensor) -> None:
        batch_center = self._center_fn(x=teacher_out, dim=(0, 1))
        self.center.copy_(
            lightly_center.center_momentum(self.center, batch_center, self.center_momentum)
        )


class InPlaceCenter(lightly_center.Center):
    """lightly's ``Center`` updated in place (the same values). A batch without a row (no masked
    patch token in it, or in a data-parallel worker's share) leaves the centre as it is, where
    lightly's mean of nothing would make it NaN (up to rounding: it is averaged with itself);
    every worker still joins the all-reduce."""

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        if x.shape[0] == 0:
            x = self.center.to(x.dtype)  # its own mean: the moving average keeps its value
        batch_center = self._center_fn(x=x, dim=self.dim)
        self.center.copy_(lightly_center.center_momentum(self.center, batch_center, self.momentum))


class InPlaceCenterIBOTPatchLoss(IBOTPatchLoss):
    """lightly's ``IBOTPatchLoss`` with its centre an :class:`InPlaceCenter` (the same values)."""

    def __init__(self, output_dim: int, teacher_temp: float, student_temp: float, center_momentum: float):
        super().__init__(output_dim=output_dim, teacher_temp=teacher_temp, student_temp=student_temp,
                         center_momentum=center_momentum)
        self.center = InPlaceCenter(size=(1, output_dim), mode="mean", momentum=center_momentum)


def dino_head(in_features: int, hidden_dim: int, bottleneck_dim: int, out_dim: int) -> DINOProjectionHead:
    """lightly's ``DINOProjectionHead`` (no batch norm, the last layer's norm fixed at 1).

    lightly 1.6 weight-normalises its last layer with ``torch.nn.utils.weight_norm``, which torch
    >= 2.1 deprecates (FutureWarning) in favour of the parametrizations version; the two compute
    the same weights. Not ours to change (and the state_dict's weight_g/weight_v names would change
    with it), so only that warning is silenced, only here: it printed once per fold through the
    progress bars.

    Args:
        in_features: width of the features it reads.
        hidden_dim: hidden width of its MLP.
        bottleneck_dim: width of its L2-normalised bottleneck.
        out_dim: number of prototypes (its output width).

    Returns:
        The head.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.nn\.utils\.weight_norm` is deprecated",
                                category=FutureWarning, module=r"torch\.nn\.utils\.weight_norm")
        return DINOProjectionHead(in_features, hidden_dim, bottleneck_dim, out_dim)

