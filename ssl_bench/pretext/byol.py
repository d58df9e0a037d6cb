"""BYOL: an online network predicts a momentum teacher's projection of another view (Grill et al. 2020).

Grill et al., "Bootstrap Your Own Latent: A New Approach to Self-Supervised Learning", NeurIPS
2020. Two random views of each image go through the online network (backbone, projector,
predictor) and through the teacher (the momentum copies of the backbone and projector, without
the predictor and without gradients); the loss is the negative cosine similarity of each view's
prediction with the teacher's projection of the other view, symmetrised (lightly's BYOL recipe:
``0.5 * (NCS(p0, z1) + NCS(p1, z0))``, ``-1`` when perfectly aligned; the paper's ``2 - 2 cos`` is
an affine function of it). After every optimiser step the teacher moves towards the online
network with momentum ``momentum`` -> 1 on a cosine schedule over the stage's steps
(:mod:`ssl_bench.pretext.momentum`, lightly's ``update_momentum`` and ``cosine_schedule``).
Built on lightly: ``BYOLProjectionHead``, ``BYOLPredictionHead`` and ``NegativeCosineSimilarity``;
the teacher is kept by :class:`ssl_bench.models.pretext_model.PretextModel` (``uses_teacher``).

Choices for 1-channel mammograms: views from :mod:`ssl_bench.pretext.views` (batched on the
device; crops centred on the breast, vertical flips only, gamma/gain intensity jitter instead of
colour jitter, blur and noise; the same distribution for both views, where the paper blurs the
two views with probabilities 1.0 and 0.1 and solarises one: solarisation inverts bright tissue).
``hidden_dim = 1024``, ``out_dim = 128`` (the paper's 4096 and 256 are for ImageNet; our training
sets are small), ``momentum = 0.99`` (the paper's 0.996 is for hundreds of epochs of thousands of
steps; our pretext stages are a few hundred steps, so the teacher must follow faster),
``crop_scale = 0.4`` (as SimCLR here).
"""
from __future__ import annotations

from typing import cast

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from torch import nn

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_momentum, check_two_embeddings
from .views import MammoViews, view_options, view_pair


class ProjectThenPredict(nn.Module):
    """BYOL's online head: ``prediction(projection(x))``; the teacher copies ``projection`` only."""

    def __init__(self, projection: nn.Module, prediction: nn.Module):
        super().__init__()
        self.projection = projection
        self.prediction = prediction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction(self.projection(x))


@PRETEXTS.register("byol")
class BYOL(PretextTask):
    """BYOL (Grill et al. 2020): predict a momentum teacher's projection of the other view (lightly).

    Args:
        momentum: the teacher's momentum at the start of the stage; it rises to 1 on a cosine
            schedule over the stage's steps.
        hidden_dim: hidden width of the projector and of the predictor.
        out_dim: width of the projections and predictions.
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"
    uses_teacher = True

    def __init__(
        self,
        momentum: float = 0.99,
        hidden_dim: int = 1024,
        out_dim: int = 128,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        check_dims(hidden_dim=hidden_dim, out_dim=out_dim)
        self.hidden_dim, self.out_dim = int(hidden_dim), int(out_dim)
        self.momentum_start = check_momentum(momentum)
        self.momentum_end = 1.0
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = NegativeCosineSimilarity()

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the online predictions of views 0 and 1, then the teacher's projections."""
        check_two_embeddings("BYOL", outputs, count=4)
        p0, p1, z0, z1 = (o.float() for o in outputs)
        return 0.5 * (self.criterion(p0, z1.detach()) + self.criterion(p1, z0.detach()))

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return ProjectThenPredict(
            BYOLProjectionHead(in_features, self.hidden_dim, self.out_dim),
            BYOLPredictionHead(self.out_dim, self.hidden_dim, self.out_dim),
        )

    def teacher_head(self, head: nn.Module) -> nn.Module:
        return cast(ProjectThenPredict, head).projection
