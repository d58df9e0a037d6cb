"""A fold's training images and the shuffled, augmented batches drawn from them.

The images sit on the device as one float16 tensor; each epoch's order is one ``randperm`` on the
device and batches are gathered, cast and augmented there, so no data crosses from the host
during training (the data share of an epoch is negligible: ``benchmarks/speed.py``). A dataset
larger than the memory budget is streamed instead (:mod:`ssl_bench.training.images`): the same
order, the images read from the host per batch, the same augmentation on the device.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator

import torch

from .images import StreamedImages, gather_batches


def augment_batch(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Label-preserving augmentation on the device: random vertical flip (breasts keep facing the
    same side, so never horizontal) and a mild random gamma (0.8-1.25) per image."""
    b = x.shape[0]
    flip = torch.rand(b, device=x.device, generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-2), x)
    gamma = torch.exp(
        (torch.rand(b, device=x.device, generator=generator) * 2 - 1) * 0.223
    )  # log(1.25) = 0.223
    return x.clamp_min(0).pow(gamma[:, None, None, None])


def smallest_batch(workers: int = 1) -> int:
    """A (global) batch is dropped below this size: every one of ``workers`` needs 2 images (BatchNorm)."""
    return 2 * workers


def steps_per_epoch(n_images: int, batch_size: int, workers: int = 1) -> int:
    """Optimiser steps in one epoch of ``n_images`` in (global) batches of ``batch_size`` shared by
    ``workers``: a last batch under :func:`smallest_batch` is dropped."""
    return n_images // batch_size + (1 if n_images % batch_size >= smallest_batch(workers) else 0)


def cut_to_share(value: Any, batch: int, rank: int, workers: int) -> Any:
    """Worker ``rank``'s contiguous share (of ``workers`` equal ones) of ``value``, drawn for a
    batch of ``batch`` images: a tensor with ``batch`` rows keeps rows ``rank * batch / workers``
    on; one with ``k * batch`` rows is ``k`` batches stacked view by view (the rotation plugin's
    targets, ``[0]*B + [1]*B + ...``) and keeps its share of each; lists, tuples, dicts and
    dataclasses (:class:`~ssl_bench.pretext.base.PretextBatch`) are cut item by item, anything
    else (None, a number, a tensor of other rows) is shared as it is. So every worker can draw
    one process's random views of the whole batch and train on its share of them
    (:mod:`ssl_bench.training.distributed`); a per-batch tensor that happened to have ``k *
    batch`` rows would be cut too (no task in the zoo has one)."""
    if workers == 1:
        return value
    if batch % workers:
        raise ValueError(f"a batch of {batch} images has no equal shares for {workers} workers")
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.shape[0] == 0 or value.shape[0] % batch:
            return value
        stacked = value.unflatten(0, (value.shape[0] // batch, workers, batch // workers))
        return stacked[:, rank].flatten(0, 1)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.replace(value, **{f.name: cut_to_share(getattr(value, f.name), batch, rank, workers)
                                             for f in dataclasses.fields(value) if f.init})
    if isinstance(value, dict):
        return {k: cut_to_share(v, batch, rank, workers) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        items = [cut_to_share(v, batch, rank, workers) for v in value]
        if isinstance(value, list):
            return items
        return type(value)(*items) if hasattr(value, "_fields") else type(value)(items)  # namedtuple
    return value


@dataclass
class FoldBatches:
    """One fold's training images ``(N, 1, H, W)`` float16 in [0, 1] and labels ``(N,)`` (1 =
    malignant), served as shuffled batches on the device. The images are a tensor on the device,
    or :class:`~ssl_bench.training.images.StreamedImages` read from the host as needed: the
    batches are the same.

    Shared by ``W`` data-parallel workers (``share``), every worker gets the whole global batch,
    the same one (same order, same augmentation: they start from one random state), and a step
    keeps its share with :meth:`share_of` after drawing whatever is random about the batch (the
    pretext task's views), so the draws are one process's. Each worker thus augments, and with
    a streamed dataset reads, the whole global batch: ``W`` times its share, cheap next to the
    network."""

    images: torch.Tensor | StreamedImages
    labels: torch.Tensor
    batch_size: int
    augment: bool = True
    channels_last: bool = True
    #: ``(rank, workers)``: this worker's contiguous share of every (global) batch, which
    #: :meth:`share_of` cuts, in data-parallel training (:mod:`ssl_bench.training.distributed`);
    #: ``(0, 1)``: one process, the whole batch
    share: tuple[int, int] = (0, 1)

    @property
    def smallest_batch(self) -> int:
        """A batch is dropped below this size (:func:`smallest_batch` of the workers)."""
        return smallest_batch(self.share[1])

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_images, self.batch_size, self.share[1])

    def share_of(self, value: Any, batch: int) -> Any:
        """This worker's share of ``value`` (a tensor, a :class:`~ssl_bench.pretext.base.PretextBatch`,
        nested lists, tuples or dicts of tensors) drawn for a global batch of ``batch`` images
        (:func:`cut_to_share`); ``value`` itself in one process."""
        return cut_to_share(value, batch, *self.share)

    def epoch(self, augment: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of ``(images float32 (B,1,H,W), labels (B,))`` on the device.
        A last batch of a single image is dropped (BatchNorm cannot train on one sample). Shared
        by ``W`` workers (``share``), the batches are whole and global (:meth:`share_of` cuts
        them), a last one dropped below ``2 W`` images and cut to a multiple of ``W`` (only a
        last one: ``train.batch_size`` is a multiple of ``W``): a loss gathered across the
        workers needs equal shares of 2 or more (:mod:`ssl_bench.training.distributed`)."""
        augment = self.augment if augment is None else augment
        device = self.labels.device
        order = torch.randperm(self.n_images, device=device)
        index_batches = []
        for start in range(0, self.n_images, self.batch_size):
            size = min(self.batch_size, self.n_images - start)
            if size >= self.smallest_batch:
                index_batches.append(order[start : start + size - size % self.share[1]])
        # the images first, so that a streaming loader runs to its end
        for images, idx in zip(gather_batches(self.images, index_batches), index_batches):
            x = images.float()
            if augment:
                x = augment_batch(x)
            if device.type == "cuda" and self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, self.labels.index_select(0, idx)
