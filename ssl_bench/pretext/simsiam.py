"""SimSiam: a predictor matches the other view's projection under a stop-gradient (Chen & He 2021).

Chen, He, "Exploring Simple Siamese Representation Learning", CVPR 2021. Two random views of each
image go through one network (backbone, projector ``f``, predictor ``h``); the loss is the
negative cosine similarity of each view's prediction ``p = h(z)`` with the other view's
projection ``z``, which gets no gradient (the stop-gradient that keeps SimSiam from collapsing
without negatives or a momentum encoder), symmetrised: ``0.5 * (NCS(p0, sg(z1)) + NCS(p1,
sg(z0)))``, ``-1`` when perfectly aligned. Built on lightly, wired as lightly's SimSiam example
does: ``SimSiamProjectionHead`` (3 layers with BatchNorm, the last without affine parameters),
``SimSiamPredictionHead`` (a bottleneck MLP) and ``NegativeCosineSimilarity``. The head returns
``[z, p]`` of every view (:mod:`ssl_bench.pretext.predictor_head`). No state, and a mean over
images: data-parallel training needs nothing gathered.

Choices for 1-channel mammograms and small sets: views from :mod:`ssl_bench.pretext.views`
(batched on the device; crops centred on the breast, vertical flips only, gamma/gain intensity
jitter instead of colour jitter and grayscale, blur and noise), ``crop_scale = 0.4`` (the
paper's 0.2 often crops only fat or background out of a mammogram). ``hidden_dim = 1024``,
``out_dim = 128``, ``predictor_dim = 64`` (lightly's example: 512, 128 and 64; the paper's 2048,
2048 and 512 are for ImageNet). The paper's SGD with a fixed learning rate for the predictor is
replaced by the run's optimiser and schedule for every parameter (``train.*``), as for every task.
All views of a batch go through the network in one pass, so its BatchNorm layers normalise over
both views together (lightly's example: one view at a time).
"""
from __future__ import annotations

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import SimSiamPredictionHead, SimSiamProjectionHead
from torch import nn

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_two_embeddings
from .predictor_head import ProjectionPredictionHead, split_projection_prediction
from .views import MammoViews, view_options, view_pair


@PRETEXTS.register("simsiam")
class SimSiam(PretextTask):
    """SimSiam (Chen & He 2021): predict the other view's projection, stop-gradient, no negatives (lightly).

    Args:
        hidden_dim: hidden width of the 3-layer projector.
        out_dim: width of the projections and predictions.
        predictor_dim: hidden (bottleneck) width of the 2-layer predictor.
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"

    def __init__(
        self,
        hidden_dim: int = 1024,
        out_dim: int = 128,
        predictor_dim: int = 64,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        check_dims(hidden_dim=hidden_dim, out_dim=out_dim, predictor_dim=predictor_dim)
        self.hidden_dim, self.out_dim, self.predictor_dim = int(hidden_dim), int(out_dim), int(predictor_dim)
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = NegativeCosineSimilarity()

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: ``[z, p]`` of views 0 and 1. ``0.5 * (NCS(z0, p1) + NCS(z1, p0))``, the
        projections detached (lightly's example detaches them in its model's forward)."""
        check_two_embeddings("SimSiam", outputs)
        (z0, p0), (z1, p1) = (split_projection_prediction(o) for o in outputs)
        return 0.5 * (self.criterion(z0.detach(), p1) + self.criterion(z1.detach(), p0))

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return ProjectionPredictionHead(
            SimSiamProjectionHead(in_features, self.hidden_dim, self.out_dim),
            SimSiamPredictionHead(self.out_dim, self.predictor_dim, self.out_dim),
        )
