"""The timm ViT parts that the masked-image and ViT pretext tasks share: which backbones are ViTs,
the patch grid of the run's image size, rectangular patches, random patch masks, the token indices
of kept patches, a rectangular sine-cosine grid embedding and lightly's masked ViT for a
rectangular image.

lightly's masked-image modules assume square images in three places, and mammograms are
rectangular (64x32 in the smoke profile, 768x384 in the paper's): ``patchify`` (:func:`patchify`
here handles any ``(height, width)`` and patch shape, with lightly's patch and pixel order), the
sine-cosine embedding (built here on the rectangular grid with lightly's
``get_2d_sine_cosine_positional_embedding_from_grid``), and the position embedding of a ViT built
with ``dynamic_img_size`` (:class:`RectangularMaskedViT` adds the ViT's own embedding, for the image
size it was built for: the toolkit builds ViTs for the run's image size). First written for MAE
(He et al. 2022, :mod:`ssl_bench.pretext.mae`); MSN and I-JEPA use them too.
"""
from __future__ import annotations

import numpy as np
import timm
import torch
from lightly.models import utils as lightly_utils
from lightly.models.modules import MaskedVisionTransformerTIMM
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
    """The ViT's patch size and patch grid, or one line refusing an image size it does not tile.

    Args:
        task: the pretext task's registered name.
        vit: the timm ViT, built for the run's image size.

    Returns:
        ``((patch height, patch width), (rows, columns))``.

    Raises:
        ConfigError: the image's height or width is not a multiple of the patch's.
    """
    embed = vit.patch_embed
    patch = (int(embed.patch_size[0]), int(embed.patch_size[1]))
    size = (int(embed.img_size[0]), int(embed.img_size[1]))
    grid = (int(embed.grid_size[0]), int(embed.grid_size[1]))
    if any(g * p != s for g, p, s in zip(grid, patch, size)):
        raise ConfigError(f"pretext {task} needs an image size that is a multiple of the backbone's patch size "
                          f"{patch[0]}x{patch[1]}; got {size[0]}x{size[1]}")
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
    (lightly resamples it to a square grid when the ViT has ``dynamic_img_size``)."""

    def add_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        vit, prefix = self.vit, self.vit.num_prefix_tokens
        if vit.no_embed_class:
            x = torch.cat((x[:, :prefix], x[:, prefix:] + vit.pos_embed), dim=1)
        else:
            x = x + vit.pos_embed
        return vit.pos_drop(x)
