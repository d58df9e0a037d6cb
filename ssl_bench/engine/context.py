"""What a transfer strategy gets to train on one fold: the fold's training images, the pretext
task, factories for networks and optimisers, and the shared training loop.

The loop is the CUDA fast path every strategy uses: the images sit on the device as one float16
tensor, batches are drawn and augmented on the device, the forward pass runs under bf16 autocast
on CUDA (losses in fp32), modules are channels_last, and losses are accumulated on the device and
read back once per epoch (no host-device sync inside a step). ``train.compile`` wraps modules in
``torch.compile``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .. import components
from ..config import Config
from ..pretext.base import PretextTask
from ..registry import NETWORKS
from .device import autocast, prepare_module
from .progress import TrainingProgress

StepFn = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Eq. 3 of TSBN: binary cross-entropy with weight ``w`` on the malignant class, mean over the batch."""
    return F.binary_cross_entropy_with_logits(
        logits.float().reshape(-1),
        labels.float().reshape(-1),
        pos_weight=torch.tensor(pos_weight, device=logits.device),
    )


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Label-preserving augmentation on the device: random vertical flip (breasts keep facing the
    same side, so never horizontal) and a mild random gamma (0.8-1.25) per image."""
    b = x.shape[0]
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-2), x)
    gamma = torch.exp(
        (torch.rand(b, device=x.device, generator=generator) * 2 - 1) * 0.223
    )  # log(1.25) = 0.223
    return x.clamp_min(0).pow(gamma[:, None, None, None])


@dataclass
class FitContext:
    """Training inputs and helpers for one fold (see module docstring)."""

    config: Config
    pretext: PretextTask
    images: torch.Tensor  # (N, 1, H, W) float16 on `device`, values in [0, 1]
    labels: torch.Tensor  # (N,) float32 on `device`, 1 = malignant
    device: torch.device
    amp_dtype: torch.dtype | None = None
    progress: TrainingProgress = field(default_factory=lambda: TrainingProgress(enabled=False))

    # ---- factories -----------------------------------------------------------------------
    def new_backbone(self) -> nn.Module:
        """The downstream timm backbone with a 1-logit classifier, 1 input channel."""
        from ..models.backbones import create_backbone

        m = self.config.model
        return create_backbone(m.backbone, pretrained=m.pretrained, in_chans=1, num_classes=1)

    def new_pretext_network(self) -> nn.Module:
        """The registered pretext network (``model.pretext_net``), image in, image out."""
        name = self.config.model.pretext_net
        return components.create(NETWORKS, name, self.config, in_chans=1, out_chans=1)

    def params(self, name: str) -> dict:
        return self.config.component_params(name)

    def optimizer(self, *modules: nn.Module) -> torch.optim.Optimizer:
        """Adam with the configured learning rate and weight decay (TSBN: 1e-4, 5e-4)."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        t = self.config.train
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)

    def prepare(self, module: nn.Module) -> nn.Module:
        """Move to the device (channels_last on CUDA); returns the module to call in steps,
        compiled when ``train.compile`` (the original stays the one to save)."""
        module = prepare_module(module, self.device, self.config.train.channels_last)
        if self.config.train.compile:
            return torch.compile(module)
        return module

    def autocast(self):
        return autocast(self.device, self.amp_dtype)

    def bce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return weighted_bce(logits, labels, self.config.train.pos_weight)

    # ---- data --------------------------------------------------------------------------
    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def steps_per_epoch(self) -> int:
        n, b = self.n_images, self.config.train.batch_size
        return n // b + (1 if n % b > 1 else 0)

    def batches(self, augment: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of ``(images float32 (B,1,H,W), labels (B,))`` on the device.
        A last batch of a single image is dropped (BatchNorm cannot train on one sample)."""
        augment = self.config.train.augment if augment is None else augment
        order = torch.randperm(self.n_images, device=self.device)
        b = self.config.train.batch_size
        for start in range(0, self.n_images, b):
            idx = order[start : start + b]
            if idx.numel() < 2:
                break
            x = self.images.index_select(0, idx).float()
            if augment:
                x = augment_batch(x)
            if self.device.type == "cuda" and self.config.train.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)

    # ---- the loop ----------------------------------------------------------------------
    def train(self, stage: str, epochs: int, step: StepFn) -> dict[str, float]:
        """Run ``epochs`` epochs of ``step(x, y) -> {loss name: detached loss}``; returns the last
        epoch's mean losses. Losses are summed on the device and read once per epoch."""
        last: dict[str, float] = {}
        self.progress.start_stage(stage, epochs, self.steps_per_epoch())
        for _ in range(epochs):
            sums: dict[str, torch.Tensor] = {}
            count = 0
            for x, y in self.batches():
                losses = step(x, y)
                for k, v in losses.items():
                    sums[k] = sums[k] + v.detach().float() if k in sums else v.detach().float()
                count += 1
                self.progress.step()
            if count:
                stacked = torch.stack(list(sums.values())).cpu() / count
                last = dict(zip(sums, stacked.tolist()))
                for k, v in last.items():
                    if not torch.isfinite(torch.tensor(v)):
                        raise FloatingPointError(f"{stage}: loss {k} became {v}; lower train.lr")
            self.progress.epoch_done(last)
        self.progress.finish_stage()
        return last


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
