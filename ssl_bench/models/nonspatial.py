"""The first Non-spatial control's classifier: a logistic regression on what an image's intensities
say without their positions (the breast's intensity histogram and global statistics), as an
``nn.Module``.

The ``nonspatial`` transfer fitted it until the control became gradient-boosted trees on the
position-free features (:mod:`ssl_bench.models.nonspatial_trees`); it is kept so that the
``model.pt`` files it wrote (``architecture`` ``{"name": "nonspatial", ...}``) still load and score
as they did. No convolution, nothing depends on where a pixel is. The features of an image ``x``
``(1, H, W)`` in [0, 1] (:meth:`NonSpatialClassifier.features`, in float64 on the image's device):

- the image is first rounded to float16, the precision every dataset stores images in, so that
  ``ssl-bench predict`` (float32 preprocessing) computes the features of the run's own images;
- **breast pixels** are those above ``threshold`` (0.05: the preprocessing pads with 0 and the
  background of a mammogram normalised to [0, 1] stays below it, e.g. the synthetic phantom's
  noise reaches 0.04); the background is left out of every feature below except the area;
- ``bins`` (32) **histogram** values: the fraction of breast pixels in each of ``bins`` equal
  bins over ``(threshold, 1]`` (right-closed; they sum to 1, or 0 for an image without breast);
- **global statistics** of the breast pixels: mean, standard deviation, skewness and excess
  kurtosis (population moments, the standard deviation clamped at 1e-6 in the ratios);
- **percentiles** 50, 75, 90, 95, 99 and 100 (the maximum) of the breast pixels, linearly
  interpolated as ``numpy.percentile``;
- the **breast area**: the fraction of the image's pixels that are breast pixels.

:meth:`~NonSpatialClassifier.forward` standardises them (``feature_mean``, ``feature_scale``, the
``StandardScaler`` of the training images) and applies the linear layer (the logistic
regression's coefficients and intercept), all in float64 with autocast off, so that the sigmoid of
its logit equals scikit-learn's ``predict_proba`` (to float32 rounding of the logit). Nothing here is
trained by gradient: :meth:`~NonSpatialClassifier.set_linear` copies a fitted model in.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..registry import CLASSIFIERS

#: the percentiles of the breast pixels among the features (100 is the maximum)
PERCENTILES = (50.0, 75.0, 90.0, 95.0, 99.0, 100.0)
#: the global statistics, in feature order after the histogram
STATISTICS = ("mean", "std", "skewness", "kurtosis")


@CLASSIFIERS.register("nonspatial")
class NonSpatialClassifier(nn.Module):
    """Logistic regression on the breast's intensity histogram and global statistics."""

    feature_mean: torch.Tensor
    feature_scale: torch.Tensor

    def __init__(self, bins: int = 32, threshold: float = 0.05):
        super().__init__()
        if int(bins) != bins or bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins!r}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError(f"threshold must be in [0, 1), got {threshold!r}")
        self.bins, self.threshold = int(bins), float(threshold)
        n = self.num_features
        self.register_buffer("feature_mean", torch.zeros(n, dtype=torch.float64))
        self.register_buffer("feature_scale", torch.ones(n, dtype=torch.float64))
        self.linear = nn.Linear(n, 1, dtype=torch.float64)
        self.linear.requires_grad_(False)
        with torch.no_grad():
            self.linear.weight.zero_()
            self.linear.bias.zero_()

    @property
    def architecture(self) -> dict[str, Any]:
        """What rebuilds this module before its ``state_dict`` is loaded (``model.pt``)."""
        return {"name": self.name, "bins": self.bins, "threshold": self.threshold}

    @property
    def num_features(self) -> int:
        return self.bins + len(STATISTICS) + len(PERCENTILES) + 1

    @property
    def feature_names(self) -> list[str]:
        return ([f"hist_{i}" for i in range(self.bins)] + list(STATISTICS)
                + [f"p{q:g}" for q in PERCENTILES] + ["area"])

    def set_linear(self, mean: np.ndarray, scale: np.ndarray, coef: np.ndarray, intercept: float) -> None:
        """Copy in a fitted standardisation (``StandardScaler.mean_``, ``.scale_``) and logistic
        regression (``coef_`` ``(1, F)`` or ``(F,)``, ``intercept_``)."""
        n = self.num_features
        as64 = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=self.feature_mean.device)
        mean_t, scale_t, coef_t = as64(mean).reshape(-1), as64(scale).reshape(-1), as64(coef).reshape(1, -1)
        if mean_t.numel() != n or scale_t.numel() != n or coef_t.shape[1] != n:
            raise ValueError(f"expected {n} features, got mean {mean_t.numel()}, scale {scale_t.numel()}, "
                             f"coef {coef_t.shape[1]}")
        with torch.no_grad():
            self.feature_mean.copy_(mean_t)
            self.feature_scale.copy_(scale_t)
            self.linear.weight.copy_(coef_t)
            self.linear.bias.fill_(float(np.asarray(intercept, dtype=np.float64).reshape(-1)[0]))

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` images in [0, 1] -> ``(B, num_features)`` float64 (module docstring)."""
        # float16 first: the precision images are stored in (dataset cache), so that a float32
        # image from `ssl-bench predict` gives the features of the run's own copy of it
        v = x.reshape(x.shape[0], -1).to(torch.float16).to(torch.float64)
        n_pixels = v.shape[1]
        breast = v > self.threshold
        count = breast.sum(dim=1)
        nb = count.clamp(min=1).to(torch.float64)
        w = breast.to(torch.float64)

        mean = (v * w).sum(dim=1) / nb
        d = (v - mean[:, None]) * w
        std = ((d * d).sum(dim=1) / nb).sqrt()
        s = std.clamp(min=1e-6)
        skewness = (d ** 3).sum(dim=1) / nb / s ** 3
        kurtosis = (d ** 4).sum(dim=1) / nb / s ** 4 - 3.0

        # bin i holds (t + i * width, t + (i + 1) * width]; background goes to a dropped extra bin
        u = (v - self.threshold) / (1.0 - self.threshold)
        idx = (torch.ceil(u * self.bins).long() - 1).clamp(0, self.bins - 1)
        idx = torch.where(breast, idx, torch.full_like(idx, self.bins))
        hist = torch.zeros(v.shape[0], self.bins + 1, dtype=torch.float64, device=v.device)
        hist.scatter_add_(1, idx, torch.ones_like(v))
        hist = hist[:, : self.bins] / nb[:, None]

        # breast pixels are the top `count` values of each sorted row
        ordered = v.sort(dim=1).values
        start = (n_pixels - count.clamp(min=1)).to(torch.float64)
        percentiles = []
        for q in PERCENTILES:
            pos = start + (q / 100.0) * (nb - 1.0)
            lo = pos.floor()
            frac = pos - lo
            lo_i = lo.long().clamp(0, n_pixels - 1)
            hi_i = (lo_i + 1).clamp(max=n_pixels - 1)
            a, b = ordered.gather(1, lo_i[:, None])[:, 0], ordered.gather(1, hi_i[:, None])[:, 0]
            percentiles.append(a + frac * (b - a))

        area = count.to(torch.float64) / n_pixels
        stats = torch.stack([mean, std, skewness, kurtosis, *percentiles, area], dim=1)
        return torch.cat([hist, stats], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)`` -> ``(B, 1)`` float32 logits of malignancy."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            z = (self.features(x) - self.feature_mean) / self.feature_scale
            logits = self.linear(z)
        return logits.to(torch.float32)
