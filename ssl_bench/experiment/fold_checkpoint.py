"""The fold checkpoint file format, ``folds/.<k>.checkpoint.pt``: the one module that writes and
reads it. Kept apart from the run directory (:mod:`ssl_bench.experiment.rundir`, which names the
file and removes it once the fold is complete) because it needs torch: reading a finished run for
a report does not.

The file is fold ``k``'s training state every few epochs (``train.checkpoint_every``, the store of
:class:`ssl_bench.training.checkpoint.FoldCheckpoints`), so that a killed run resumes the fold where
it stopped with the same results. It is written atomically, stamped with a digest of the settings
that decide the results (:func:`~ssl_bench.experiment.rundir.config_key`: a checkpoint of another
configuration is never used), the fold and the device type, with the checksum of its state
(:func:`~ssl_bench.training.state_digest.state_digest`), and read with
``torch.load(..., weights_only=True)``. A checkpoint that cannot be read or whose checksum does not
match (flipped bytes) is deleted, one saved by another configuration, version or device type is
not used, each with one warning line saying why, and the fold trains from the start.
"""
from __future__ import annotations

from pathlib import Path

import warnings

import torch

from ..config import Config
from ..errors import ToolkitWarning, exception_text
from ..fileio import OutOfSpace, atomic_write
from ..training.state_digest import state_digest
from .rundir import RunDir, config_key

CHECKPOINT_FORMAT = "ssl-bench-checkpoint"
# version 2: backbones built on pretrained weights normalise their input (a NormalisedInput stem,
# other state_dict keys); version 3: the state's checksum (``state_sha256``). A checkpoint of an
# earlier version is not used, its fold starts over
CHECKPOINT_VERSION = 3


class FoldCheckpointFile:
    """Fold ``k``'s training checkpoint: a dict of ``format``, ``version``, ``key``
    (:func:`~ssl_bench.experiment.rundir.config_key`), ``fold``, ``device`` (the device type that
    trained it: a checkpoint of another type is not used, as its precision and optimiser settings
    differ), the training ``state``, tensors and plain values only, and ``state_sha256``, its
    checksum."""

    def __init__(self, path: Path, fold: int, key: str, device_type: str):
        self.path, self.fold, self.key, self.device_type = path, fold, key, device_type
        self.label = f"fold {fold} (checkpoint {path})"

    def _stamp(self) -> dict:
        return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "key": self.key, "fold": self.fold,
                "device": self.device_type}

    def load(self) -> dict | None:
        """The saved state, or None without a usable checkpoint of this fold and configuration,
        with one warning line saying why where there is a file: one that cannot be read or is
        damaged is deleted; one of another configuration, fold, version or device type is left
        (the fold's first checkpoint replaces it). Either way the fold starts over."""
        if not self.path.is_file():
            return None
        try:
            record = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unreadable (truncated, not ours, another torch): training from the start is safe
            self._drop(f"cannot be read ({exception_text(exc)})")
            return None
        if not isinstance(record, dict) or record.get("format") != CHECKPOINT_FORMAT:
            self._drop("is not a ssl-bench checkpoint")
            return None
        stamp = self._stamp()
        other = [k for k in ("version", "key", "fold", "device") if record.get(k) != stamp[k]]
        if other:
            what = {"version": "an earlier version of ssl-bench", "key": "another configuration",
                    "fold": "another fold", "device": f"a device other than {self.device_type}"}
            warnings.warn(f"{self.label} was saved by {what[other[0]]}: not used, the fold trains from the start",
                          ToolkitWarning, stacklevel=2)
            return None
        if record.get("state_sha256") != state_digest(record.get("state")):
            self._drop("is damaged (its checksum does not match its content)")
            return None
        return record["state"]

    def _drop(self, why: str) -> None:
        self.discard()
        warnings.warn(f"{self.label} {why}: deleted, the fold trains from the start", ToolkitWarning, stacklevel=3)
        return None

    def discard(self) -> None:
        """Delete the checkpoint (one whose state cannot be restored: the fold starts over)."""
        self.path.unlink(missing_ok=True)

    def save(self, state: dict) -> None:
        """Replace the checkpoint atomically (a kill while saving leaves the previous one)."""
        record = {**self._stamp(), "state": state, "state_sha256": state_digest(state)}
        try:
            atomic_write(self.path, lambda fh: torch.save(record, fh))
        except OutOfSpace as exc:  # the previous checkpoint, if any, is untouched: the fold resumes there
            previous = f"fold {self.fold}'s previous checkpoint is kept" if self.path.is_file() else ""
            raise exc.keeping(previous) from None


def fold_checkpoint(rundir: RunDir, k: int, cfg: Config, device_type: str) -> FoldCheckpointFile:
    """Fold ``k``'s training checkpoint in ``rundir`` for configuration ``cfg`` trained on ``device_type``."""
    return FoldCheckpointFile(rundir.checkpoint_path(k), k, config_key(cfg), device_type)
