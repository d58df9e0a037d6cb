"""The training budget of a fold that keeps only a fraction of its labels (``train.label_budget``).

Trained for the profile's epochs, a fold keeping 10% of its training patients takes a tenth of the
optimiser steps: in the quick profile 24 instead of about 160, and every method of
``benchmarks/label_efficiency.yaml`` stayed at chance at that fraction (measured on the phantom,
2-core CPU: held-out AUCs 0.37-0.71, scores within 0.47-0.53). The curve then confounds fewer
labels with less training. The field's protocols give small label sets more epochs (SimCLR,
Chen et al., ICML 2020, fine-tunes on 1% of ImageNet's labels for 60 epochs and on 10% for 30);
``steps`` makes it exact: each stage that trains on the fold's subset takes as many optimiser
steps as it would on all the fold's training images (``ceil(epochs * steps_all / steps_subset)``
epochs, with the steps of one epoch counted as :class:`~ssl_bench.training.batches.FoldBatches`
takes them, so at most one epoch's steps more), and a point of the curve differs from the
full-data run in its labels, not in its training. Scaling by the ratio of images instead would
not: a last, partial batch is a whole step, so 36 images in batches of 16 take 3 steps an epoch
where 310 take 20, and the image ratio gave 1.29x the full fold's steps. A pretext stage on a
``--pretext-data`` pool keeps its epochs: the pool does not shrink with the fraction (and its
cached stage stays shared by all fractions).
"""
from __future__ import annotations

import dataclasses
import math

from ..config import Config
from ..training.batches import steps_per_epoch


def scaled_epochs(epochs: int, steps_all: int, steps_subset: int) -> int:
    """Epochs of ``steps_subset`` optimiser steps that take at least the ``epochs * steps_all`` steps
    of ``epochs`` on the whole fold: ``ceil(epochs * steps_all / steps_subset)`` (``epochs``
    itself when the subset takes as many steps an epoch, or none)."""
    if steps_subset <= 0 or steps_subset >= steps_all:
        return int(epochs)
    return int(math.ceil(epochs * steps_all / steps_subset))


def fold_budget_config(cfg: Config, n_all: int, n_subset: int, pretext_on_subset: bool) -> Config:
    """``cfg`` with the epochs a fold training on ``n_subset`` of its ``n_all`` training images
    runs under ``train.label_budget``: ``steps`` scales ``train.epochs`` (and
    ``train.pretext_epochs`` when the pretext stage trains on the subset too, on
    ``train.pretext_workers`` workers) to the whole fold's optimiser steps, ``epochs`` keeps them."""
    if cfg.train.label_budget != "steps" or n_subset >= n_all:
        return cfg
    t = cfg.train

    def scaled(epochs: int, workers: int) -> int:
        return scaled_epochs(epochs, steps_per_epoch(n_all, t.batch_size, workers),
                             steps_per_epoch(n_subset, t.batch_size, workers))

    train = dataclasses.replace(
        t,
        epochs=scaled(t.epochs, 1),
        pretext_epochs=scaled(t.pretext_epochs, t.pretext_workers) if pretext_on_subset else t.pretext_epochs,
    )
    return dataclasses.replace(cfg, train=train)
