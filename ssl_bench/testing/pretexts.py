"""The contract of a pretext task (:class:`ssl_bench.pretext.base.PretextTask`)."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..models.backbones import create_backbone
from ..models.pretext_model import PretextModel
from ..pretext.base import PretextBatch, PretextTask
from ..registry import PRETEXTS
from .common import (PRETEXT_KINDS, backbone_for, build_component, check_common, expect, expect_finite_scalar,
                     expect_gradients, random_images)


def check_pretext(
    name_or_cls: Any,
    image_size: tuple[int, int] = (64, 32),
    batch_size: int = 4,
    backbone: str | None = "test_resnet",
    **options: Any,
):
    """Check a pretext task (:class:`ssl_bench.pretext.base.PretextTask`); returns the instance.

    - a ``PretextTask`` subclass; ``kind`` in ``image``/``embedding``/``none``; ``uses_labels`` a
      bool; ``trains`` is False only for kind ``none`` (nothing else is checked for it);
    - ``prepare(images (B,1,H,W) float32 in [0,1], labels (B,) float32)`` returns a
      ``PretextBatch`` whose ``inputs`` is a non-empty list of finite floating ``(b, 1, h, w)``
      tensors; it leaves ``images`` unchanged, and draws its randomness from torch's global
      generator (same seed, same batch);
    - image kind: one input per view of the input's shape, targets of the same shape (a tensor,
      or a list with one per view);
    - embedding kind: ``build_embedding_head(F)`` is an ``nn.Module`` mapping ``(N, F)`` to
      ``(N, *)``;
    - masked kind: checked on the backbone only (its head runs the backbone itself);
    - ``loss(outputs, targets)`` is a finite float32 scalar with a gradient into the outputs /
      the head, also when the outputs are bf16 (CUDA autocast);
    - with ``backbone`` (a timm name; ``None`` skips it, except for a masked task; a backbone the
      task refuses in ``check_backbone`` is replaced by the first of
      :data:`~ssl_bench.testing.common.CONTRACT_BACKBONES` it accepts, MAE: ``test_vit``; built for
      ``image_size``): the task trains a real backbone through
      :class:`ssl_bench.models.pretext_model.PretextModel`, as the finetune and multitask
      transfers use it (gradients reach the backbone);
    - a task with a teacher (``uses_teacher``): ``loss`` also gets the teacher's outputs on
      ``teacher_views(inputs)`` (no gradient) after the network's (embedding kind: checked on a
      head alone too); on the backbone, the teacher gets no gradient and ``after_step()`` moves it
      towards the network.
    """
    name, cls, what = check_common(PRETEXTS, name_or_cls)
    task = build_component(cls, what, **options)
    expect(isinstance(task, PretextTask), what, f"must be a PretextTask subclass, got {type(task).__name__}")
    expect(task.kind in PRETEXT_KINDS, what, f"kind must be one of {PRETEXT_KINDS}, got {task.kind!r}")
    expect(isinstance(task.uses_labels, bool), what, f"uses_labels must be a bool, got {task.uses_labels!r}")
    if task.kind == "none":
        expect(task.trains is False, what, "a task of kind 'none' must have trains == False")
        return task
    expect(task.trains is True, what, f"trains must be True for a task of kind '{task.kind}'")

    images, labels = random_images(batch_size, tuple(image_size))
    original = images.clone()
    torch.manual_seed(0)
    batch = task.prepare(images, labels)
    expect(torch.equal(images, original), what, "prepare() changed its input images in place")
    expect(isinstance(batch, PretextBatch), what, f"prepare() must return a PretextBatch, got {type(batch).__name__}")
    inputs = batch.inputs
    expect(isinstance(inputs, (list, tuple)) and len(inputs) > 0, what,
            f"PretextBatch.inputs must be a non-empty list of tensors, got {type(inputs).__name__}")
    for i, v in enumerate(inputs):
        expect(isinstance(v, torch.Tensor), what, f"inputs[{i}] is a {type(v).__name__}, not a tensor")
        expect(v.dim() == 4 and v.shape[1] == 1 and v.shape[0] > 0, what,
                f"inputs[{i}] must be (b, 1, h, w), got {tuple(v.shape)}")
        expect(v.is_floating_point(), what, f"inputs[{i}] must be floating point, got {v.dtype}")
        expect(bool(torch.isfinite(v).all()), what, f"inputs[{i}] has non-finite values")
        expect(v.device == images.device, what, f"inputs[{i}] is on {v.device}, the images on {images.device}")
    torch.manual_seed(0)
    again = task.prepare(images, labels)
    same = all(torch.equal(a, b) for a, b in zip(inputs, again.inputs)) and _same(batch.targets, again.targets)
    expect(same, what, "prepare() is not reproducible under torch.manual_seed: draw all randomness from torch's "
            "global generator (the runner seeds it per fold), not from numpy/random or a private generator")

    if task.kind == "image":
        for i, v in enumerate(inputs):
            expect(v.shape == images.shape, what, f"inputs[{i}] must have the images' shape "
                    f"{tuple(images.shape)} for an image task, got {tuple(v.shape)}")
        targets = batch.targets if isinstance(batch.targets, (list, tuple)) else [batch.targets]
        expect(len(targets) in (1, len(inputs)), what, f"{len(targets)} targets for {len(inputs)} views")
        for t in targets:
            expect(isinstance(t, torch.Tensor) and t.shape == images.shape, what,
                    f"image-task targets must have the input's shape {tuple(images.shape)}, got "
                    f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        outputs = [torch.rand(v.shape, generator=torch.Generator().manual_seed(1)).requires_grad_() for v in inputs]
        loss = task.loss(outputs, batch.targets)
        expect_finite_scalar(loss, what, "loss()")
        loss.backward()
        expect_gradients(outputs, what, "the outputs")
        half = task.loss([o.detach().bfloat16() for o in outputs], batch.targets)
        expect(half.dtype == torch.float32, what, f"loss() of bf16 outputs must be float32, got {half.dtype}")
    elif task.kind == "embedding":
        features = 24
        head = task.build_embedding_head(features)
        expect(isinstance(head, nn.Module), what, f"build_embedding_head() must return an nn.Module, got {type(head).__name__}")
        sizes = [v.shape[0] for v in inputs]
        x = torch.randn(sum(sizes), features, generator=torch.Generator().manual_seed(1))
        # the teacher's head is copied before any forward pass, as PretextModel does
        teacher = task.copy_teacher_head(head) if getattr(task, "uses_teacher", False) else None
        head.train()
        out = head(x)
        expect(isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[0] == x.shape[0], what,
                f"the embedding head must map (N, {features}) to (N, *), got "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        outputs = list(out.split(sizes))
        if getattr(task, "uses_teacher", False):
            teacher_views = task.teacher_views(list(inputs))
            expect(isinstance(teacher_views, list) and len(teacher_views) > 0, what,
                    "teacher_views() must return a non-empty list of the views")
            expect(isinstance(teacher, nn.Module), what, "teacher_head(head) must return an nn.Module")
            assert teacher is not None
            t_sizes = [v.shape[0] for v in teacher_views]
            xt = torch.randn(sum(t_sizes), features, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                outputs += list(teacher(xt).split(t_sizes))
        loss = task.loss(outputs, batch.targets)
        expect_finite_scalar(loss, what, "loss()")
        loss.backward()
        expect_gradients(list(head.parameters()), what, "the embedding head")
        half = task.loss([o.detach().bfloat16() for o in outputs], batch.targets)
        expect(half.dtype == torch.float32, what, f"loss() of bf16 outputs must be float32, got {half.dtype}")

    if task.kind == "masked":
        expect(bool(backbone), what, "a masked task runs the backbone itself: it needs a backbone to be checked")
    if backbone:
        backbone = backbone_for(task, backbone, what)
        _check_with_backbone(task, what, backbone, images, labels)
    return task


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


def _check_with_backbone(task, what: str, backbone: str, images: torch.Tensor, labels: torch.Tensor) -> None:

    torch.manual_seed(0)
    model = PretextModel(create_backbone(backbone, in_chans=1, num_classes=1, image_size=tuple(images.shape[-2:])),
                         task).train()
    batch = task.prepare(images, labels)
    outputs = model(batch.inputs)
    expected = len(batch.inputs)
    if getattr(model, "has_teacher", False):
        expected += len(task.teacher_views(list(batch.inputs)))
    if task.kind != "masked":  # a masked task's head returns what its loss scores
        expect(len(outputs) == expected, what,
               f"{len(outputs)} outputs for {len(batch.inputs)} views (expected {expected})")
    loss = task.loss(outputs, batch.targets)
    expect_finite_scalar(loss, what, f"loss() on a {backbone} backbone")
    if task.kind == "masked":
        half = task.loss([o.detach().bfloat16() for o in outputs], batch.targets)
        expect(half.dtype == torch.float32, what, f"loss() of bf16 outputs must be float32, got {half.dtype}")
    loss.backward()
    expect_gradients(list(model.backbone.parameters()), what, f"the {backbone} backbone")
    if getattr(model, "has_teacher", False):
        teacher = model.teacher_parameters()
        expect(all(p.grad is None for p in teacher), what, "the teacher got gradients")
        before = [p.detach().clone() for p in teacher]
        with torch.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.sub_(0.1 * p.grad.sign())
        model.start_teacher(10)
        model.after_step()
        moved = any(not torch.equal(a, p) for a, p in zip(before, teacher))
        expect(moved or task.momentum_start >= 1.0, what, "after_step() did not move the teacher")
    logits = model.logits(images)
    expect(logits.shape[0] == images.shape[0], what, f"classifier logits of shape {tuple(logits.shape)}")
