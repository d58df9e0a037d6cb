"""MAE: a ViT encoder sees a random subset of the patches, a light decoder predicts the others (He et al. 2022).

He, Chen, Xie, Li, Dollár, Girshick, "Masked Autoencoders Are Scalable Vision Learners", CVPR
2022. The image is cut into the ViT's patches; a random ``mask_ratio`` of them (0.75, the
paper's) is hidden, independently per image; ``prepare`` draws that mask for the whole batch
(so a data-parallel worker keeps its share of one process's masks, as of every task's views),
and the head hides what it is given. The encoder (the downstream timm ViT, its prefix
tokens and the visible patches only, with their position embeddings) encodes what it sees; a
small transformer decoder gets the encoded visible tokens and a shared, learned mask token in
place of every hidden patch, each with a fixed 2D sine-cosine position embedding, and predicts
the hidden patches' pixels. The loss is the mean squared error on the hidden patches only, on
the pixels themselves or (``norm_pix_loss``) on each patch normalised by its own mean and
variance. After the pretext stage the decoder is dropped and the encoder is the backbone that
``finetune`` fine-tunes (and the ``linear``/``knn`` probes read through its pooled features).

Built on lightly: ``MaskedVisionTransformerTIMM`` (the encoder on the visible tokens; built with
``weight_initialization="skip"`` and ``pos_embed_initialization="skip"`` so that the ViT keeps
timm's initialisation and learned position embedding, the ones it is fine-tuned with),
``MaskedVisionTransformerDecoderTIMM`` (lightly 1.6's decoder; its ``MAEDecoderTIMM`` is
deprecated), ``random_token_mask``, ``get_at_index``, ``set_at_index`` and ``repeat_token``.
lightly assumes square images in three places, and mammograms are rectangular (64x32 in the
smoke profile, 768x384 in the paper's): ``patchify`` (:func:`patchify` here handles any
``(height, width)`` and patch shape, with lightly's patch and pixel order), the sine-cosine
embedding of the decoder (built here on the rectangular grid with lightly's
``get_2d_sine_cosine_positional_embedding_from_grid``), and the position embedding of a ViT
built with ``dynamic_img_size`` (:class:`RectangularMaskedViT` adds the ViT's own embedding, for
the image size it was built for: the toolkit builds ViTs for the run's image size).

Choices for small sets of 1-channel mammograms: the decoder is 2 blocks of width 128 with 4 heads
(the paper's 8 blocks of 512 are for ViT-L on ImageNet; its ablation finds 1 block fine for
fine-tuning); ``norm_pix_loss`` is off by default: a mammogram is half black background, whose
patches are flat up to noise, and normalising them would make that noise the target (the
paper's ImageNet images have no such patches; it turns it on there).
"""
from __future__ import annotations

import numpy as np
import timm
import torch
from lightly.models import utils as lightly_utils
from lightly.models.modules import MaskedVisionTransformerDecoderTIMM, MaskedVisionTransformerTIMM
from lightly.models.modules.masked_vision_transformer_timm import init_weights
from timm.models import is_model_in_modules
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ..errors import ConfigError
from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask

#: timm modules whose models are the ``VisionTransformer`` that lightly's masked encoder wraps
VIT_MODULES = ("vision_transformer",)


def vit_required(backbone: str) -> str:
    """The one line that refuses a backbone MAE cannot train."""
    return (f"pretext mae needs a ViT backbone (timm vision_transformer, e.g. vit_tiny_patch16_224); "
            f"got {backbone}")


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


def masked_patch_loss(prediction: torch.Tensor, target: torch.Tensor, norm_pix: bool) -> torch.Tensor:
    """The mean squared error between predicted and true hidden patches ``(B, n_masked, D)``, in
    fp32; with ``norm_pix`` each true patch is first normalised by its mean and (unbiased)
    variance, ``(t - mean) / sqrt(var + 1e-6)`` (the paper's code)."""
    target = target.float()
    if norm_pix:
        mean, var = target.mean(dim=-1, keepdim=True), target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + 1.0e-6) ** 0.5
    return ((prediction.float() - target) ** 2).mean()


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


class MaskedAutoencoderHead(nn.Module):
    """MAE's encoder pass over a timm ViT (shared, not copied) and its decoder.

    ``forward(x, mask)`` hides the patches ``mask`` marks (``(B, num_patches)`` bool, as
    :meth:`MAE.prepare` draws it for the whole batch; without one, it draws one for ``x``) and
    returns ``[prediction, target]``, both ``(B, n_masked, ph * pw * C)``: the decoder's pixels
    for the hidden patches and their true pixels (hidden patches in patch order).
    """

    def __init__(self, vit: VisionTransformer, mask_ratio: float, decoder_dim: int,
                 decoder_depth: int, decoder_heads: int):
        super().__init__()
        self.encoder = RectangularMaskedViT(vit, weight_initialization="skip", pos_embed_initialization="skip")
        embed = vit.patch_embed
        self.patch_size = (int(embed.patch_size[0]), int(embed.patch_size[1]))
        self.image_size = tuple(int(s) for s in embed.img_size)
        self.grid = (int(embed.grid_size[0]), int(embed.grid_size[1]))
        # a ViT built padded (the run's size is no multiple of its patch: backbones.image_size_kwargs)
        # has patches beyond the image, which MAE would learn to restore as padding
        if getattr(embed, "dynamic_img_pad", False) or any(
                g * p != s for g, p, s in zip(self.grid, self.patch_size, self.image_size)):
            got = (f"the run's is not (the backbone is built padded to {self.image_size[0]}x{self.image_size[1]})"
                   if getattr(embed, "dynamic_img_pad", False) else f"got {self.image_size[0]}x{self.image_size[1]}")
            raise ConfigError(
                f"pretext mae needs an image size that is a multiple of the backbone's patch size "
                f"{self.patch_size[0]}x{self.patch_size[1]}; {got}")
        self.num_patches = self.grid[0] * self.grid[1]
        self.prefix = int(vit.num_prefix_tokens)
        self.mask_ratio = float(mask_ratio)
        in_chans = int(embed.proj.in_channels)
        self.decoder_embed = nn.Linear(vit.embed_dim, decoder_dim)
        self.decoder = MaskedVisionTransformerDecoderTIMM(
            num_patches=self.num_patches, embed_dim=decoder_dim, depth=decoder_depth,
            num_heads=decoder_heads, num_prefix_tokens=self.prefix, initialize_weights=False)
        self.prediction = nn.Linear(decoder_dim, self.patch_size[0] * self.patch_size[1] * in_chans)
        # lightly's own initialisation of the decoder, with the sine-cosine grid of a rectangle
        for module in (self.decoder_embed, self.decoder, self.prediction):
            module.apply(init_weights)
        nn.init.normal_(self.decoder.mask_token, std=0.02)
        with torch.no_grad():
            self.decoder.pos_embed.copy_(sincos_grid_embedding(decoder_dim, self.grid, self.prefix))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        if tuple(x.shape[-2:]) != self.image_size:
            raise ValueError(f"MAE's ViT was built for {self.image_size} images, got {tuple(x.shape[-2:])}")
        b, prefix = x.shape[0], self.prefix
        if mask is None:
            mask = draw_patch_mask(b, self.num_patches, self.mask_ratio, x.device)
        n_keep = int(self.num_patches * (1 - self.mask_ratio))  # random_token_mask's count
        if mask.dtype != torch.bool or tuple(mask.shape) != (b, self.num_patches):
            raise ValueError(f"MAE's mask must be ({b}, {self.num_patches}) bool, got {tuple(mask.shape)} {mask.dtype}")
        # the count is checked off the GPU only: reading it there would stop the host every step
        if mask.device.type == "cpu" and not bool((mask.sum(dim=1) == self.num_patches - n_keep).all()):
            raise ValueError(f"MAE's mask must hide {self.num_patches - n_keep} of the {self.num_patches} patches of every image")
        # per image, the visible patches then the hidden ones, each in patch order
        order = torch.argsort(mask.to(torch.uint8), dim=1, stable=True)
        idx_keep, idx_mask = order[:, :n_keep], order[:, n_keep:]
        # indices into the token sequence: the prefix tokens (always kept), then the patches
        keep = torch.cat([torch.arange(prefix, device=x.device).expand(b, prefix), idx_keep + prefix], dim=1)
        encoded = self.encoder.encode(x, idx_keep=keep)
        tokens = lightly_utils.repeat_token(self.decoder.mask_token, (b, prefix + self.num_patches))
        tokens = lightly_utils.set_at_index(tokens, keep, self.decoder_embed(encoded).type_as(tokens))
        decoded = self.decoder(tokens)
        prediction = self.prediction(lightly_utils.get_at_index(decoded, idx_mask + prefix))
        target = lightly_utils.get_at_index(patchify(x, self.patch_size), idx_mask)
        return [prediction, target]


@PRETEXTS.register("mae")
class MAE(PretextTask):
    """MAE (He et al. 2022): a ViT encoder sees 25% of the patches, a small decoder predicts the rest (lightly).

    Args:
        mask_ratio: fraction of each image's patches hidden from the encoder, in (0, 1).
        decoder_dim: width of the decoder (a multiple of 4 and of decoder_heads).
        decoder_depth: transformer blocks of the decoder.
        decoder_heads: attention heads of the decoder.
        norm_pix_loss: normalise each hidden patch's true pixels by their own mean and variance
            before the MSE.
    """

    kind = "masked"

    def __init__(
        self,
        mask_ratio: float = 0.75,
        decoder_dim: int = 128,
        decoder_depth: int = 2,
        decoder_heads: int = 4,
        norm_pix_loss: bool = False,
    ):
        if not 0 < mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {mask_ratio}")
        for name, value in (("decoder_dim", decoder_dim), ("decoder_depth", decoder_depth),
                            ("decoder_heads", decoder_heads)):
            if int(value) != value or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if decoder_dim % 4:  # two sine-cosine halves, each of sines and cosines
            raise ValueError(f"decoder_dim must be a multiple of 4, got {decoder_dim}")
        if decoder_dim % decoder_heads:
            raise ValueError(f"decoder_dim ({decoder_dim}) must be a multiple of decoder_heads ({decoder_heads})")
        self.mask_ratio = float(mask_ratio)
        self.decoder_dim, self.decoder_depth = int(decoder_dim), int(decoder_depth)
        self.decoder_heads = int(decoder_heads)
        self.norm_pix_loss = bool(norm_pix_loss)
        self.num_patches: int | None = None  # the ViT's patch grid, known once the head is built

    def check_backbone(self, backbone: str) -> None:
        # an unknown name is left to create_backbone, which suggests close matches
        if timm.is_model(backbone) and not is_model_in_modules(backbone, VIT_MODULES):
            raise ConfigError(vit_required(backbone))

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        """The images and their patch mask, drawn here for the whole batch (with the views, as
        every task draws them) so that a data-parallel worker keeps its share of one process's
        masks. Before a head is built the patch grid is unknown: the images alone, and the head
        draws the mask (the contract checker's first call; a training step always has a head)."""
        if self.num_patches is None:
            return PretextBatch(inputs=[images], targets=None)
        mask = draw_patch_mask(images.shape[0], self.num_patches, self.mask_ratio, images.device)
        return PretextBatch(inputs=[images, mask], targets=None)

    def build_masked_head(self, backbone: nn.Module) -> nn.Module:
        if not isinstance(backbone, VisionTransformer):
            raise ConfigError(vit_required(type(backbone).__name__))
        head = MaskedAutoencoderHead(backbone, self.mask_ratio, self.decoder_dim, self.decoder_depth,
                                     self.decoder_heads)
        self.num_patches = head.num_patches
        return head

    def loss(self, outputs: list[torch.Tensor], targets=None) -> torch.Tensor:
        """``outputs``: the predicted and the true hidden patches (:class:`MaskedAutoencoderHead`)."""
        if len(outputs) != 2 or outputs[0].shape != outputs[1].shape or outputs[0].dim() != 3:
            raise ValueError(f"MAE expects the predicted and true masked patches, two (B, n, D) tensors; "
                             f"got {[tuple(o.shape) for o in outputs]}")
        return masked_patch_loss(outputs[0], outputs[1], self.norm_pix_loss)
