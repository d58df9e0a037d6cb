"""One method's cross-validation run: prepare its run directory, run the missing folds, summarise.

The bench runner reuses the steps (:func:`prepare_run` in the driver, :func:`open_prepared_run`
and :func:`run_and_write_fold` in each job, :func:`write_summary` at the end) to schedule folds of many
methods.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from rich.console import Console

from .. import components
from ..config import Config
from ..console import make_console, working
from ..data.base import LoadedDataset
from ..data.base import OFFICIAL_SPLIT
from ..data.breasts import ViewPairs, check_breasts_in_one_fold, table_view_pairs
from ..data.loading import load_evaluation_data
from ..data.splits import check_grouping, make_folds, official_folds
from ..models.backbones import check_pretrained
from ..registry import DATASETS
from ..training.device import device_name, resolve_device
from ..training.progress import TrainingProgress
from ..training.tracking import open_sink, require_backend
from ..transfer.base import TransferStrategy
from . import provenance
from .fold import build_parts, train_and_score_fold
from .fold_checkpoint import fold_checkpoint
from .metrics import pooled_auc, pooled_metrics, summarize
from .model_file import model_bytes
from .pretext_pool import check_pretext_data
from .rundir import RunDir


@dataclass
class PreparedRun:
    config: Config
    rundir: RunDir
    loaded: LoadedDataset
    fold_of: np.ndarray
    #: the dataset's breasts and view pairs, for a transfer whose classifier scores them (else None)
    view_pairs: ViewPairs | None = None

    @property
    def folds_to_run(self) -> list[int]:
        wanted = [self.config.fold] if self.config.fold is not None else range(self.config.data.folds)
        return [k for k in wanted if not self.rundir.fold_done(k)]


def validate_parts(cfg: Config) -> TransferStrategy:
    """Fail fast, before any data is loaded, on unknown names and options; returns the transfer."""
    components.check_params_section(cfg)
    pretext, transfer = build_parts(cfg)
    for name in (cfg.data.dataset, cfg.data.test_dataset, cfg.pretext_data.dataset):
        if name:
            DATASETS.get(name)
    check_pretext_data(cfg, pretext)
    components.check_needed_components(cfg)
    check_pretrained(cfg.model.backbone, cfg.model.pretrained)  # offline ImageNet: fail before any data
    require_backend(cfg.log.backend)  # --log without its library: one line before any training
    return transfer


def fold_table(loaded: LoadedDataset, fold_of: np.ndarray) -> pd.DataFrame:
    """The rows of ``folds.csv``: every image with its patient, label and held-out fold."""
    return loaded.samples[["image_id", "patient_id", "label"]].assign(fold=fold_of)


def compute_folds(cfg: Config, loaded: LoadedDataset) -> np.ndarray:
    """Each image's held-out fold: stratified, grouped by patient (checked) unless split=image;
    with split=official or a test dataset the given split, one fold (0 = test, -1 = training)."""
    if cfg.data.split == "official" or cfg.data.test_dataset:
        column = loaded.samples[OFFICIAL_SPLIT] if OFFICIAL_SPLIT in loaded.samples.columns else None
        return official_folds(column, loaded.name)
    fold_of = make_folds(loaded.labels, loaded.groups, cfg.data.folds, cfg.seed, cfg.data.split)
    if cfg.data.split == "patient":
        check_grouping(fold_of, loaded.groups)
    return fold_of


def loading_text(cfg: Config) -> str:
    """What a run says while its data loads (the first time, minutes for a large dataset)."""
    d = cfg.data
    test = f" and test dataset {d.test_dataset}" if d.test_dataset else ""
    return (f"loading dataset {d.dataset}{test} at {d.image_size[0]}x{d.image_size[1]} (its images are made "
            f"once, then read from the cache in {d.cache_dir})")


def prepare_run(cfg: Config, loaded: LoadedDataset | None = None, console: Console | None = None) -> PreparedRun:
    """Check the parts, create or reopen the run directory, load the data and fix the folds.
    With a ``console`` (a terminal's), say which data loads and where its cache is."""
    transfer = validate_parts(cfg)
    rundir = RunDir.create(cfg.out, components.run_name(cfg))
    rundir.claim()  # before reading anything: a concurrent writer would change it under us
    rundir.remove_leftovers()  # ours alone now: what a killed process left half-written goes
    rundir.check_config(cfg)
    if loaded is None:
        with working(loading_text(cfg), console, enabled=console is not None, bars_inside=True):
            loaded = load_evaluation_data(cfg)
    fold_of = compute_folds(cfg, loaded)
    view_pairs = None
    if transfer.takes_view_pairs:  # a fold pairs a breast's views among its own images
        check_breasts_in_one_fold(fold_of, loaded.samples["patient_id"], loaded.samples["laterality"])
        view_pairs = table_view_pairs(loaded.samples)
    rundir.record_folds(fold_table(loaded, fold_of))
    rundir.record_subgroups(loaded.samples)
    rundir.write_config(cfg)
    if loaded.skipped:
        skipped = pd.DataFrame([{"file": p.file, "reason": p.reason} for p in loaded.skipped])
        rundir.write_text("skipped.csv", skipped.to_csv(index=False))
    return PreparedRun(cfg, rundir, loaded, fold_of, view_pairs)


def breasts_line(transfer: str, pairs: ViewPairs) -> str:
    """The one line a run of a view-fused transfer says about its breasts."""
    counts = pairs.counts()
    return (f"transfer '{transfer}': {counts['two_view_breasts']} breasts seen in both views (CC and MLO), "
            f"{counts['one_view_breasts']} one-view breasts (scored from their one view), {counts['images']} images")


def open_prepared_run(cfg: Config, where: str = "this machine") -> PreparedRun:
    """A run directory that a driver already prepared, reopened without rewriting anything (a
    bench job, possibly on another node): the data must give exactly the folds of ``folds.csv``."""
    rundir = RunDir(Path(cfg.out).expanduser() / components.run_name(cfg))
    folds_csv = rundir.path / "folds.csv"
    if not folds_csv.is_file():
        raise RuntimeError(
            f"{folds_csv} not found on {where}: the output folder must be on storage "
            f"that the driver and every worker share, at the same path"
        )
    loaded = load_evaluation_data(cfg)
    fold_of = compute_folds(cfg, loaded)
    if not rundir.folds_match(loaded.samples["image_id"].astype(str).to_numpy(), fold_of):
        raise RuntimeError(
            f"the dataset on {where} gives other folds than {folds_csv} "
            f"(different data or data root on this node?)"
        )
    return PreparedRun(cfg, rundir, loaded, fold_of)


def run_and_write_fold(run: PreparedRun, k: int, device, progress: TrainingProgress | None = None) -> dict:
    """Train + evaluate fold ``k`` unless it is already complete (resuming from its checkpoint,
    if it has one of this configuration); returns its metrics. With
    ``log.backend`` set, the fold's history streams to that tracker while it trains."""
    if not run.rundir.fold_done(k):
        cfg = run.config
        sink = open_sink(cfg.log.backend, run.rundir.tracking_target(cfg.log.backend, cfg.log.uri, k),
                         run.rundir.path.name, k, cfg.to_dict(), owner=str(run.rundir.path.resolve()))
        try:
            result = train_and_score_fold(cfg, run.loaded, run.fold_of, k, device, progress, sink=sink,
                              checkpoint_store=fold_checkpoint(run.rundir, k, cfg, torch.device(device).type))
        except BaseException:
            if sink is not None:
                sink.close(failed=True)
            raise
        if sink is not None:
            sink.close()
        run.rundir.write_fold(k, result.metrics, result.predictions, model_bytes(result.model), result.history)
    return run.rundir.read_metrics(k)


def write_summary(run: PreparedRun, device_label: str, started: str) -> dict | None:
    """``summary.json`` and ``env.json`` once every fold is complete; None while folds are missing."""
    cfg, rundir = run.config, run.rundir
    env = provenance.environment(device_label)
    env.update(started=started, finished=provenance.now(), dataset=provenance.dataset_info(run.loaded))
    rundir.write_json("env.json", env)
    k_all = range(cfg.data.folds)
    if not all(rundir.fold_done(k) for k in k_all):
        return None
    fold_metrics = [rundir.read_metrics(k) for k in k_all]
    mean, std = summarize(fold_metrics)
    pooled = pd.concat([rundir.read_predictions(k).assign(fold=k) for k in k_all], ignore_index=True)
    thresholds = {k: float(m.get("op_threshold", 0.5)) for k, m in zip(k_all, fold_metrics)}
    summary = {
        "method": components.display_name(cfg),
        "folds": cfg.data.folds,
        "mean": mean,
        "std": std,
        "oof_auc": pooled_auc(pooled["label"], pooled["score"]),
        "pooled": pooled_metrics(pooled, thresholds, aggregate="mean"),
        "aggregate": "mean",
        "degenerate_folds": {str(k): m["degenerate"] for k, m in zip(k_all, fold_metrics) if m.get("degenerate")},
        "per_fold": fold_metrics,
        "label_fraction": float(cfg.data.label_fraction),
        "train_subsets": {str(k): {key: m.get(key) for key in ("n_train_images", "n_train_patients", "epochs", "pretext_epochs")}
                          for k, m in zip(k_all, fold_metrics)},
    }
    pools = {str(k): m["pretext_pool"] for k, m in zip(k_all, fold_metrics) if m.get("pretext_pool")}
    if pools:  # --pretext-data: each fold's pool and the cached pretext stage it used
        summary["pretext_pool"] = pools
    rundir.write_json("summary.json", summary)
    return summary


def run_method(cfg: Config, show_progress: bool = True, console=None) -> tuple[PreparedRun, dict | None]:
    """Run every missing fold of ``cfg`` (or only ``cfg.fold``) and write the run directory."""
    device = resolve_device(cfg.device)
    started = provenance.now()
    console = console or make_console(stderr=True)
    run = prepare_run(cfg, console=console if show_progress else None)
    todo = run.folds_to_run
    if run.view_pairs is not None and show_progress:
        console.print(breasts_line(cfg.transfer, run.view_pairs), highlight=False, markup=False, soft_wrap=True)
    if not todo and show_progress:
        wanted = "fold {cfg.fold} is" if cfg.fold is not None else f"all {cfg.data.folds} folds are"
        console.print(
            f"{wanted.format(cfg=cfg)} already done in {run.rundir.path}: nothing to train",
            highlight=False, markup=False, soft_wrap=True)
    with TrainingProgress(console, enabled=show_progress and bool(todo)) as progress:
        progress.start_folds(f"{components.display_name(cfg)} folds", len(todo))
        for k in todo:
            metrics = run_and_write_fold(run, k, device, progress)
            progress.fold_done(f"fold {k}: AUC {metrics['auc']:.3f}")
    return run, write_summary(run, device_name(device), started)
