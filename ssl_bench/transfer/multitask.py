"""Multi-task learning with hard parameter sharing (TSBN Table II row GM-M-ResNet).

One backbone carries a pretext head and the classifier head; every step minimises
``L_BCE + lambda * L_pretext`` (``params.multitask.weight`` = lambda, default 1). When the pretext
input is the clean image itself (GSIM), one backbone pass feeds both heads; otherwise (context
restoration's corrupted image, SimCLR's views) the classifier sees the clean image in its own pass.
"""
from __future__ import annotations

import torch
from torch import nn

from ..training.context import FitContext, optimizer_step
from ..models.pretext_model import PretextModel
from ..registry import TRANSFERS
from .base import TransferStrategy


def multitask_loss(bce: torch.Tensor, pretext_loss: torch.Tensor, weight: float) -> torch.Tensor:
    """``L_BCE + lambda * L_pretext``."""
    return bce + weight * pretext_loss


@TRANSFERS.register("multitask")
class MultiTask(TransferStrategy):
    """Hard sharing: one backbone, pretext head + classifier head, losses summed each step.

    Args:
        weight: lambda in the loss L_BCE + lambda * L_pretext.
    """

    accepts = ("image", "embedding")

    def __init__(self, weight: float = 1.0):
        self.weight = float(weight)

    def fit(self, ctx: FitContext) -> nn.Module:
        backbone = ctx.new_backbone()
        model = PretextModel(backbone, ctx.pretext)
        net, opt, pretext, weight = ctx.prepare(model), ctx.optimizer(model), ctx.pretext, self.weight
        # methods other than forward are compiled one by one under train.compile
        forward_with_logits, logits_of = ctx.compiled(model.forward_with_logits), ctx.compiled(model.logits)

        def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            batch = pretext.prepare(x, y)
            with ctx.autocast():
                if len(batch.inputs) == 1 and batch.inputs[0] is x:
                    out, logits = forward_with_logits(x)
                    outputs = [out]
                else:
                    outputs = net(batch.inputs)
                    logits = logits_of(x)
            l_pretext = pretext.loss(outputs, batch.targets)
            l_bce = ctx.bce(logits, y)
            optimizer_step(opt, multitask_loss(l_bce, l_pretext, weight))
            model.after_step()  # the teacher's momentum update, for tasks with one
            return {"bce": l_bce, "pretext": l_pretext}

        pretext.start_stage(ctx.n_images)
        model.start_teacher(ctx.config.train.epochs * ctx.steps_per_epoch())
        model.train()
        ctx.train("multitask", ctx.config.train.epochs, step)
        return backbone
