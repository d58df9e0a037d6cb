"""Batched random views of 1-channel mammograms, on the images' device: the augmentations that
every view-based pretext task (SimCLR, MoCo, BYOL, Barlow Twins, VICReg, DINO, SimSiam, NNCLR,
SwAV) shares, and the multi-crop views of DINO and SwAV (:class:`MultiCrop`).

lightly's transforms (``SimCLRTransform`` and the others) do not fit: they transform one image at
a time on the CPU (their ``GaussianBlur`` goes through PIL, also for tensors), make square crops,
and their defaults are for RGB photographs (hue/saturation jitter, random grayscale, ImageNet
normalisation, horizontal flips). :class:`MammoViews` is a batched version for 1-channel
mammograms in [0, 1] that runs on the images' device, every image with its own random parameters:

1. random resized crop (one ``grid_sample`` for the whole batch) of ``crop_scale``..1 of the
   image area, aspect ratio within x(3/4..4/3) of the image's own (768x384 crops stay
   portrait), centred on a random point of the breast (a grid cell whose mean exceeds
   ``tissue_threshold``; anywhere if the image has none), output at the input's size (or at
   ``size``, for DINO's smaller local crops);
2. vertical flip with probability ``vflip_prob``; never horizontal: preprocessing orients every
   breast to the same side, so a horizontal flip would make views no real image looks like;
3. intensity jitter ``x -> gain * x**gamma``, ``log gamma ~ U(-jitter, jitter)``,
   ``gain ~ U(1 - jitter/2, 1 + jitter/2)``: brightness and contrast of a gray image, keeping
   the black background black (no hue/saturation jitter, no grayscale: already 1 channel);
4. Gaussian blur with probability ``blur_prob``, sigma ~ U(0.1, 2.0) px scaled by
   ``min(H, W) / 224`` (SimCLR's range for 224 px images);
5. additive Gaussian noise with a per-image std ~ U(0, ``noise_std``); finally clamped to [0, 1].

No host-device synchronisation: the tissue cell is an ``argmax`` over random weights, not
``torch.multinomial``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

_RATIO = (3 / 4, 4 / 3)  # crop aspect ratio range, relative to the image's aspect ratio
_BLUR_SIGMA = (0.1, 2.0)  # SimCLR's blur sigma range for 224 px images
_GRID = 32  # tissue cells along the longer side when choosing crop centres


def _uniform(n: int, lo: float, hi: float, device, generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, device=device, generator=generator)


def sample_crop_boxes(
    images: torch.Tensor,
    scale: tuple[float, float] = (0.4, 1.0),
    ratio: tuple[float, float] = _RATIO,
    tissue_threshold: float = 0.05,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Random crop boxes ``(y0, x0, h, w)`` in pixels (float, ``(B, 4)``), centred in the breast.

    Area ``~ U(scale) * H * W``; aspect ``w/h`` = the image's times a log-uniform factor in
    ``ratio``; sides clipped to the image. The centre is a uniform point of a random grid cell
    whose mean intensity exceeds ``tissue_threshold`` (any cell when no cell does); the box is
    then shifted to lie inside the image.
    """
    b, _, h, w = images.shape
    dev = images.device
    gh = max(1, min(h, round(_GRID * h / max(h, w))))
    gw = max(1, min(w, round(_GRID * w / max(h, w))))
    cells = F.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), (gh, gw)).flatten(1)
    weight = (cells > tissue_threshold).float()
    weight = torch.where(weight.sum(1, keepdim=True) > 0, weight, torch.ones_like(weight))
    # a uniform pick among the tissue cells (weights are 0/1), without multinomial's host sync
    cell = torch.argmax(torch.rand(weight.shape, device=dev, generator=generator) * weight, dim=1)
    cy = ((cell // gw).float() + torch.rand(b, device=dev, generator=generator)) * (h / gh)
    cx = ((cell % gw).float() + torch.rand(b, device=dev, generator=generator)) * (w / gw)

    area = _uniform(b, scale[0], scale[1], dev, generator)
    log_r = _uniform(b, math.log(ratio[0]), math.log(ratio[1]), dev, generator)
    r = torch.exp(log_r)
    ch = (h * torch.sqrt(area / r)).clamp(1.0, h)
    cw = (w * torch.sqrt(area * r)).clamp(1.0, w)
    y0 = torch.minimum((cy - ch / 2).clamp_min(0.0), h - ch)
    x0 = torch.minimum((cx - cw / 2).clamp_min(0.0), w - cw)
    return torch.stack([y0, x0, ch, cw], dim=1)


def resized_crop(
    images: torch.Tensor,
    boxes: torch.Tensor,
    vflip: torch.Tensor | None = None,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Crop each image to its box ``(y0, x0, h, w)`` and resize it to ``size`` (default: the
    input size; bilinear), flipped vertically where ``vflip`` is True; one ``grid_sample`` for
    the batch.

    A box covering the whole image with no flip reproduces the image exactly.
    """
    b, _, h, w = images.shape
    out_h, out_w = size if size is not None else (h, w)
    y0, x0, ch, cw = boxes.float().unbind(1)
    sy = ch / h
    if vflip is not None:
        sy = torch.where(vflip, -sy, sy)
    theta = torch.zeros(b, 2, 3, device=images.device)
    theta[:, 0, 0] = cw / w
    theta[:, 0, 2] = (2 * x0 + cw) / w - 1
    theta[:, 1, 1] = sy
    theta[:, 1, 2] = (2 * y0 + ch) / h - 1
    grid = F.affine_grid(theta, [b, 1, out_h, out_w], align_corners=False)
    return F.grid_sample(
        images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False
    )


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Blur each image with its own ``sigma`` (``(B,)``, pixels; 0 = unchanged), separable, with
    a ``2 * radius + 1`` kernel and reflected borders."""
    b, c, h, w = images.shape
    radius = max(0, min(radius, h - 1, w - 1))
    if radius == 0:
        return images
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float32)
    s = sigma.float().clamp_min(1e-6)[:, None]
    kernel = torch.exp(-0.5 * (x[None] / s) ** 2)
    kernel = torch.where((sigma > 0)[:, None], kernel, (x[None] == 0).float())
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0)  # (B*C, K)
    flat = images.float().reshape(1, b * c, h, w)
    flat = F.pad(flat, (radius, radius, radius, radius), mode="reflect")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=b * c)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)
    return flat.reshape(b, c, h, w)


class MammoViews:
    """Batched random views of 1-channel mammograms in [0, 1] (see the module docstring).

    ``MammoViews(...)(images)`` returns one view per image, same shape and dtype, in [0, 1]
    (height and width times ``out_scale``, rounded, when it is not 1: DINO's local crops).
    ``ratio`` is the crop's aspect-ratio range relative to the image's (log-uniform).

    Args:
        crop_scale: smallest area fraction of a view's random crop (crops cover crop_scale..1 of the
            image; a (min, max) pair is accepted too).
        vflip_prob: probability of a vertical flip of each view (never horizontal).
        jitter: intensity jitter x -> gain * x**gamma, log gamma ~ U(-jitter, jitter), gain ~
            U(1 - jitter/2, 1 + jitter/2); in [0, 1).
        blur_prob: probability of a Gaussian blur of each view.
        noise_std: largest standard deviation of each view's additive Gaussian noise.
    """

    def __init__(
        self,
        crop_scale: float | Sequence[float] = 0.4,
        vflip_prob: float = 0.5,
        jitter: float = 0.4,
        blur_prob: float = 0.5,
        noise_std: float = 0.02,
        tissue_threshold: float = 0.05,
        ratio: tuple[float, float] = _RATIO,
        out_scale: float = 1.0,
    ):
        if isinstance(crop_scale, (int, float)):
            scale: tuple[float, ...] = (float(crop_scale), 1.0)
        else:
            scale = tuple(float(v) for v in crop_scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] <= 1:
            raise ValueError(
                f"crop_scale must be a minimum area fraction in (0, 1] or a (min, max) pair "
                f"with 0 < min <= max <= 1, got {crop_scale!r}"
            )
        for name, value in (("vflip_prob", vflip_prob), ("blur_prob", blur_prob)):
            if not 0 <= value <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if not 0 <= jitter < 1:
            raise ValueError(f"jitter must be in [0, 1), got {jitter}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.scale = scale
        self.vflip_prob = float(vflip_prob)
        self.jitter = float(jitter)
        self.blur_prob = float(blur_prob)
        self.noise_std = float(noise_std)
        self.tissue_threshold = float(tissue_threshold)
        if not 0 < ratio[0] <= ratio[1]:
            raise ValueError(f"ratio must be (min, max) with 0 < min <= max, got {ratio!r}")
        self.ratio = (float(ratio[0]), float(ratio[1]))
        if not 0 < out_scale <= 1:
            raise ValueError(f"out_scale must be in (0, 1], got {out_scale}")
        self.out_scale = float(out_scale)

    def out_size(self, h: int, w: int) -> tuple[int, int]:
        """The views' ``(height, width)`` for ``h x w`` images."""
        if self.out_scale == 1.0:
            return h, w
        return max(1, round(h * self.out_scale)), max(1, round(w * self.out_scale))

    def __call__(
        self, images: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        if images.dim() != 4:
            raise ValueError(f"images must be (B, C, H, W), got shape {tuple(images.shape)}")
        b, _, in_h, in_w = images.shape
        dev, g = images.device, generator
        boxes = sample_crop_boxes(images, self.scale, self.ratio, self.tissue_threshold, g)
        vflip = torch.rand(b, device=dev, generator=g) < self.vflip_prob
        h, w = self.out_size(in_h, in_w)
        x = resized_crop(images, boxes, vflip, (h, w)).clamp(0.0, 1.0)

        j = self.jitter
        gamma = torch.exp(_uniform(b, -j, j, dev, g)).view(b, 1, 1, 1)
        gain = _uniform(b, 1 - j / 2, 1 + j / 2, dev, g).view(b, 1, 1, 1)
        x = gain * x.pow(gamma)

        size = min(h, w) / 224
        lo, hi = _BLUR_SIGMA[0] * size, _BLUR_SIGMA[1] * size
        blur = torch.rand(b, device=dev, generator=g) < self.blur_prob
        sigma = torch.where(blur, _uniform(b, lo, hi, dev, g), torch.zeros(b, device=dev))
        if self.blur_prob > 0:
            x = gaussian_blur(x, sigma, math.ceil(3 * hi))

        std = _uniform(b, 0.0, self.noise_std, dev, g).view(b, 1, 1, 1)
        x = x + std * torch.randn(x.shape, device=dev, generator=g)
        return x.clamp(0.0, 1.0).to(images.dtype)


def view_options(
    crop_scale: float | Sequence[float],
    vflip_prob: float,
    jitter: float,
    blur_prob: float,
    noise_std: float,
) -> MammoViews:
    """The :class:`MammoViews` of a task's view options (checked there; ``ValueError``)."""
    return MammoViews(
        crop_scale=crop_scale,
        vflip_prob=vflip_prob,
        jitter=jitter,
        blur_prob=blur_prob,
        noise_std=noise_std,
    )


def view_pair(views: MammoViews, images: torch.Tensor) -> list[torch.Tensor]:
    """Two independent random views of every image (no gradient): the inputs of the two-view
    methods."""
    with torch.no_grad():
        return [views(images), views(images)]


class MultiCrop:
    """Multi-crop views (Caron et al., "Unsupervised Learning of Visual Features by Contrasting
    Cluster Assignments", NeurIPS 2020; DINO and SwAV here): two global views of every image, then
    ``local_crops`` smaller local views, in that order.

    Global views cover ``crop_scale``..1 of the image at its size, local ones
    ``local_scale``..``crop_scale`` at ``local_size`` of its height and width; the other view
    options are shared. ``MultiCrop(...)(images)`` returns the ``2 + local_crops`` views (no
    gradient), the global pair drawn first (:func:`view_pair`).

    Args:
        local_crops: local views per image besides the two global ones (0: two views).
        local_scale: smallest area fraction of a local view's crop (below crop_scale).
        local_size: a local view's height and width as a fraction of the image's.
        crop_scale: smallest area fraction of a global view's crop.
    """

    def __init__(
        self,
        local_crops: int,
        local_scale: float,
        local_size: float,
        crop_scale: float,
        vflip_prob: float,
        jitter: float,
        blur_prob: float,
        noise_std: float,
    ):
        if int(local_crops) != local_crops or local_crops < 0:
            raise ValueError(f"local_crops must be an integer >= 0, got {local_crops}")
        if not 0 < local_scale < crop_scale:
            raise ValueError(f"local_scale must be in (0, crop_scale={crop_scale}), got {local_scale}")
        self.local_crops = int(local_crops)
        self.global_views = view_options(crop_scale, vflip_prob, jitter, blur_prob, noise_std)
        self.local_views = MammoViews(
            crop_scale=(float(local_scale), float(crop_scale)),
            vflip_prob=vflip_prob,
            jitter=jitter,
            blur_prob=blur_prob,
            noise_std=noise_std,
            out_scale=local_size,
        )

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]:
        views = view_pair(self.global_views, images)
        with torch.no_grad():
            views += [self.local_views(images) for _ in range(self.local_crops)]
        return views
