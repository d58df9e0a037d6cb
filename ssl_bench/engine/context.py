"""What a transfer strategy gets to train on one fold: the fold's training images, the pretext
task, factories for networks and optimisers, and the shared training loop.

The loop is the CUDA fast path every strategy uses:

- the images sit on the device as one float16 tensor (:class:`ssl_bench.engine.fold.DeviceImages`);
  each epoch's order is one ``randperm`` on the device, batches are gathered and augmented there;
- the forward pass runs under bf16 autocast on CUDA (losses in fp32), modules and batches are
  channels_last, cuDNN autotunes the fixed shapes, Adam is fused (one kernel for all parameters);
- no host-device sync inside a step: losses are accumulated on the device and read back once
  per epoch (no ``.item()``, no Python branching on tensor values);
- ``train.compile`` wraps modules (and the functions a strategy passes to :meth:`FitContext.compiled`)
  in ``torch.compile``;
- CUDA-graph capture of the whole step (``train.cuda_graphs``, or the ``SSL_BENCH_CUDA_GRAPHS=1``
  environment variable): see :mod:`ssl_bench.engine.cuda_graphs`.

On the CPU the same code runs in fp32 with none of the CUDA-only settings, so the fast path's
results equal a plain PyTorch loop's (``tests/test_fast_path.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Iterator, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from .. import components
from ..config import Config
from ..pretext.base import PretextTask
from ..registry import NETWORKS
from .cuda_graphs import GraphedStep
from .device import autocast, configure_fast_path, graphs_requested, prepare_module
from .progress import TrainingProgress

StepFn = Callable[[torch.Tensor, torch.Tensor], dict[str, torch.Tensor]]
F_ = TypeVar("F_", bound=Callable)


def weighted_bce(logits: torch.Tensor, labels: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Eq. 3 of TSBN: binary cross-entropy with weight ``w`` on the malignant class, mean over the batch."""
    logits = logits.float().reshape(-1)
    return F.binary_cross_entropy_with_logits(
        logits,
        labels.float().reshape(-1),
        # a fill on the device: torch.tensor(w, device=...) would be a host-to-device copy
        pos_weight=logits.new_full((), float(pos_weight)),
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
    #: per stage, how the CUDA-graph wrapper ran its steps (empty when graphs are off)
    graph_stats: dict[str, dict] = field(default_factory=dict)
    #: CUDA-graph capture of training steps: asked for (config or env), and on a CUDA device
    use_graphs: bool = field(init=False)

    def __post_init__(self) -> None:
        configure_fast_path(self.device)
        self.use_graphs = self.device.type == "cuda" and graphs_requested(self.config.train)

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
        """Adam with the configured learning rate and weight decay (TSBN: 1e-4, 5e-4); fused
        on CUDA (and capturable when steps are captured in CUDA graphs)."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        t = self.config.train
        extra = {}
        if self.device.type == "cuda":
            extra = {"fused": True, "capturable": self.use_graphs}
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay, **extra)

    def prepare(self, module: nn.Module, compile: bool = True) -> nn.Module:
        """Move to the device (channels_last on CUDA); returns the module to call in steps,
        compiled when ``train.compile`` and ``compile`` (the original stays the one to save).
        ``torch.compile`` compiles ``module(...)`` only: for other methods use :meth:`compiled`."""
        module = prepare_module(module, self.device, self.config.train.channels_last)
        if compile and self.config.train.compile:
            return torch.compile(module)
        return module

    def compiled(self, fn: F_) -> F_:
        """``torch.compile(fn)`` when ``train.compile`` (e.g. a bound method such as
        ``backbone.forward_features``, or a step's forward function), else ``fn`` itself."""
        return torch.compile(fn) if self.config.train.compile else fn

    def autocast(self):
        return autocast(self.device, self.amp_dtype, cache_enabled=not self.use_graphs)

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
        epoch's mean losses. Losses are summed on the device and read once per epoch; with CUDA
        graphs on, ``step`` is captured after a few eager steps and replayed."""
        if self.use_graphs:
            step = GraphedStep(step, name=stage)
        last: dict[str, float] = {}
        self.progress.start_stage(stage, epochs, self.steps_per_epoch())
        for _ in range(epochs):
            sums: dict[str, torch.Tensor] = {}
            count = 0
            for x, y in self.batches():
                losses = step(x, y)
                for k, v in losses.items():
                    v = v.detach().float()
                    # a copy to start from: a graph's outputs are overwritten by the next replay
                    sums[k] = sums[k] + v if k in sums else v.clone()
                count += 1
                self.progress.step()
            if count:
                stacked = torch.stack(list(sums.values())).cpu() / count  # the epoch's one sync
                last = dict(zip(sums, stacked.tolist()))
                for k, v in last.items():
                    if not math.isfinite(v):
                        raise FloatingPointError(f"{stage}: loss {k} became {v}; lower train.lr")
            self.progress.epoch_done(last)
        self.progress.finish_stage()
        if isinstance(step, GraphedStep):
            self.graph_stats[stage] = step.stats()
        return last


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
