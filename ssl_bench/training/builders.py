"""The networks and optimisers a transfer strategy builds for one fold, set up for the fast path.

On CUDA: modules channels_last, Adam fused (one kernel for all parameters) and capturable when
steps are captured in CUDA graphs, forward passes under bf16 autocast (losses stay fp32);
``train.compile`` wraps modules and step functions in ``torch.compile``. On the CPU the same calls
give plain fp32 modules and Adam, so results equal a plain PyTorch loop's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, TypeVar, cast

import torch
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from .. import components
from ..config import Config
from ..models.backbones import create_backbone
from ..registry import NETWORKS
from .device import autocast, prepare_module

F_ = TypeVar("F_", bound=Callable)


@dataclass
class Builders:
    """Factories for one fold's networks and optimisers, from the run's config."""

    config: Config
    device: torch.device
    amp_dtype: torch.dtype | None = None
    use_graphs: bool = False
    #: every optimiser built and every module prepared, in order: a fold's checkpoint holds their states
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    modules: list[nn.Module] = field(default_factory=list)

    def new_backbone(self) -> nn.Module:
        """The downstream timm backbone with a 1-logit classifier, 1 input channel, built for the
        run's image size where the model takes one (ViTs)."""
        m = self.config.model
        return create_backbone(m.backbone, pretrained=m.pretrained, in_chans=1, num_classes=1,
                               image_size=self.config.data.image_size)

    def new_pretext_network(self) -> nn.Module:
        """The registered pretext network (``model.pretext_net``), image in, image out."""
        return components.create(NETWORKS, self.config.model.pretext_net, self.config, in_chans=1, out_chans=1)

    def optimizer(self, *modules: nn.Module) -> torch.optim.Optimizer:
        """Adam with the configured learning rate and weight decay (TSBN: 1e-4, 5e-4); fused
        on CUDA (and capturable when steps are captured in CUDA graphs)."""
        params = [p for m in modules for p in m.parameters() if p.requires_grad]
        t = self.config.train
        extra: dict[str, Any] = {}
        lr: float | torch.Tensor = t.lr
        if self.device.type == "cuda":
            extra = {"fused": True, "capturable": self.use_graphs}
            if self.use_graphs and t.schedule != "constant":
                # a float rate is baked into a captured graph; a tensor's value is read at replay
                lr = torch.tensor(t.lr, device=self.device)
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=t.weight_decay, **extra)
        self.optimizers.append(optimizer)
        return optimizer

    def start_epoch(self, epoch: int, epochs: int) -> None:
        """Set every optimiser's learning rate for ``epoch`` (0-based) of a stage of ``epochs``
        (``train.schedule``): constant, or a half cosine from ``train.lr`` that would reach 0 one
        epoch after the last, so the last epoch still learns. A pure function of the epoch, so a
        stage resumed at any epoch continues on the same curve."""
        t = self.config.train
        if t.schedule == "constant":
            return
        lr = cosine_schedule(epoch, epochs + 1, t.lr, 0.0)
        for optimizer in self.optimizers:
            for group in optimizer.param_groups:
                if isinstance(group["lr"], torch.Tensor):
                    group["lr"].fill_(lr)
                else:
                    group["lr"] = lr

    def learning_rate(self) -> float:
        """The learning rate of the optimiser built last (what the current stage trains with)."""
        if not self.optimizers:
            return float("nan")
        lr = self.optimizers[-1].param_groups[0]["lr"]
        return float(lr.item() if isinstance(lr, torch.Tensor) else lr)

    def prepare(self, module: nn.Module, compile: bool = True) -> nn.Module:
        """Move to the device (channels_last on CUDA); returns the module to call in steps,
        compiled when ``train.compile`` and ``compile`` (the original stays the one to save).
        ``torch.compile`` compiles ``module(...)`` only: for other methods use :meth:`compiled`."""
        module = prepare_module(module, self.device, self.config.train.channels_last)
        self.modules.append(module)
        if compile and self.config.train.compile:
            return cast(nn.Module, torch.compile(module))
        return module

    def compiled(self, fn: F_) -> F_:
        """``torch.compile(fn)`` when ``train.compile`` (e.g. a bound method such as
        ``backbone.forward_features``, or a step's forward function), else ``fn`` itself."""
        return cast(F_, torch.compile(fn)) if self.config.train.compile else fn

    def autocast(self):
        """The forward pass's autocast context (bf16 on CUDA; a no-op in fp32)."""
        return autocast(self.device, self.amp_dtype, cache_enabled=not self.use_graphs)
