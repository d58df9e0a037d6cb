"""The contract of a pretext network (``NETWORKS``: image in, image out, ``encode``)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..registry import NETWORKS
from .common import build_component, check_common, expect, expect_gradients


def check_network(
    name_or_cls: Any,
    image_size: tuple[int, int] = (64, 32),
    batch_size: int = 2,
    any_size: bool = True,
    **options: Any,
) -> nn.Module:
    """Check a pretext network of ``NETWORKS`` (used by the collab transfer); returns it.

    - built as ``cls(in_chans=1, out_chans=1, **options)``, an ``nn.Module``;
    - ``encoder_channels``: a positive int;
    - ``forward(x (B,1,H,W))`` is ``(B, 1, H, W)`` (linear output), finite, floating;
    - ``encode(x)`` is ``(B, encoder_channels, h, w)``;
    - both hold at ``image_size`` and (``any_size``) at a size that is no multiple of 16 (the
      configured image size can be any ``HxW >= 16``);
    - gradients flow from both outputs into the parameters.
    """
    name, cls, what = check_common(NETWORKS, name_or_cls)
    net = build_component(cls, what, in_chans=1, out_chans=1, **options)
    expect(isinstance(net, nn.Module), what, f"must build an nn.Module, got {type(net).__name__}")
    channels = getattr(net, "encoder_channels", None)
    expect(isinstance(channels, int) and channels > 0, what, f"encoder_channels must be a positive int, got {channels!r}")
    for attr in ("encode", "forward"):
        expect(callable(getattr(net, attr, None)), what, f"has no {attr}() method")
    h, w = image_size
    sizes = [(h, w)] + ([(h - 6, w - 2)] if any_size and min(h - 6, w - 2) >= 16 else [])
    net.train()
    for size in sizes:
        x = torch.rand(batch_size, 1, *size, generator=torch.Generator().manual_seed(0))
        net.zero_grad(set_to_none=True)
        y = net(x)
        expect(isinstance(y, torch.Tensor) and tuple(y.shape) == (batch_size, 1, *size), what,
                f"forward() of a {(batch_size, 1, *size)} input must have the same shape, got "
                f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
        expect(y.is_floating_point() and bool(torch.isfinite(y).all()), what, "forward() output is not finite floats")
        e = net.encode(x)
        expect(isinstance(e, torch.Tensor) and e.dim() == 4 and e.shape[:2] == (batch_size, channels), what,
                f"encode() must be (B, encoder_channels={channels}, h, w), got "
                f"{tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__} for input {tuple(x.shape)}")
        (y.float().mean() + e.float().mean()).backward()
        expect_gradients(list(net.parameters()), what, "the network's parameters")
    return net
