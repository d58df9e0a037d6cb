"""MoCo v2: contrast queries with a momentum encoder's keys and a queue of negatives (Chen et al. 2020).

He, Fan, Wu, Xie, Girshick, "Momentum Contrast for Unsupervised Visual Representation
Learning", CVPR 2020; Chen, Fan, Girshick, He, "Improved Baselines with Momentum Contrastive
Learning" (MoCo v2), arXiv 2003.04297. Two random views of each image go through the network
(backbone + 2-layer MLP projector: the query) and through the momentum encoder (its copy, no
gradients: the key); InfoNCE at temperature ``temperature`` makes each query's positive the key
of its own image's other view and its negatives the ``queue_size`` keys of earlier batches (the
queue as it was before this step), and this batch's keys then enter the queue, replacing the
oldest. After every optimiser step the momentum encoder moves towards the network with momentum
``momentum`` -> 1 on a cosine schedule over the stage's steps (:mod:`ssl_bench.pretext.momentum`,
lightly's ``update_momentum`` and ``cosine_schedule``, as BYOL and DINO here). Built on lightly:
``NTXentLoss(memory_bank_size=(queue_size, out_dim))`` (its memory bank is MoCo's queue: it
scores each row of its first argument against the same row of its second and against the bank
as it was before the call, then enqueues the second argument, only when the first carries a
gradient) and ``MoCoProjectionHead``; the momentum encoder is kept by
:class:`ssl_bench.models.pretext_model.PretextModel`. lightly's queue update reads its write
pointer on the host, so with ``train.cuda_graphs`` a MoCo step is not captured (it runs eagerly,
with the one warning of :mod:`ssl_bench.training.cuda_graphs`), as SimCLR's NT-Xent is not.

Choices: the loss is symmetrised, ``0.5 * (NCE(q0, k1) + NCE(q1, k0))`` (MoCo v3's form: Chen,
Xie, He, "An Empirical Study of Training Self-Supervised Vision Transformers", ICCV 2021; v2
scores only one direction), both terms against the queue as it was before the step: one call of
lightly's loss on the stacked queries ``[q0; q1]`` and keys ``[k1; k0]``, whose mean over the
``2B`` rows is exactly that average, so both views' keys enter the queue once each, ``2B`` keys
per step, ``k1``'s before ``k0``'s (at the queue's end lightly drops the keys that do not fit and
starts again at its front). No shuffling BN: with one device BatchNorm sees the whole batch
either way, which is what the shuffle protects against across devices. ``queue_size = 256`` (the
paper's 65536 is for ImageNet): from the second epoch on, a queue of at least an epoch's keys
(``2 x`` the training images) holds keys of their own image (from its previous epoch) among the
negatives of about half the queries or more, so :meth:`MoCo.start_stage` warns, once per queue
size and process, when ``queue_size >= 2 x`` the images the stage trains on (a shorter queue
holds them only for images drawn again within ``queue_size / 2`` images, around an epoch's
start). ``momentum = 0.99`` -> 1, cosine (MoCo v3's default, ``--moco-m 0.99 --moco-m-cos``;
v2's constant 0.999 is for 200 epochs of 5000 steps, our pretext stages are a few hundred: after
the quick profile's 80 steps the random start would still make up 96% of the key encoder with
0.999 -> 1, 92% with a constant 0.999, 67% with 0.99 -> 1), ``temperature = 0.2`` (v2's),
``hidden_dim = 1024``, ``out_dim = 128`` (v2's 128, a smaller hidden layer than its 2048 for our
small sets). Views for 1-channel mammograms from
:mod:`ssl_bench.pretext.views` (batched on the device; crops centred on the breast, vertical
flips only, gamma/gain intensity jitter instead of colour jitter, no grayscale, blur and noise),
``crop_scale = 0.4`` (v2's 0.2 often crops only fat or background out of a mammogram).
"""
from __future__ import annotations

import warnings

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.models.utils import concat_all_gather
from lightly.utils import dist
from torch import nn

from ..errors import ToolkitWarning
from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_momentum, check_two_embeddings
from .views import MammoViews, view_options, view_pair

#: the queue sizes already warned about in this process (one line per run, not one per fold)
_WARNED_QUEUE_SIZES: set[int] = set()


class KeyQueue(MemoryBankModule):
    """lightly's memory bank as MoCo's queue; in data-parallel training it takes every worker's
    keys in one process's order, all ``k1`` then all ``k0`` (each worker's are ``[k1; k0]`` of
    its share, which lightly's ``gather_distributed`` would interleave)."""

    @torch.no_grad()
    def _dequeue_and_enqueue(self, batch: torch.Tensor) -> None:
        workers = dist.world_size()
        if workers > 1:
            keys = concat_all_gather(batch.contiguous())
            batch = keys.view(workers, 2, -1, keys.shape[-1]).transpose(0, 1).flatten(0, 2)
        super()._dequeue_and_enqueue(batch)


@PRETEXTS.register("moco")
class MoCo(PretextTask):
    """MoCo v2 (Chen et al. 2020): queries vs a momentum encoder's keys and a queue of negatives (lightly).

    Args:
        queue_size: keys of earlier batches kept as negatives; keep it below 2 x the training
            images (a warning says when it is not).
        momentum: the momentum encoder's momentum at the start of the stage; it rises to 1 on a
            cosine schedule over the stage's steps.
        temperature: InfoNCE temperature (> 0).
        hidden_dim: hidden width of the 2-layer projector.
        out_dim: width of the queries and keys.
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "embedding"
    uses_teacher = True

    def __init__(
        self,
        queue_size: int = 256,
        momentum: float = 0.99,
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
        self.momentum_start = check_momentum(momentum)
        self.momentum_end = 1.0
        self.temperature = float(temperature)
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = NTXentLoss(temperature=self.temperature)
        self.criterion.memory_bank = KeyQueue(size=(self.queue_size, self.out_dim))

    @property
    def queue(self) -> torch.Tensor:
        """The queue of keys ``(queue_size, out_dim)`` (unit vectors; random ones at first)."""
        return self.criterion.memory_bank.bank

    def start_stage(self, n_images: int) -> None:
        """A :class:`~ssl_bench.errors.ToolkitWarning` when the queue holds at least an epoch's
        keys, ``queue_size >= 2 * n_images`` (both views' keys of every image enter it each
        epoch), so that queries meet their own image's earlier keys among the negatives; once
        per queue size and process (the folds of a run train on nearly as many images)."""
        keys_per_epoch = 2 * int(n_images)
        if self.queue_size >= keys_per_epoch and self.queue_size not in _WARNED_QUEUE_SIZES:
            _WARNED_QUEUE_SIZES.add(self.queue_size)
            warnings.warn(
                f"MoCo's queue_size={self.queue_size} holds at least an epoch's keys (2 per training "
                f"image, {n_images} images in this stage), so queries meet their own image's keys "
                f"among the negatives; set params.moco.queue_size below 2 x the training images "
                f"({keys_per_epoch} here)",
                ToolkitWarning,
                stacklevel=2,
            )

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        return PretextBatch(inputs=view_pair(self.views, images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the queries of views 0 and 1, then the momentum encoder's keys.
        ``0.5 * (NCE(q0, k1) + NCE(q1, k0))``, both against the queue as it was before the call; the
        keys ``[k1; k0]`` then enter the queue when the queries carry a gradient (training), as
        in lightly."""
        check_two_embeddings("MoCo", outputs, count=4)
        q0, q1, k0, k1 = (o.float() for o in outputs)
        if self.queue.device != q0.device:
            self.criterion.to(q0.device)  # the queue follows the network (once)
        # one call: the mean over the 2B rows is the two directions' average, each scored
        # against the pre-step queue, and each key is enqueued once
        return self.criterion(torch.cat([q0, q1]), torch.cat([k1, k0]).detach())

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return MoCoProjectionHead(in_features, self.hidden_dim, self.out_dim)
