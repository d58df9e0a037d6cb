"""VICReg: variance-invariance-covariance regularisation of two views (Bardes et al. 2022).

Bardes, Ponce, LeCun, "VICReg: Variance-Invariance-Covariance Regularization for
Self-Supervised Learning", ICLR 2022. Two random views of each image go through the backbone and
an expander; the loss is ``lambda_param`` x the mean squared distance of the two embeddings
(invariance) + ``mu_param`` x a hinge keeping every dimension's batch standard deviation above
1 (variance) + ``nu_param`` x the squared off-diagonal covariances (covariance), each view
regularised on its own. No negatives and no momentum encoder. Built on lightly:
``lightly.loss.VICRegLoss`` and ``lightly.models.modules.VICRegProjectionHead`` (3 layers).

Choices for 1-channel mammograms: views from :mod:`ssl_bench.pretext.views` (batched on the
device; crops centred on the breast, vertical flips only, gamma/gain intensity jitter instead of
colour jitter, blur and noise; the same distribution for both views, without the paper's
solarisation, which inverts bright tissue). ``hidden_dim = out_dim = 1024`` (the paper's 8192 is
for ImageNet; our training sets are small), ``lambda_param = mu_param = 25``, ``nu_param = 1``
(the paper's, lightly's defaults), ``crop_scale = 0.4`` (as SimCLR here). The variance and
covariance terms are batch statistics: noisy at the paper profile's batch of 4. In data-parallel
training (:mod:`ssl_bench.training.distributed`) they are the whole global batch's
(``gather_distributed=True``: lightly all-gathers the embeddings with their gradients).
"""
from __future__ import annotations

import torch
from lightly.loss import VICRegLoss
from lightly.models.modules.heads import VICRegProjectionHead
from torch import nn

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_two_embeddings
from .views import MammoViews, view_options, view_pair


@PRETEXTS.register("vicreg")
class VICReg(PretextTask):
    """VICReg (Bardes et al. 2022): invariance, variance and covariance terms on two views (lightly).

    Args:
        lambda_param: weight of the invariance term (mean squared distance of the two embeddings).
        mu_param: weight of the variance term (a hinge keeping each dimension's batch standard
            deviation above 1).
        nu_param: weight of the covariance term (squared off-diagonal covariances).
        hidden_dim: hidden width of the 3-layer expander.
        out_dim: width of the embeddings.
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"

    def __init__(
        self,
        lambda_param: float = 25.0,
        mu_param: float = 25.0,
        nu_param: float = 1.0,
        hidden_dim: int = 1024,
        out_dim: int = 1024,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        for name, value in (("lambda_param", lambda_param), ("mu_param", mu_param), ("nu_param", nu_param)):
            if value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        check_dims(hidden_dim=hidden_dim, out_dim=out_dim)
        self.hidden_dim, self.out_dim = int(hidden_dim), int(out_dim)
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = VICRegLoss(
            lambda_param=float(lambda_param), mu_param=float(mu_param), nu_param=float(nu_param),
            gather_distributed=True,
        )

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        check_two_embeddings("VICReg", outputs)
        return self.criterion(outputs[0].float(), outputs[1].float())

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return VICRegProjectionHead(in_features, self.hidden_dim, self.out_dim, num_layers=3)
