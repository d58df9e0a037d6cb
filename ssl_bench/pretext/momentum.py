"""The momentum (exponential moving average) update of a teacher network and its schedule.

The update is lightly's ``update_momentum`` (``teacher = m * teacher + (1 - m) * student``,
in place, parameters only). With a Python float ``m`` it is lightly's function itself. A cosine
schedule changes ``m`` every step, and a Python number is frozen into a captured CUDA graph, so
the schedule is also computed on the device (:func:`cosine_momentum`, the same values as
lightly's ``cosine_schedule``) and :func:`ema_update` then applies a 0-dim tensor ``m`` with
the same in-place ``_foreach`` operations: no host-device synchronisation, no Python value
that changes from step to step.
"""
from __future__ import annotations

import math

import torch
from lightly.models.utils import update_momentum
from torch import nn


@torch.no_grad()
def ema_update(student: nn.Module, teacher: nn.Module, m: float | torch.Tensor) -> None:
    """``teacher <- m * teacher + (1 - m) * student`` for every parameter, in place."""
    if not isinstance(m, torch.Tensor):
        update_momentum(student, teacher, float(m))
        return
    ema: list[torch.Tensor] = list(teacher.parameters())
    online: list[torch.Tensor] = list(student.parameters())
    if len(ema) != len(online):
        raise ValueError(f"teacher has {len(ema)} parameters, the network {len(online)}")
    torch._foreach_mul_(ema, m)
    torch._foreach_add_(ema, torch._foreach_mul(online, 1.0 - m))


def cosine_momentum(
    step: torch.Tensor, total_steps: int | None, start: float, end: float = 1.0
) -> torch.Tensor:
    """The momentum after ``step`` updates (a tensor, on its device): lightly's
    ``cosine_schedule(step, total_steps, start, end)``, i.e. ``end - (end - start) *
    (cos(pi * step / (total_steps - 1)) + 1) / 2``, ``end`` from step ``total_steps - 1`` on;
    ``start`` throughout when ``total_steps`` is None (unknown)."""
    step = step.float()
    if total_steps is None:
        return torch.full_like(step, start)
    if total_steps <= 1:
        return torch.full_like(step, end)
    t = (step / (total_steps - 1)).clamp(0.0, 1.0)
    return end - (end - start) * (torch.cos(math.pi * t) + 1) / 2
