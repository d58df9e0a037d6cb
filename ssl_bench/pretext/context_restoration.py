"""Context restoration: undo random patch swaps (Chen et al. 2019).

Chen, Bentley, Mori, Misawa, Fujiwara, Rueckert, "Self-supervised learning for medical image
analysis using image context restoration", Medical Image Analysis 58:101539 (2019). An image is
corrupted by repeating ``T`` times: pick two non-overlapping random patches of the same size and
swap them. The corrupted image keeps the original's intensity distribution (its pixels are only
permuted) but not its spatial context; the network restores the original, scored by the L2 (mean
squared error) loss against the *original* image.

Defaults, for 768x384 mammograms (the paper tunes ``T`` and the patch size per dataset and fixes
no value for mammography, so these are our documented choice):

- ``patch_frac = 0.07``: the patch side is 7% of the image's shorter side, 27 px at 384 px width,
  roughly a centimetre of breast at a typical field of view (the scale of a small mass). It
  scales with the image: 4 px at 128x64 (``quick``), and ``min_patch = 2`` px at 64x32
  (``smoke``). As in the paper, patches are small against the image: a swap breaks local
  context while the surrounding image still tells where the content belongs.
- ``swaps = 20``: 20 pairs of 27x27 patches touch at most ~10% of a 768x384 image, enough to
  corrupt local context across the breast while most of the image stays intact (the trade-off
  behind the method: too few swaps make the task trivial, too many destroy the context needed to
  restore it). A mammogram is about half background, and a swap of two background patches
  changes nothing (about a quarter of the swaps), which is why ``T`` is not smaller.

Patches are drawn uniformly over the whole image (as in the paper), per image independently.
Patches of *different* swaps may overlap (the swaps are applied in sequence, as in the paper);
the two patches of *one* swap never do (see :func:`sample_patch_pairs`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask


def _randint(high: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One uniform integer in ``[0, high)`` per element of ``high`` (a tensor of ints >= 1)."""
    u = torch.rand(high.shape, generator=generator, device=high.device)
    return torch.minimum((u * high).long(), high - 1)


def sample_patch_pairs(
    batch: int,
    height: int,
    width: int,
    patch: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-left corners ``(y1, x1, y2, x2)`` (each ``(batch,)`` long) of two non-overlapping patches.

    Non-overlap is guaranteed by construction, without rejection: two ``patch x patch`` squares
    are disjoint exactly when they are separated along at least one axis, i.e. their corners
    differ by at least ``patch`` rows or ``patch`` columns. We pick that axis (among the axes
    long enough, i.e. side >= 2 * patch, with probability proportional to the number of draws
    it offers), draw two coordinates ``a <= b`` in ``[0, side - 2*patch]`` and shift the larger
    by ``patch``, so the gap is at least ``patch``; the other coordinate of each patch is uniform
    and independent. Every non-overlapping pair can be drawn.
    """
    if patch < 1:
        raise ValueError(f"patch must be at least 1 pixel, got {patch}")
    if 2 * patch > max(height, width):
        raise ValueError(
            f"two non-overlapping {patch}x{patch} patches do not fit in a {height}x{width} image "
            f"(need 2 * patch <= the longer side)"
        )
    device = torch.device(device) if device is not None else torch.device("cpu")

    def draws(side_sep: int, side_free: int) -> int:
        # ordered coordinate pairs along the separating axis x free positions of both patches
        return max(side_sep - 2 * patch + 1, 0) ** 2 * (side_free - patch + 1) ** 2

    w_rows, w_cols = draws(height, width), draws(width, height)
    full = torch.full((batch,), 1, dtype=torch.long, device=device)
    along_rows = torch.rand(batch, generator=generator, device=device) * (w_rows + w_cols) < w_rows

    def separated(side: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = max(side - 2 * patch + 1, 1)  # values of the pair before the shift
        u = _randint(full * n, generator)
        v = _randint(full * n, generator)
        return torch.minimum(u, v), torch.maximum(u, v) + patch

    def free(side: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = side - patch + 1
        return _randint(full * n, generator), _randint(full * n, generator)

    ry1, ry2 = separated(height)  # separated along rows
    rx1, rx2 = free(width)
    cx1, cx2 = separated(width)  # separated along columns
    cy1, cy2 = free(height)
    y1 = torch.where(along_rows, ry1, cy1)
    y2 = torch.where(along_rows, ry2, cy2)
    x1 = torch.where(along_rows, rx1, cx1)
    x2 = torch.where(along_rows, rx2, cx2)
    # which patch comes first is irrelevant to a swap, but randomise it for symmetric positions
    flip = torch.rand(batch, generator=generator, device=device) < 0.5
    return (
        torch.where(flip, y2, y1),
        torch.where(flip, x2, x1),
        torch.where(flip, y1, y2),
        torch.where(flip, x1, x2),
    )


def swap_patches(
    images: torch.Tensor,
    swaps: int,
    patch: int,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Swap ``swaps`` random pairs of non-overlapping ``patch x patch`` patches in each image.

    ``images`` is ``(B, C, H, W)``; every image gets its own patch positions, all channels of an
    image move together. The swaps act on a per-image map of pixel indices (a loop over the
    ``swaps`` with batched index ops, on the images' device) and the pixels are then gathered
    once, so the result is an exact permutation of each image's pixels. ``swaps = 0`` returns an
    unchanged copy. Random numbers come from ``generator`` (on the images' device) or torch's
    global generator.
    """
    if images.dim() != 4:
        raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
    if swaps < 0:
        raise ValueError(f"swaps must be >= 0, got {swaps}")
    b, c, h, w = images.shape
    if swaps == 0 or b == 0:
        return images.clone()
    device = images.device
    index = torch.arange(h * w, device=device).view(1, h, w).repeat(b, 1, 1)  # (B, H, W)
    offs = torch.arange(patch, device=device)
    bi = torch.arange(b, device=device).view(b, 1, 1)
    for _ in range(swaps):
        y1, x1, y2, x2 = sample_patch_pairs(b, h, w, patch, generator, device)
        r1, c1 = (y1[:, None] + offs)[:, :, None], (x1[:, None] + offs)[:, None, :]
        r2, c2 = (y2[:, None] + offs)[:, :, None], (x2[:, None] + offs)[:, None, :]
        first, second = index[bi, r1, c1], index[bi, r2, c2]  # (B, p, p) each
        index[bi, r1, c1] = second
        index[bi, r2, c2] = first
    flat = images.reshape(b, c, h * w)
    return flat.gather(2, index.view(b, 1, h * w).expand(b, c, h * w)).view(b, c, h, w)


def patch_size(height: int, width: int, patch_frac: float, min_patch: int = 2) -> int:
    """Patch side for an image: ``patch_frac`` of the shorter side, at least ``min_patch``, and
    at most half the longer side (so that two patches fit side by side)."""
    side = max(int(min_patch), int(round(patch_frac * min(height, width))))
    return max(1, min(side, max(height, width) // 2))


@PRETEXTS.register("context_restoration")
class ContextRestoration(PretextTask):
    """Context restoration (Chen et al. 2019): restore an image whose patches were swapped; MSE.

    Args:
        swaps: pairs of patches swapped in each image.
        patch_frac: a patch's side as a fraction of the image's shorter side, in (0, 0.5].
        min_patch: smallest patch side in pixels.
    """

    kind = "image"

    def __init__(self, swaps: int = 20, patch_frac: float = 0.07, min_patch: int = 2):
        if int(swaps) != swaps or swaps < 0:
            raise ValueError(f"swaps must be a non-negative integer, got {swaps}")
        if not 0 < patch_frac <= 0.5:
            raise ValueError(f"patch_frac must be in (0, 0.5], got {patch_frac}")
        if int(min_patch) != min_patch or min_patch < 1:
            raise ValueError(f"min_patch must be a positive integer, got {min_patch}")
        self.swaps = int(swaps)
        self.patch_frac = float(patch_frac)
        self.min_patch = int(min_patch)

    def patch_for(self, height: int, width: int) -> int:
        return patch_size(height, width, self.patch_frac, self.min_patch)

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        patch = self.patch_for(images.shape[-2], images.shape[-1])
        corrupted = swap_patches(images, self.swaps, patch)
        return PretextBatch(inputs=[corrupted], targets=images)

    def loss(self, outputs: list[torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if outputs[0].shape != targets.shape:
            raise ValueError(
                f"context restoration output has shape {tuple(outputs[0].shape)}, "
                f"expected the image's shape {tuple(targets.shape)}"
            )
        return F.mse_loss(outputs[0].float(), targets.float())
