"""The pretext-task interface.

A pretext task turns a labelled batch into pretext inputs and targets, and scores the pretext
network's outputs. Three kinds train (``"none"`` is the ``none`` task, no pretext stage):

- ``"image"``: image-to-image (GSIM, context restoration). The pretext network outputs one image
  of the input's size per input; on a timm backbone the head is a U-Net-style decoder over the
  backbone's multi-scale features (:class:`ssl_bench.models.heads.UNetDecoder`).
- ``"embedding"``: one vector per input view (SimCLR, rotation). On a timm backbone the head
  reads the globally pooled features; :meth:`PretextTask.build_embedding_head` builds it.
- ``"masked"``: the task runs the backbone itself (MAE: the encoder sees only the visible
  tokens). :meth:`PretextTask.build_masked_head` builds a module over the backbone whose
  ``forward(*inputs)`` takes the task's prepared inputs (MAE: the images and the patch mask
  ``prepare`` drew for them) and returns the list of outputs ``loss`` scores; with a teacher
  (iBOT, DINOv2) the teacher's copy of that module follows (:attr:`PretextTask.uses_teacher`).

A task that can train only some backbones says so in :meth:`PretextTask.check_backbone`
(MAE: ViTs), which a run calls before it loads any data.

Randomness comes from torch's global generator, which the runner seeds per (seed, fold) job.
"""
from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn


@dataclass
class PretextBatch:
    """What a pretext network is fed (one tensor per view, each ``(B, 1, H, W)``) and its targets."""

    inputs: list[torch.Tensor]
    targets: Any = None


class PretextTask(ABC):
    """Base class of registered pretext tasks."""

    kind: ClassVar[str] = "image"
    #: classes whose ``Args:`` also describe this task's options (a task passing options on to
    #: :class:`~ssl_bench.pretext.views.MammoViews`); its own docstring wins
    options_from: ClassVar[tuple[type, ...]] = ()
    #: True when the task needs the class labels (GSIM); the runner passes them either way.
    uses_labels: ClassVar[bool] = False

    @abstractmethod
    def prepare(self, images: torch.Tensor, labels: torch.Tensor) -> PretextBatch:
        """Build the pretext inputs and targets for a batch of images ``(B,1,H,W)`` in [0, 1]."""

    @abstractmethod
    def loss(self, outputs: list[torch.Tensor], targets: Any) -> torch.Tensor:
        """Score the network's outputs (one per input view) against the targets; a scalar."""

    #: True when the task compares the network with a momentum copy of itself, the teacher (the
    #: momentum encoder of MoCo and BYOL, DINO's teacher; iBOT's, DINOv2's, MSN's and I-JEPA's
    #: teacher).
    #: :class:`ssl_bench.models.pretext_model.PretextModel` then keeps that copy of the backbone
    #: and of ``teacher_head(head)``, appends its outputs on ``teacher_views(views)`` (no gradient)
    #: to the network's, so ``loss`` gets ``len(views) + len(teacher_views(views))`` outputs, and
    #: moves it towards the network (an exponential moving average with momentum
    #: ``momentum_start`` -> ``momentum_end`` on a cosine schedule) in ``after_step()``, which the
    #: transfers call after every optimiser step. A masked task's head wraps the backbone, so
    #: ``teacher_head(head)`` is the part of it (with the backbone) that the teacher copies, and its
    #: copy is called like the head: ``copy(*teacher_views(inputs))`` returns the list of outputs
    #: appended after the head's (iBOT, DINOv2: on the global views and the mask, unmasked; MSN: the target view's
    #: embedding; I-JEPA: the target blocks' representations).
    uses_teacher: ClassVar[bool] = False
    momentum_start: float = 0.99
    momentum_end: float = 1.0

    def teacher_head(self, head: nn.Module) -> nn.Module:
        """The part of the head the teacher copies (BYOL: the projection, not the predictor; a
        masked task: the part that runs the backbone for the teacher's outputs); the whole head by
        default."""
        return head

    def copy_teacher_head(self, head: nn.Module) -> nn.Module:
        """A copy of ``teacher_head(head)``, the teacher's head at the start (``copy.deepcopy``;
        a task whose head cannot be deep-copied, like DINO's weight-normalised one, overrides it)."""
        return copy.deepcopy(self.teacher_head(head))

    def teacher_views(self, views: list[torch.Tensor]) -> list[torch.Tensor]:
        """The views the teacher sees (DINO: the global ones only; a masked task: the arguments of
        its teacher's forward, taken from its inputs); all of them by default."""
        return views

    def stateful_modules(self) -> dict[str, nn.Module]:
        """The task's own modules, whose buffers may change while it trains (a MoCo queue, a
        SimCLR memory bank, DINO's centre, in lightly's losses): a fold's checkpoint saves and
        restores them (:mod:`ssl_bench.training.checkpoint`). Every ``nn.Module`` attribute by
        default."""
        return {name: value for name, value in vars(self).items() if isinstance(value, nn.Module)}

    def start_stage(self, n_images: int) -> None:
        """Called by the transfers before the pretext loss starts training (finetune's pretext
        stage, multitask's joint training), with the number of images it trains on (the fold's
        training images, or the pretext pool's): a task whose settings only make sense for some
        training set sizes checks them here (MoCo warns about a queue longer than an epoch's
        keys). Nothing by default."""

    def build_embedding_head(self, in_features: int) -> nn.Module:
        """Head mapping pooled backbone features to this task's output (embedding kind only)."""
        raise NotImplementedError(f"{type(self).__name__} is an image pretext task")

    def build_masked_head(self, backbone: nn.Module) -> nn.Module:
        """Masked kind only: a module over ``backbone`` (which it shares, not copies) whose
        ``forward(*inputs)`` runs the backbone on the prepared inputs (the images ``(B,1,H,W)``
        first; MAE: then the patch mask) its own way and returns the list of tensors ``loss``
        scores (MAE: the predicted and the true masked patches). Randomness belongs in
        ``prepare``, so that a data-parallel worker keeps its share of one process's draws."""
        raise NotImplementedError(f"{type(self).__name__} is not a masked pretext task")

    def check_backbone(self, backbone: str) -> None:
        """Raise a :class:`~ssl_bench.errors.ConfigError` (one line) when this task cannot train
        the timm backbone named ``backbone``; every backbone is fine by default."""

    def check_workers(self, workers: int) -> None:
        """Raise a :class:`~ssl_bench.errors.ConfigError` (one line) when this task cannot train its
        stage data-parallel on ``workers`` Ray Train workers (``train.pretext_workers``); checked
        before any data is loaded. Any number is fine by default."""

    @property
    def trains(self) -> bool:
        """False only for the ``none`` task, which has no pretext stage."""
        return True
