"""Device, precision and memory-format handling shared by every transfer strategy.

On CUDA the fast path is: bf16 autocast (losses computed in fp32), channels_last, no host-device
sync inside a step. On the CPU everything runs in fp32 so results are exact and reproducible.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

from ..errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA device is available")
    return torch.device(name)


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (``None`` = plain fp32): bf16 on CUDA for ``auto``, never on the CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "bf16" and device.type == "cpu":
        return torch.bfloat16
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None):
    """Autocast context for the forward pass, or a no-op for fp32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def prepare_module(module: nn.Module, device: torch.device, channels_last: bool) -> nn.Module:
    """Move a module to the device, channels_last on CUDA (where it pays off)."""
    module = module.to(device)
    if channels_last and device.type == "cuda":
        module = module.to(memory_format=torch.channels_last)
    return module


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return "cpu"
