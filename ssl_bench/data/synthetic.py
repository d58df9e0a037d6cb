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
from .base import LoadedDataset, MammoDataset, sample_columns
from .cache import sharded_images, shard_folder
from .folder import UNLABELLED

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
        difficulty: str | float = "standard",
        **settings,
    ):
        """
        Args:
            n_patients: patients of the cohort; each has 2-4 images.
            n_benign: benign images.
            n_malignant: malignant images.
            seed: every image is a function of it.
            difficulty: lesion contrast, easy, standard, hard or a factor on every lesion's contrast
                (the quick profile's supervised AUC at each is in the generator's docstring).
        """
        super().__init__(**settings)
        self.generation = {
            "n_patients": int(n_patients),
            "n_benign": int(n_benign),
            "n_malignant": int(n_malignant),
            "seed": int(seed),
            "difficulty": difficulty if isinstance(difficulty, str) else float(difficulty),
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

    def _planned(self):
        """The sample table (``path`` empty: generated images have no file) and its renderer."""
        table, render = synthetic_mammo.generate_lazily(image_size=self.image_size, **self.generation)
        return table.assign(path=""), render

    def scan(self):
        return self._planned()[0], []

    def load(self) -> LoadedDataset:
        table, render = self._planned()
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
        return LoadedDataset(self.name, table[sample_columns(table)].reset_index(drop=True), images)


@DATASETS.register("synthetic_pool")
class SyntheticPool(SyntheticMammography):
    """Unlabelled built-in synthetic mammograms for the pretext stage (``--pretext-data
    synthetic_pool``): 2,100 images of 700 patients drawn as ``synthetic`` draws its cohort, from
    another seed; patients ``U000``... (disjoint from the evaluation set's ``P000``...), labels
    withheld (-1), so it is a pool for label-free pretext tasks, never an evaluation set."""

    labelled = False

    def __init__(self, n_patients: int = 700, n_benign: int = 1550, n_malignant: int = 550, seed: int = 1,
                 difficulty: str | float = "standard", **settings):
        super().__init__(n_patients, n_benign, n_malignant, seed, difficulty, **settings)

    __init__.__doc__ = SyntheticMammography.__init__.__doc__  # the same options, other defaults

    def _identity(self) -> str:
        return json.dumps({"pool": True, **json.loads(super()._identity())}, sort_keys=True)

    def _planned(self):
        table, render = super()._planned()
        unlabelled = table.assign(patient_id="U" + table["patient_id"].str[1:], image_id="U" + table["image_id"].str[1:],
                                  label=UNLABELLED)
        return unlabelled, render
