"""The training stages transfer strategies share: the pretext stage (in this process or
data-parallel on Ray Train workers, or read from the cache of a ``--pretext-data`` pool), the
supervised stage with the weighted BCE (TSBN eq. 3), and the pretrained backbone that fine-tuning
and the frozen probes (``linear``, ``knn``) start from. A transfer builds on these through its
:class:`~ssl_bench.training.context.FitContext`; it imports nothing from another transfer.
"""
from __future__ import annotations

from typing import Any, cast

import torch
from torch import nn

from ..models.pretext_model import PretextModel
from .context import FitContext, optimizer_step
from .distributed import data_parallel_stage
from .loop import StepFn
from .online_probe import OnlineProbe
from .pretext_cache import cached_pretext_stage


def reset_classifier_head(backbone: nn.Module) -> None:
    """Replace the backbone's classifier by a freshly initialised 1-logit head (timm API)."""
    cast(Any, backbone).reset_classifier(1)


def pretext_stage(ctx: FitContext, model: PretextModel, epochs: int, stage: str = "pretext") -> None:
    """Train ``model`` (backbone + pretext head) on the pretext loss alone: in this process, or
    data-parallel on ``train.pretext_workers`` Ray Train workers (:mod:`ssl_bench.training.distributed`)."""
    workers = ctx.config.train.pretext_workers
    if workers > 1:
        data_parallel_stage(ctx, model, epochs, stage, train_pretext, workers)
    else:
        train_pretext(ctx, model, ctx.prepare(model), epochs, stage)


def train_pretext(ctx: FitContext, model: PretextModel, net: nn.Module, epochs: int, stage: str) -> None:
    """The pretext stage's epochs: ``net`` is ``model`` as prepared to run (compiled, or wrapped
    for data-parallel training); the optimiser and the teacher work on ``model`` itself. A step
    draws the pretext task's views of the whole batch; a data-parallel worker then trains on its
    share of them (``ctx.share_of``), so the workers' draws are one process's."""
    opt, pretext = ctx.optimizer(model), ctx.pretext

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        # views drawn for the whole (global) batch, one process's; a data-parallel worker keeps its share
        batch = ctx.share_of(pretext.prepare(x, y), len(x))
        with ctx.autocast():
            outputs = net(batch.inputs)
        loss = pretext.loss(outputs, batch.targets)
        optimizer_step(opt, loss)
        model.after_step()  # the teacher's momentum update, for tasks with one
        return {"pretext": loss}

    pretext.start_stage(ctx.n_images)
    model.start_teacher(epochs * ctx.steps_per_epoch())
    model.train()
    every = ctx.config.train.probe_every
    probe = None  # a pool's stage and a data-parallel worker know no patients: not probed
    if every > 0 and ctx.patients is not None:
        probe = OnlineProbe(model.backbone, ctx.images, ctx.labels.cpu().numpy(), ctx.patients, every,
                            ctx.config.seed, ctx.device, ctx.amp_dtype)
    ctx.train(stage, epochs, step, probe)


def supervised_step(ctx: FitContext, classifier: nn.Module) -> StepFn:
    """One optimiser step of the whole ``classifier`` with the weighted BCE (TSBN eq. 3) on a batch
    ``(x, y)``: the step of every supervised stage, whatever its samples (images, a breast's views).

    Args:
        ctx: the fold's context (device preparation, optimiser, precision, the loss's weight).
        classifier: the network, one logit per sample; prepared and given its optimiser here.

    Returns:
        The step, for :meth:`FitContext.train` or :meth:`FitContext.train_on`.
    """
    net, opt = ctx.prepare(classifier), ctx.optimizer(classifier)

    def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
        with ctx.autocast():
            logits = net(x)
        loss = ctx.bce(logits, y)
        optimizer_step(opt, loss)
        return {"bce": loss}

    return step


def supervised_stage(ctx: FitContext, backbone: nn.Module, epochs: int, stage: str = "finetune") -> None:
    """Train the whole backbone + classifier with the weighted BCE."""
    step = supervised_step(ctx, backbone)
    backbone.train()
    ctx.train(stage, epochs, step)


def pretrained_backbone(ctx: FitContext) -> nn.Module:
    """Stage 1 of fine-tuning, shared with the frozen protocols (``linear``, ``knn``): the
    downstream backbone (``ctx.new_backbone()``, initialised by ``model.pretrained``) trained by
    the pretext task for ``train.pretext_epochs`` with a fresh 1-logit classifier head after it;
    with pretext ``none`` (or 0 pretext epochs) the backbone as initialised. With a pretext pool
    (``ctx.pretext_pool``) the stage trains on the pool, or is read from its cache."""
    epochs = ctx.config.train.pretext_epochs
    if not (ctx.pretext.trains and epochs > 0):
        return ctx.new_backbone()

    def train(stage_ctx: FitContext, backbone: nn.Module) -> None:
        pretext_stage(stage_ctx, PretextModel(backbone, stage_ctx.pretext), epochs)

    if ctx.pretext_pool is not None:
        backbone = cached_pretext_stage(ctx, ctx.new_backbone, train)
    else:
        backbone = ctx.new_backbone()
        train(ctx, backbone)
    reset_classifier_head(backbone)
    return backbone
