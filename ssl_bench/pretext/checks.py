"""Argument checks the pretext tasks share (dimensions, momentum, the embeddings a loss expects):
one place, so that a task imports nothing from another task and every task says a bad option or
a wrong network output in the same words."""
from __future__ import annotations

import torch


def check_dims(**dims: int) -> None:
    """``ValueError`` unless every value is a positive integer."""
    for name, value in dims.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value}")


def check_momentum(momentum: float) -> float:
    """``momentum`` as a float; ``ValueError`` unless it is in [0, 1]."""
    if not 0 <= momentum <= 1:
        raise ValueError(f"momentum must be in [0, 1], got {momentum}")
    return float(momentum)


def check_two_embeddings(method: str, outputs: list[torch.Tensor], count: int = 2) -> None:
    """``ValueError`` unless ``outputs`` are ``count`` (B, D) embeddings of one shape."""
    if len(outputs) != count or any(o.dim() != 2 or o.shape != outputs[0].shape for o in outputs):
        shapes = [tuple(o.shape) for o in outputs]
        raise ValueError(f"{method} expects {count} (B, D) embeddings of one shape; got {shapes}")
