"""U-Net (Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for Biomedical Image
Segmentation", MICCAI 2015), as an image-to-image pretext network.

Architecture, following the paper except where noted:

- widths ``width * 2**i`` for ``i = 0..depth``; with the defaults (``width=64, depth=4``)
  64-128-256-512-1024 as in the paper;
- each level is a double 3x3 convolution, each followed by BatchNorm and ReLU (BatchNorm is not
  in the 2015 paper; it is the usual modern addition). Convolutions use ``padding=1`` instead of
  the paper's unpadded ("valid") convolutions, so no cropping of the skips is needed;
- 2x2 max-pooling down; a 2x2 transposed convolution ("up-convolution") up that halves the
  channels, as in the paper; the upsampled map is concatenated with the encoder map of the same
  level (skip connection) and passed through a double convolution;
- a final 1x1 convolution to ``out_chans`` with **no activation** (linear output: the pretext
  tasks regress intensities).

Inputs whose height or width is not a multiple of ``2**depth`` are padded on the bottom/right
(edge replication) to the next multiple and the output is cropped back, so any input size works
and ``forward(x).shape[-2:] == x.shape[-2:]``.

Interface shared by every pretext network in ``NETWORKS`` (used by the ``collab`` transfer):

- ``forward(x) -> (B, out_chans, H, W)``: the reconstructed image, linear output;
- ``encode(x) -> (B, C, h, w)``: the encoder's deepest feature map (here the bottleneck,
  ``h, w = ceil(H / 2**depth), ceil(W / 2**depth)``);
- ``encoder_channels: int``: ``C`` above (here ``width * 2**depth``, 1024 by default).

Receptive field (the input pixels one output pixel depends on; it depends on ``depth``, not on
``width``). ``encode``: ``9 * 2**depth - 4`` px, 140 with the default depth 4 (every profile's),
since level ``i``'s two 3x3 convolutions add ``4 * 2**i`` and each 2x2 pooling ``2**i``; these are
the features branch P of the collab transfer averages. ``forward`` adds the decoder's
convolutions, and since a pixel of an up-convolution reads a single coarse pixel, how far its
field reaches depends on the output pixel's position modulo ``2**depth``: 188 or 204 px at depth
4 (44 at depth 2), found by propagating each layer's dependency interval and checked against the
support of the gradient of one output pixel (``tests/test_networks.py``). At 768x384 that is about a
quarter of the height and half the width, against 41 px for the ``paper`` profile's RDN
(:mod:`ssl_bench.models.rdn`).

``checkpoint=True`` recomputes every double-conv block in the backward pass
(:func:`torch.utils.checkpoint.checkpoint`) to save activation memory; outputs, gradients and
BatchNorm running statistics are identical to ``checkpoint=False`` (the statistics are restored
after the recomputation, which would otherwise update them a second time).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from torch import nn
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ssl_bench.registry import NETWORKS

__all__ = ["UNet", "DoubleConv", "run_block"]


class DoubleConv(nn.Sequential):
    """Two (3x3 conv, padding 1, BatchNorm, ReLU) layers: the U-Net's unit at every level."""

    def __init__(self, in_chs: int, out_chs: int):
        super().__init__(
            ConvNormAct(in_chs, out_chs, kernel_size=3, padding=1),
            ConvNormAct(out_chs, out_chs, kernel_size=3, padding=1),
        )


class _KeepNormStats:
    """Context manager restoring a module's BatchNorm buffers on exit (used for recomputation)."""

    def __init__(self, module: nn.Module):
        self.buffers = [
            b for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in m.buffers()
        ]
        self.saved: list[torch.Tensor] = []

    def __enter__(self) -> None:
        self.saved = [b.detach().clone() for b in self.buffers]

    def __exit__(self, *exc: object) -> None:
        with torch.no_grad():
            for buf, value in zip(self.buffers, self.saved):
                buf.copy_(value)
        self.saved = []


def run_block(block: nn.Module, x: torch.Tensor, use_checkpoint: bool) -> torch.Tensor:
    """``block(x)``, activation-checkpointed when asked and when gradients are being recorded.

    Non-reentrant checkpointing; BatchNorm running statistics are restored after the backward
    recomputation so that they are updated exactly once per forward, as without checkpointing.
    """
    if not (use_checkpoint and torch.is_grad_enabled()):
        return block(x)
    return _torch_checkpoint(
        block,
        x,
        use_reentrant=False,
        context_fn=lambda: (contextlib.nullcontext(), _KeepNormStats(block)),
    )


@NETWORKS.register("unet")
class UNet(nn.Module):
    """U-Net (Ronneberger et al., MICCAI 2015) with padded convs, BatchNorm and a linear output.

    Args:
        in_chans: input channels (1 for mammograms).
        out_chans: output channels of the reconstructed image.
        width: channels of the first level; level ``i`` has ``width * 2**i`` (paper: 64).
        depth: number of down-sampling steps (paper: 4).
        checkpoint: activation-checkpoint each double-conv block (saves memory, costs ~30% time).

    ``forward(x) -> (B, out_chans, H, W)`` (no final activation), ``encode(x) -> (B,
    encoder_channels, ceil(H/2**depth), ceil(W/2**depth))`` (bottleneck), ``encoder_channels =
    width * 2**depth``. Any ``H, W`` works (padded to a multiple of ``2**depth``, cropped back).
    """

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        width: int = 64,
        depth: int = 4,
        checkpoint: bool = False,
    ):
        super().__init__()
        if depth < 1 or width < 1:
            raise ValueError(f"UNet needs depth >= 1 and width >= 1, got depth={depth}, width={width}")
        self.in_chans, self.out_chans, self.depth = in_chans, out_chans, depth
        self.checkpoint = checkpoint
        widths = [width * 2**i for i in range(depth + 1)]
        self.encoder_channels: int = widths[-1]

        self.stem = DoubleConv(in_chans, widths[0])
        self.pool = nn.MaxPool2d(2)
        self.down = nn.ModuleList(DoubleConv(widths[i], widths[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(widths[i + 1], widths[i], kernel_size=2, stride=2)
            for i in reversed(range(depth))
        )
        self.dec = nn.ModuleList(
            DoubleConv(2 * widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = nn.Conv2d(widths[0], out_chans, kernel_size=1)

    def _pad(self, x: torch.Tensor) -> torch.Tensor:
        m = 2**self.depth
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        return x

    def _encoder(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Encoder maps, shallow to deep (the last one is the bottleneck)."""
        feats = [run_block(self.stem, x, self.checkpoint)]
        for block in self.down:
            feats.append(run_block(block, self.pool(feats[-1]), self.checkpoint))
        return feats

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Bottleneck feature map ``(B, encoder_channels, ceil(H/2**depth), ceil(W/2**depth))``."""
        return self._encoder(self._pad(x))[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        feats = self._encoder(self._pad(x))
        y = feats.pop()
        for up, dec in zip(self.up, self.dec):
            y = run_block(dec, torch.cat([feats.pop(), up(y)], dim=1), self.checkpoint)
        return self.head(y)[..., :h, :w]
