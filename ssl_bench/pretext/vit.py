"""The timm ViT parts that the masked-image and ViT pretext tasks share: which backbones are ViTs,
the patch grid of the run's image size, rectangular patches, random patch masks (MAE's uniform
ones, iBOT's and DINOv2's blocks), the token indices of kept patches, a rectangular sine-cosine
grid embedding and lightly's masked ViT for a rectangular image.

lightly's masked-image modules assume square images in three places, and mammograms are
rectangular (64x32 in the smoke profile, 768x384 in the paper's): ``patchify`` (:func:`patchify`
here handles any ``(height, width)`` and patch shape, with lightly's patch and pixel order), the
sine-cosine embedding (built here on the rectangular grid with lightly's
``get_2d_sine_cosine_positional_embedding_from_grid``), and the position embedding of a ViT built
with ``dynamic_img_size`` (:class:`RectangularMaskedViT` adds the ViT's own embedding, for the image
size it was built for: the toolkit builds ViTs for the run's image size; images of another size,
such as DINO-style local crops, get it resampled to their own patch grid, as timm does for a ViT
with ``dynamic_img_size``). First written for MAE (He et al. 2022, :mod:`ssl_bench.pretext.mae`);
the block masks for iBOT (Zhou et al. 2022) and DINOv2 (Oquab et al. 2023); MSN and I-JEPA
use them too.
"""
from __future__ import annotations

import random

import numpy as np
import timm
import torch
from lightly.models import utils as lightly_utils
from lightly.models.modules import MaskedVisionTransformerTIMM
from timm.layers import resample_abs_pos_embed
from timm.models import is_model_in_modules
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import ConfigError

#: timm modules whose models are the ``VisionTransformer`` that lightly's masked encoder wraps
VIT_MODULES = ("vision_transformer",)


def vit_required(task: str, backbone: str) -> str:
    """The one line that refuses a backbone a ViT task cannot train.

    Args:
        task: the pretext task's registered name (``mae``, ...).
        backbone: the backbone's timm name or class name.

    Returns:
        The message of the :class:`~ssl_bench.errors.ConfigError`.
    """
    return (f"pretext {task} needs a ViT backbone (timm vision_transformer, e.g. vit_tiny_patch16_224); "
            f"got {backbone}")


def is_vit_name(backbone: str) -> bool:
    """Whether ``backbone`` names a timm ViT of :data:`VIT_MODULES` (built for one image size)."""
    return bool(timm.is_model(backbone) and is_model_in_modules(backbone, VIT_MODULES))


def check_vit_name(task: str, backbone: str) -> None:
    """Refuse, before a run starts, a known timm backbone that is not a ViT (an unknown name is left
    to ``create_backbone``, which suggests close matches).

    Args:
        task: the pretext task's registered name.
        backbone: the run's ``model.backbone``.

    Raises:
        ConfigError: the backbone is a timm model outside :data:`VIT_MODULES`.
    """
    if timm.is_model(backbone) and not is_model_in_modules(backbone, VIT_MODULES):
        raise ConfigError(vit_required(task, backbone))


def as_vit(task: str, backbone: nn.Module) -> VisionTransformer:
    """The backbone as the timm ``VisionTransformer`` it must be, or one line refusing it.

    Args:
        task: the pretext task's registered name.
        backbone: the built backbone.

    Returns:
        ``backbone``, typed.

    Raises:
        ConfigError: it is not a timm ``VisionTransformer``.
    """
    if not isinstance(backbone, VisionTransformer):
        raise ConfigError(vit_required(task, type(backbone).__name__))
    return backbone


def patch_grid(task: str, vit: VisionTransformer) -> tuple[tuple[int, int], tuple[int, int]]:
    """The ViT's patch size and the ``(rows, columns)`` grid of patches of the image size it was
    built for, or one line refusing an image size that is not a multiple of the patch size.

    Args:
        task: the pretext task's registered name.
        vit: the timm ViT, built for the run's image size.

    Returns:
        ``((patch height, patch width), (rows, columns))``.

    Raises:
        ConfigError: the image size is not a multiple of the patch size (also a ViT built padded
            to whole patches for such a size).
    """
    embed = vit.patch_embed
    patch = (int(embed.patch_size[0]), int(embed.patch_size[1]))
    size = tuple(int(s) for s in embed.img_size)
    grid = (int(embed.grid_size[0]), int(embed.grid_size[1]))
    # a ViT built padded (the run's size is no multiple of its patch: backbones.image_size_kwargs)
    # has patches beyond the image, which a masked task would learn to predict as padding
    padded = bool(getattr(embed, "dynamic_img_pad", False))
    if padded or any(g * p != s for g, p, s in zip(grid, patch, size)):
        got = (f"the run's is not (the backbone is built padded to {size[0]}x{size[1]})" if padded
               else f"got {size[0]}x{size[1]}")
        raise ConfigError(f"pretext {task} needs an image size that is a multiple of the backbone's patch size "
                          f"{patch[0]}x{patch[1]}; {got}")
    return patch, grid


def prefixed(keep: torch.Tensor, prefix: int) -> torch.Tensor:
    """Token indices for lightly's masked ViT (``idx_keep``): the ``prefix`` tokens (class,
    registers; always kept), then the patches ``keep`` indexes (``(B, n)``, patch order)."""
    b = keep.shape[0]
    return torch.cat([torch.arange(prefix, device=keep.device).expand(b, prefix), keep + prefix], dim=1)


def patchify(images: torch.Tensor, patch_size: tuple[int, int]) -> torch.Tensor:
    """``(B, C, H, W)`` -> ``(B, (H/ph) * (W/pw), ph * pw * C)``: the patches row by row, each
    flattened row by row with the channels last (lightly's ``patchify`` order, which needs
    ``H == W``); ``H`` and ``W`` must be multiples of the patch's height and width."""
    b, c, h, w = images.shape
    ph, pw = patch_size
    if h % ph or w % pw:
        raise ValueError(f"image size {h}x{w} is not a multiple of the patch size {ph}x{pw}")
    x = images.reshape(b, c, h // ph, ph, w // pw, pw)
    return torch.einsum("nchpwq->nhwpqc", x).reshape(b, (h // ph) * (w // pw), ph * pw * c)


def unpatchify(patches: torch.Tensor, patch_size: tuple[int, int], grid: tuple[int, int],
               channels: int = 1) -> torch.Tensor:
    """The inverse of :func:`patchify` for a ``grid`` of ``(rows, columns)`` patches."""
    (ph, pw), (gh, gw) = patch_size, grid
    x = patches.reshape(patches.shape[0], gh, gw, ph, pw, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(patches.shape[0], channels, gh * ph, gw * pw)


def random_patch_mask(batch: int, num_patches: int, mask_ratio: float,
                      device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(idx_keep, idx_mask)``: per image, the indices of the visible and of the hidden patches,
    a random partition with ``num_patches - int(num_patches * (1 - mask_ratio))`` hidden
    (lightly's ``random_token_mask`` over the patches alone: prefix tokens are never hidden)."""
    return lightly_utils.random_token_mask((batch, num_patches), mask_ratio, mask_class_token=True,
                                           device=device)


def draw_patch_mask(batch: int, num_patches: int, mask_ratio: float,
                    device: torch.device | None = None) -> torch.Tensor:
    """``(B, num_patches)`` bool, True for a hidden patch: :func:`random_patch_mask`'s partition,
    one tensor with the batch first, so that a data-parallel worker's share of it is its images'."""
    _, idx_mask = random_patch_mask(batch, num_patches, mask_ratio, device)
    return torch.zeros(batch, num_patches, dtype=torch.bool, device=device).scatter_(1, idx_mask, True)


def draw_block_mask(batch: int, grid: tuple[int, int], probability: float, ratio: tuple[float, float],
                    min_block: int = 4, device: torch.device | None = None) -> torch.Tensor:
    """``(B, rows, columns)`` bool, True for a hidden patch: lightly's ``random_block_mask`` (DINOv2's
    masking): ``int(B * probability)`` of the images get rectangles of at least ``min_block``
    patches hidden until a fraction of their patches in ``ratio`` is (the fractions spread evenly
    over those images), the others none; which images are masked is random. On a grid so small
    that ``min_block`` exceeds the fewest patches an image may get, ``int(patches * ratio[0])``
    (the smoke profile's 4x2), that number is the smallest block.

    lightly draws with Python's ``random``; here that draw is seeded from torch's global generator
    and Python's own state is put back after it, so that the masks follow ``torch.manual_seed`` as
    every task's randomness does (the runner seeds torch per fold; a data-parallel worker draws one
    process's masks) and nothing else's random numbers move. Drawn on the CPU (a loop over blocks),
    then moved to ``device``.

    Args:
        batch: images in the batch.
        grid: ``(rows, columns)`` of the ViT's patch grid.
        probability: fraction of the images that are masked at all.
        ratio: ``(min, max)`` fraction of a masked image's patches to hide.
        min_block: fewest patches in one hidden rectangle.
        device: where the mask goes.

    Returns:
        The mask.
    """
    # lightly refuses a block larger than an image's share; that share is at least
    # int(patches * ratio[0]) (the smallest fraction, which lightly takes in float32)
    smallest = int(grid[0] * grid[1] * torch.tensor(float(ratio[0])).item())
    seed = int(torch.randint(0, 2**62, (1,)).item())  # torch's CPU generator: no device sync
    state = random.getstate()
    random.seed(seed)
    try:
        mask = lightly_utils.random_block_mask(
            (batch, grid[0], grid[1]), batch_mask_ratio=probability, min_image_mask_ratio=ratio[0],
            max_image_mask_ratio=ratio[1], min_num_masks_per_block=min(min_block, smallest))
    finally:
        random.setstate(state)
    return mask.to(device) if device is not None else mask


def sincos_grid_embedding(dim: int, grid: tuple[int, int], prefix: int) -> torch.Tensor:
    """``(1, prefix + rows * columns, dim)``: zeros for the prefix tokens, then the 2D sine-cosine
    embedding of each patch of a ``(rows, columns)`` grid, row by row (lightly's, on a rectangle)."""
    rows, cols = grid
    xy = np.stack(np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32)))
    emb = lightly_utils.get_2d_sine_cosine_positional_embedding_from_grid(dim, xy.reshape(2, 1, rows, cols))
    emb = np.concatenate([np.zeros((prefix, dim), dtype=np.float32), emb], axis=0)
    return torch.from_numpy(emb).float().unsqueeze(0)


class RectangularMaskedViT(MaskedVisionTransformerTIMM):
    """lightly's masked timm ViT, adding the ViT's own position embedding for its built image size
    (lightly resamples it to a square grid when the ViT has ``dynamic_img_size``). Images of another
    size (local crops) are encoded too, unmasked: their patches (``floor(H / ph) x floor(W / pw)``,
    the patch convolution's) get the embedding resampled to their grid (timm's
    ``resample_abs_pos_embed``, as a ViT with ``dynamic_img_size`` does)."""

    def add_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        return self._add(x, self.vit.pos_embed)

    def _add(self, x: torch.Tensor, pos_embed: torch.Tensor) -> torch.Tensor:
        vit, prefix = self.vit, self.vit.num_prefix_tokens
        if vit.no_embed_class:
            x = torch.cat((x[:, :prefix], x[:, prefix:] + pos_embed), dim=1)
        else:
            x = x + pos_embed
        return vit.pos_drop(x)

    def preprocess(self, images: torch.Tensor, idx_mask: torch.Tensor | None = None,
                   idx_keep: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        embed = self.vit.patch_embed
        if tuple(images.shape[-2:]) == tuple(embed.img_size):
            return super().preprocess(images, idx_mask=idx_mask, idx_keep=idx_keep, mask=mask)
        if idx_mask is not None or idx_keep is not None or mask is not None:
            raise ValueError(f"the masked ViT masks images of its built size {tuple(embed.img_size)} only, "
                             f"got {tuple(images.shape[-2:])}")
        built = (int(embed.grid_size[0]), int(embed.grid_size[1]))
        grid = (images.shape[-2] // int(embed.patch_size[0]), images.shape[-1] // int(embed.patch_size[1]))
        # the patch embedding's own steps, without its check of the built size
        tokens = embed.norm(embed.proj(images).flatten(2).transpose(1, 2))
        vit = self.vit
        pos_embed = resample_abs_pos_embed(vit.pos_embed, new_size=list(grid), old_size=list(built),
                                           num_prefix_tokens=0 if vit.no_embed_class else vit.num_prefix_tokens,
                                           antialias=self.antialias)
        return self._add(self.prepend_prefix_tokens(tokens), pos_embed)
