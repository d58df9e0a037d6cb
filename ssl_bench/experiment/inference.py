"""Scoring new images with a finished run: every fold's classifier (``model.pt``, loaded with
``weights_only=True``), the run's own preprocessing, the mean probability over folds, and the
call at the run's operating point (the mean of the folds' thresholds, each chosen on that fold's
training predictions).

Guardrails: the files are always scored, but one warning line each (``on_warning``) says when the
scores deserve no trust: a partial run (folds without a model), a run trained with the ``smoke``
profile (a smoke test, not a model), a run whose every scoring fold is degenerate on its
held-out images (:func:`~ssl_bench.experiment.operating_point.degenerate_reason`: constant
scores, or nearly all on one side of 0.5), and an input that does not look like one mammogram
view (:func:`~ssl_bench.data.image_checks.not_one_view`: e.g. several views side by side).

A run whose classifier scores a breast's two views together (``multiview``: it declares
``takes_view_pairs``) pairs the files by their DICOM tags, PatientID, ImageLaterality (or
Laterality) and ViewPosition, as its folds paired their images (:mod:`ssl_bench.data.breasts`);
a file without them (a PNG, a DICOM lacking a tag) is a one-view breast, said in one note line,
and each file gets its breast's score."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import torch

from ..data.breasts import ViewPairs, view_pairs
from ..data.image_checks import not_one_view
from ..data.preprocess import load_image, preprocess_image, stored_side
from ..errors import DataError, UserError
from ..models.classifiers import classifier_from_record
from ..training.view_pairs import predict_image_scores, takes_view_pairs
from .calibration import CALIBRATION_KEY, calibrate
from .model_file import load_model_record
from .operating_point import degenerate_reason
from .rundir import RunDir


def _size(value) -> tuple[int, int] | None:
    """``[height, width]`` as a pair of ints, or None when it is not one."""
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        return None
    return height, width


def load_fold_models(run_dir: str | Path) -> tuple[dict, list[tuple[int, torch.nn.Module]]]:
    """The run's config and ``(fold, classifier)`` for every fold that has a ``model.pt``. The
    config's ``data.image_size``, the size new images are preprocessed to, must be the size every
    model was trained at (its ``image_size``): a config edited after the run is one error line, not
    a ViT's assertion nor a CNN silently scoring images of another size."""
    rundir = RunDir.open(run_dir)
    config = rundir.read_config()
    config_yaml = rundir.path / "config.yaml"
    size = _size((config.get("data") or {}).get("image_size") if isinstance(config, dict) else None)
    if size is None:
        raise UserError(f"{config_yaml} has no valid data.image_size [height, width]: it is not the config "
                        f"this run wrote")
    models = []
    for k in rundir.folds_with_model():
        record = load_model_record(rundir.model_path(k))
        trained = _size(record["image_size"])
        if trained != size:
            at = f"{trained[0]}x{trained[1]}" if trained else repr(record["image_size"])
            raise UserError(f"the run's config does not match its model: {config_yaml} has data.image_size "
                            f"{size[0]}x{size[1]}, {rundir.model_path(k)} was trained at {at} (was config.yaml "
                            f"edited?); restore the config to score with this run")
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
                  on_warning: Callable[[str], None] | None = None) -> pd.DataFrame:
    """One row per file: ``file``, ``p_malignant`` (probability of malignancy, mean over folds),
    ``p_calibrated`` (the folds' calibrated probabilities, averaged: :func:`calibrated_probability`),
    ``threshold`` (the run's operating point), ``malignant`` (``p_malignant >= threshold``), and
    ``fold_<k>`` (fold k's probability) per fold; for a run of view pairs also ``partner``, the file
    scored with it as the other view of its breast (``""``: none). ``on_warning`` gets one line per guardrail that
    fires (see the module docstring); the files are scored all the same."""
    warn = on_warning or (lambda text: None)
    config, models = load_fold_models(run_dir)
    rundir = RunDir.open(run_dir)
    size = run_image_size(config)  # every model's (load_fold_models)
    n_folds = int((config.get("data") or {}).get("folds") or len(models))
    if len(models) < n_folds:
        warn(f"{run_dir} is partial: {len(models)} of {n_folds} folds have a trained model "
             f"(folds {', '.join(str(k) for k, _ in models)}); probabilities average those")
    if config.get("profile") == "smoke":
        warn(f"{run_dir} was trained with the smoke profile (a few epochs on tiny images, to test "
             f"the toolkit): its scores are a smoke test, not a model")
    records = fold_records(rundir, [k for k, _ in models])
    degenerate = degenerate_folds(rundir, records)
    if degenerate and all(degenerate.values()):
        warn(f"{run_dir} is degenerate: every fold's held-out scores were constant or nearly all on one "
             f"side of 0.5 ({'; '.join(f'fold {k}: {why}' for k, why in degenerate.items())}), so these "
             f"probabilities and calls say little about malignancy")
    batch, infos = read_files(files, size, warn)
    table = pd.DataFrame({"file": [str(f) for f in files]})
    pairs = None
    if any(takes_view_pairs(model) for _, model in models):
        pairs = files_view_pairs(infos, warn)
        partners = pairs.partners()
        table["partner"] = [str(files[j]) if j >= 0 else "" for j in partners]
    per_fold = {}
    for k, model in models:
        per_fold[f"fold_{k}"] = predict_image_scores(model.to(device), batch, pairs, device)
    table["p_malignant"] = np.mean(list(per_fold.values()), axis=0)
    table["p_calibrated"] = calibrated_probability(records, per_fold)
    table["threshold"] = operating_threshold_of(records, [k for k, _ in models])
    table["malignant"] = table["p_malignant"] >= table["threshold"]
    return pd.concat([table, pd.DataFrame(per_fold)], axis=1)


def files_view_pairs(infos: list[dict], warn: Callable[[str], None]) -> ViewPairs:
    """The breasts and CC-MLO pairs of files from their tags (``patient_id``, ``laterality``,
    ``view`` of :func:`~ssl_bench.data.preprocess.load_image`'s info); a file without a patient or
    a laterality is a breast of its own, and ``warn`` gets one line saying how many are."""
    patients = [str(i.get("patient_id", "") or "") for i in infos]
    sides = [str(i.get("laterality", "") or "") if p else "" for i, p in zip(infos, patients)]
    views = [str(i.get("view", "") or "") for i in infos]
    untagged = sum(1 for p, s in zip(patients, sides) if not (p and s))
    if untagged:
        warn(f"{untagged} of {len(infos)} file(s) lack the DICOM tags PatientID and ImageLaterality (or Laterality): "
             f"each is scored as a one-view breast, without a partner view")
    return view_pairs(patients, sides, views)


def load_files(files: list[str], size: tuple[int, int], warn: Callable[[str], None]) -> torch.Tensor:
    """The files decoded and preprocessed as the run's training images were (``(N, 1, H, W)``
    float32 in [0, 1]); ``warn`` gets a line for each that does not look like one mammogram view.

    Raises:
        DataError: a file cannot be read (every such file named, one line for one file).
    """
    return read_files(files, size, warn)[0]


def read_files(files: list[str], size: tuple[int, int], warn: Callable[[str], None]) -> tuple[torch.Tensor, list[dict]]:
    """:func:`load_files`, and each file's info (its tags: :func:`~ssl_bench.data.preprocess.load_image`)."""
    images, infos, problems = [], [], []
    for f in files:
        try:
            img, info = load_image(f)
            images.append(preprocess_image(img, size, stored_side(info)))
            infos.append(info)
        except (DataError, OSError, ValueError) as exc:
            reason = str(exc)
            problems.append(reason if reason.startswith(str(f)) else f"{f}: {reason}")
            continue
        doubt = not_one_view(img)
        if doubt:
            warn(f"{f} does not look like one mammogram view ({doubt}); it is scored as one, "
                 f"but its score may mean nothing")
    if len(problems) == 1:  # one line
        raise DataError(f"cannot read an image: {problems[0]}")
    if problems:
        raise DataError("cannot read these images:\n" + "\n".join(f"  - {p}" for p in problems))
    return torch.from_numpy(np.stack(images).astype(np.float32)).unsqueeze(1), infos


def run_image_size(config: dict) -> tuple[int, int]:
    """The ``(height, width)`` a run's images are preprocessed to (checked by :func:`load_fold_models`)."""
    size = _size(config["data"]["image_size"])
    assert size is not None
    return size


def fold_records(rundir: RunDir, folds: list[int]) -> dict[int, dict]:
    """The ``metrics.json`` of each of ``folds`` whose results exist, read once for everything
    predicting with the run needs of them (calibrator, operating threshold, degeneracy)."""
    return {k: rundir.read_metrics(k) for k in folds if rundir.fold_done(k)}


def calibrated_probability(records: dict[int, dict], per_fold: dict[str, np.ndarray]) -> np.ndarray:
    """The mean over folds of each fold's probability calibrated by that fold's calibrator (fitted
    on its training images: :mod:`ssl_bench.experiment.calibration`); NaN when a fold has none (a
    run written before calibration, or a fold without results)."""
    calibrated = []
    for name, scores in per_fold.items():
        k = int(name.split("_")[1])
        params = records.get(k, {}).get(CALIBRATION_KEY)
        if not (isinstance(params, dict) and all(isinstance(params.get(x), (int, float)) for x in ("a", "b"))):
            return np.full(len(scores), np.nan)
        calibrated.append(calibrate(params, scores))
    return np.mean(calibrated, axis=0)


def fold_operating_thresholds(records: dict[int, dict], folds: list[int]) -> dict[int, float]:
    """Each fold's operating threshold, chosen on its training predictions (``metrics.json``
    ``op_threshold``; 0.5 for a fold without results or a run that predates them)."""
    out = {}
    for k in folds:
        value = records.get(k, {}).get("op_threshold", 0.5)
        out[k] = 0.5 if value is None or value != value else float(value)
    return out


def operating_threshold_of(records: dict[int, dict], folds: list[int]) -> float:
    """The run's operating point for the fold ensemble: the mean of the folds' operating
    thresholds (:func:`fold_operating_thresholds`)."""
    return float(np.mean(list(fold_operating_thresholds(records, folds).values())))


def degenerate_folds(rundir: RunDir, records: dict[int, dict]) -> dict[int, str]:
    """For each fold of ``records`` (:func:`fold_records`: those whose results exist), why its
    held-out scores are degenerate (``""``: they are not): the ``degenerate`` of its
    ``metrics.json``, or, for runs written before it was recorded,
    :func:`~ssl_bench.experiment.operating_point.degenerate_reason` of its ``predictions.csv``."""
    out = {}
    for k, metrics in records.items():
        why = metrics.get("degenerate")
        out[k] = why if isinstance(why, str) else degenerate_reason(rundir.read_predictions(k)["score"])
    return out
