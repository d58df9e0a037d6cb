"""Train and evaluate one cross-validation fold: build the pretext task and transfer strategy,
fit on the other folds' images, score the held-out fold, choose the operating point on the
training images' scores, compute the fold's metrics."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from .. import components
from ..config import Config
from ..data.base import LoadedDataset
from ..data.breasts import table_view_pairs
from ..data.splits import label_subset
from ..registry import PRETEXTS, TRANSFERS
from ..training.checkpoint import CheckpointStore
from ..training.context import FitContext
from ..training.device import resolve_precision
from ..training.images import dataset_images
from ..training.progress import TrainingProgress
from ..training.tracking import HistorySink
from ..training.view_pairs import predict_image_scores
from .calibration import CALIBRATION_KEY, calibrate, fit_platt
from .label_budget import fold_budget_config
from .metrics import fold_metrics
from .model_file import model_record
from .operating_point import operating_threshold
from .pretext_pool import fold_pretext_pool


def seed_everything(seed: int, fold: int) -> None:
    """One seed per (seed, fold) job, so a fold gives the same result however jobs are scheduled."""
    s = (int(seed) * 1000 + int(fold)) % (2**32)
    random.seed(s)
    np.random.seed(s)
    torch.manual_seed(s)


def build_parts(cfg: Config):
    """The configured pretext task and transfer strategy, checked against each other and the
    pretext task against the backbone (a task may train only some, e.g. MAE a ViT) and the
    data-parallel workers of its stage."""
    pretext = components.create(PRETEXTS, cfg.pretext, cfg)
    transfer = components.create(TRANSFERS, cfg.transfer, cfg)
    transfer.check(cfg.pretext, pretext)
    pretext.check_backbone(cfg.model.backbone)
    pretext.check_workers(cfg.train.pretext_workers)
    return pretext, transfer


def training_subset(cfg: Config, loaded: LoadedDataset, fold_of: np.ndarray, k: int) -> np.ndarray:
    """Fold ``k``'s training images (boolean mask): the other folds' images, reduced to
    ``data.label_fraction`` of their patients (:func:`ssl_bench.data.splits.label_subset`)."""
    return label_subset(loaded.labels, loaded.groups, fold_of != k, cfg.data.label_fraction, cfg.seed, k)


def subset_record(cfg: Config, loaded: LoadedDataset, train_mask: np.ndarray) -> dict:
    """What a fold records of its training subset (in ``metrics.json``): the requested
    ``label_fraction`` and the actual ``n_train_images`` and ``n_train_patients``."""
    return {
        "label_fraction": float(cfg.data.label_fraction),
        "n_train_images": int(train_mask.sum()),
        "n_train_patients": int(len(np.unique(np.asarray(loaded.groups)[train_mask]))),
    }


@dataclass
class FoldResult:
    fold: int
    metrics: dict
    predictions: pd.DataFrame
    model: dict  # the model.pt record (model_file.py)
    history: pd.DataFrame  # one row per trained epoch (history.csv)


def train_and_score_fold(
    cfg: Config,
    loaded: LoadedDataset,
    fold_of: np.ndarray,
    k: int,
    device: torch.device,
    progress: TrainingProgress | None = None,
    checkpoint_store: CheckpointStore | None = None,
    sink: HistorySink | None = None,
) -> FoldResult:
    """Train fold ``k`` and score its held-out images. With ``train.checkpoint_every`` and a
    ``checkpoint_store``, the training state is saved there every few epochs and a saved state of
    this fold is resumed from, with the same results (:mod:`ssl_bench.training.checkpoint`)."""
    seed_everything(cfg.seed, k)
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    pretext, transfer = build_parts(cfg)
    # a classifier of a breast's views pairs them within the training images and within the held-out
    # ones (prepare_run refused folds that split a breast)
    pairs_of = table_view_pairs if transfer.takes_view_pairs else lambda samples: None
    images = dataset_images(cfg, loaded, device)
    train_mask = training_subset(cfg, loaded, fold_of, k)
    train_idx = torch.from_numpy(np.flatnonzero(train_mask)).to(device)
    test_idx = np.flatnonzero(fold_of == k)
    labels = torch.from_numpy(loaded.labels.copy()).float().to(device)
    amp_dtype = resolve_precision(cfg.train.precision, device)
    pool = fold_pretext_pool(cfg, pretext, loaded, fold_of, k, device, amp_dtype)  # --pretext-data
    fit_cfg = fold_budget_config(cfg, int((fold_of != k).sum()), int(train_mask.sum()), pretext_on_subset=pool is None)
    ctx = FitContext(
        config=fit_cfg,
        pretext=pretext,
        images=images.index_select(0, train_idx),
        labels=labels.index_select(0, train_idx),
        device=device,
        amp_dtype=amp_dtype,
        progress=progress or TrainingProgress(enabled=False),
        pretext_pool=pool,
        checkpoint_store=checkpoint_store,
        sink=sink,
        patients=np.asarray(loaded.groups)[train_mask],
        view_pairs=pairs_of(loaded.samples[train_mask]),
    )
    ctx.progress.explain_losses(getattr(transfer, "losses", {}))
    classifier = transfer.fit(ctx)
    batch = max(cfg.train.batch_size, 16)
    held_out = images.index_select(0, torch.from_numpy(test_idx).to(device))
    held_out_pairs = pairs_of(loaded.samples.iloc[test_idx])
    scores = predict_image_scores(classifier, held_out, held_out_pairs, device, amp_dtype, batch_size=batch)
    # the operating point comes from the training images' scores, never from the held-out fold
    train_scores = transfer.training_scores(classifier, ctx, batch)
    threshold = operating_threshold(loaded.labels[train_mask], train_scores)
    calibration = fit_platt(loaded.labels[train_mask], train_scores)  # likewise on the training images
    table = loaded.samples.iloc[test_idx]
    predictions = pd.DataFrame(
        {
            "image_id": table["image_id"].astype(str).to_numpy(),
            "patient_id": table["patient_id"].astype(str).to_numpy(),
            "label": table["label"].astype(int).to_numpy(),
            "score": scores,
            "laterality": table["laterality"].fillna("").astype(str).to_numpy(),
            "calibrated": calibrate(calibration, scores),
        }
    )
    metrics: dict[str, Any] = fold_metrics(predictions["label"], predictions["score"], threshold)
    metrics[CALIBRATION_KEY] = calibration
    metrics.update(subset_record(cfg, loaded, train_mask))
    metrics.update(epochs=fit_cfg.train.epochs, pretext_epochs=fit_cfg.train.pretext_epochs)  # after train.label_budget
    if pool is not None:
        metrics["pretext_pool"] = pool.record()  # which cached pretext stage this fold used
    if held_out_pairs is not None:
        ctx.fit_info["held_out_breasts"] = held_out_pairs.counts()
    if ctx.fit_info:
        metrics["fit"] = dict(ctx.fit_info)  # what the strategy chose in fitting (the linear probe's C)
    return FoldResult(k, metrics, predictions, model_record(cfg.model.backbone, cfg.data.image_size, classifier),
                      history_table(ctx.history))


def history_table(rows: list[dict]) -> pd.DataFrame:
    """The fold's training history: ``stage, epoch``, then each loss, then ``lr, seconds``."""
    table = pd.DataFrame(rows)
    if table.empty:
        return pd.DataFrame(columns=["stage", "epoch", "lr", "seconds"])
    losses = [c for c in table.columns if c not in ("stage", "epoch", "lr", "seconds")]
    return table[["stage", "epoch", *losses, "lr", "seconds"]]
