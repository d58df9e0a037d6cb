"""A projection head followed by a predictor, whose output carries both the projection ``z`` and
the prediction ``p = predictor(z)``: what SimSiam and NNCLR score.

Chen & He, "Exploring Simple Siamese Representation Learning", CVPR 2021; Dwibedi, Aytar,
Tompson, Sermanet, Zisserman, "With a Little Help from My Friends: Nearest-Neighbor Contrastive
Learning of Visual Representations" (NNCLR), ICCV 2021. Both compare one view's prediction with
the other view's projection (SimSiam: the projection itself under a stop-gradient; NNCLR: its
nearest neighbour in a memory bank), so their loss needs ``z`` and ``p`` of every view, where
lightly's examples return the pair ``(z, p)`` from their model. An embedding head returns one
tensor per input (:class:`ssl_bench.models.pretext_model.PretextModel` batches the views through
it and splits its output by view), so :class:`ProjectionPredictionHead` returns ``[z, p]`` side
by side, ``(N, 2 * out_dim)``, and the loss takes them apart with :func:`split_projection_prediction`.
Shared here so that neither task imports the other (BYOL's head differs: its teacher gives the
projections, so it returns ``p`` alone).
"""
from __future__ import annotations

import torch
from torch import nn


class ProjectionPredictionHead(nn.Module):
    """``x -> [z, predictor(z)]`` with ``z = projection(x)``, concatenated along the features.

    Args:
        projection: maps pooled backbone features ``(N, F)`` to projections ``(N, D)``.
        prediction: maps projections ``(N, D)`` to predictions ``(N, D)``.
    """

    def __init__(self, projection: nn.Module, prediction: nn.Module):
        super().__init__()
        self.projection = projection
        self.prediction = prediction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.projection(x)
        return torch.cat([z, self.prediction(z)], dim=1)


def split_projection_prediction(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The projection and the prediction, each ``(N, D)``, of a :class:`ProjectionPredictionHead`
    output ``(N, 2 * D)``, in fp32 (outputs arrive in bf16 under CUDA autocast); ``ValueError``
    for an odd width."""
    if output.dim() != 2 or output.shape[1] % 2:
        raise ValueError(f"expected a (N, 2 * D) projection and prediction, got {tuple(output.shape)}")
    z, p = output.float().chunk(2, dim=1)
    return z, p
