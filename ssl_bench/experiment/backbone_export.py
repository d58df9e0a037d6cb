"""``ssl-bench export``: one fold's backbone of a finished run, as a timm state dict in safetensors
with its provenance (the file format: :mod:`ssl_bench.models.backbone_file`), for timm
(``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=...))``) or another
run (``--pretrained PATH``).

Which backbone (``stage``, :data:`~ssl_bench.models.classifiers.BACKBONE_STAGES`):

- ``finetuned``: the backbone of the fold's classifier (``model.pt``) as the downstream stage
  trained it (``finetune``, ``multitask``, ``collab``), its 1-logit malignancy head kept
  (``num_classes`` 1);
- ``pretext``: the backbone as the pretext stage left it, its head dropped (``num_classes`` 0: the
  stage never trained one). A run keeps it where the fold's classifier holds it frozen (the
  probes ``linear`` and ``knn``: ``model.pt``; with pretext ``none``, the initialisation) or
  where the stage was trained on a pool (``--pretext-data``: the pretext cache,
  ``<out>/.pretext-cache/<key>.pt``, named by the fold's ``metrics.json``). A ``finetune`` run
  on its folds' own images trains that stage in memory and fine-tunes it: nothing keeps it, and
  asking for it is one line that says so.

By default (``stage=None``), the backbone the fold's classifier scores with, at whichever stage
it is (fine-tuned, or a probe's pretext backbone); the provenance says which.

The state dict is in timm's own keys (:func:`~ssl_bench.models.backbones.timm_state_dict`), with
the stem as trained: 1 input channel for a backbone trained from a random initialisation, timm's
RGB stem for one built on pretrained weights, whose input normalisation (``model.pt``'s
``input_norm``) goes into the provenance. The provenance's ``timm`` entry gives the arguments that
rebuild the backbone in timm (:func:`timm_load_call` writes the call out) so that it computes
what the fold's backbone computes: a 1-channel backbone takes the grey image as it is
(``in_chans=1``; the overlay's ``input_size`` says 1 channel, so timm loads the stem unchanged,
and ``in_chans=3`` would get timm's RGB copy of it, scaled by 1/3); an RGB one takes the grey
image replicated to RGB and normalised with ``mean``/``std`` (``in_chans=3``;
``in_chans=1`` would make timm sum the stem into one channel, which drops the normalisation's
offset: not the same function). ``--pretrained PATH`` rebuilds exactly that, normalisation
included (:func:`~ssl_bench.models.backbones.create_backbone` reads it from the file's header).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
from torch import nn

from .. import __version__
from ..errors import UserError
from ..models.backbone_file import write_backbone_file
from ..models.backbones import create_backbone, image_size_kwargs, timm_state_dict
from ..models.classifiers import (BACKBONE_STAGES, FINETUNED, PRETEXT, backbone_head_trained, classifier_backbone,
                                  classifier_from_record)
from ..training.pretext_cache import read_checkpoint
from .model_file import load_model_record
from .pretext_pool import CACHE_FOLDER
from .rundir import MODEL_FILE, RunDir


@dataclass
class ExportedBackbone:
    """What :func:`export_backbone` wrote."""

    path: Path  # the safetensors file
    sidecar: Path  # its provenance as JSON
    provenance: dict[str, Any]


def export_backbone(run_dir: str | Path, out: str | Path, fold: int | None = None,
                    stage: str | None = None) -> ExportedBackbone:
    """Write fold ``fold``'s backbone of the run at ``run_dir`` to ``out`` (see the module docstring).

    Args:
        run_dir: a run directory with at least one trained fold (``folds/<k>/model.pt``).
        out: the file to write, ending in ``.safetensors``; its provenance goes beside it as ``.json``.
        fold: the fold (default: the lowest with a ``model.pt``).
        stage: ``"pretext"``, ``"finetuned"``, or None for the classifier's own backbone.

    Returns:
        The files written and the provenance.

    Raises:
        UserError: no trained fold, no such fold, a classifier without a timm backbone, a stage
            the run did not keep (one line naming the runs that keep it), a damaged file.
    """
    if stage is not None and stage not in BACKBONE_STAGES:
        raise UserError(f"unknown stage {stage!r}; one of {', '.join(BACKBONE_STAGES)}")
    rundir = RunDir.open(run_dir)
    trained = rundir.folds_with_model()
    if not trained:
        raise UserError(f"{rundir.path} holds no trained fold (folds/<k>/model.pt): nothing to export")
    k = trained[0] if fold is None else int(fold)
    if k not in trained:
        raise UserError(f"{rundir.path} has no trained fold {k} (folds with a model.pt: "
                        f"{', '.join(map(str, trained))})")
    config = rundir.read_config()
    record = load_model_record(rundir.model_path(k))
    classifier = classifier_from_record(record)
    classifier.load_state_dict(record["state_dict"])
    found = classifier_backbone(classifier)
    name = (record.get("architecture") or {}).get("name") or "timm"
    if found is None:
        raise UserError(f"{rundir.path} fold {k}: its classifier ({name}) holds no timm backbone to export")
    backbone, kept = found
    wanted = stage or kept
    source = f"folds/{k}/{MODEL_FILE}"
    if wanted == PRETEXT and kept != PRETEXT:
        backbone, source = _cached_pretext_backbone(rundir, k, record, config)
    elif wanted == FINETUNED and kept != FINETUNED:
        raise UserError(f"{rundir.path} fold {k}: its classifier ({name}) never fine-tuned its backbone, which "
                        f"is the pretext stage's, frozen; export it with --stage pretext")
    with_head = wanted == FINETUNED and backbone_head_trained(classifier)
    if not with_head:  # the pretext stage's head, or a fused classifier's unused one: never trained
        cast(Any, backbone).reset_classifier(0)
    state, norm = timm_state_dict(backbone)
    provenance = _provenance(rundir, k, config, record, wanted, source, norm, 1 if with_head else 0)
    sidecar = write_backbone_file(out, state, provenance)
    return ExportedBackbone(Path(out), sidecar, provenance)


def _cached_pretext_backbone(rundir: RunDir, k: int, record: dict, config: dict) -> tuple[nn.Module, str]:
    """The fold's pretext stage from the pretext cache (a ``--pretext-data`` run), rebuilt as the
    run built its backbone (its ``model.pt``'s input normalisation and image size)."""
    pool = rundir.read_metrics(k).get("pretext_pool")
    key = pool.get("cache_key") if isinstance(pool, dict) else None
    if not isinstance(key, str):
        raise UserError(
            f"{rundir.path} fold {k} does not keep its pretext-stage backbone: it trained the pretext stage on "
            f"the fold's images in memory and fine-tuned it. Runs that keep it: the frozen probes (--transfer "
            f"linear or knn: model.pt holds it) and runs pretrained on a pool (--pretext-data: the pretext "
            f"cache); this run's fine-tuned backbone exports with --stage finetuned")
    folders = [rundir.path.parent / CACHE_FOLDER, Path(str(config.get("out") or ".")).expanduser() / CACHE_FOLDER]
    for folder in dict.fromkeys(folders):
        path = folder / f"{key}.pt"
        state = read_checkpoint(path, key)
        if state is not None:
            backbone = create_backbone(str(record["backbone"]), image_size=record["image_size"],
                                       input_norm=record["input_norm"])
            try:
                backbone.load_state_dict(state)
            except RuntimeError as exc:
                raise UserError(f"{path}: the cached pretext stage does not fit the backbone "
                                f"'{record['backbone']}' ({str(exc).strip().splitlines()[0]})") from None
            return backbone, f"{CACHE_FOLDER}/{key}.pt"
    raise UserError(f"{rundir.path} fold {k} pretrained on a pool whose cached stage ({key}.pt) is in none of "
                    f"{', '.join(str(f) for f in dict.fromkeys(folders))}: the cache was removed or the run moved "
                    f"without it")


def _provenance(rundir: RunDir, k: int, config: dict, record: dict, stage: str, source: str,
                norm: dict[str, list[float]] | None, num_classes: int) -> dict[str, Any]:
    """The provenance written with the backbone (module docstring of :mod:`ssl_bench.models.backbone_file`)."""
    backbone = str(record["backbone"] or (record.get("architecture") or {}).get("backbone"))
    image_size = [int(v) for v in record["image_size"]]
    in_chans = 1 if norm is None else len(norm["mean"])
    metrics = rundir.read_metrics(k)
    folds = rundir.read_folds()
    data = config.get("data") or {}
    model = config.get("model") or {}
    sizing = {key: list(v) if isinstance(v, tuple) else v for key, v in image_size_kwargs(backbone, image_size).items()}
    return {
        "backbone": backbone,
        "stage": stage,
        "in_chans": in_chans,
        "input_norm": norm,
        "num_classes": num_classes,
        "image_size": image_size,
        "timm": {
            "model_name": backbone,
            "kwargs": {"in_chans": in_chans, "num_classes": num_classes, **sizing},
            "pretrained_cfg_overlay": {
                "input_size": [in_chans, *image_size],
                "mean": norm["mean"] if norm else [0.0],
                "std": norm["std"] if norm else [1.0],
                "num_classes": num_classes,
            },
        },
        "run": {
            "path": str(rundir.path),
            "method": config.get("method") or config.get("name"),
            "pretext": config.get("pretext"),
            "transfer": config.get("transfer"),
            "pretrained": model.get("pretrained"),
            "profile": config.get("profile"),
            "seed": config.get("seed"),
            "pretext_epochs": metrics.get("pretext_epochs"),
            "epochs": metrics.get("epochs"),
        },
        "data": {
            "dataset": data.get("dataset"),
            "split": data.get("split"),
            "folds": data.get("folds"),
            "fold": k,
            # the folds whose images trained it (-1: training-only images of a given split)
            "trained_on_folds": sorted(int(f) for f in np.unique(folds["fold"]) if int(f) != k),
            "label_fraction": metrics.get("label_fraction"),
            "n_train_images": metrics.get("n_train_images"),
            "n_train_patients": metrics.get("n_train_patients"),
            **({"pretext_pool": _plain(metrics["pretext_pool"])} if isinstance(metrics.get("pretext_pool"), dict)
               else {}),
        },
        "source": source,
        "ssl_bench": __version__,
    }


def _plain(value: Any) -> Any:
    """JSON values with NaN as None (``read_metrics`` reads a null as NaN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def timm_load_call(provenance: dict[str, Any], path: str | Path) -> str:
    """The Python call that loads an exported backbone into timm, as the provenance's ``timm``
    entry says (what ``ssl-bench export`` prints).

    Args:
        provenance: an exported backbone's provenance.
        path: the backbone file.

    Returns:
        ``timm.create_model(...)`` as one line of Python.
    """
    spec = provenance["timm"]

    def py(value: Any) -> str:
        return repr(tuple(value)) if isinstance(value, list) else repr(value)

    kwargs = ", ".join(f"{k}={py(v)}" for k, v in spec["kwargs"].items())
    overlay = ", ".join([f"file={str(path)!r}", *(f"{k}={py(v)}" for k, v in spec["pretrained_cfg_overlay"].items())])
    return (f"timm.create_model({spec['model_name']!r}, pretrained=True, {kwargs}, "
            f"pretrained_cfg_overlay=dict({overlay}))")
