"""GSIM: gray-scale image mapping, the label-aware restoration pretext task of TSBN.

Gong, Wang and Shi, "Task-driven Self-supervised Bi-channel Networks for Diagnosis of Breast
Cancers with Mammography" (TSBN), eq. 1: the network maps each normalised pixel ``t`` to
``F(t) = t - (-1)**a * d / 2`` where ``a`` is the image's class (0 benign, 1 malignant): benign
images are darkened by ``d/2``, malignant ones brightened by ``d/2``, so restoring the mapping
requires recognising the class. Loss: mean squared error. ``d`` is not fixed by the paper; our
default 0.2 keeps targets close to [0, 1] while the two classes differ by 0.2 per pixel.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask


def gsim_target(images: torch.Tensor, labels: torch.Tensor, d: float) -> torch.Tensor:
    """Eq. 1: ``t - (-1)**a * d / 2`` for every pixel ``t`` of each image with label ``a``."""
    sign = 1.0 - 2.0 * (labels.reshape(-1, *([1] * (images.dim() - 1))) % 2)  # (-1)**a
    return images - sign.to(images.dtype) * (d / 2)


@PRETEXTS.register("gsim")
class GrayScaleMapping(PretextTask):
    """GSIM (TSBN eq. 1): restore a class-dependent gray-scale shift of the image; MSE loss.

    Args:
        d: the shift between the classes: benign images are darkened by d/2, malignant ones
            brightened by d/2; in (0, 1].
    """

    kind = "image"
    uses_labels = True

    def __init__(self, d: float = 0.2):
        if not 0 < d <= 1:
            raise ValueError(f"d must be in (0, 1], got {d}")
        self.d = float(d)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=[images], targets=gsim_target(images, labels, self.d))

    def loss(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(outputs[0].float(), targets.float())
