"""A breast's views as one two-channel image, and the scores of a classifier that reads them.

The units of :mod:`ssl_bench.data.breasts` become ``(U, 2, H, W)`` tensors, channel 0 the CC view
and channel 1 the MLO view, a missing view all zeros (what a view-fused classifier,
:class:`ssl_bench.models.multiview.MultiViewFusion`, takes); a classifier that declares
``takes_view_pairs`` scores its units, and each image gets its breast's score
(:meth:`~ssl_bench.data.breasts.ViewPairs.image_scores`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from ..data.breasts import NO_IMAGE, ViewPairs
from .scoring import predict_scores

if TYPE_CHECKING:
    from .images import StreamedImages


def takes_view_pairs(classifier: nn.Module) -> bool:
    """Whether ``classifier`` scores a breast's views (declared by its class), not single images."""
    return bool(getattr(type(classifier), "takes_view_pairs", False))


def unit_images(images: torch.Tensor | StreamedImages, pairs: ViewPairs, units: slice = slice(None)) -> torch.Tensor:
    """``(u, 2, H, W)`` the CC and MLO images of ``pairs``' ``units`` (zeros for a missing view),
    of ``images`` ``(N, 1, H, W)`` (a tensor or streamed), on its device, in its dtype."""
    slots = []
    for index in (pairs.cc[units], pairs.mlo[units]):
        present = torch.from_numpy(index != NO_IMAGE)
        rows = torch.from_numpy(np.where(index != NO_IMAGE, index, 0))
        picked = images.index_select(0, rows.to(images.device))[: len(index)]
        slots.append(torch.where(present.to(picked.device)[:, None, None, None], picked, torch.zeros_like(picked)))
    return torch.cat(slots, dim=1)


def predict_image_scores(
    classifier: nn.Module,
    images: torch.Tensor | StreamedImages,
    pairs: ViewPairs | None,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Each image's probability of malignancy: the classifier's on the image itself, or, for one
    that takes view pairs, its breast's (the mean over the breast's units, ``pairs`` giving the
    units of these images alone: a breast is paired within the images scored together)."""
    if not takes_view_pairs(classifier):
        return predict_scores(classifier, images, device, amp_dtype, batch_size=batch_size)
    if pairs is None or pairs.n_images != images.shape[0]:
        raise ValueError(f"a classifier of view pairs needs the units of the {images.shape[0]} images it scores")
    unit_scores = [
        predict_scores(
            classifier,
            unit_images(images, pairs, slice(start, start + batch_size)),
            device,
            amp_dtype,
            batch_size=batch_size,
        )
        for start in range(0, pairs.n_units, batch_size)
    ]
    return pairs.image_scores(np.concatenate(unit_scores) if unit_scores else np.zeros(0))
