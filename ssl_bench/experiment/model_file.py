"""The ``model.pt`` file format: the one module that writes a fold's trained classifier and reads
it back. Kept apart from the run directory (:mod:`ssl_bench.experiment.rundir`, which says where
the file lies) because it needs torch and the backbone helpers: reading a finished run's results
for a report needs neither.

``model.pt`` (:data:`MODEL_FORMAT`, version :data:`MODEL_VERSION`) is a plain dict of tensors and
plain values that ``torch.load(..., weights_only=True)`` reads: ``format``, ``version``,
``architecture``, ``backbone``, ``in_chans``, ``num_classes``, ``image_size`` ``[height, width]``,
``input_norm`` and ``state_dict`` of the downstream classifier. ``architecture`` (version 2) says
what to build before loading the ``state_dict`` (:func:`ssl_bench.models.classifiers.classifier_from_record`):
``None`` for a timm backbone, which ``backbone`` names; else a toolkit classifier's dict of plain
values, its ``name`` and options (``{"name": "nonspatial", "bins": 32, "threshold": 0.05}``), and
``backbone`` is ``None``. ``input_norm`` (version 3) is the input normalisation of the classifier's
timm backbone (``{"mean": [...], "std": [...]}``: a backbone built on pretrained weights normalises
its input as they expect, :func:`ssl_bench.models.backbones.input_normalisation`), ``None`` for a
randomly initialised one or a classifier without a backbone. ``state_sha256`` (version 4) is the
checksum of the ``state_dict`` (:func:`ssl_bench.training.state_digest.state_digest`), checked when
the file is read: a damaged file is refused in one line rather than scoring with other weights.
Version 3 files (no checksum, nothing to check), version 2 files (no ``input_norm``,
read as ``None``: written before pretrained backbones normalised their input), version 1 files (no
``architecture`` either) and files written before the version field existed (read as version 0)
load as before; version 1 and 0 files hold timm backbones.
"""
from __future__ import annotations

import io
import pickle
from pathlib import Path

import torch

from ..errors import UserError
from ..models.backbones import check_input_norm, input_normalisation
from ..training.state_digest import state_digest

MODEL_FORMAT = "ssl-bench-model"
MODEL_VERSION = 4
MODEL_KEYS = ("backbone", "in_chans", "num_classes", "image_size", "state_dict")
MODEL_KEYS_V2 = MODEL_KEYS + ("architecture",)  # from version 2 on
MODEL_KEYS_V3 = MODEL_KEYS_V2 + ("input_norm",)  # from version 3 on
MODEL_KEYS_V4 = MODEL_KEYS_V3 + ("state_sha256",)  # from version 4 on


def model_record(backbone: str, image_size: tuple[int, int] | list[int], classifier: torch.nn.Module) -> dict:
    """What ``model.pt`` holds for a trained downstream classifier (1 input channel, 1 logit):
    the classifier's ``architecture`` attribute (a dict of plain values, see
    :mod:`ssl_bench.models.classifiers`) when it has one, else ``backbone``, the run's timm
    backbone, which it then is; and ``input_norm``, the input normalisation of the timm backbone
    in it (:func:`~ssl_bench.models.backbones.input_normalisation`: ``None`` without one)."""
    architecture = getattr(classifier, "architecture", None)
    if architecture is not None:
        if not (isinstance(architecture, dict) and isinstance(architecture.get("name"), str)):
            raise ValueError(f"{type(classifier).__name__}.architecture must be a dict with a 'name', "
                             f"got {architecture!r}")
        architecture = dict(architecture)
    return {
        "format": MODEL_FORMAT,
        "version": MODEL_VERSION,
        "architecture": architecture,
        "backbone": backbone if architecture is None else None,
        "in_chans": 1,
        "num_classes": 1,
        "image_size": list(image_size),
        "input_norm": input_normalisation(classifier),
        "state_dict": (state := {n: t.detach().cpu() for n, t in classifier.state_dict().items()}),
        "state_sha256": state_digest(state),
    }


def model_bytes(record: dict) -> bytes:
    """The bytes of ``model.pt`` for ``record`` (:func:`model_record`), which
    :meth:`ssl_bench.experiment.rundir.RunDir.write_fold` writes with the fold's results: the run
    directory places the file without needing torch."""
    buffer = io.BytesIO()
    torch.save(record, buffer)
    return buffer.getvalue()


def load_model_record(path: Path) -> dict:
    """Read and check a ``model.pt`` (tensors and plain values only: no code is run); a file of
    version 0 or 1 gets ``architecture = None`` (a timm backbone), one of version 0 to 2
    ``input_norm = None`` (no input normalisation)."""
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's message suggests weights_only=False: never here
        raise UserError(f"not a ssl-bench model file: {path} (refused: it holds objects other than "
                        f"tensors and plain values, which could run code when loaded)") from None
    except Exception as exc:
        raise UserError(f"not a ssl-bench model file: {path} ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(record, dict) or record.get("format", MODEL_FORMAT) != MODEL_FORMAT:
        raise UserError(f"not a ssl-bench model file: {path}")
    version = record.get("version", 0)
    if not isinstance(version, int) or version > MODEL_VERSION:
        raise UserError(f"{path} is a model file of version {version!r}; this ssl-bench reads up to "
                        f"version {MODEL_VERSION} (upgrade ssl-bench)")
    keys = MODEL_KEYS_V4 if version >= 4 else MODEL_KEYS_V3 if version >= 3 else MODEL_KEYS_V2 if version >= 2 else MODEL_KEYS
    missing = [k for k in keys if k not in record]
    if missing:
        raise UserError(f"not a ssl-bench model file: {path} (missing {', '.join(missing)})")
    if version >= 4 and record["state_sha256"] != state_digest(record["state_dict"]):
        raise UserError(f"{path} is damaged: the checksum of its weights does not match them (a flipped or "
                        f"overwritten byte); train the fold again or restore the file from a copy")
    if version < 2:
        record["architecture"] = None
    if version < 3:
        record["input_norm"] = None
    if record["input_norm"] is not None:
        try:
            record["input_norm"] = check_input_norm(record["input_norm"])
        except ValueError as exc:
            raise UserError(f"not a ssl-bench model file: {path} ({exc})") from None
    architecture = record["architecture"]
    if architecture is None and not isinstance(record["backbone"], str):
        raise UserError(f"not a ssl-bench model file: {path} (names neither a backbone nor an architecture)")
    if architecture is not None and not (isinstance(architecture, dict) and isinstance(architecture.get("name"), str)):
        raise UserError(f"not a ssl-bench model file: {path} (architecture must be a dict with a name, "
                        f"found {architecture!r})")
    return record
