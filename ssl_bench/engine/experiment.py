"""One method's cross-validation run: prepare its run directory, run the missing folds, summarise.

The bench runner reuses the three steps (:func:`prepare_run`, :func:`run_fold` via
:func:`complete_fold`, :func:`write_summary`) to schedule folds of many methods.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import yaml
from sklearn.metrics import roc_auc_score

from .. import components
from ..config import Config, save_yaml
from ..data.base import LoadedDataset
from ..data.loading import load_dataset
from ..data.splits import check_grouping, make_folds
from ..errors import UserError
from . import provenance
from .device import device_name, resolve_device
from .fold import build_parts, run_fold
from .metrics import summarize
from .progress import TrainingProgress
from .rundir import RunDir

# Keys that may differ between two invocations writing the same run directory.
_VOLATILE_KEYS = ("fold", "out", "device", "threads")


@dataclass
class PreparedRun:
    config: Config
    rundir: RunDir
    loaded: LoadedDataset
    fold_of: np.ndarray

    @property
    def folds_to_run(self) -> list[int]:
        wanted = [self.config.fold] if self.config.fold is not None else range(self.config.data.folds)
        return [k for k in wanted if not self.rundir.fold_done(k)]


def _comparable(d: dict) -> dict:
    """The settings that decide a run's results (not where files go or how fast it runs)."""
    out = {k: v for k, v in d.items() if k not in _VOLATILE_KEYS}
    out["data"] = {k: v for k, v in (d.get("data") or {}).items() if k not in ("cache_dir", "workers")}
    return out


def check_existing_config(rundir: RunDir, cfg: Config) -> None:
    """Refuse to mix folds of two different configurations in one run directory."""
    path = rundir.path / "config.yaml"
    if not path.exists():
        return
    old = yaml.safe_load(path.read_text()) or {}
    new = yaml.safe_load(yaml.safe_dump(cfg.to_dict()))
    if _comparable(old) != _comparable(new) and any((rundir.path / "folds").glob("[0-9]*")):
        diff = sorted(k for k in set(old) | set(new) if _comparable(old).get(k) != _comparable(new).get(k))
        raise UserError(
            f"{rundir.path} already holds folds of a different configuration (differs in: "
            f"{', '.join(diff)}); choose another --out or run name (--set name=...)"
        )


def validate_parts(cfg: Config) -> None:
    """Fail fast, before any data is loaded, on unknown names and options."""
    components.check_params_section(cfg)
    build_parts(cfg)
    from ..registry import DATASETS, NETWORKS

    DATASETS.get(cfg.data.dataset)
    if cfg.transfer == "collab":
        NETWORKS.get(cfg.model.pretext_net)


def prepare_run(cfg: Config, loaded: LoadedDataset | None = None) -> PreparedRun:
    validate_parts(cfg)
    rundir = RunDir.create(cfg.out, cfg.run_name)
    check_existing_config(rundir, cfg)
    loaded = loaded if loaded is not None else load_dataset(cfg)
    fold_of = make_folds(loaded.labels, loaded.groups, cfg.data.folds, cfg.seed, cfg.data.split)
    if cfg.data.split == "patient":
        check_grouping(fold_of, loaded.groups)
    folds = loaded.samples[["image_id", "patient_id", "label"]].assign(fold=fold_of)
    folds_csv = rundir.path / "folds.csv"
    if folds_csv.exists():
        old = pd.read_csv(folds_csv, dtype={"image_id": str, "patient_id": str})
        if not old.reset_index(drop=True).equals(folds.reset_index(drop=True)):
            raise UserError(f"{folds_csv} holds different folds than this run would use; choose another --out")
    else:
        rundir.write_text("folds.csv", folds.to_csv(index=False))
    save_yaml(cfg, rundir.path / "config.yaml")
    if loaded.skipped:
        skipped = pd.DataFrame([{"file": p.file, "reason": p.reason} for p in loaded.skipped])
        rundir.write_text("skipped.csv", skipped.to_csv(index=False))
    return PreparedRun(cfg, rundir, loaded, fold_of)


def complete_fold(run: PreparedRun, k: int, device, progress: TrainingProgress | None = None) -> dict:
    """Train + evaluate fold ``k`` unless it is already complete; returns its metrics."""
    if not run.rundir.fold_done(k):
        result = run_fold(run.config, run.loaded, run.fold_of, k, device, progress)
        run.rundir.write_fold(k, result.metrics, result.predictions, result.model_state)
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
    pooled = pd.concat([rundir.read_predictions(k) for k in k_all], ignore_index=True)
    oof_auc = float(roc_auc_score(pooled["label"], pooled["score"])) if pooled["label"].nunique() == 2 else float("nan")
    summary = {
        "method": cfg.display_name,
        "folds": cfg.data.folds,
        "mean": mean,
        "std": std,
        "oof_auc": oof_auc,
        "per_fold": fold_metrics,
    }
    rundir.write_json("summary.json", summary)
    return summary


def run_experiment(cfg: Config, show_progress: bool = True, console=None) -> tuple[PreparedRun, dict | None]:
    """Run every missing fold of ``cfg`` (or only ``cfg.fold``) and write the run directory."""
    device = resolve_device(cfg.device)
    started = provenance.now()
    run = prepare_run(cfg)
    with TrainingProgress(console, enabled=show_progress) as progress:
        todo = run.folds_to_run
        progress.start_folds(f"{cfg.display_name} folds", len(todo))
        for k in todo:
            metrics = complete_fold(run, k, device, progress)
            progress.fold_done(f"fold {k}: AUC {metrics['auc']:.3f}")
    return run, write_summary(run, device_name(device), started)
