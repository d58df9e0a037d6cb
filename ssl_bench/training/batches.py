"""A fold's training images and the shuffled, augmented batches drawn from them.

The images sit on the device as one float16 tensor; each epoch's order is one ``randperm`` on the
device and batches are gathered, cast and augmented there, so no data crosses from the host
during training (the data share of an epoch is negligible: ``benchmarks/speed.py``). A dataset
larger than the memory budget is streamed instead (:mod:`ssl_bench.training.images`): the same
order, the images read from the host per batch, the same augmentation on the device.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

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


def steps_per_epoch(n_images: int, batch_size: int, workers: int = 1) -> int:
    """Optimiser steps in one epoch of ``n_images`` in (global) batches of ``batch_size`` shared by
    ``workers``: a last batch that cannot give every worker 2 images (BatchNorm) is dropped."""
    return n_images // batch_size + (1 if n_images % batch_size >= 2 * workers else 0)


@dataclass
class FoldBatches:
    """One fold's training images ``(N, 1, H, W)`` float16 in [0, 1] and labels ``(N,)`` (1 =
    malignant), served as shuffled batches on the device. The images are a tensor on the device,
    or :class:`~ssl_bench.training.images.StreamedImages` read from the host as needed: the
    batches are the same."""

    images: torch.Tensor | StreamedImages
    labels: torch.Tensor
    batch_size: int
    augment: bool = True
    channels_last: bool = True
    #: ``(rank, workers)``: yield only this worker's contiguous share of every (global) batch, in
    #: data-parallel training (:mod:`ssl_bench.training.distributed`); ``(0, 1)``: whole batches
    share: tuple[int, int] = (0, 1)

    @property
    def smallest_batch(self) -> int:
        """A batch is dropped below this size: every worker needs 2 images (BatchNorm)."""
        return 2 * self.share[1]

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_images, self.batch_size, self.share[1])

    def epoch(self, augment: bool | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """One shuffled epoch of ``(images float32 (B,1,H,W), labels (B,))`` on the device.
        A last batch of a single image is dropped (BatchNorm cannot train on one sample). Shared
        by ``W`` workers (``share``), a batch is cut to a multiple of ``W`` images (only a last
        one: ``train.batch_size`` is a multiple of ``W``): a loss gathered across the workers
        needs equal shares (:mod:`ssl_bench.training.distributed`)."""
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
            y = self.labels.index_select(0, idx)
            if self.share[1] > 1:  # augmented as a whole first: every worker draws the same numbers
                rank, workers = self.share
                x, y = x.tensor_split(workers)[rank], y.tensor_split(workers)[rank]
            yield x, y
