"""A pretext stage trained on a pool of images other than the fold's training images
(``--pretext-data``), cached on disk so that it is trained once and reused.

:class:`PretextPool` is what the experiment layer hands a fold's :class:`FitContext`
(``ctx.pretext_pool``): the pool's images for this fold (loaded only when the stage must be
trained), the key of everything the stage's result depends on, and where its checkpoint lives
(``<out>/.pretext-cache/<key>.pt``). :func:`cached_pretext_stage` returns the module the stage
trains (a transfer's backbone): read from the checkpoint when it exists, else built, trained on
a :class:`FitContext` over the pool and saved. Folds and label fractions whose pool and settings
are the same share a key, hence one training.

The stage runs under its own random state, seeded by the run's seed alone
(:func:`torch.random.fork_rng`), and leaves the fold's random state as it found it: a fold gives
the same result whether the checkpoint was read or trained, in whatever order folds run. While
one process trains a key, others wanting it wait on an OS lock (``<key>.lock``) and then read it.

The checkpoint (format ``ssl-bench-pretext``, version 2) is a dict that
``torch.load(..., weights_only=True)`` reads: ``format``, ``version``, ``key``, the module's
``state_dict`` and ``state_sha256``, its checksum (:func:`~ssl_bench.training.state_digest.state_digest`);
it is written atomically (:mod:`ssl_bench.fileio`). One that cannot be read, is damaged (its
checksum does not match) or holds another key is dropped with one warning line, and the stage is
trained again and replaces it.
"""
from __future__ import annotations

import contextlib
import fcntl
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import warnings

import torch
from torch import nn

from ..errors import ToolkitWarning, exception_text
from ..fileio import atomic_write
from .state_digest import state_digest

CHECKPOINT_FORMAT = "ssl-bench-pretext"
CHECKPOINT_VERSION = 2  # 2: with the state's checksum; a version-1 entry is trained again


@dataclass
class PretextPool:
    """One fold's pretraining pool and the cache entry of its pretext stage."""

    key: str
    cache_dir: Path
    seed: int
    #: ``() -> (images (N, 1, H, W) float16 on the device, labels (N,) float32; -1 = unlabelled)``
    load: Callable[[], tuple[torch.Tensor, torch.Tensor]]
    #: provenance of the pool (dataset, root, image counts), recorded with the fold's metrics
    info: dict = field(default_factory=dict)
    #: after the stage: True when read from the cache, False when trained by this fold
    reused: bool | None = None

    @property
    def path(self) -> Path:
        return Path(self.cache_dir).expanduser() / f"{self.key}.pt"

    def record(self) -> dict:
        """What the fold records: the pool's provenance, the cache key and whether it was reused."""
        return {**self.info, "cache_key": self.key, "reused": self.reused}


def read_checkpoint(path: Path, key: str) -> dict | None:
    """The cached ``state_dict`` of ``key``, or None when absent; one that cannot be used is
    dropped with one warning line (the caller trains the stage again and replaces it)."""
    if not path.is_file():
        return None
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
        _dropped(path, f"cannot be read ({exception_text(exc)})")
        return None
    if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
        _dropped(path, "is not a ssl-bench pretext-stage checkpoint")
        return None
    if record.get("version") != CHECKPOINT_VERSION:
        _dropped(path, "was written by an earlier version of ssl-bench")
        return None
    if record.get("key") != key:
        _dropped(path, "holds another stage than its name says")
        return None
    if record.get("state_sha256") != state_digest(record.get("state_dict")):
        _dropped(path, "is damaged (its checksum does not match its content)")
        return None
    return record["state_dict"]


def _dropped(path: Path, why: str) -> None:
    warnings.warn(f"pretext-stage cache {path} {why}: dropped, the stage is trained again", ToolkitWarning,
                  stacklevel=3)
    return None


def write_checkpoint(path: Path, key: str, module: nn.Module) -> None:
    state = {n: t.detach().cpu() for n, t in module.state_dict().items()}
    record = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "key": key, "state_dict": state,
              "state_sha256": state_digest(state)}
    atomic_write(path, lambda fh: torch.save(record, fh))


@contextlib.contextmanager
def exclusive(path: Path):
    """Hold an OS lock on ``path`` (released when the process ends, even killed); without
    ``flock`` (some network file systems) go on unlocked."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
        except OSError:
            pass
        yield


def cached_pretext_stage(ctx, build: Callable[[], nn.Module], train: Callable[[Any, nn.Module], None]) -> nn.Module:
    """``build()`` the module the stage trains, then load its cached state or ``train(pool_ctx,
    module)`` it on a :class:`FitContext` over the pool and cache it (see module docstring).
    ``ctx`` is the fold's context; its ``pretext_pool`` says which pool and key."""
    pool: PretextPool = ctx.pretext_pool
    devices = [ctx.device] if ctx.device.type == "cuda" else []
    with exclusive(pool.path.with_suffix(".lock")), torch.random.fork_rng(devices=devices):
        torch.manual_seed(pool.seed)
        module = build()
        state = read_checkpoint(pool.path, pool.key)
        if state is not None:
            module.load_state_dict(state)
            pool.reused = True
            return module
        images, labels = pool.load()
        pool_ctx = ctx.over(images, labels)
        train(pool_ctx, module)
        ctx.history.extend(pool_ctx.history)  # the fold that trained the stage records its epochs
        write_checkpoint(pool.path, pool.key, module)
        pool.reused = False
        return module
