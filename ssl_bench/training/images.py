"""Where a fold's images come from: resident on the device, or streamed from the host.

A dataset that fits the memory budget (``data.memory_budget_gb``; by default half of what the
device has free: ``torch.cuda.mem_get_info`` on CUDA, the available RAM on the CPU) sits on the
device as one float16 tensor (:class:`DeviceImages`). A larger one is
read as it is needed (:class:`StreamedImages`): from the cache's memory-mapped shards
(:class:`ssl_bench.data.cache.ShardedImages`) by a ``torch.utils.data.DataLoader`` with worker
processes, pinned memory on CUDA, prefetching and non-blocking copies. ``data.streaming``
(``auto`` | ``on`` | ``off``) forces either path.

Both paths serve the same batches: the epoch's order is drawn on the device exactly as for the
resident tensor (:class:`ssl_bench.training.batches.FoldBatches`), only the gather differs, and
augmentation happens on the device afterwards; the loader draws nothing from torch's global
generator. So a seed gives the same result on either path (``tests/test_streaming.py``).
"""
from __future__ import annotations

import os
from functools import partial
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..config import Config
from ..data.base import LoadedDataset
from ..data.cache import ShardedImages

#: share of the device's free memory a resident dataset may take (the rest is for the networks,
#: activations and the other processes)
SAFETY_FACTOR = 0.5
#: copies of the images the resident path holds: the dataset's tensor and the fold's training subset
RESIDENT_COPIES = 2
STREAMING_CHOICES = ("auto", "on", "off")


def available_memory(device: torch.device) -> int:
    """Bytes free on the device: ``torch.cuda.mem_get_info`` on CUDA, the available RAM on the CPU."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def memory_budget(device: torch.device, budget_gb: float = 0.0) -> int:
    """Bytes a resident dataset may take: ``budget_gb`` GiB, or (0) :data:`SAFETY_FACTOR` of the free memory."""
    if budget_gb > 0:
        return int(budget_gb * 2**30)
    return int(available_memory(device) * SAFETY_FACTOR)


def should_stream(streaming: str, nbytes: int, budget: int) -> bool:
    """``on``/``off`` as asked; ``auto``: stream when the resident copies would pass the budget."""
    if streaming not in STREAMING_CHOICES:
        raise ValueError(f"data.streaming must be one of {', '.join(STREAMING_CHOICES)}, got {streaming!r}")
    if streaming != "auto":
        return streaming == "on"
    return RESIDENT_COPIES * nbytes > budget


class _RowBatches(Dataset):
    """Item ``rows`` (an array of row numbers) is those images, ``(B, 1, H, W)`` float16."""

    def __init__(self, source):
        self.read = source.take if isinstance(source, ShardedImages) else partial(np.take, source, axis=0)

    def __getitem__(self, rows: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.read(rows))).unsqueeze(1)


class _EpochPlan:
    """The sampler: the current epoch's batches of row numbers (set before each epoch)."""

    def __init__(self) -> None:
        self.batches: list[np.ndarray] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


class StreamedImages:
    """Rows of a host-side image array (``(N, H, W)`` float16: memory-mapped shards or a numpy
    array) served on ``device`` as ``(B, 1, H, W)`` float16 tensors, never all at once.

    Stands in for the resident tensor where a fold uses one: ``shape``, ``len``, a slice
    (``images[a:b]``, read in order, for scoring and features), ``index_select(0, index)`` (a
    subset of rows, lazily) and :meth:`gather` (the training batches, through the DataLoader)."""

    def __init__(self, source, device: torch.device, workers: int = 2, rows: np.ndarray | None = None):
        self.source = source
        self.device = torch.device(device)
        self.workers = int(workers)
        self.rows = np.arange(len(source)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.dtype = torch.float16
        self._plan = _EpochPlan()
        self._loader: DataLoader | None = None

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.rows), 1, *self.source.shape[1:])

    def __len__(self) -> int:
        return len(self.rows)

    def index_select(self, dim: int, index: torch.Tensor) -> "StreamedImages":
        if dim != 0:
            raise ValueError("streamed images are selected along dimension 0 only")
        return StreamedImages(self.source, self.device, self.workers, self.rows[index.cpu().numpy()])

    def __getitem__(self, index: slice) -> torch.Tensor:
        if not isinstance(index, slice):
            raise TypeError("streamed images are read by slices (images[a:b])")
        x = _RowBatches(self.source)[self.rows[index]]
        return x.to(self.device, non_blocking=True)

    def loader(self) -> DataLoader:
        """One DataLoader for the fold's life: its workers persist across epochs."""
        if self._loader is None:
            cuda = self.device.type == "cuda"
            extra: dict[str, Any] = {"persistent_workers": True, "prefetch_factor": 4} if self.workers > 0 else {}
            self._loader = DataLoader(_RowBatches(self.source), batch_size=None, sampler=self._plan,
                                      num_workers=self.workers, pin_memory=cuda,
                                      generator=torch.Generator(),  # not the global one: results stay seeded
                                      **extra)
        return self._loader

    def gather(self, index_batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The images of each batch of positions (into these rows), on the device, in order."""
        if not index_batches:
            return
        positions = torch.cat(index_batches).cpu().numpy()  # one copy per epoch, not per batch
        bounds = np.cumsum([0] + [int(i.numel()) for i in index_batches])
        self._plan.batches = [self.rows[positions[a:b]] for a, b in zip(bounds[:-1], bounds[1:])]
        for x in self.loader():
            yield x.to(self.device, non_blocking=True)


def gather_batches(images, index_batches: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """Each batch's images, ``(B, 1, H, W)`` float16 on the device, from either kind of source."""
    if isinstance(images, StreamedImages):
        return images.gather(index_batches)
    return (images.index_select(0, idx) for idx in index_batches)


class DeviceImages:
    """A dataset's images as one float16 tensor on the device (moved once per process)."""

    _cache: dict[tuple[int, str], torch.Tensor] = {}

    @classmethod
    def get(cls, loaded: LoadedDataset, device: torch.device) -> torch.Tensor:
        key = (id(loaded.images), str(device))
        if key not in cls._cache:
            t = torch.from_numpy(np.ascontiguousarray(loaded.images)).unsqueeze(1)
            cls._cache = {key: t.to(device)}  # keep one dataset per process
        return cls._cache[key]


def dataset_images(cfg: Config, loaded: LoadedDataset, device: torch.device) -> torch.Tensor | StreamedImages:
    """The dataset's images as a fold reads them: resident on the device while they fit the memory
    budget, else streamed from the host (``data.streaming``, ``data.memory_budget_gb``; the same
    results either way: :mod:`ssl_bench.training.images`)."""
    d = cfg.data
    if should_stream(d.streaming, loaded.images.nbytes, memory_budget(device, d.memory_budget_gb)):
        return StreamedImages(loaded.images, device, d.loader_workers)
    return DeviceImages.get(loaded, device)
