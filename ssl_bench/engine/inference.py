"""Scoring new images with a finished run: every fold's classifier (``model.pt``, loaded with
``weights_only=True``), the run's own preprocessing, and the mean probability over folds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ..errors import DataError, UserError
from .predict import predict_scores


def load_fold_models(run_dir: str | Path) -> tuple[dict, list[tuple[int, torch.nn.Module]]]:
    """The run's config and ``(fold, classifier)`` for every completed fold."""
    from ..models.backbones import create_backbone

    run = Path(run_dir)
    config_path = run / "config.yaml"
    if not config_path.is_file():
        raise UserError(f"{run} is not a run directory (no config.yaml)")
    config = yaml.safe_load(config_path.read_text())
    models = []
    for path in sorted((run / "folds").glob("*/model.pt"), key=lambda p: int(p.parent.name)):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise UserError(f"cannot load {path}: {exc}") from None
        model = create_backbone(state["backbone"], in_chans=state["in_chans"], num_classes=state["num_classes"])
        model.load_state_dict(state["state_dict"])
        models.append((int(path.parent.name), model.eval()))
    if not models:
        raise UserError(f"{run} holds no trained fold (folds/<k>/model.pt)")
    return config, models


def predict_files(run_dir: str | Path, files: list[str], device: torch.device) -> pd.DataFrame:
    """One row per file: ``file``, ``probability`` (mean over folds), ``fold_<k>`` per fold."""
    from ..data.preprocess import preprocess_file

    config, models = load_fold_models(run_dir)
    size = tuple(config["data"]["image_size"])
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
    table["probability"] = np.mean(list(per_fold.values()), axis=0)
    return pd.concat([table, pd.DataFrame(per_fold)], axis=1)
