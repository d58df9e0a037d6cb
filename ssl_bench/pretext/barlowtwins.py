"""Barlow Twins: redundancy reduction between two views (Zbontar et al. 2021).

Zbontar, Jing, Misra, LeCun, Deny, "Barlow Twins: Self-Supervised Learning via Redundancy
Reduction", ICML 2021. Two random views of each image go through the backbone and a projector;
the loss drives the cross-correlation matrix of the two batch-standardised embeddings to the
identity: on-diagonal terms to 1 (invariance), off-diagonal terms, weighted by ``lambda_param``,
to 0 (redundancy reduction). No negatives and no momentum encoder. Built on lightly:
``lightly.loss.BarlowTwinsLoss`` and ``lightly.models.modules.BarlowTwinsProjectionHead``
(3 layers, Linear-BN-ReLU twice then Linear).

Choices for 1-channel mammograms: views from :mod:`ssl_bench.pretext.views` (batched on the
device; crops centred on the breast, vertical flips only, gamma/gain intensity jitter instead of
colour jitter, blur and noise; the same distribution for both views, where the paper blurs and
solarises the two views with different probabilities: solarisation inverts bright tissue, which
no mammogram shows). ``hidden_dim = out_dim = 1024`` (the paper's 8192 is for ImageNet; our
training sets have hundreds to a few thousand images), ``lambda_param = 5e-3`` (the paper's,
lightly's default), ``crop_scale = 0.4`` (as SimCLR here: small crops of a mammogram are often
only fat). The standardisation is over the batch, so very small batches (the paper profile's
4) give noisy correlation estimates.

Data-parallel training (:mod:`ssl_bench.training.distributed`): :class:`WholeBatchBarlowTwinsLoss`
scores the whole global batch on every worker, standardised over it, as the paper's own code does
(the authors' reference implementation: the standardising ``BatchNorm1d(affine=False)`` becomes
a SyncBatchNorm, and the workers' correlation sums are all-reduced); lightly's
``gather_distributed`` would average the workers' correlation matrices instead, each
standardised over its own share.
"""
from __future__ import annotations

import torch
from lightly.loss import BarlowTwinsLoss
from lightly.models.modules import BarlowTwinsProjectionHead
from lightly.utils import dist
from torch import nn

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_two_embeddings
from .views import MammoViews, view_options, view_pair


class WholeBatchBarlowTwinsLoss(BarlowTwinsLoss):
    """lightly's ``BarlowTwinsLoss`` of the whole global batch on every data-parallel worker.

    Each worker gathers every worker's embeddings (``lightly.utils.dist.gather``, which carries
    the gradients back to their worker) and scores the whole batch: the loss is one process's, and
    as every worker's loss is that one, each share's gradient arrives summed over the ``W``
    workers, which DDP's average over them divides back. One process: lightly's loss as it is.
    """

    def forward(self, z_a: torch.Tensor, z_b: torch.Tensor) -> torch.Tensor:
        if dist.world_size() > 1:
            z_a, z_b = torch.cat(dist.gather(z_a)), torch.cat(dist.gather(z_b))
        return super().forward(z_a, z_b)


@PRETEXTS.register("barlowtwins")
class BarlowTwins(PretextTask):
    """Barlow Twins (Zbontar et al. 2021): cross-correlation of two views' embeddings to the identity (lightly).

    Args:
        lambda_param: weight of the off-diagonal (redundancy) terms of the cross-correlation loss.
        hidden_dim: hidden width of the 3-layer projector.
        out_dim: width of the embeddings (the cross-correlation matrix is out_dim x out_dim).
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"

    def __init__(
        self,
        lambda_param: float = 5e-3,
        hidden_dim: int = 1024,
        out_dim: int = 1024,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        if lambda_param < 0:
            raise ValueError(f"lambda_param must be >= 0, got {lambda_param}")
        check_dims(hidden_dim=hidden_dim, out_dim=out_dim)
        self.hidden_dim, self.out_dim = int(hidden_dim), int(out_dim)
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = WholeBatchBarlowTwinsLoss(lambda_param=float(lambda_param))

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        check_two_embeddings("Barlow Twins", outputs)
        return self.criterion(outputs[0].float(), outputs[1].float())

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return BarlowTwinsProjectionHead(in_features, self.hidden_dim, self.out_dim)
