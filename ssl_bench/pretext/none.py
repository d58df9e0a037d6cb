"""No pretext task: with ``--transfer finetune`` this is the plain supervised baseline
(Table II row "ResNet" of TSBN)."""
from __future__ import annotations

import torch

from ..registry import PRETEXTS
from .base import PretextBatch, PretextTask


@PRETEXTS.register("none")
class NoPretext(PretextTask):
    """No self-supervision: the supervised baseline (only with the finetune transfer)."""

    kind = "none"

    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        raise RuntimeError("the 'none' pretext task has no pretext stage")

    def loss(self, outputs, targets) -> torch.Tensor:
        raise RuntimeError("the 'none' pretext task has no pretext loss")

    @property
    def trains(self) -> bool:
        return False
