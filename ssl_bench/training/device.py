"""Device, precision and memory-format handling shared by every transfer strategy.

On CUDA the fast path is: bf16 autocast (losses computed in fp32), channels_last, cuDNN's
autotuner (``cudnn.benchmark``: every step has the same shapes), fused Adam, no host-device
sync inside a step, and optionally a CUDA graph of the whole step
(:mod:`ssl_bench.training.cuda_graphs`). On the CPU everything runs in fp32 so results are exact
and reproducible.
"""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from ..errors import ConfigError

#: environment switch for CUDA-graph capture of the training step (``1``/``true`` = on), beside
#: the config key ``train.cuda_graphs`` (either one turns it on)
GRAPHS_ENV = "SSL_BENCH_CUDA_GRAPHS"


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name} was asked for but no CUDA device is available")
    return torch.device(name)


def default_profile(device: str) -> str:
    """The profile a run gets when none is given: ``paper`` when it will use CUDA, else ``quick``."""
    return "paper" if resolve_device(device).type == "cuda" else "quick"


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (``None`` = plain fp32): bf16 on CUDA for ``auto``, never on the CPU."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def autocast(device: torch.device, dtype: torch.dtype | None, cache_enabled: bool = True):
    """Autocast context for the forward pass, or a no-op for fp32. ``cache_enabled=False`` is
    required inside CUDA-graph capture (the cast-weight cache would outlive the capture)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype, cache_enabled=cache_enabled)


def configure_fast_path(device: torch.device) -> None:
    """Process-wide CUDA setting of the fast path: cuDNN autotuning (every step of a stage has
    the same shapes). Precision settings (TF32) are left as torch has them."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def graphs_requested(train_config) -> bool:
    """Whether CUDA-graph capture of training steps is asked for: ``train.cuda_graphs`` or the
    ``SSL_BENCH_CUDA_GRAPHS`` environment variable."""
    if train_config.cuda_graphs:
        return True
    return os.environ.get(GRAPHS_ENV, "").strip().lower() in ("1", "true", "yes", "on")


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
