"""The built-in synthetic mammography dataset (``synthetic``, the default): INbreast-shaped
(387 images, 287 benign / 100 malignant, 115 patients) and generated from a seed by
:mod:`ssl_bench.data.synthetic_mammo`, so every command runs with no download.

Generated images are kept in the image cache's shards (:mod:`ssl_bench.data.cache`), keyed by
every generation parameter: a generated set loads in well under a second, memory-mapped, and a
set of any size is generated one shard at a time (an interrupted generation resumes at the first
missing shard). The sample table is planned anew each time (it costs no rendering).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ..console import make_console
from ..registry import DATASETS
from . import synthetic_mammo
from .base import SAMPLE_COLUMNS, LoadedDataset, MammoDataset
from .cache import sharded_images, shard_folder

CACHE_VERSION = 2


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

    def _identity(self) -> str:
        return json.dumps({"v": CACHE_VERSION, "generator": synthetic_mammo.VERSION, "size": list(self.image_size),
                           **self.generation}, sort_keys=True)

    def legacy_cache_path(self) -> Path:
        """Where version 1 kept this set (one ``.npz``): removed when the set is loaded."""
        key = json.dumps({"v": 1, "generator": synthetic_mammo.VERSION, "size": list(self.image_size),
                          **self.generation}, sort_keys=True)
        h, w = self.image_size
        return self.cache_dir / "synthetic" / f"synthetic-{h}x{w}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"

    def scan(self):
        table, _ = synthetic_mammo.generate_lazily(image_size=self.image_size, **self.generation)
        return table.assign(path=""), []

    def load(self) -> LoadedDataset:
        table, render = synthetic_mammo.generate_lazily(image_size=self.image_size, **self.generation)
        table = table.assign(path="")  # generated images have no file
        identity = self._identity()
        keys = [hashlib.sha1(f"{identity}|{i}".encode()).hexdigest() for i in range(len(table))]

        def produce(rows):
            for i in rows:
                yield i, render(i), ""

        legacy = self.legacy_cache_path()
        images, _ = sharded_images(shard_folder(self.cache_dir, self.image_size), keys,
                                   table["image_id"].tolist(), self.image_size, produce)
        if legacy.is_file():  # the format of version 1: rebuilt above, so its file goes
            legacy.unlink(missing_ok=True)
            make_console(stderr=True).print(f"cache: the synthetic set was rebuilt in the sharded cache; removed {legacy}",
                                            soft_wrap=True, highlight=False, markup=False)
        return LoadedDataset(self.name, table[list(SAMPLE_COLUMNS)].reset_index(drop=True), images)
