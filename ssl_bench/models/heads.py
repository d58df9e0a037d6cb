"""Heads put on top of a timm backbone: a U-Net-style decoder and a projection MLP.

- :class:`UNetDecoder` turns a backbone's multi-scale features into an image, so that any timm
  backbone can serve an image-to-image pretext task (GSIM, context restoration). It follows the
  U-Net decoder (Ronneberger et al., MICCAI 2015) as popularised over pretrained encoders by
  ``segmentation_models_pytorch`` (default widths 256-128-64-32-16).
- :class:`ProjectionMLP` is the 2-layer projection head of SimCLR (Chen et al., ICML 2020), with
  BatchNorm as in SimCLR v2 / BYOL, optionally ending in a non-affine BatchNorm. TSBN's
  branches P and D (the maps of the two encoders into the shared space, eq. 2) use it with the
  final norm, see its docstring.
"""
from __future__ import annotations

from typing import Any, Sequence, cast

import torch
import torch.nn.functional as F
from timm.layers import SelectAdaptivePool2d
from torch import nn

from .backbones import NormalisedInput
from .unet import DoubleConv

__all__ = ["UNetDecoder", "ProjectionMLP", "backbone_feature_info"]

DEFAULT_DECODER_CHANNELS = (256, 128, 64, 32, 16)


def backbone_feature_info(model: nn.Module) -> tuple[list[int], list[int]]:
    """Channels and reductions of what ``model.forward_intermediates(x)`` returns.

    Read from timm's ``model.feature_info`` (checked equal to the intermediates for resnet18/50,
    test_resnet, efficientnet_b0, convnext_atto, mobilenetv3, regnet, densenet, swin, vit);
    models without a usable ``feature_info`` are probed with one dummy forward pass.
    """
    info: Any = getattr(model, "feature_info", None)
    try:
        chs = [int(f["num_chs"]) for f in info]
        reds = [int(f.get("reduction", 0)) for f in info]
        if chs:
            return chs, reds
    except (TypeError, KeyError):
        pass
    return _probe_feature_info(model)


def _probe_feature_info(model: nn.Module) -> tuple[list[int], list[int]]:
    # the first layer: a conv, or the NormalisedInput before a pretrained one (it takes 1 channel)
    conv = next((m for m in model.modules() if isinstance(m, (nn.Conv2d, NormalisedInput))), None)
    in_chans = conv.in_channels if conv is not None else 1
    cfg = getattr(model, "pretrained_cfg", None) or {}
    size = tuple((cfg.get("input_size") or (in_chans, 224, 224))[-2:])
    param = next(model.parameters())
    x = torch.zeros(1, in_chans, *size, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            feats = cast(Any, model).forward_intermediates(x, intermediates_only=True)
    finally:
        model.train(was_training)
    return [f.shape[1] for f in feats], [size[0] // f.shape[-2] for f in feats]


class UNetDecoder(nn.Module):
    """U-Net-style decoder over a backbone's multi-scale features (shallow to deep).

    Starting from the deepest feature map, each stage upsamples (bilinear, to the next skip's
    exact size, so odd input sizes work), concatenates the next shallower feature map and applies
    a double 3x3 conv (BatchNorm, ReLU). The result is resized (bilinear) to ``output_size`` and
    passed through a last double conv at full resolution and a 3x3 conv to ``out_chans`` with
    no activation (linear output).

    Args:
        feature_channels: channels of every feature map that ``forward`` receives, shallow to
            deep (what ``timm_model.forward_intermediates(x, intermediates_only=True)`` returns).
        out_chans: output image channels.
        decoder_channels: widths of the skip stages (deep to shallow), then of the
            full-resolution stage: ``len >= number of used features``; the first ``n - 1``
            entries feed the ``n - 1`` skip stages and the last one the full-resolution stage.
            Default: 256-128-64-32(-16...) with each stage capped by its skip's channels, so
            tiny backbones get a tiny decoder, and 16 (capped likewise) at full resolution.
        feature_indices: which of the received feature maps to use (default all). Used for
            models whose intermediates repeat a resolution (ViTs): only the deepest map per
            resolution is kept by :meth:`for_backbone`.

    ``forward(features, output_size) -> (B, out_chans, *output_size)``.
    """

    def __init__(
        self,
        feature_channels: Sequence[int],
        out_chans: int = 1,
        decoder_channels: Sequence[int] | None = None,
        feature_indices: Sequence[int] | None = None,
    ):
        super().__init__()
        self.feature_channels = [int(c) for c in feature_channels]
        if not self.feature_channels:
            raise ValueError("UNetDecoder needs at least one feature map")
        n_in = len(self.feature_channels)
        indices = list(range(n_in)) if feature_indices is None else [int(i) for i in feature_indices]
        if not indices or any(not 0 <= i < n_in for i in indices):
            raise ValueError(f"feature_indices {indices} must index the {n_in} feature maps")
        self.feature_indices = indices
        used = [self.feature_channels[i] for i in indices]
        skips = used[-2::-1]  # deep to shallow, excluding the deepest map
        if decoder_channels is None:
            widths = [min(max(DEFAULT_DECODER_CHANNELS[0] >> i, 16), c) for i, c in enumerate(skips)]
            final = min(16, widths[-1]) if widths else 16
        else:
            decoder_channels = [int(c) for c in decoder_channels]
            if len(decoder_channels) < len(skips) + 1:
                raise ValueError(
                    f"decoder_channels needs {len(skips) + 1} entries for {len(used)} feature "
                    f"maps ({len(skips)} skip stages + 1 full-resolution stage), "
                    f"got {len(decoder_channels)}"
                )
            widths, final = decoder_channels[: len(skips)], decoder_channels[-1]
        self.decoder_channels = tuple(widths) + (final,)

        stages, prev = [], used[-1]
        for skip_chs, width in zip(skips, widths):
            stages.append(DoubleConv(prev + skip_chs, width))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.full_res = DoubleConv(prev, final)
        self.head = nn.Conv2d(final, out_chans, kernel_size=3, padding=1)

    @classmethod
    def for_backbone(
        cls,
        model: nn.Module,
        out_chans: int = 1,
        decoder_channels: Sequence[int] | None = None,
    ) -> "UNetDecoder":
        """A decoder sized for a timm ``model``'s ``forward_intermediates`` output."""
        chs, reds = backbone_feature_info(model)
        # keep the deepest map of each resolution (all of them for CNNs; the last for ViTs)
        indices = [i for i in range(len(chs)) if i == len(chs) - 1 or reds[i + 1] != reds[i]]
        return cls(chs, out_chans=out_chans, decoder_channels=decoder_channels, feature_indices=indices)

    def forward(self, features: Sequence[torch.Tensor], output_size: tuple[int, int]) -> torch.Tensor:
        if len(features) != len(self.feature_channels):
            raise ValueError(
                f"UNetDecoder expected {len(self.feature_channels)} feature maps with channels "
                f"{self.feature_channels}, got {len(features)} with "
                f"{[tuple(f.shape[1:2]) for f in features]}"
            )
        used = [features[i] for i in self.feature_indices]
        y = used[-1]
        for stage, skip in zip(self.stages, used[-2::-1]):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = stage(torch.cat([y, skip], dim=1))
        y = F.interpolate(y, size=tuple(output_size), mode="bilinear", align_corners=False)
        return self.head(self.full_res(y))


class ProjectionMLP(nn.Module):
    """Linear-BN-ReLU-Linear projection head (SimCLR), optionally ending in a non-affine BN.

    Args:
        in_dim: input features (channels of a feature map, or the width of a pooled vector).
        hidden_dim: hidden width.
        out_dim: output width (the shared/embedding space).
        final_norm: end in ``BatchNorm1d(out_dim, affine=False)``.

    Accepts ``(B, in_dim)`` or a feature map ``(B, in_dim, h, w)``, which is global-average
    pooled first; returns ``(B, out_dim)``.

    Why the final norm (TSBN's branches P and D): the collaborative loss (eq. 2)
    ``sum_i (P(e(x_i)) - D(c(x_i)))**2`` has a trivial minimum where P and D both output the
    same constant. A BatchNorm without affine parameters standardises every output dimension to
    zero mean and unit variance over the batch, so in training the outputs cannot collapse to a
    constant and the loss can only be lowered by making P(e(x)) and D(c(x)) agree sample by
    sample. It needs a batch of at least 2 in training mode (evaluation uses running statistics).
    """

    def __init__(self, in_dim: int, hidden_dim: int = 512, out_dim: int = 128, final_norm: bool = True):
        super().__init__()
        self.in_dim, self.out_dim, self.final_norm = in_dim, out_dim, final_norm
        self.pool = SelectAdaptivePool2d(pool_type="avg", flatten=True)
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden_dim, bias=False),
            nn.BatchNorm1d(hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, out_dim, bias=not final_norm),
        )
        if final_norm:
            self.net.append(nn.BatchNorm1d(out_dim, affine=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = self.pool(x)
        elif x.dim() != 2:
            raise ValueError(f"ProjectionMLP expects (B, C) or (B, C, h, w), got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_dim:
            raise ValueError(f"ProjectionMLP expects {self.in_dim} input features, got {x.shape[1]}")
        return self.net(x)
