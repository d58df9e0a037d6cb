"""MoCo v2: contrast queries with a momentum encoder's keys and a queue of negatives (Chen et al. 2020).

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
Learning" (MoCo v2), arXiv 2003.04297. Two random views of each image go through the network
(backbone + 2-layer MLP projector: the query) and through the momentum encoder (its copy, no
gradients: the key); InfoNCE at temperature ``temperature`` makes each query's positive its own
image's key against the ``queue_size`` keys of earlier batches, and each batch's keys then enter
the queue, replacing the oldest. The teacher moves towards the network with a constant momentum
``momentum`` after every optimiser step. Built on lightly: ``NTXentLoss(memory_bank_size=
(queue_size, out_dim))`` (its memory bank is MoCo's queue, filled with the second argument, the
keys) and ``MoCoProjectionHead``; ``update_momentum`` through :mod:`ssl_bench.pretext.momentum`;
the momentum encoder is kept by :class:`ssl_bench.models.pretext_model.PretextModel`. lightly's
queue update reads its write pointer on the host, so with ``train.cuda_graphs`` a MoCo step is
not captured (it runs eagerly, with the one warning of :mod:`ssl_bench.training.cuda_graphs`),
as SimCLR's NT-Xent is not.

Choices: the loss is symmetrised (``0.5 * (NCE(q0, k1) + NCE(q1, k0))``, MoCo v3's form and
lightly's MoCo example; v2 scores only one direction), so both views' keys enter the queue each
step. No shuffling BN: with one device BatchNorm sees the whole batch either way, which is what
the shuffle protects against across devices. ``queue_size = 256`` (the paper's 65536 is for
ImageNet; a queue longer than the training set holds keys of the query's own image as
negatives, so keep it below the number of training images), ``momentum = 0.999`` and
``temperature = 0.2`` (v2's), ``hidden_dim = 1024``, ``out_dim = 128`` (v2's 128, a smaller
hidden layer than its 2048 for our small sets). Views for 1-channel mammograms from
:mod:`ssl_bench.pretext.views` (batched on the device; crops centred on the breast, vertical
flips only, gamma/gain intensity jitter instead of colour jitter, no grayscale, blur and noise),
``crop_scale = 0.4`` (v2's 0.2 often crops only fat or background out of a mammogram).
"""
from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from torch import nn

from ..registry import PRETEXTS
from .barlowtwins import check_dims, check_two_embeddings
from .base import PretextBatch, PretextTask
from .byol import check_momentum
from .views import view_options, view_pair


@PRETEXTS.register("moco")
class MoCo(PretextTask):
    """MoCo v2 (Chen et al. 2020): queries vs a momentum encoder's keys and a queue of negatives (lightly)."""

    kind = "embedding"
    uses_teacher = True

    def __init__(
        self,
        queue_size: int = 256,
        momentum: float = 0.999,
        temperature: float = 0.2,
        hidden_dim: int = 1024,
        out_dim: int = 128,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        check_dims(queue_size=queue_size, hidden_dim=hidden_dim, out_dim=out_dim)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.queue_size, self.hidden_dim, self.out_dim = int(queue_size), int(hidden_dim), int(out_dim)
        self.momentum_start = self.momentum_end = check_momentum(momentum)  # constant, as MoCo's
        self.temperature = float(temperature)
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = NTXentLoss(
            temperature=self.temperature, memory_bank_size=(self.queue_size, self.out_dim)
        )

    @property
    def queue(self) -> torch.Tensor:
        """The queue of keys ``(queue_size, out_dim)`` (unit vectors; random ones at first)."""
        return self.criterion.memory_bank.bank

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the queries of views 0 and 1, then the momentum encoder's keys. The keys
        enter the queue when the queries carry a gradient (training), as in lightly."""
        check_two_embeddings("MoCo", outputs, count=4)
        q0, q1, k0, k1 = (o.float() for o in outputs)
        if self.queue.device != q0.device:
            self.criterion.to(q0.device)  # the queue follows the network (once)
        return 0.5 * (self.criterion(q0, k1.detach()) + self.criterion(q1, k0.detach()))

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return MoCoProjectionHead(in_features, self.hidden_dim, self.out_dim)
