"""Scoring images with a trained classifier: probabilities of malignancy, batched, no grad.

Same fast path as training: batches moved (if not already there) and cast on the device,
channels_last and bf16 autocast on CUDA, and one device-to-host copy at the end."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from .device import autocast

if TYPE_CHECKING:
    from .images import StreamedImages


@torch.no_grad()
def probabilities(logits: torch.Tensor) -> torch.Tensor:
    """``(B,)`` float32 probabilities of malignancy from a classifier's logits (any shape ``(B, ...)``
    of one logit per image): what every score of a fold is."""
    return torch.sigmoid(logits.float().reshape(-1))


def predict_scores(
    model: nn.Module,
    images: torch.Tensor | StreamedImages,
    device: torch.device,
    amp_dtype: torch.dtype | None = None,
    batch_size: int = 32,
) -> np.ndarray:
    """Sigmoid of the classifier's logit for each image of ``images`` ``(N, 1, H, W)``."""
    was_training = model.training
    model.eval()
    out = []
    for start in range(0, images.shape[0], batch_size):
        x = images[start : start + batch_size].to(device, non_blocking=True).float()
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, amp_dtype):
            logits = model(x)
        out.append(probabilities(logits))
    model.train(was_training)
    return torch.cat(out).cpu().numpy().astype(np.float64) if out else np.zeros(0)
