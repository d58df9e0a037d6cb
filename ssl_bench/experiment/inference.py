"""Scoring new images with a finished run: every fold's classifier (``model.pt``, loaded with
``weights_only=True``), the run's own preprocessing, the mean probability over folds, and the
call at the run's operating point (the mean of the folds' thresholds, each chosen on that fold's
training predictions)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..data.preprocess import preprocess_file
from ..errors import DataError, UserError
from ..models.classifiers import classifier_from_record
from ..training.scoring import predict_scores
from .model_file import load_model_record
from .rundir import RunDir


def load_fold_models(run_dir: str | Path) -> tuple[dict, list[tuple[int, torch.nn.Module]]]:
    """The run's config and ``(fold, classifier)`` for every fold that has a ``model.pt``."""
    rundir = RunDir.open(run_dir)
    config = rundir.read_config()
    models = []
    for k in rundir.folds_with_model():
        record = load_model_record(rundir.model_path(k))
        model = classifier_from_record(record)
        try:
            model.load_state_dict(record["state_dict"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UserError(f"{rundir.model_path(k)}: the weights do not fit the model it names ({first})") from None
        models.append((k, model.eval()))
    if not models:
        raise UserError(f"{rundir.path} holds no trained fold (folds/<k>/model.pt)")
    return config, models


def predict_files(run_dir: str | Path, files: list[str], device: torch.device,
                  on_partial: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per file: ``file``, ``p_malignant`` (probability of malignancy, mean over folds),
    ``threshold`` (the run's operating point), ``malignant`` (``p_malignant >= threshold``), and
    ``fold_<k>`` (fold k's probability) per fold."""
    config, models = load_fold_models(run_dir)
    size = tuple(config["data"]["image_size"])
    n_folds = int((config.get("data") or {}).get("folds") or len(models))
    if len(models) < n_folds and on_partial is not None:
        on_partial(f"{run_dir} is partial: {len(models)} of {n_folds} folds have a trained model "
                   f"(folds {', '.join(str(k) for k, _ in models)}); probabilities average those")
    images, problems = [], []
    for f in files:
        try:
            images.append(preprocess_file(f, size))
        except (DataError, OSError, ValueError) as exc:
            reason = str(exc)
            problems.append(f"  - {reason if reason.startswith(str(f)) else f'{f}: {reason}'}")
    if problems:
        raise DataError("cannot read these images:\n" + "\n".join(problems))
    batch = torch.from_numpy(np.stack(images).astype(np.float32)).unsqueeze(1)
    table = pd.DataFrame({"file": [str(f) for f in files]})
    per_fold = {}
    for k, model in models:
        per_fold[f"fold_{k}"] = predict_scores(model.to(device), batch, device)
    table["p_malignant"] = np.mean(list(per_fold.values()), axis=0)
    table["threshold"] = operating_threshold_of(RunDir.open(run_dir), [k for k, _ in models])
    table["malignant"] = table["p_malignant"] >= table["threshold"]
    return pd.concat([table, pd.DataFrame(per_fold)], axis=1)


def operating_threshold_of(rundir: RunDir, folds: list[int]) -> float:
    """The run's operating point for the fold ensemble: the mean of the folds' operating
    thresholds (each chosen on that fold's training predictions; 0.5 for runs that predate them)."""
    values = []
    for k in folds:
        metrics = rundir.read_metrics(k) if rundir.fold_done(k) else {}
        value = metrics.get("op_threshold", 0.5)
        values.append(0.5 if value is None or value != value else float(value))
    return float(np.mean(values))
