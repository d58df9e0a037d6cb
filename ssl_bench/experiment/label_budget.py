"""The training budget of a fold that keeps only a fraction of its labels (``train.label_budget``).

Trained for the profile's epochs, a fold keeping 10% of its training patients takes a tenth of the
optimiser steps: in the quick profile 24 instead of about 160, and every method of
``benchmarks/label_efficiency.yaml`` stayed at chance at that fraction (measured on the phantom,
2-core CPU: held-out AUCs 0.37-0.71, scores within 0.47-0.53). The curve then confounds fewer
labels with less training. The field's protocols give small label sets more epochs (SimCLR,
Chen et al., ICML 2020, fine-tunes on 1% of ImageNet's labels for 60 epochs and on 10% for 30);
``steps`` makes it exact: each stage that trains on the fold's subset sees as many images as it
would on all the fold's training images, so a point of the curve differs from the full-data run
in its labels, not in its training. A pretext stage on a ``--pretext-data`` pool keeps its epochs:
the pool does not shrink with the fraction (and its cached stage stays shared by all fractions).
"""
from __future__ import annotations

import dataclasses
import math

from ..config import Config


def scaled_epochs(epochs: int, n_all: int, n_subset: int) -> int:
    """Epochs on ``n_subset`` images that see as many images as ``epochs`` on ``n_all``:
    ``ceil(epochs * n_all / n_subset)`` (``epochs`` itself when the subset is not smaller)."""
    if n_subset <= 0 or n_subset >= n_all:
        return int(epochs)
    return int(math.ceil(epochs * n_all / n_subset))


def fold_budget_config(cfg: Config, n_all: int, n_subset: int, pretext_on_subset: bool) -> Config:
    """``cfg`` with the epochs a fold training on ``n_subset`` of its ``n_all`` training images
    runs under ``train.label_budget``: ``steps`` scales ``train.epochs`` (and
    ``train.pretext_epochs`` when the pretext stage trains on the subset too), ``epochs`` keeps them."""
    if cfg.train.label_budget != "steps" or n_subset >= n_all:
        return cfg
    train = dataclasses.replace(
        cfg.train,
        epochs=scaled_epochs(cfg.train.epochs, n_all, n_subset),
        pretext_epochs=(scaled_epochs(cfg.train.pretext_epochs, n_all, n_subset) if pretext_on_subset
                        else cfg.train.pretext_epochs),
    )
    return dataclasses.replace(cfg, train=train)
