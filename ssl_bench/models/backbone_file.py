"""The backbone file: a trained backbone as a timm state dict in safetensors, with its provenance.

``ssl-bench export`` (:mod:`ssl_bench.experiment.backbone_export`) writes it; ``--pretrained PATH``
(:func:`ssl_bench.models.backbones.create_backbone`) and timm itself read it:
``timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=PATH, ...))``.

Format ``ssl-bench-backbone``, version :data:`VERSION`: a safetensors file (Hugging Face's format:
tensors and a JSON header, nothing that runs code when read) whose tensors are a timm backbone's
state dict in timm's own keys (a pretrained backbone's :class:`~ssl_bench.models.backbones.NormalisedInput`
stem renamed back: :func:`~ssl_bench.models.backbones.timm_state_dict`), and whose header's
metadata holds one entry, :data:`METADATA_KEY`, the provenance as JSON: ``format``, ``version``,
``backbone`` (the timm name), ``in_chans`` (the stem's input channels: 1 for a backbone trained
from a random initialisation, 3 for one built on RGB weights), ``input_norm`` (``{"mean", "std"}``
of the grey image replicated to RGB, or null), ``num_classes`` (1: the fold's trained malignancy
head is kept; 0: dropped), ``image_size`` and what the exporter adds (run, fold, stage, pretext,
dataset, folds, ...). The same JSON is written beside the file (``<name>.json``) to be read by
people; a loader reads the header, which cannot be separated from the weights.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from ..errors import UserError
from ..fileio import atomic_write_bytes, atomic_write_text

FORMAT = "ssl-bench-backbone"
VERSION = 1
#: the key of the provenance in the safetensors header's metadata
METADATA_KEY = "ssl_bench"
SUFFIX = ".safetensors"


def sidecar_path(path: str | Path) -> Path:
    """The provenance JSON written beside a backbone file: ``backbone.safetensors`` -> ``backbone.json``.

    Args:
        path: the backbone file.

    Returns:
        The JSON's path.
    """
    return Path(path).with_suffix(".json")


def write_backbone_file(path: str | Path, state: dict[str, torch.Tensor], provenance: dict[str, Any]) -> Path:
    """Write ``state`` (timm keys) as safetensors with ``provenance`` in its header, and the same
    provenance as JSON beside it; each file atomically.

    Args:
        path: the file to write; its name must end in ``.safetensors`` (what timm's loader reads as such).
        state: the backbone's state dict in timm's keys.
        provenance: plain JSON values; ``format`` and ``version`` are added.

    Returns:
        The provenance JSON's path.

    Raises:
        UserError: a name without the ``.safetensors`` ending.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        raise UserError(f"{path}: a backbone file's name ends in {SUFFIX} (timm reads it by that ending)")
    record = {"format": FORMAT, "version": VERSION, **provenance}
    text = json.dumps(record, indent=2) + "\n"
    # each tensor its own contiguous copy: safetensors refuses tensors that share memory
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    atomic_write_bytes(path, safetensors_bytes(tensors, metadata={METADATA_KEY: json.dumps(record)}))
    sidecar = sidecar_path(path)
    atomic_write_text(sidecar, text)
    return sidecar


def read_provenance(path: str | Path) -> dict[str, Any] | None:
    """The provenance in a backbone file's header, or None for any other weights file (a
    ``.pth``, a safetensors file without it, one that cannot be read: timm's loader says why).

    Args:
        path: a weights file.

    Returns:
        The provenance dict (``format`` :data:`FORMAT`), or None.

    Raises:
        UserError: a backbone file of a later version than this ssl-bench reads.
    """
    path = Path(path)
    if path.suffix != SUFFIX:
        return None
    try:
        with safe_open(str(path), framework="pt") as fh:
            text = (fh.metadata() or {}).get(METADATA_KEY)
        record = json.loads(text) if text else None
    except Exception:  # not safetensors, or damaged: the loader's own error names the file
        return None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        return None
    version = record.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise UserError(f"{path} is a backbone file of version {version!r}; this ssl-bench reads up to "
                        f"version {VERSION} (upgrade ssl-bench)")
    return record


def exported_input_norm(path: str | Path) -> dict[str, list[float]] | None:
    """The input normalisation an exported backbone's stem was trained behind (``input_norm`` of
    its provenance), or None (no provenance, or a stem without one).

    Args:
        path: a weights file.

    Returns:
        ``{"mean": [...], "std": [...]}`` or None.
    """
    record = read_provenance(path)
    norm = record.get("input_norm") if record else None
    return norm if isinstance(norm, dict) else None
