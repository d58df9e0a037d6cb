"""A few optimiser steps of a pretext task on one fixed batch, the finetune transfer's pretext
stage in miniature: shared by the zoo's "a few steps lower the loss" tests."""
from __future__ import annotations

import torch


def losses_before_and_after(task, model, batch, steps: int = 10, lr: float = 1e-3) -> tuple[float, float]:
    """The pretext loss of ``batch`` before and after ``steps`` Adam steps on it of ``model`` (a
    ``PretextModel`` of the task), with the teacher's momentum update after each step. MoCo's
    queue is put back before the last reading, so that both score against the same negatives
    (training queued this batch's keys)."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)

    def loss_now() -> float:
        with torch.no_grad():
            return float(task.loss(model(batch.inputs), batch.targets))

    before = loss_now()
    queue = task.queue.clone() if hasattr(task, "queue") else None
    model.start_teacher(steps)
    for _ in range(steps):
        loss = task.loss(model(batch.inputs), batch.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step()
    if queue is not None:
        task.queue.copy_(queue)
    return before, loss_now()
