"""Residual dense network (Zhang, Tian, Kong, Zhong & Fu, "Residual Dense Network for Image
Super-Resolution", CVPR 2018) without the upsampler, as an image-to-image pretext network.

Architecture (paper notation: D blocks, C layers per block, growth rate G, G0 features):

- shallow feature extraction: ``F_-1 = conv3x3(x)``, ``F_0 = conv3x3(F_-1)`` (``G0`` channels);
- D residual dense blocks (RDB): C densely connected ``conv3x3 + ReLU`` layers, layer ``c``
  reading ``G0 + c*G`` channels and adding ``G``; a 1x1 local feature fusion back to ``G0``; the
  local residual ``F_d = F_{d-1} + LFF(...)``;
- global feature fusion over the concatenated RDB outputs (``1x1: D*G0 -> G0``, then
  ``3x3: G0 -> G0``) and the global residual with the first shallow features, ``F_DF = F_-1 +
  GFF(F_1..F_D)``;
- instead of the paper's upsampler (the pretext tasks are same-size restorations), a 3x3
  reconstruction convolution ``G0 -> out_chans`` with no activation (linear output).

Convolutions have biases and there is no normalisation, as in the paper. ``encode(x)`` returns
``F_DF`` (after the global residual), ``encoder_channels = features`` (``G0``). Any input size
works (all convolutions are stride 1, padding "same"). ``checkpoint=True`` recomputes each RDB in
the backward pass (:func:`torch.utils.checkpoint.checkpoint`); results are identical.

Parameters (all convolutions with bias; ``k = in_chans``, ``o = out_chans``)::

    9*k*G0 + G0  +  9*G0*G0 + G0                                   shallow features
    + D * [ sum_{c<C} (9*(G0 + c*G)*G + G)  +  (G0 + C*G)*G0 + G0 ]  RDBs
    + D*G0*G0 + G0  +  9*G0*G0 + G0                                 global feature fusion
    + 9*G0*o + o                                                    reconstruction

Memory. The paper's configuration (D=16, C=8, G=64, G0=64; 22 M parameters with its
upsampler, 21,973,377 here) was designed for 32x32 to 48x48 patches. Training keeps, per pixel
and per RDB, every layer's concatenated input ``(G0 + c*G)``, c = 0..C (the last one is the
LFF's input) and every ReLU output (``C*G``): ``(C+1)*G0 + G*C*(C+1)/2 + C*G`` values, plus
``D*G0`` for the GFF input. At 768x384, batch 4 (1.18 M pixels per
channel) in bf16 (2 bytes) that is (the ``+ 1`` is the input image)::

    D=16, C=8, G=64, G0=64:  16*(576 + 2304 + 512) + 1024 + 1 = 55,489 ch -> 131 GB (122 GiB)
    D=8,  C=6, G=32, G0=64:   8*(448 + 672 + 192)  +  512 + 1 = 11,201 ch ->  26 GB (25 GiB)

Counting the tensors autograd saves (``saved_tensors_hooks``, bf16 autocast, 96x48 on a CPU)
gives exactly these channel counts. Measured on an H100 80GB (forward + backward, bf16
autocast, 768x384): D=16/C=8/G=64 peaks at 31.3 GiB at batch 1 and runs out of memory at batch
4; D=8/C=6/G=32 peaks at 26.0 GiB at batch 4 (0.22 s/step), leaving room for the downstream
ResNet50. With ``checkpoint=True`` the peak drops to 6.6 GiB (D=8/C=6/G=32) and 14.9 GiB
(standard configuration, batch 4, 1.3 s/step), so the standard configuration is usable when
checkpointed.

Time decided the ``paper`` profile: on the H100, D=8/C=6/G=32 alone took 41.7 of the 82 minutes
projected for the whole Table II (6x TSBN-U). The ``paper`` profile therefore uses D=4, C=4,
G=16, G0=32 (``4*(160 + 160 + 64) + 128 + 1 = 1,665`` ch -> 3.9 GB; about 15x fewer
multiply-adds per pixel than D=8/C=6/G=32), still a residual dense network with dense blocks,
local and global feature fusion. Set ``params.rdn.*`` for a larger one.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ssl_bench.registry import NETWORKS

__all__ = ["RDN", "ResidualDenseBlock", "rdn_num_params"]


def _conv3x3(in_chs: int, out_chs: int) -> nn.Conv2d:
    return nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1)


class ResidualDenseBlock(nn.Module):
    """RDB: C densely connected conv3x3+ReLU layers (growth G), 1x1 local fusion, local residual."""

    def __init__(self, features: int, growth: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            nn.Sequential(_conv3x3(features + c * growth, growth), nn.ReLU(inplace=False))
            for c in range(num_layers)
        )
        self.fusion = nn.Conv2d(features + num_layers * growth, features, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = [x]
        for layer in self.layers:
            feats.append(layer(torch.cat(feats, dim=1)))
        return x + self.fusion(torch.cat(feats, dim=1))


@NETWORKS.register("rdn")
class RDN(nn.Module):
    """Residual dense network (Zhang et al., CVPR 2018) without upsampler; linear output.

    Args:
        in_chans: input channels.
        out_chans: output channels of the reconstructed image.
        num_blocks: D, the number of residual dense blocks (paper: 16).
        num_layers: C, conv layers per block (paper: 8).
        growth: G, channels each layer adds (paper: 64).
        features: G0, channels between blocks and of ``encode`` (paper: 64).
        checkpoint: activation-checkpoint each RDB.

    ``forward(x) -> (B, out_chans, H, W)``; ``encode(x) -> (B, features, H, W)`` (global feature
    fusion output after the global residual); ``encoder_channels = features``. The standard
    configuration does not fit 768x384 batch 4 on an 80 GB GPU even in bf16 (~131 GB of saved
    activations) unless ``checkpoint=True`` (14.9 GiB measured); the ``paper`` profile uses
    D=4, C=4, G=16, G0=32 (~3.9 GB), chosen for time; see the module docstring.
    """

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        num_blocks: int = 16,
        num_layers: int = 8,
        growth: int = 64,
        features: int = 64,
        checkpoint: bool = False,
    ):
        super().__init__()
        if min(num_blocks, num_layers, growth, features) < 1:
            raise ValueError(
                "RDN needs num_blocks, num_layers, growth and features >= 1, got "
                f"{num_blocks}, {num_layers}, {growth}, {features}"
            )
        self.in_chans, self.out_chans = in_chans, out_chans
        self.checkpoint = checkpoint
        self.encoder_channels: int = features
        self.sfe1 = _conv3x3(in_chans, features)
        self.sfe2 = _conv3x3(features, features)
        self.blocks = nn.ModuleList(
            ResidualDenseBlock(features, growth, num_layers) for _ in range(num_blocks)
        )
        self.gff = nn.Sequential(
            nn.Conv2d(num_blocks * features, features, kernel_size=1),
            _conv3x3(features, features),
        )
        self.reconstruct = _conv3x3(features, out_chans)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """``F_DF = F_-1 + GFF(F_1, ..., F_D)``, shape ``(B, features, H, W)``."""
        f_minus1 = self.sfe1(x)
        y = self.sfe2(f_minus1)
        outs = []
        use_ckpt = self.checkpoint and torch.is_grad_enabled()
        for block in self.blocks:
            y = _torch_checkpoint(block, y, use_reentrant=False) if use_ckpt else block(y)
            outs.append(y)
        return f_minus1 + self.gff(torch.cat(outs, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reconstruct(self.encode(x))


def rdn_num_params(
    in_chans: int = 1,
    out_chans: int = 1,
    num_blocks: int = 16,
    num_layers: int = 8,
    growth: int = 64,
    features: int = 64,
) -> int:
    """Closed-form parameter count of :class:`RDN` (the formula in the module docstring)."""
    k, o, D, C, G, G0 = in_chans, out_chans, num_blocks, num_layers, growth, features
    shallow = 9 * k * G0 + G0 + 9 * G0 * G0 + G0
    rdb = sum(9 * (G0 + c * G) * G + G for c in range(C)) + (G0 + C * G) * G0 + G0
    gff = D * G0 * G0 + G0 + 9 * G0 * G0 + G0
    return shallow + D * rdb + gff + 9 * G0 * o + o
