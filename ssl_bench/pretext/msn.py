"""MSN: masked anchor views match an unmasked target view's prototype assignment (Assran et al. 2022).

Assran, Caron, Misra, Bojanowski, Bordes, Vincent, Joulin, Rabbat, Ballas, "Masked Siamese
Networks for Label-Efficient Learning", ECCV 2022. Every image gives a target view and anchor
views (random views of it). The anchors go through the ViT seeing only some of their patches (the
others are dropped, not replaced by a mask token) and a projection head; the target goes whole
through the target encoder, a momentum copy of ViT and head without gradients. Each embedding is
L2-normalised and scored (cosine similarity over ``temperature``, softmax) against learnable
prototypes; the loss is the cross-entropy between the target's prototype assignment (sharpened by
``sharpen_temperature`` and balanced by Sinkhorn) and each anchor's, plus ``me_max_weight`` times
the negative entropy of the anchors' mean assignment (mean-entropy maximisation, so that every
prototype is used). After every optimiser step the target encoder moves towards the network with
momentum ``momentum`` -> 1 on a cosine schedule (:mod:`ssl_bench.pretext.momentum`).

Built on lightly, wired as its ``examples/pytorch/msn.py``: ``MSNLoss``, ``MSNProjectionHead``,
``MaskedVisionTransformerTIMM`` (:class:`~ssl_bench.pretext.vit.RectangularMaskedViT`, on the
downstream timm ViT, keeping timm's initialisation) and ``random_token_mask``
(:func:`~ssl_bench.pretext.vit.random_patch_mask`); the target encoder is the teacher that
:class:`ssl_bench.models.pretext_model.PretextModel` keeps (``uses_teacher``; the head's
:class:`MSNEncoder`, holding the ViT, is the part it copies). Unlike lightly's example, whose loss
gets ``prototypes.data`` (so its prototypes never leave their initialisation), the prototypes are
trained, as in the paper. The masks are drawn in ``prepare`` with the views, for the whole batch.
Data-parallel training (:mod:`ssl_bench.training.distributed`): :class:`WholeBatchMSNLoss` scores
the whole global batch on every worker (Sinkhorn and the mean-entropy term are over the batch;
lightly's ``gather_distributed`` would gather only Sinkhorn's sums).

Masking, and choices for 1-channel rectangular mammograms: the paper's two anchor masks. The anchor
view drops a random ``mask_ratio`` of its patches (random masking; 0.15, lightly's example's).
The paper and lightly take ``focal_views`` small crops (96 px of a 224 px image) as focal views;
here the ViT is built for the run's image size (its position embedding is that size's), so a
focal view is a random view of the image's size of which only a random block of ``focal_size``
of the patch grid's rows and columns is kept: the paper's focal masking, done on the patch grid
(a 24x12-patch block of the 48x24 grid at 768x384 with 16 px patches, 2x1 of the smoke profile's
4x2), each a quarter of a view's tokens; ``focal_views = 4`` (the paper's 10, as DINO's local crops
here). Views from :mod:`ssl_bench.pretext.views` (crops of 0.4..1 centred on the breast, vertical
flips only, gamma/gain intensity jitter, blur and noise). ``hidden_dim = 1024`` (lightly's and the
paper's 2048), ``out_dim = 256`` and ``num_prototypes = 1024`` (lightly's example's);
``temperature = 0.1``, ``sharpen_temperature = 0.25`` (the target's temperature 0.1 * 0.25 =
0.025), 3 Sinkhorn iterations and ``me_max_weight = 1`` (lightly's defaults, the paper's);
``momentum = 0.99`` (lightly's example keeps 0.996; our stages are a few hundred steps). The
downstream backbone is the network (the anchor encoder), as for the other teacher tasks here.
"""
from __future__ import annotations

from typing import cast

import torch
from lightly.loss import MSNLoss
from lightly.models.modules.heads import MSNProjectionHead
from lightly.utils import dist
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_momentum
from .views import MammoViews, view_options, view_pair
from .vit import RectangularMaskedViT, as_vit, check_vit_name, patch_grid, prefixed, random_patch_mask


class WholeBatchMSNLoss(MSNLoss):
    """lightly's ``MSNLoss`` of the whole global batch on every data-parallel worker.

    Each worker gathers every worker's anchors (view by view, so that they stay laid out view by
    view) and targets (``lightly.utils.dist.gather``, which carries the gradients back to their
    worker) and scores the whole batch, as :class:`~ssl_bench.pretext.barlowtwins`' loss does: the
    loss is one process's, each share's gradient arrives summed over the ``W`` workers and DDP's
    average divides it back. One process: lightly's loss as it is.
    """

    def forward(self, anchors: torch.Tensor, targets: torch.Tensor, prototypes: torch.Tensor,
                target_sharpen_temperature: float = 0.25) -> torch.Tensor:
        if dist.world_size() > 1:
            views = anchors.split(targets.shape[0])
            anchors = torch.cat([torch.cat(dist.gather(v)) for v in views])
            targets = torch.cat(dist.gather(targets))
        return super().forward(anchors, targets, prototypes, target_sharpen_temperature)


def focal_block_keep(n: int, grid: tuple[int, int], block: tuple[int, int],
                     device: torch.device | None = None) -> torch.Tensor:
    """Focal masking: per view, the patches of one random ``block`` of ``(rows, columns)``
    patches of the ``grid``, anywhere inside it.

    Args:
        n: the number of views.
        grid: the patch grid, ``(rows, columns)``.
        block: the kept block, ``(rows, columns)``, at most the grid's.
        device: where the indices go.

    Returns:
        ``(n, rows * columns)`` patch indices (row by row, as the patches are), each view's block
        row by row.
    """
    (rows, cols), (bh, bw) = grid, block
    top = torch.randint(0, rows - bh + 1, (n, 1), device=device)
    left = torch.randint(0, cols - bw + 1, (n, 1), device=device)
    offsets = (torch.arange(bh, device=device).view(bh, 1) * cols + torch.arange(bw, device=device)).view(1, -1)
    return (top * cols + left) + offsets


class AnchorMasks:
    """The patches MSN's anchors keep on a ViT's patch grid: a random ``1 - mask_ratio`` of the
    anchor view's (random masking), a random block of ``focal_size`` of the grid's rows and columns
    of each focal view's (focal masking). Plain values, so that the task keeps it without the head."""

    def __init__(self, grid: tuple[int, int], mask_ratio: float, focal_views: int, focal_size: float):
        self.grid, self.num_patches = grid, grid[0] * grid[1]
        self.mask_ratio, self.focal_views = float(mask_ratio), int(focal_views)
        self.focal_block = (max(1, round(grid[0] * focal_size)), max(1, round(grid[1] * focal_size)))

    def draw(self, batch: int, device: torch.device | None = None) -> list[torch.Tensor]:
        """``[anchor_keep]`` (``(batch, n)``), then, with focal views, ``focal_keep``
        (``(focal_views * batch, m)``, view by view): patch indices drawn for ``batch`` images."""
        keep = [random_patch_mask(batch, self.num_patches, self.mask_ratio, device)[0]]
        if self.focal_views:
            keep.append(focal_block_keep(self.focal_views * batch, self.grid, self.focal_block, device))
        return keep


class MSNEncoder(nn.Module):
    """The ViT (lightly's masked ViT on it, shared, not copied) and MSN's projection head: the part
    of the MSN head that the target encoder copies."""

    def __init__(self, vit: VisionTransformer, hidden_dim: int, out_dim: int):
        super().__init__()
        self.encoder = RectangularMaskedViT(vit, weight_initialization="skip", pos_embed_initialization="skip")
        self.projection = MSNProjectionHead(vit.embed_dim, hidden_dim, out_dim)

    def embed(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The projected embedding ``(B, out_dim)`` of images seeing only the token indices ``keep``
        (prefix tokens included, :func:`~ssl_bench.pretext.vit.prefixed`; every token without it),
        read at the ViT's own pooling (its class token)."""
        return self.projection(self.encoder(images, idx_keep=keep))

    def forward(self, target: torch.Tensor) -> list[torch.Tensor]:
        """As the target encoder: ``[the target view's embedding]``, the view whole."""
        return [self.embed(target)]


class MSNHead(nn.Module):
    """MSN's anchor pass over a timm ViT, and the prototypes.

    ``forward(target, anchor, *focal, anchor_keep, focal_keep)`` takes the task's inputs (the
    target view, which the teacher embeds, is not used here): the anchor view seeing the patches
    ``anchor_keep`` (``(B, n)`` indices) indexes, the ``focal_views`` focal views, each seeing the
    block of its rows of ``focal_keep`` (``(focal_views * B, m)``, view by view); without the
    indices it draws them. Returns ``[anchors, prototypes]``: the anchors' embeddings
    ``((1 + focal_views) * B, out_dim)``, view by view, and the prototypes ``(num_prototypes,
    out_dim)``, a parameter of this head.
    """

    def __init__(self, vit: VisionTransformer, hidden_dim: int, out_dim: int, num_prototypes: int,
                 mask_ratio: float, focal_views: int, focal_size: float):
        super().__init__()
        _, grid = patch_grid("msn", vit)
        self.masks = AnchorMasks(grid, mask_ratio, focal_views, focal_size)
        self.branch = MSNEncoder(vit, hidden_dim, out_dim)
        self.prototypes = nn.Linear(out_dim, num_prototypes, bias=False)  # lightly's example's prototypes
        self.prefix, self.focal_views = int(vit.num_prefix_tokens), int(focal_views)

    def forward(self, target: torch.Tensor, anchor: torch.Tensor, *rest: torch.Tensor) -> list[torch.Tensor]:
        focal, keep = list(rest[: self.focal_views]), list(rest[self.focal_views:])
        if len(focal) != self.focal_views or len(keep) not in (0, 1 + bool(self.focal_views)):
            raise ValueError(f"MSN's head takes the target, the anchor, {self.focal_views} focal views and "
                             f"their patch indices; got {2 + len(rest)} inputs")
        if not keep:
            keep = self.masks.draw(anchor.shape[0], anchor.device)
        anchors = [self.branch.embed(anchor, prefixed(keep[0], self.prefix))]
        if focal:  # one pass for all the focal views: they keep as many patches
            anchors.append(self.branch.embed(torch.cat(focal), prefixed(keep[1], self.prefix)))
        return [torch.cat(anchors), self.prototypes.weight]


@PRETEXTS.register("msn")
class MSN(PretextTask):
    """MSN (Assran et al. 2022): masked anchor views match a momentum target view's prototype assignment (lightly; needs a ViT).

    Args:
        mask_ratio: fraction of the anchor view's patches dropped (random masking), in [0, 1).
        focal_views: anchor views keeping one random block of patches only (focal masking).
        focal_size: height and width of a focal view's block, as a fraction of the patch grid's.
        num_prototypes: number of learnable prototypes.
        hidden_dim: hidden width of the 3-layer projection head.
        out_dim: width of the embeddings and prototypes.
        temperature: temperature of the cosine similarities to the prototypes.
        sharpen_temperature: sharpening of the target's prototype assignment (p ** (1 / t),
            renormalised).
        sinkhorn_iterations: Sinkhorn balancing iterations of the targets' assignments (0: none).
        me_max_weight: weight of the mean-entropy maximisation term.
        momentum: the target encoder's momentum at the start of the stage; it rises to 1 on a cosine
            schedule over the stage's steps.
        crop_scale: smallest area fraction of a view's crop (crops cover crop_scale..1 of the image).
    """

    options_from = (MammoViews,)  # the view options' descriptions (list --verbose)
    kind = "masked"
    uses_teacher = True

    def __init__(
        self,
        mask_ratio: float = 0.15,
        focal_views: int = 4,
        focal_size: float = 0.5,
        num_prototypes: int = 1024,
        hidden_dim: int = 1024,
        out_dim: int = 256,
        temperature: float = 0.1,
        sharpen_temperature: float = 0.25,
        sinkhorn_iterations: int = 3,
        me_max_weight: float = 1.0,
        momentum: float = 0.99,
        crop_scale: float = 0.4,
        blur_prob: float = 0.5,
        jitter: float = 0.4,
        noise_std: float = 0.02,
        vflip_prob: float = 0.5,
    ):
        check_dims(num_prototypes=num_prototypes, hidden_dim=hidden_dim, out_dim=out_dim)
        if not 0 <= mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in [0, 1), got {mask_ratio}")
        if int(focal_views) != focal_views or focal_views < 0:
            raise ValueError(f"focal_views must be an integer >= 0, got {focal_views}")
        if not 0 < focal_size <= 1:
            raise ValueError(f"focal_size must be in (0, 1], got {focal_size}")
        if int(sinkhorn_iterations) != sinkhorn_iterations or sinkhorn_iterations < 0:
            raise ValueError(f"sinkhorn_iterations must be an integer >= 0, got {sinkhorn_iterations}")
        for name, value in (("temperature", temperature), ("sharpen_temperature", sharpen_temperature)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        if me_max_weight < 0:
            raise ValueError(f"me_max_weight must be >= 0, got {me_max_weight}")
        self.mask_ratio, self.focal_views, self.focal_size = float(mask_ratio), int(focal_views), float(focal_size)
        self.num_prototypes, self.hidden_dim, self.out_dim = int(num_prototypes), int(hidden_dim), int(out_dim)
        self.sharpen_temperature = float(sharpen_temperature)
        self.momentum_start = check_momentum(momentum)
        self.momentum_end = 1.0
        self.views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.criterion = WholeBatchMSNLoss(temperature=float(temperature),
                                           sinkhorn_iterations=int(sinkhorn_iterations),
                                           regularization_weight=float(me_max_weight))
        self.masks: AnchorMasks | None = None  # once a head is built: it knows the patch grid

    def check_backbone(self, backbone: str) -> None:
        check_vit_name("msn", backbone)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        """The target view, the anchor view, the focal views, then the patches each anchor keeps,
        drawn here with the views for the whole batch (a data-parallel worker keeps its share).
        Before a head is built the patch grid is unknown: the views alone, and the head draws the
        masks (the contract checker's first call; a training step always has a head)."""
        views = view_pair(self.views, images)  # [target, anchor]
        with torch.no_grad():
            views += [self.views(images) for _ in range(self.focal_views)]
        if self.masks is None:
            return PretextBatch(inputs=views, targets=None)
        return PretextBatch(inputs=views + self.masks.draw(images.shape[0], images.device), targets=None)

    def build_masked_head(self, backbone: nn.Module) -> nn.Module:
        head = MSNHead(as_vit("msn", backbone), self.hidden_dim, self.out_dim, self.num_prototypes,
                       self.mask_ratio, self.focal_views, self.focal_size)
        self.masks = head.masks
        return head

    def teacher_head(self, head: nn.Module) -> nn.Module:
        """The ViT and the projection head (:class:`MSNEncoder`), not the prototypes."""
        return cast(MSNHead, head).branch

    def teacher_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """The target view."""
        return views[:1]

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the anchors' embeddings (view by view) and the prototypes
        (:class:`MSNHead`), then the target encoder's embedding of the target view."""
        if len(outputs) != 3 or any(o.dim() != 2 for o in outputs):
            raise ValueError(f"MSN expects the anchors' embeddings, the prototypes and the targets' embeddings, "
                             f"three 2-D tensors; got {[tuple(o.shape) for o in outputs]}")
        anchors, prototypes, target = outputs
        if anchors.shape != ((1 + self.focal_views) * target.shape[0], target.shape[1]) \
                or prototypes.shape[1] != target.shape[1]:
            raise ValueError(f"MSN expects {1 + self.focal_views} anchor views per target, all of one width; got "
                             f"anchors {tuple(anchors.shape)}, prototypes {tuple(prototypes.shape)}, "
                             f"targets {tuple(target.shape)}")
        return self.criterion(anchors.float(), target.float().detach(), prototypes.float(),
                              target_sharpen_temperature=self.sharpen_temperature)
