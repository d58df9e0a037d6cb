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

Memory. The paper's configuration (D=16, C=8, G=64, G0=64, the ``standard`` preset; 22 M
parameters with its upsampler, 21,973,377 here) was designed for 32x32 to 48x48 patches.
Training keeps, per pixel and per RDB, every layer's concatenated input ``(G0 + c*G)``,
c = 0..C (the last one is the LFF's input) and every ReLU output (``C*G``):
``(C+1)*G0 + G*C*(C+1)/2 + C*G`` values, plus ``D*G0`` for the GFF input. At 768x384, batch 4
(1.18 M pixels per channel) in bf16 (2 bytes) that is (the ``+ 1`` is the input image)::

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
projected for the whole Table II (6x TSBN-U). The ``paper`` profile therefore uses the
``compact`` preset, D=4, C=4, G=16, G0=32 (``4*(160 + 160 + 64) + 128 + 1 = 1,665`` ch -> 3.9
GB; about 15x fewer multiply-adds per pixel than D=8/C=6/G=32), still a residual dense network
with dense blocks, local and global feature fusion.

Presets (``params.rdn.preset``). ``preset`` names a configuration; each of ``num_blocks``,
``num_layers``, ``growth``, ``features`` and ``checkpoint`` left at ``None`` takes the preset's
value, one given explicitly overrides it:

- ``standard`` (the default): Zhang et al.'s D=16, C=8, G=64, G0=64, with ``checkpoint=True``
  (14.9 GiB at 768x384, batch 4, bf16, 1.3 s/step on an H100, see above); for users with the
  memory: ``--set params.rdn.preset=standard`` with the ``paper`` profile;
- ``compact``: the ``paper`` profile's D=4, C=4, G=16, G0=32, not checkpointed.

The ``smoke`` and ``quick`` profiles set every size themselves (``compact`` with smaller sizes).

Receptive field. All convolutions have stride 1, so an output pixel depends on a square of
``1 + 2 * n`` input pixels, ``n`` the number of 3x3 convolutions on the longest path from the
input (1x1 convolutions, the LFFs and the GFF's first layer, add nothing). The longest path runs
through both shallow convolutions, all C layers of every RDB (the dense connections add shorter
paths), the GFF's 3x3 and the reconstruction: ``n = D*C + 4``, so (:func:`rdn_receptive_field`)::

    forward:  2*D*C + 9 px        encode: 2*D*C + 7 px (no reconstruction conv)
    standard  (D=16, C=8):  265 px   (encode 263)
    compact   (D=4,  C=4):   41 px   (encode 39)   <- the ``paper`` profile's TSBN-R
    quick 27 px (D=3, C=3), smoke 17 px (D=2, C=2)

At the ``paper`` profile's 768x384 the compact RDN's 41 px are 5% of the image's height and 11%
of its width, against 265 px (35% and 69%) for the standard RDN (and 140 px at the bottleneck of
the ``paper`` profile's U-Net, :mod:`ssl_bench.models.unet`): each pixel of TSBN-R's GSIM
restoration, and so its implicit benign-or-malignant shift, is decided from a 41x41 neighbourhood,
and branch P averages 39-px features over the image.
These are theoretical receptive fields (where an output can depend on the input at all); the
effective one, where the gradient is large, is smaller. ``tests/test_networks.py`` checks them
against the support of the gradient of one output pixel.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint as _torch_checkpoint

from ssl_bench.registry import NETWORKS

__all__ = [
    "PRESETS",
    "RDN",
    "ResidualDenseBlock",
    "rdn_num_params",
    "rdn_options",
    "rdn_receptive_field",
]

#: ``RDN(preset=...)``: the value each option left at ``None`` takes (module docstring, "Presets")
PRESETS: dict[str, dict[str, Any]] = {
    # Zhang et al. 2018; checkpointed: 14.9 GiB at 768x384, batch 4, bf16 (H100), 1.3 s/step
    "standard": dict(num_blocks=16, num_layers=8, growth=64, features=64, checkpoint=True),
    # the ``paper`` profile's, sized for time: ~3.9 GB of saved activations at 768x384, batch 4
    "compact": dict(num_blocks=4, num_layers=4, growth=16, features=32, checkpoint=False),
}

_SIZES = ("num_blocks", "num_layers", "growth", "features")


def rdn_options(preset: str = "standard", **options: Any) -> dict[str, Any]:
    """The RDN's ``num_blocks``, ``num_layers``, ``growth``, ``features`` and ``checkpoint``:
    ``preset``'s values, each overridden by an option given here that is not ``None``.

    Raises ``ValueError`` for an unknown preset or option, a size that is not an integer >= 1 or
    a ``checkpoint`` that is not a bool."""
    if preset not in PRESETS:
        raise ValueError(f"unknown RDN preset {preset!r}; choose one of {', '.join(PRESETS)}")
    unknown = sorted(set(options) - set(PRESETS[preset]))
    if unknown:
        raise ValueError(f"unknown RDN option(s) {', '.join(unknown)}")
    out = dict(PRESETS[preset])
    out.update({k: v for k, v in options.items() if v is not None})
    sizes = [out[k] for k in _SIZES]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in sizes):
        raise ValueError(
            "RDN needs num_blocks, num_layers, growth and features >= 1, got "
            + ", ".join(repr(v) for v in sizes)
        )
    if not isinstance(out["checkpoint"], bool):
        raise ValueError(f"RDN checkpoint must be true or false, got {out['checkpoint']!r}")
    return out


def rdn_receptive_field(num_blocks: int = 16, num_layers: int = 8, encode: bool = False) -> int:
    """Side in pixels of the square of input pixels one output pixel of :class:`RDN` depends on:
    ``1 + 2 * (D*C + 4)`` for ``forward`` (two shallow 3x3 convs, the C 3x3 layers of each of the
    D blocks, the GFF's 3x3, the reconstruction 3x3; 1x1 convs add nothing), one 3x3 fewer for
    ``encode``. Independent of ``growth`` and ``features``."""
    n_conv3x3 = num_blocks * num_layers + (3 if encode else 4)
    return 1 + 2 * n_conv3x3


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
    """Residual dense network (Zhang et al., CVPR 2018) without upsampler; linear output. Presets:
    standard (D=16 blocks, C=8 layers, G=64, G0=64, checkpointed) and compact (D=4, C=4, G=16,
    G0=32, the paper profile's); an option left at None takes the preset's value.

    Args:
        in_chans: input channels.
        out_chans: output channels of the reconstructed image.
        preset: ``"standard"`` or ``"compact"`` (:data:`PRESETS`), the values of the options below
            that are left at ``None``.
        num_blocks: D, the number of residual dense blocks (standard: 16).
        num_layers: C, conv layers per block (standard: 8).
        growth: G, channels each layer adds (standard: 64).
        features: G0, channels between blocks and of ``encode`` (standard: 64).
        checkpoint: activation-checkpoint each RDB (standard: True, compact: False).

    ``forward(x) -> (B, out_chans, H, W)``; ``encode(x) -> (B, features, H, W)`` (global feature
    fusion output after the global residual); ``encoder_channels = features``. The standard
    configuration does not fit 768x384 batch 4 on an 80 GB GPU even in bf16 (~131 GB of saved
    activations) unless checkpointed (14.9 GiB measured), hence ``checkpoint=True`` in its
    preset; the ``paper`` profile uses the compact preset (~3.9 GB), chosen for time. Receptive
    field: ``2*D*C + 9`` px (:meth:`receptive_field`), 265 standard, 41 compact; see the module
    docstring.
    """

    def __init__(
        self,
        in_chans: int = 1,
        out_chans: int = 1,
        preset: str = "standard",
        num_blocks: int | None = None,
        num_layers: int | None = None,
        growth: int | None = None,
        features: int | None = None,
        checkpoint: bool | None = None,
    ):
        super().__init__()
        opts = rdn_options(
            preset, num_blocks=num_blocks, num_layers=num_layers, growth=growth,
            features=features, checkpoint=checkpoint,
        )
        self.in_chans, self.out_chans, self.preset = in_chans, out_chans, preset
        self.num_blocks, self.num_layers = opts["num_blocks"], opts["num_layers"]
        self.growth, self.features = opts["growth"], opts["features"]
        self.checkpoint: bool = opts["checkpoint"]
        self.encoder_channels: int = self.features
        G0, G = self.features, self.growth
        self.sfe1 = _conv3x3(in_chans, G0)
        self.sfe2 = _conv3x3(G0, G0)
        self.blocks = nn.ModuleList(
            ResidualDenseBlock(G0, G, self.num_layers) for _ in range(self.num_blocks)
        )
        self.gff = nn.Sequential(
            nn.Conv2d(self.num_blocks * G0, G0, kernel_size=1),
            _conv3x3(G0, G0),
        )
        self.reconstruct = _conv3x3(G0, out_chans)

    @classmethod
    def receptive_field_for(
        cls, preset: str = "standard", num_blocks: int | None = None, num_layers: int | None = None,
        **other_options: Any,
    ) -> int:
        """Receptive field in pixels of ``forward`` for an RDN built with these options (the
        defaults without any), without building it; the other options do not change it. What
        ``ssl-bench list networks --verbose`` shows."""
        opts = rdn_options(preset, num_blocks=num_blocks, num_layers=num_layers)
        return rdn_receptive_field(opts["num_blocks"], opts["num_layers"])

    def receptive_field(self, encode: bool = False) -> int:
        """Side in pixels of the square of input pixels one pixel of ``forward(x)`` (or of
        ``encode(x)``) depends on: ``2*D*C + 9`` (``2*D*C + 7``), :func:`rdn_receptive_field`."""
        return rdn_receptive_field(self.num_blocks, self.num_layers, encode=encode)

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
