"""The built-in synthetic mammography dataset (``synthetic``, the default): INbreast-shaped
(387 images, 287 benign / 100 malignant, 115 patients) and generated from a seed by
:mod:`ssl_bench.data.synthetic_mammo`, so every command runs with no download.

Generated sets are cached on disk under ``<cache_dir>/synthetic/`` keyed by every generation
parameter; a cached set loads in well under a second.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_write
from ..registry import DATASETS
from . import synthetic_mammo
from .base import SAMPLE_COLUMNS, LoadedDataset, MammoDataset
from .problem import Problem

CACHE_VERSION = 1


@DATASETS.register("synthetic")
class SyntheticMammography(MammoDataset):
    """Built-in synthetic mammograms shaped like INbreast (no download needed)."""

    def __init__(
        self,
        n_patients: int = 115,
        n_benign: int = 287,
        n_malignant: int = 100,
        seed: int = 0,
        **settings,
    ):
        super().__init__(**settings)
        self.generation = {
            "n_patients": int(n_patients),
            "n_benign": int(n_benign),
            "n_malignant": int(n_malignant),
            "seed": int(seed),
        }

    def cache_path(self) -> Path:
        key = json.dumps(
            {"v": CACHE_VERSION, "generator": synthetic_mammo.VERSION, "size": list(self.image_size), **self.generation}, sort_keys=True
        )
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        h, w = self.image_size
        return self.cache_dir / "synthetic" / f"synthetic-{h}x{w}-{digest}.npz"

    def scan(self) -> tuple[pd.DataFrame, list[Problem]]:
        table, _ = self._generate_or_load()
        return table, []

    def _generate_or_load(self) -> tuple[pd.DataFrame, np.ndarray]:
        path = self.cache_path()
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as data:
                    table = pd.read_csv(io.StringIO(str(data["table"])), dtype={"image_id": str, "patient_id": str})
                    return table, data["images"]
            except (OSError, ValueError, KeyError):
                path.unlink(missing_ok=True)  # a damaged cache entry is regenerated
        table, images = synthetic_mammo.generate(image_size=self.image_size, **self.generation)
        table = table.assign(path="")
        try:
            atomic_write(path, lambda fh: np.savez(fh, images=images, table=np.array(table.to_csv(index=False))))
        except OSError:
            pass  # an unwritable cache only costs regeneration next time
        return table, images

    def load(self) -> LoadedDataset:
        table, images = self._generate_or_load()
        table = table.assign(path="")  # generated images have no file
        return LoadedDataset(self.name, table[list(SAMPLE_COLUMNS)].reset_index(drop=True), images)
