"""SimCLR: contrastive instance discrimination between two augmented views (Chen et al. 2020).

Chen, Kornblith, Norouzi, Hinton, "A Simple Framework for Contrastive Learning of Visual
Representations", ICML 2020. Each image gives two random views; a backbone and a projection MLP
map them to embeddings, and the NT-Xent loss makes the two views of one image the positive pair
against the other ``2B - 2`` views of the batch. Built on lightly: ``lightly.loss.NTXentLoss``
and ``lightly.models.modules.SimCLRProjectionHead`` (Linear-BN-ReLU-Linear).

``memory_bank_size = N > 0`` (default 0, the paper's SimCLR) gives NT-Xent a memory bank of the
last ``N`` second-view embeddings (lightly's ``NTXentLoss(memory_bank_size=(N, out_dim))``, as
in MoCo's queue, without a momentum encoder): each first-view embedding is then scored against
its second view and the ``N`` banked embeddings instead of the batch, so SimCLR can be compared
fairly at a batch of 4. The bank starts as random unit vectors and lives on the outputs' device.

Data-parallel training (:mod:`ssl_bench.training.distributed`): ``gather_distributed=True``, so
each worker's views meet the whole global batch's as negatives (lightly all-gathers them with
their gradients) and the bank takes every worker's embeddings; one process gathers nothing.

Views: :mod:`ssl_bench.pretext.views` (batched, on the images' device, for 1-channel
mammograms; shared by every view-based task).

Defaults: ``temperature = 0.5`` (lightly's default),
``out_dim = 128`` (the paper's), ``hidden_dim = 512`` (smaller than the paper's 2048 since
the data sets are small), ``crop_scale = 0.4`` (SimCLR's 0.08 would often crop only fat or
background out of a mammogram; 0.4 keeps a large part of the breast), ``jitter = 0.4``,
``blur_prob = 0.5`` (the paper's), ``noise_std = 0.02``, ``vflip_prob = 0.5``. SimCLR needs many
negatives; at the paper profile's batch of 4 each anchor has only 6 (``memory_bank_size``).
"""
from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .views import (  # noqa: F401  (re-exported: the views were defined here before)
    MammoViews,
    gaussian_blur,
    resized_crop,
    sample_crop_boxes,
    view_options,
    view_pair,
)


@PRETEXTS.register("simclr")
class SimCLR(PretextTask):
    """SimCLR (Chen et al. 2020): NT-Xent between two augmented views of each image (lightly).

    Args:
        temperature: NT-Xent temperature (> 0).
        hidden_dim: hidden width of the projection head (Linear-BN-ReLU-Linear).
        out_dim: width of the embeddings the loss compares.
        memory_bank_size: N > 0 scores each view against its pair and the last N banked
            embeddings instead of the batch; 0 (the paper's SimCLR): no bank.
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"

    def __init__(
        self,
        temperature: float = 0.5,
        hidden_dim: int = 512,
        out_dim: int = 128,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
        memory_bank_size: int = 0,
    ):
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        for name, value in (("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        self.temperature = float(temperature)
        self.hidden_dim = int(hidden_dim)
        self.out_dim = int(out_dim)
        if int(memory_bank_size) != memory_bank_size or memory_bank_size < 0:
            raise ValueError(f"memory_bank_size must be an integer >= 0, got {memory_bank_size}")
        self.memory_bank_size = int(memory_bank_size)
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        bank = (self.memory_bank_size, self.out_dim) if self.memory_bank_size else 0
        self.criterion = NTXentLoss(
            temperature=self.temperature, memory_bank_size=bank, gather_distributed=True
        )

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        if len(outputs) != 2 or outputs[0].shape != outputs[1].shape or outputs[0].dim() != 2:
            shapes = [tuple(o.shape) for o in outputs]
            raise ValueError(f"SimCLR expects two (B, D) embeddings, one per view; got {shapes}")
        if self.memory_bank_size and self.criterion.memory_bank.bank.device != outputs[0].device:
            self.criterion.to(outputs[0].device)  # the bank follows the network (once)
        return self.criterion(outputs[0].float(), outputs[1].float())

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return SimCLRProjectionHead(in_features, self.hidden_dim, self.out_dim)
