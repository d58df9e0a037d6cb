"""The downstream classification loss of TSBN (eq. 3): binary cross-entropy weighted towards the
malignant class."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Eq. 3 of TSBN: binary cross-entropy with weight ``w`` on the malignant class, mean over the batch."""
    logits = logits.float().reshape(-1)
    return F.binary_cross_entropy_with_logits(
        logits,
        labels.float().reshape(-1),
        # a fill on the device: torch.tensor(w, device=...) would be a host-to-device copy
        pos_weight=logits.new_full((), float(pos_weight)),
    )
