"""I-JEPA: from a context block, a predictor infers a momentum encoder's representations of target blocks (Assran et al. 2023).

Assran, Duval, Misra, Bojanowski, Vincent, Rabbat, LeCun, Ballas, "Self-Supervised Learning from
Images with a Joint-Embedding Predictive Architecture", CVPR 2023. Per image, ``targets`` target
blocks (rectangles of the ViT's patch grid covering ``target_scale`` of it, height/width
``target_aspect``) and one context block (a square covering ``context_scale`` of the grid, less
the target blocks' patches) are drawn (on a rectangular grid, shapes relative to the grid's: see
below). The context encoder (the ViT) sees only the context patches; the target encoder (its
momentum copy, without gradients) sees the whole image, and its patch representations,
layer-normalised, at each target block are the targets. A narrow ViT, the
predictor, gets the encoded context tokens and, for every target patch, a mask token with that
patch's position embedding, and predicts the targets. The loss is the smooth L1 distance averaged
over the target patches (the paper's code and lightly's example; the paper writes L2). No pixels
are reconstructed and no view is augmented. After every optimiser step the target encoder moves
towards the context encoder with momentum ``momentum`` -> 1 on a cosine schedule
(:mod:`ssl_bench.pretext.momentum`).

Built on lightly, wired as its ``examples/pytorch/ijepa.py``: ``IJEPAPredictorTIMM``
(``lightly/models/modules/ijepa_timm.py``), the block masks of ``IJEPAMaskCollator``,
``apply_masks``, ``repeat_interleave_batch`` and ``MaskedVisionTransformerTIMM``
(:class:`~ssl_bench.pretext.vit.RectangularMaskedViT`, on the downstream timm ViT, keeping timm's
initialisation and learned position embedding) as context and target encoder; the target encoder
is the teacher that :class:`ssl_bench.models.pretext_model.PretextModel` keeps (``uses_teacher``;
the head's :class:`IJEPAEncoder`, holding the ViT, is the part it copies). The masks are drawn in
``prepare``, for the whole batch (every image's masks are cut to the batch's smallest count, as
lightly's collator does), so that a data-parallel worker keeps its share; the loss is a mean over
images and needs no gathering.

Rectangular mammograms (:class:`BlockMasks`, :class:`RectangularPredictor`): lightly's collator
already takes a ``(height, width)`` input, so it runs on the patch grid itself (patch size 1).
Changed: (1) block shapes are relative to the grid's: an aspect ratio (height/width, in patches)
is multiplied by the grid's, so the "square" context block of a 768x384 mammogram's 48x24 grid is
46x23 patches at 0.9 of the grid, where lightly's square, cut to the grid's width, is 32x23 (64%),
and the targets keep the paper's range of shapes relative to the image; on a square grid lightly's
sizes; (2) a block's corner is drawn anywhere the block fits: lightly (and the paper's code) draw
it in ``[0, rows - h)``, so that no block reaches the grid's last row or column (11 of the 32
patches of the quick profile's 8x4 grid would never be context nor target); (3) lightly seeds the block sizes
from a counter it shares between processes; here the seed is drawn from torch's global generator,
which the runner seeds per fold (a resumed fold draws the same masks, and the task pickles, for
Ray); (4) on a small grid (the smoke profile's 4x2) a block rounds to 0 rows or columns, and
lightly draws a block again until it has more than ``min_keep`` patches, forever when it cannot:
here a block has at least one row and column and needs more than ``min(min_keep, its area - 1)``
patches, and a one-patch block stays a list of one index (lightly squeezes it to a scalar); (5)
lightly's predictor embeds the positions of a square grid (it fails on the rectangle's patch
count, and gets the positions of a square one wrong): here the fixed 2D sine-cosine embedding of
the rectangular grid, lightly's on a square. The grid must have at least 2 rows and 2 columns.
The masks are drawn on the CPU (lightly's collator) and copied to the device; that copy
synchronises, so with ``train.cuda_graphs`` the step is never captured (it runs eagerly, after
one warning line) and the masks stay new at every step.

Choices: the paper's masks (``targets = 4``, ``target_scale = (0.15, 0.2)``, ``target_aspect =
(0.75, 1.5)``, ``context_scale = (0.85, 1.0)``; lightly's collator defaults, 2 targets of 0.2..0.8
and 0.3..3, a context of 0.2..0.8, are not the paper's) and ``min_keep = 10`` (its code's); one
context block (lightly's and the paper's). A timm ViT has a class token, which I-JEPA's ViTs lack:
both encoders get it (the downstream classifier reads it), neither's output at it is scored. The
predictor is 2 blocks of width 128 with 4 heads (the paper's for ViT-H is 12 blocks of width 384;
MAE's decoder here is as small). ``momentum = 0.99`` (the paper's 0.996 -> 1, linear, is
for hundreds of epochs). The downstream backbone is the context encoder, trained by gradient, as
for the other teacher tasks here (the paper evaluates the target encoder).
"""
from __future__ import annotations

from typing import Any, Sequence, cast

import torch
import torch.nn.functional as F
from lightly.data import IJEPAMaskCollator
from lightly.models import utils as lightly_utils
from lightly.models.modules import IJEPAPredictorTIMM
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import ConfigError
from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask
from .checks import check_dims, check_momentum
from .vit import RectangularMaskedViT, as_vit, check_vit_name, patch_grid, prefixed, sincos_grid_embedding


class BlockMasks(IJEPAMaskCollator):
    """lightly's I-JEPA block-mask collator on a ``(rows, columns)`` patch grid, drawing from torch's
    global generator, with block shapes relative to the grid's; :meth:`draw` gives a batch's masks.

    Args:
        grid: the patch grid, at least 2x2.
        target_scale: (min, max) fraction of the grid a target block covers.
        target_aspect: (min, max) height/width of a target block, relative to the grid's.
        context_scale: (min, max) fraction of the grid the context block (of the grid's shape) covers.
        targets: target blocks per image.
        min_keep: patches a block keeps at least (all but one of a smaller block's).
    """

    def __init__(self, grid: tuple[int, int], target_scale: tuple[float, float],
                 target_aspect: tuple[float, float], context_scale: tuple[float, float], targets: int,
                 min_keep: int):
        super().__init__(input_size=grid, patch_size=1, enc_mask_scale=context_scale, pred_mask_scale=target_scale,
                         aspect_ratio=target_aspect, nenc=1, npred=targets, min_keep=min_keep, allow_overlap=False)
        # lightly's process-shared counter seeds the block sizes: here torch's global generator does
        # (step), and the counter would stop the task from pickling (Ray ships it to its workers)
        del self._itr_counter
        self.grid_aspect = grid[0] / grid[1]

    def step(self) -> int:
        """The seed of a batch's block sizes, from torch's global generator."""
        return int(torch.randint(0, 2**31 - 1, (1,)))

    def _sample_block_size(self, generator: torch.Generator, scale: tuple[float, float],
                           aspect_ratio_scale: tuple[float, float]) -> tuple[int, int]:
        """lightly's block size, of an aspect ratio relative to the grid's (lightly's on a square
        grid), at least one row and one column (a small grid's block rounds to 0)."""
        lo, hi = aspect_ratio_scale
        h, w = super()._sample_block_size(generator, scale, (lo * self.grid_aspect, hi * self.grid_aspect))
        return max(h, 1), max(w, 1)

    def _sample_block_mask(self, b_size: tuple[int, int],
                           acceptable_regions: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """lightly's block draw (after the paper's code), but with the corner anywhere the block
        fits, more than ``min(min_keep, area - 1)`` patches and 1-D indices.

        A random ``b_size`` block, restricted to ``acceptable_regions`` (the target blocks'
        complements, for the context), drawn again until it keeps enough patches; after every 20
        failures one restriction is dropped. lightly draws the corner in ``[0, rows - h)``, so a
        block never reaches the grid's last row or column (11 of the 32 patches of the quick
        profile's 8x4 grid); it asks for more than ``min_keep`` patches, forever for a smaller
        block; and it squeezes a one-patch block's indices to a scalar.

        Returns:
            The block's patch indices (row by row) and its complement, a ``(rows, columns)`` 0/1 grid.
        """
        h, w = b_size
        need = min(self.min_keep, h * w - 1)
        regions = acceptable_regions or []
        tries, timeout = 0, 20
        while True:
            top = int(torch.randint(0, self.height - h + 1, (1,)))
            left = int(torch.randint(0, self.width - w + 1, (1,)))
            mask = torch.zeros((self.height, self.width), dtype=torch.int32)
            mask[top : top + h, left : left + w] = 1
            for region in regions[: max(len(regions) - tries, 0)]:
                mask *= region
            keep = torch.nonzero(mask.flatten()).reshape(-1)
            if len(keep) > need:
                break
            timeout -= 1
            if timeout == 0:
                tries, timeout = tries + 1, 20
        complement = torch.ones((self.height, self.width), dtype=torch.int32)
        complement[top : top + h, left : left + w] = 0
        return keep, complement

    def draw(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch's masks, each cut to the batch's smallest block (lightly's collator).

        Args:
            batch: the number of images.

        Returns:
            ``(context, targets)``: patch indices ``(batch, 1, n)`` of the context block and
            ``(batch, targets, m)`` of the target blocks, on the CPU.
        """
        _, context, targets = self(list(range(batch)))
        return torch.stack(context, dim=1), torch.stack(targets, dim=1)


class RectangularPredictor(IJEPAPredictorTIMM):
    """lightly's I-JEPA predictor with the fixed sine-cosine position embedding of a rectangular
    patch grid (lightly's is a square grid's).

    Args:
        grid: the patch grid, ``(rows, columns)``.
        embed_dim: the encoder's width (the predicted representations').
        predictor_dim: the predictor's width.
        depth: the predictor's transformer blocks.
        num_heads: their attention heads.
    """

    def __init__(self, grid: tuple[int, int], embed_dim: int, predictor_dim: int, depth: int, num_heads: int):
        # lightly embeds the positions of a square grid of num_patches: 1 here, replaced below
        super().__init__(num_patches=1, depth=depth, mlp_dim=embed_dim, predictor_embed_dim=predictor_dim,
                         num_heads=num_heads)
        self.decoder.num_patches = grid[0] * grid[1]
        self.decoder.pos_embed = nn.Parameter(sincos_grid_embedding(predictor_dim, grid, prefix=0), requires_grad=False)


class IJEPAEncoder(nn.Module):
    """The ViT (lightly's masked ViT on it, shared, not copied), encoding patch tokens: the part of
    the I-JEPA head that the target encoder copies."""

    def __init__(self, vit: VisionTransformer):
        super().__init__()
        self.encoder = RectangularMaskedViT(vit, weight_initialization="skip", pos_embed_initialization="skip")
        self.prefix = int(vit.num_prefix_tokens)

    def patch_tokens(self, images: torch.Tensor, keep: torch.Tensor | None = None) -> torch.Tensor:
        """The encoded patch tokens ``(B, n, D)`` (the prefix tokens are encoded, then dropped): of
        the patches ``keep`` (``(B, n)``) indexes, or of every patch."""
        tokens = self.encoder.encode(images, idx_keep=None if keep is None else prefixed(keep, self.prefix))
        return tokens[:, self.prefix:]

    def forward(self, images: torch.Tensor, context: torch.Tensor, targets: torch.Tensor) -> list[torch.Tensor]:
        """As the target encoder: ``[targets]``, the layer-normalised representations of every
        target block's patches, ``(targets * contexts * B, m, D)`` in the predictor's order
        (lightly's example's ``forward_target``)."""
        h = self.patch_tokens(images)
        h = F.layer_norm(h, (h.size(-1),))
        h = lightly_utils.apply_masks(h, list(targets.unbind(1)))
        return [lightly_utils.repeat_interleave_batch(h, images.shape[0], repeat=context.shape[1])]


class IJEPAHead(nn.Module):
    """I-JEPA's context encoder over a timm ViT and its predictor.

    ``forward(images, context, targets)`` takes the images and the patch indices of their context
    block ``(B, 1, n)`` and target blocks ``(B, M, m)`` (as :meth:`BlockMasks.draw` gives them)
    and returns ``[predictions]``, the predicted representations of the target blocks' patches
    ``(M * B, m, D)`` (lightly's example's ``forward_context``).
    """

    def __init__(self, vit: VisionTransformer, predictor_dim: int, depth: int, num_heads: int):
        super().__init__()
        _, self.grid = patch_grid("ijepa", vit)
        if min(self.grid) < 2:
            raise ConfigError(f"pretext ijepa needs a patch grid of at least 2x2 for its blocks; got "
                              f"{self.grid[0]}x{self.grid[1]} patches")
        self.encoder = IJEPAEncoder(vit)
        self.predictor = RectangularPredictor(self.grid, vit.embed_dim, predictor_dim, depth, num_heads)

    def forward(self, images: torch.Tensor, context: torch.Tensor | None = None,
                targets: torch.Tensor | None = None) -> list[torch.Tensor]:
        if context is None or targets is None:
            raise ValueError("I-JEPA's head takes the images and the block masks that prepare draws for them")
        z = torch.cat([self.encoder.patch_tokens(images, keep) for keep in context.unbind(1)])
        return [self.predictor(z, list(context.unbind(1)), list(targets.unbind(1)))]


def _range(name: str, value: Sequence[float], upper: float | None) -> tuple[float, float]:
    """``value`` as a ``(min, max)`` pair with ``0 < min <= max`` (``<= upper``); ``ValueError``."""
    pair = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else ()
    if len(pair) != 2 or not 0 < pair[0] <= pair[1] or (upper is not None and pair[1] > upper):
        bound = f" <= {upper}" if upper is not None else ""
        raise ValueError(f"{name} must be a (min, max) pair with 0 < min <= max{bound}, got {value!r}")
    return pair[0], pair[1]


@PRETEXTS.register("ijepa")
class IJEPA(PretextTask):
    """I-JEPA (Assran et al. 2023): from a context block, predict a momentum encoder's target-block representations (lightly; needs a ViT).

    Args:
        targets: target blocks per image.
        target_scale: (min, max) fraction of the patch grid a target block covers.
        target_aspect: (min, max) height/width of a target block, relative to the patch grid's
            (1: the grid's shape).
        context_scale: (min, max) fraction of the patch grid the context block (of the grid's
            shape) covers, before the target blocks' patches are taken out of it.
        min_keep: patches a block keeps at least (all but one of a smaller block's).
        predictor_dim: width of the predictor (a multiple of 4 and of predictor_heads).
        predictor_depth: transformer blocks of the predictor.
        predictor_heads: attention heads of the predictor.
        momentum: the target encoder's momentum at the start of the stage; it rises to 1 on a cosine
            schedule over the stage's steps.
    """

    kind = "masked"
    uses_teacher = True

    def __init__(
        self,
        targets: int = 4,
        target_scale: tuple[float, float] = (0.15, 0.2),
        target_aspect: tuple[float, float] = (0.75, 1.5),
        context_scale: tuple[float, float] = (0.85, 1.0),
        min_keep: int = 10,
        predictor_dim: int = 128,
        predictor_depth: int = 2,
        predictor_heads: int = 4,
        momentum: float = 0.99,
    ):
        check_dims(targets=targets, min_keep=min_keep, predictor_dim=predictor_dim,
                   predictor_depth=predictor_depth, predictor_heads=predictor_heads)
        if predictor_dim % 4:  # two sine-cosine halves, each of sines and cosines
            raise ValueError(f"predictor_dim must be a multiple of 4, got {predictor_dim}")
        if predictor_dim % predictor_heads:
            raise ValueError(f"predictor_dim ({predictor_dim}) must be a multiple of predictor_heads ({predictor_heads})")
        self.target_scale = _range("target_scale", target_scale, 1.0)
        self.target_aspect = _range("target_aspect", target_aspect, None)
        self.context_scale = _range("context_scale", context_scale, 1.0)
        self.targets, self.min_keep = int(targets), int(min_keep)
        self.predictor_dim, self.predictor_depth = int(predictor_dim), int(predictor_depth)
        self.predictor_heads = int(predictor_heads)
        self.momentum_start = check_momentum(momentum)
        self.momentum_end = 1.0
        self.criterion = nn.SmoothL1Loss()  # lightly's example's
        self.masks: BlockMasks | None = None  # once a head is built: it knows the patch grid

    def check_backbone(self, backbone: str) -> None:
        check_vit_name("ijepa", backbone)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        """The images and their context and target blocks' patch indices, drawn here for the whole
        batch (a data-parallel worker keeps its share). Before a head is built the patch grid is
        unknown: the images alone (the contract checker's first call; a training step always has
        a head)."""
        if self.masks is None:
            return PretextBatch(inputs=[images], targets=None)
        context, targets = self.masks.draw(images.shape[0])
        return PretextBatch(inputs=[images, context.to(images.device), targets.to(images.device)], targets=None)

    def build_masked_head(self, backbone: nn.Module) -> nn.Module:
        head = IJEPAHead(as_vit("ijepa", backbone), self.predictor_dim, self.predictor_depth, self.predictor_heads)
        self.masks = BlockMasks(head.grid, self.target_scale, self.target_aspect, self.context_scale,
                                self.targets, self.min_keep)
        return head

    def teacher_head(self, head: nn.Module) -> nn.Module:
        """The ViT (:class:`IJEPAEncoder`), not the predictor."""
        return cast(IJEPAHead, head).encoder

    def teacher_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """The images and their masks: the target encoder reads every patch, then the target blocks."""
        return views

    def loss(self, outputs: list[torch.Tensor], targets: Any = None) -> torch.Tensor:
        """``outputs``: the predicted representations of the target blocks (:class:`IJEPAHead`), then
        the target encoder's (:class:`IJEPAEncoder`)."""
        if len(outputs) != 2 or outputs[0].shape != outputs[1].shape or outputs[0].dim() != 3:
            raise ValueError(f"I-JEPA expects the predicted and the target representations, two (N, m, D) tensors; "
                             f"got {[tuple(o.shape) for o in outputs]}")
        return self.criterion(outputs[0].float(), outputs[1].float().detach())
