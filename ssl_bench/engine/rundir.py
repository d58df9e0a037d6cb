"""The run directory (DESIGN.md contract) and its atomic writes.

```
<out>/<run-name>/config.yaml, env.json, folds.csv, summary.json, skipped.csv (if any)
<out>/<run-name>/folds/<k>/metrics.json, predictions.csv, model.pt
```
A fold's files are first written into ``folds/.<k>.tmp-<pid>/`` and the folder is renamed to
``folds/<k>`` only when all three exist, so a fold either exists completely or not at all and a
completed fold is never recomputed or rewritten.
"""
from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from ..errors import UserError
from ..fileio import atomic_write_text

FOLD_FILES = ("metrics.json", "predictions.csv", "model.pt")


def to_json(data: Any) -> str:
    """JSON with NaN written as null (valid JSON for every reader)."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(data), indent=2) + "\n"


class RunDir:
    """Paths and writers of one run directory."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @classmethod
    def create(cls, out: str | Path, name: str) -> "RunDir":
        path = Path(out).expanduser() / name
        try:
            (path / "folds").mkdir(parents=True, exist_ok=True)
            probe = path / ".write-probe"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise UserError(f"cannot write to output folder {path}: {exc.strerror or exc}") from None
        return cls(path)

    def fold_dir(self, k: int) -> Path:
        return self.path / "folds" / str(k)

    def fold_done(self, k: int) -> bool:
        d = self.fold_dir(k)
        return all((d / f).is_file() for f in FOLD_FILES)

    def completed_folds(self, n_folds: int) -> list[int]:
        return [k for k in range(n_folds) if self.fold_done(k)]

    def write_fold(self, k: int, metrics: dict, predictions: pd.DataFrame, model_state: dict) -> None:
        """Write a fold's three files into a temporary folder, then rename it into place."""
        final = self.fold_dir(k)
        if self.fold_done(k):
            return  # never rewrite a completed fold
        tmp = final.parent / f".{k}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        (tmp / "metrics.json").write_text(to_json(metrics))
        predictions.to_csv(tmp / "predictions.csv", index=False)
        torch.save(model_state, tmp / "model.pt")
        if self.fold_done(k):  # another process finished this fold meanwhile: keep its files
            shutil.rmtree(tmp, ignore_errors=True)
            return
        if final.exists():  # an incomplete leftover, never a complete fold (checked above)
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.replace(tmp, final)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not self.fold_done(k):  # lost a race to a complete fold is fine; anything else is not
                raise

    def read_metrics(self, k: int) -> dict:
        data = json.loads((self.fold_dir(k) / "metrics.json").read_text())
        return {key: (math.nan if v is None else v) for key, v in data.items()}

    def read_predictions(self, k: int) -> pd.DataFrame:
        return pd.read_csv(self.fold_dir(k) / "predictions.csv", dtype={"image_id": str, "patient_id": str})

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.path / name, to_json(data))

    def write_text(self, name: str, text: str) -> None:
        atomic_write_text(self.path / name, text)
