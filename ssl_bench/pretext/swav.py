"""SwAV: swap the prototype assignments (Sinkhorn codes) of multi-crop views (Caron et al. 2020).

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020. Every image gives two global views and
``local_crops`` smaller local views (multi-crop); the network (backbone, projector) maps each to an
L2-normalised projection ``z``, scored against ``n_prototypes`` learnable prototypes (``z @ C^T``).
For each global view, the Sinkhorn-Knopp algorithm (``sinkhorn_iterations`` iterations at
``sinkhorn_epsilon``) turns the scores of the batch (and of the queue, below) into soft codes ``q``
that spread the images equally over the prototypes; every other view then predicts them: the loss
is the cross-entropy between ``q`` and the softmax of that view's scores at ``temperature``,
averaged over the pairs. Built on lightly, wired as lightly's SwAV benchmark
(``benchmarks/imagenet/resnet50/swav.py``) does: ``SwaVProjectionHead``, ``SwaVPrototypes``
(normalised to unit length at the start of every training step, in :meth:`SwAV.prepare`, which
every step calls once before its forward pass), ``SwaVLoss`` (with its Sinkhorn) and one
``MemoryBankModule`` queue per global view. The head (:class:`SwAVHead`) returns ``[z, z @ C^T]``
of every view; the task keeps the prototypes it gives its heads, so that the loss scores the queue
against them.

The queue (``queue_size`` > 0; lightly's benchmark uses one for batches up to 256, as the paper
does): each global view's last ``queue_size`` projections, scored against the current prototypes
and appended to that view's batch scores for Sinkhorn only (never predicted), so that the codes
spread a few hundred images over the prototypes rather than a batch of 4. It is used once it
holds only this stage's projections (``queue_size`` images trained on; random unit vectors before
that, as lightly initialises it) and takes the projections of training steps only. The
prototypes are frozen (no gradient) for the first ``freeze_prototypes`` epochs of the stage, as
lightly's benchmark and the paper freeze them: lightly's ``n_steps_frozen_prototypes`` with the
epoch as the step sets their ``requires_grad`` in their forward pass; here
:class:`StagePrototypes` sets it in :meth:`SwAV.prepare`, before the forward pass, so that a
compiled forward (``train.compile``) never changes it. The epoch is counted from the images
trained on (``images_seen``, with the prototypes) over the stage's training images
(:meth:`SwAV.start_stage`): an epoch whose last single image is dropped ends one step later. The queues and the image count are state: the queues are the task's
own modules, saved with a fold's checkpoint (:meth:`SwAV.stateful_modules`); the prototypes and
their count are the head's, saved with the network. Reading the image count and lightly's queue
pointer on the host means a SwAV step is not captured with ``train.cuda_graphs`` (it runs
eagerly), unless both the queue and the freezing are off.

Data-parallel training (:mod:`ssl_bench.training.distributed`): Sinkhorn normalises over the whole
global batch (lightly's ``sinkhorn_gather_distributed``), the queues take every worker's
projections in the global batch's order (``gather_distributed``), and each worker appends its own
``1 / workers`` slice of the queue to its share's scores, so that Sinkhorn sees every queued
projection once, as one process does (``queue_size`` must be a multiple of the workers).

Choices for 1-channel mammograms and small sets: views from :mod:`ssl_bench.pretext.views`
(:class:`~ssl_bench.pretext.views.MultiCrop`, as DINO here: crops centred on the breast, vertical
flips only, gamma/gain intensity jitter instead of colour jitter and grayscale, blur and noise);
global views cover ``crop_scale``..1 (0.4; the paper's 0.14 often crops only fat or background),
local ones ``local_scale``..``crop_scale`` (0.05, the paper's) at ``local_size`` (0.5) of the
image's height and width; ``local_crops = 4`` (the paper's 6). ``n_prototypes = 128``,
``hidden_dim = 1024``, ``out_dim = 128`` (lightly's example: 512 prototypes and 512, 128; the
paper's 3000, 2048, 128 are for ImageNet: here about half the 260 projections a step's Sinkhorn
spreads at a batch of 4), ``queue_size = 256`` (the paper's 3840 is 15 batches of 256; lightly's
benchmark starts it at epoch 15, ours from the first full queue, since our stages last 1 to 30
epochs), ``freeze_prototypes = 1`` epoch (lightly's benchmark; the paper's 313 iterations are
its first epoch), ``temperature = 0.1``, ``sinkhorn_epsilon = 0.05``, ``sinkhorn_iterations = 3``
(the paper's, lightly's defaults). All views of one size go through the network in one pass, so
the projector's BatchNorm normalises over both global views together (lightly: view by view).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.utils import dist
from torch import nn

from ..errors import ConfigError
from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_two_embeddings
from .views import MammoViews, MultiCrop


class StagePrototypes(SwaVPrototypes):
    """lightly's ``SwaVPrototypes`` (one set) that count the images a stage has trained them on
    (``images_seen``, a buffer the loss adds each training batch to) and are frozen for the
    stage's first ``frozen_epochs`` epochs (:meth:`follow_stage`); outside a stage they train.

    lightly freezes them in their forward pass (``n_steps_frozen_prototypes``, ``requires_grad_``
    from the ``step`` argument, the epoch in lightly's benchmark); here the same ``requires_grad_``
    is set before the forward pass, so that a compiled forward (``train.compile``) never changes it.

    Args:
        input_dim: width of the projections scored.
        n_prototypes: number of prototypes.
        frozen_epochs: epochs of a stage during which the prototypes get no gradient.
    """

    images_seen: torch.Tensor

    def __init__(self, input_dim: int, n_prototypes: int, frozen_epochs: int):
        super().__init__(input_dim, n_prototypes)
        self.frozen_epochs = int(frozen_epochs)
        self.register_buffer("images_seen", torch.zeros((), dtype=torch.long))
        self.images_per_epoch: int | None = None

    def start_stage(self, n_images: int) -> None:
        """A stage of ``n_images`` images per epoch starts: the image count restarts."""
        self.images_per_epoch = max(1, int(n_images))
        self.images_seen.zero_()

    def follow_stage(self) -> None:
        """Before a step: frozen (``requires_grad`` False: no gradient, the optimiser skips them)
        while fewer than ``frozen_epochs`` epochs of the stage's images were trained on, trainable
        after (a host read of the count, only where freezing is configured)."""
        if self.frozen_epochs and self.images_per_epoch:
            epoch = int(self.images_seen) // self.images_per_epoch
            self.requires_grad_(epoch >= self.frozen_epochs)


class SwAVHead(nn.Module):
    """SwAV's head: ``[z, prototypes(z)]``, ``z`` the L2-normalised projection, side by side
    (``(N, out_dim + n_prototypes)``).

    Args:
        projection: maps pooled backbone features to projections.
        prototypes: scores the normalised projections (shared with the task).
    """

    def __init__(self, projection: nn.Module, prototypes: nn.Module):
        super().__init__()
        self.projection = projection
        self.prototypes = prototypes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = F.normalize(self.projection(x), dim=1, p=2)
        return torch.cat([z, self.prototypes(z)], dim=1)


@PRETEXTS.register("swav")
class SwAV(PretextTask):
    """SwAV (Caron et al. 2020): predict the Sinkhorn prototype codes of the other multi-crop views (lightly).

    Args:
        n_prototypes: number of learnable prototypes the projections are scored against.
        queue_size: earlier projections of each global view that Sinkhorn also spreads over the
            prototypes (0: the batch alone); a multiple of train.pretext_workers.
        freeze_prototypes: epochs of the stage during which the prototypes are not trained.
        temperature: softmax temperature of the predicted assignments (> 0).
        sinkhorn_epsilon: temperature of Sinkhorn's codes (> 0).
        sinkhorn_iterations: Sinkhorn-Knopp iterations per code.
        hidden_dim: hidden width of the 2-layer projector.
        out_dim: width of the projections (and of the prototypes).
    """

    options_from = (MammoViews, MultiCrop)  # the view options' descriptions (list --verbose)
    kind = "embedding"

    def __init__(
        self,
        n_prototypes: int = 128,
        queue_size: int = 256,
        freeze_prototypes: int = 1,
        temperature: float = 0.1,
        sinkhorn_epsilon: float = 0.05,
        sinkhorn_iterations: int = 3,
        hidden_dim: int = 1024,
        out_dim: int = 128,
        local_crops: int = 4,
        local_scale: float = 0.05,
        local_size: float = 0.5,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        check_dims(n_prototypes=n_prototypes, sinkhorn_iterations=sinkhorn_iterations, hidden_dim=hidden_dim,
                   out_dim=out_dim)
        for name, count in (("queue_size", queue_size), ("freeze_prototypes", freeze_prototypes)):
            if int(count) != count or count < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {count}")
        for name, value in (("temperature", temperature), ("sinkhorn_epsilon", sinkhorn_epsilon)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.n_prototypes, self.hidden_dim, self.out_dim = int(n_prototypes), int(hidden_dim), int(out_dim)
        self.queue_size = int(queue_size)
        self.crops = MultiCrop(local_crops, local_scale, local_size, crop_scale, vflip_prob, jitter, blur_prob,
                               noise_std)
        self.local_crops = self.crops.local_crops
        self.prototypes = StagePrototypes(self.out_dim, self.n_prototypes, int(freeze_prototypes))
        self.queues = nn.ModuleList(
            MemoryBankModule(size=(self.queue_size, self.out_dim), gather_distributed=True, feature_dim_first=False)
            for _ in range(2 if self.queue_size else 0)
        )
        self.criterion = SwaVLoss(temperature=float(temperature), sinkhorn_iterations=int(sinkhorn_iterations),
                                  sinkhorn_epsilon=float(sinkhorn_epsilon), sinkhorn_gather_distributed=True)

    def stateful_modules(self) -> dict[str, nn.Module]:
        """The queues (the prototypes and their image count are the head's: saved with the network)."""
        return {"queues": self.queues}

    def start_stage(self, n_images: int) -> None:
        """The prototypes' epochs are counted over ``n_images`` images from here."""
        self.prototypes.start_stage(n_images)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        # every step calls prepare once, before its forward pass: where lightly's SwAV
        # normalises the prototypes (and decides whether they are frozen)
        self.prototypes.normalize()
        self.prototypes.follow_stage()
        return PretextBatch(inputs=self.crops(images), targets=None)

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: ``[z, scores]`` of the 2 global views, then of the local views. Each
        global view's codes (Sinkhorn over its batch scores and the queue's) are predicted by every
        other view; the queues then take this step's global projections, when training."""
        n = 2 + self.local_crops
        check_two_embeddings("SwAV", outputs, count=n)
        width = self.out_dim + self.n_prototypes
        if outputs[0].shape[1] != width:
            raise ValueError(f"SwAV expects [z, scores] of width out_dim + n_prototypes = {width}; "
                             f"got {outputs[0].shape[1]}")
        z = [o[:, : self.out_dim].float() for o in outputs[:2]]
        scores = [o[:, self.out_dim :].float() for o in outputs]
        training = outputs[0].requires_grad
        queued = self._queue_scores(z, training) if self.queue_size else None
        loss = self.criterion(scores[:2], scores[2:], queued)
        if training:
            self.prototypes.images_seen += outputs[0].shape[0] * dist.world_size()
        return loss.reshape(())

    @torch.no_grad()
    def _queue_scores(self, z: list[torch.Tensor], training: bool) -> list[torch.Tensor] | None:
        """Each global view's queue as it was before the step, scored against the prototypes
        (this worker's slice of it), once the queue holds only this stage's projections; the
        projections ``z`` then enter the queues when training."""
        if self.queues[0].bank.device != z[0].device:
            self.queues.to(z[0].device)  # the queues follow the network (once)
        full = int(self.prototypes.images_seen) >= self.queue_size
        banks = [queue(view, update=training)[1] for queue, view in zip(self.queues, z)]
        if not full:
            return None
        workers = dist.world_size()
        if workers > 1:  # queue_size is a multiple of the workers: check_workers
            banks = [bank.chunk(workers)[dist.rank()] for bank in banks]
        return [self.prototypes(bank) for bank in banks]

    def check_workers(self, workers: int) -> None:
        if self.queue_size % workers:
            raise ConfigError(f"SwAV's params.swav.queue_size={self.queue_size} must be a multiple of the "
                              f"{workers} data-parallel workers (train.pretext_workers): each scores its slice "
                              f"of the queue")

    def build_embedding_head(self, in_features: int) -> nn.Module:
        return SwAVHead(SwaVProjectionHead(in_features, self.hidden_dim, self.out_dim), self.prototypes)
