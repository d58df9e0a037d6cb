"""NNCLR: nearest neighbours from a support set as the positives of NT-Xent (Dwibedi et al. 2021).

Dwibedi, Aytar, Tompson, Sermanet, Zisserman, "With a Little Help from My Friends:
Nearest-Neighbor Contrastive Learning of Visual Representations", ICCV 2021. Two random views of
each image go through the network (backbone, projector, predictor); each view's projection ``z``
is replaced by its nearest neighbour (cosine similarity) in a support set of earlier projections,
``NN(z)``, which serves as the positive of the other view's prediction ``p`` in NT-Xent against
the batch's other neighbours, symmetrised: ``0.5 * (NTXent(NN(z0), p1) + NTXent(NN(z1), p0))``.
The support set is a queue of the last ``memory_bank_size`` second-view projections (this step's
enter after both look-ups; it starts as random unit vectors). Built on lightly, wired as lightly's
NNCLR example does: ``NNCLRProjectionHead`` (3 layers, BatchNorm after each),
``NNCLRPredictionHead``, ``NNMemoryBankModule`` (the support set; ``z`` detached, no gradient
through the look-up) and ``NTXentLoss``; the head returns ``[z, p]`` of every view
(:mod:`ssl_bench.pretext.predictor_head`). The support set changes while training: it is the
task's state, saved with a fold's checkpoint (:meth:`PretextTask.stateful_modules`), and enters
only in training (outputs with a gradient), as lightly's memory banks do. lightly's bank reads
its write pointer on the host, so with ``train.cuda_graphs`` an NNCLR step is not captured (it
runs eagerly), as SimCLR's and MoCo's are not.

Data-parallel training (:mod:`ssl_bench.training.distributed`): NT-Xent gathers every worker's
neighbours and predictions (``gather_distributed=True``, with their gradients, as SimCLR here) and
the support set takes every worker's projections in the global batch's order, so every worker
holds one process's support set and looks its share up in it.

Choices for 1-channel mammograms and small sets: views from :mod:`ssl_bench.pretext.views`
(batched on the device; crops centred on the breast, vertical flips only, gamma/gain intensity
jitter instead of colour jitter and grayscale, blur and noise), ``crop_scale = 0.4`` (SimCLR's 0.08
often crops only fat or background out of a mammogram). ``memory_bank_size = 256`` (the paper's
98,304 is 7.7% of ImageNet, lightly's example's 4,096 8% of CIFAR-10; 256 is 15% of the
synthetic set's 1,680 training images of a fold, as MoCo's queue here; a support set of more
than an epoch's projections holds each image's own from its last epoch, a near copy of its
projection). ``temperature = 0.5`` (lightly's example, NT-Xent's default, as SimCLR here; the
paper's 0.1 is for batches of 4,096), ``hidden_dim = 1024`` for the projector and the predictor,
``out_dim = 128`` (lightly's example: 512, 512 and 128; the paper's 2048, 4096 and 256 are for
ImageNet). All views of a batch go through the network in one pass, so its BatchNorm layers
normalise over both views together (lightly's example: one view at a time).
"""
from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import NNCLRPredictionHead, NNCLRProjectionHead, NNMemoryBankModule
from torch import nn

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_two_embeddings
from .predictor_head import ProjectionPredictionHead, split_projection_prediction
from .views import MammoViews, view_options, view_pair


@PRETEXTS.register("nnclr")
class NNCLR(PretextTask):
    """NNCLR (Dwibedi et al. 2021): NT-Xent with nearest neighbours from a support set as positives (lightly).

    Args:
        memory_bank_size: projections of earlier batches kept as the support set the nearest
            neighbours come from.
        temperature: NT-Xent temperature (> 0).
        hidden_dim: hidden width of the 3-layer projector and of the 2-layer predictor.
        out_dim: width of the projections and predictions.
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"

    def __init__(
        self,
        memory_bank_size: int = 256,
        temperature: float = 0.5,
        hidden_dim: int = 1024,
        out_dim: int = 128,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        check_dims(memory_bank_size=memory_bank_size, hidden_dim=hidden_dim, out_dim=out_dim)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.memory_bank_size, self.hidden_dim, self.out_dim = int(memory_bank_size), int(hidden_dim), int(out_dim)
        self.temperature = float(temperature)
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = NTXentLoss(temperature=self.temperature, gather_distributed=True)
        self.support_set = NNMemoryBankModule(size=(self.memory_bank_size, self.out_dim))
        # NNMemoryBankModule takes no gather_distributed argument; its parent reads the attribute
        self.support_set.gather_distributed = True

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: ``[z, p]`` of views 0 and 1. ``0.5 * (NTXent(NN(z0), p1) + NTXent(NN(z1),
        p0))``, both neighbours looked up in the support set as it was before the call; ``z1``
        then enters it when the predictions carry a gradient (training), as in lightly's example."""
        check_two_embeddings("NNCLR", outputs)
        (z0, p0), (z1, p1) = (split_projection_prediction(o) for o in outputs)
        if self.support_set.bank.device != z0.device:
            self.support_set.to(z0.device)  # the support set follows the network (once)
        nn0 = self.support_set(z0.detach(), update=False)
        nn1 = self.support_set(z1.detach(), update=p1.requires_grad)
        return 0.5 * (self.criterion(nn0, p1) + self.criterion(nn1, p0))

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return ProjectionPredictionHead(
            NNCLRProjectionHead(in_features, self.hidden_dim, self.out_dim),
            NNCLRPredictionHead(self.out_dim, self.hidden_dim, self.out_dim),
        )
