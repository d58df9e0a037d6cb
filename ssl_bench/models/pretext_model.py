"""A timm backbone with a pretext head on it, used by the finetune and multitask transfers.

Image pretext tasks (GSIM, context restoration) get a U-Net-style decoder over the backbone's
multi-scale features (the "ResNet50 + decoder" of TSBN's Table II); embedding tasks (SimCLR,
rotation) get the task's own head on the globally pooled features. Masked tasks (MAE) get the
module of ``task.build_masked_head(backbone)``, which runs the backbone itself (the encoder sees
only the visible tokens). The backbone keeps its classifier, so the same module also gives
classification logits (hard parameter sharing).

A task with ``uses_teacher`` (MoCo, BYOL, DINO; the masked iBOT, DINOv2, MSN and I-JEPA) also gets a
teacher: a copy of ``task.teacher_head(head)`` (made by ``task.copy_teacher_head(head)``) and, for an
embedding task, of the backbone, without gradients, whose outputs on ``task.teacher_views(views)``
follow the network's in :meth:`PretextModel.forward`. A masked head runs the backbone it wraps, so
its teacher part holds the backbone's copy itself and is called like the head, with the teacher
views as its arguments (iBOT, DINOv2: the global views and the mask; MSN: the target view;
I-JEPA: the images and the block masks).
:meth:`PretextModel.after_step` (called by the transfers after each optimiser step,
:meth:`PretextModel.start_teacher` before the stage) moves it towards the network
(:mod:`ssl_bench.pretext.momentum`; the step count is a device buffer, so a captured CUDA graph
replays the schedule correctly). Views of different sizes (DINO's local crops) go through the
backbone in one pass per size.
"""
from __future__ import annotations

import copy
from typing import Any, cast

import torch
from lightly.models.utils import deactivate_requires_grad
from torch import nn

from ..pretext.base import PretextTask
from ..pretext.momentum import cosine_momentum, ema_update
from .backbones import classifier_logits, encode_multiscale, num_pooled_features, pooled_features
from .heads import UNetDecoder


class PretextModel(nn.Module):
    """``backbone`` (a timm classifier) + the pretext head that ``pretext`` needs."""

    head: nn.Module
    teacher_steps: torch.Tensor

    def __init__(self, backbone: nn.Module, pretext: PretextTask):
        super().__init__()
        self.backbone = backbone
        self.kind = pretext.kind
        if self.kind == "image":
            self.head = UNetDecoder.for_backbone(backbone, out_chans=1)
        elif self.kind == "embedding":
            self.head = pretext.build_embedding_head(num_pooled_features(backbone))
        elif self.kind == "masked":
            self.head = pretext.build_masked_head(backbone)
        else:
            raise ValueError(f"a pretext task of kind '{self.kind}' has no head")
        self.has_teacher = bool(getattr(pretext, "uses_teacher", False))
        if self.has_teacher:
            if self.kind not in ("embedding", "masked"):
                raise ValueError("a teacher (uses_teacher) needs an embedding or a masked pretext task")
            self._teacher_part = pretext.teacher_head
            self._teacher_views = pretext.teacher_views
            self.momentum_start = float(pretext.momentum_start)
            self.momentum_end = float(pretext.momentum_end)
            self.total_steps: int | None = None
            if self.kind == "embedding":  # a masked head wraps the backbone: its teacher part copies it
                self.teacher_backbone = copy.deepcopy(backbone)
                deactivate_requires_grad(self.teacher_backbone)
            self.teacher_head = pretext.copy_teacher_head(self.head)
            deactivate_requires_grad(self.teacher_head)
            self.register_buffer("teacher_steps", torch.zeros((), dtype=torch.float32))

    def teacher_parameters(self) -> list[nn.Parameter]:
        """The teacher's parameters, in the order :meth:`after_step` updates them.

        Returns:
            The backbone copy's (embedding tasks), then the head copy's; none without a teacher.
        """
        if not self.has_teacher:
            return []
        backbone = list(self.teacher_backbone.parameters()) if self.kind == "embedding" else []
        return backbone + list(self.teacher_head.parameters())

    def _pretext_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.kind == "image":
            intermediates, final = encode_multiscale(self.backbone, x)
            return self.head(intermediates, tuple(x.shape[-2:])), final
        final = cast(Any, self.backbone).forward_features(x)
        return self.head(pooled_features(self.backbone, final)), final

    def forward(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """Pretext outputs, one per input view (views of one size are batched together in one
        pass), then, with a teacher, the teacher's outputs on the task's teacher views; for a masked
        task, what its head returns for the task's inputs, passed as its arguments (MAE: the images
        and the patch mask drawn for them), then, with a teacher, what the teacher's copy of the
        head's teacher part returns for the teacher views, passed likewise."""
        if self.kind == "masked":  # the task runs the backbone itself, on one batch of images
            outputs = list(self.head(*views))
            if self.has_teacher:
                with torch.no_grad():
                    outputs += [o.detach() for o in self.teacher_head(*self._teacher_views(views))]
            return outputs
        outputs = []
        for group in _same_size_runs(views):
            out, _ = self._pretext_and_features(torch.cat(group) if len(group) > 1 else group[0])
            outputs += list(out.split([v.shape[0] for v in group]))
        if self.has_teacher:
            with torch.no_grad():
                for group in _same_size_runs(self._teacher_views(views)):
                    x = torch.cat(group) if len(group) > 1 else group[0]
                    final = cast(Any, self.teacher_backbone).forward_features(x)
                    out = self.teacher_head(pooled_features(self.teacher_backbone, final))
                    outputs += list(out.detach().split([v.shape[0] for v in group]))
        return outputs

    def start_teacher(self, total_steps: int | None) -> None:
        """Restart the teacher's momentum schedule for ``total_steps`` optimiser steps (no-op
        without a teacher)."""
        if self.has_teacher:
            self.total_steps = None if total_steps is None else int(total_steps)
            self.teacher_steps.zero_()

    @torch.no_grad()
    def after_step(self) -> None:
        """After an optimiser step: move the teacher towards the network (no-op without one)."""
        if not self.has_teacher:
            return
        m = cosine_momentum(self.teacher_steps, self.total_steps, self.momentum_start, self.momentum_end)
        if self.kind == "embedding":
            ema_update(self.backbone, self.teacher_backbone, m)
        ema_update(self._teacher_part(self.head), self.teacher_head, m)
        self.teacher_steps.add_(1.0)

    def forward_with_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Pretext output and classification logits ``(B,)`` from one backbone pass."""
        if self.kind == "masked":
            raise ValueError("a masked pretext task does not share its backbone pass with the classifier")
        out, final = self._pretext_and_features(x)
        return out, classifier_logits(self.backbone, final)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return classifier_logits(self.backbone, cast(Any, self.backbone).forward_features(x))


def _same_size_runs(views: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Consecutive views of the same height and width, grouped (one group in the usual case)."""
    runs: list[list[torch.Tensor]] = []
    for v in views:
        if runs and runs[-1][0].shape[1:] == v.shape[1:]:
            runs[-1].append(v)
        else:
            runs.append([v])
    return runs
