"""The dataset interface every registered dataset implements.

A dataset turns a source (files on disk, or the built-in generator) into a *sample table* and an
array of preprocessed images, one row per image:

- sample table (``pandas.DataFrame``), columns ``image_id`` (str, unique), ``patient_id`` (str),
  ``label`` (int, 0 benign / 1 malignant), ``laterality`` (``"L"``/``"R"``/``""``),
  ``view`` (``"CC"``/``"MLO"``/...), ``path`` (str, ``""`` for generated images);
- optional column ``official_split`` (``"train"``/``"test"``): the dataset's own train/test
  split, for ``--split official`` (CBIS-DDSM, VinDr-Mammo);
- optional subgroup columns ``density`` (ACR letter), ``lesion_type`` and ``manufacturer``
  (:mod:`ssl_bench.data.subgroups`), where the source records them;
- images: float16, shape ``(N, H, W)``, values in [0, 1], one channel, row ``i`` belongs to
  table row ``i``, breast facing the same side in every image: a ``numpy.ndarray``, or the
  memory-mapped :class:`~ssl_bench.data.cache.ShardedImages` of the cache (read on demand, so a
  dataset larger than memory can be streamed).

Subclasses implement :meth:`scan` (read metadata, match files, collect problems). The default
:meth:`load` decodes and preprocesses through the on-disk cache (:mod:`ssl_bench.data.cache`).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd

from ..errors import DataError
from .cache import ShardedImages, load_cached_images
from .problem import Problem
from .subgroups import OPTIONAL_SUBGROUP_COLUMNS

SAMPLE_COLUMNS = ("image_id", "patient_id", "label", "laterality", "view", "path")
OFFICIAL_SPLIT = "official_split"  # optional column: "train" / "test", the dataset's own split


def sample_columns(table: pd.DataFrame) -> list[str]:
    """The sample table's columns to keep: :data:`SAMPLE_COLUMNS` and the optional ones present
    (:data:`OFFICIAL_SPLIT` and the subgroup variables)."""
    return [*SAMPLE_COLUMNS, *(c for c in (OFFICIAL_SPLIT, *OPTIONAL_SUBGROUP_COLUMNS) if c in table.columns)]


@dataclass
class LoadedDataset:
    """A dataset ready for training: the sample table, its images, and inputs that were skipped."""

    name: str
    samples: pd.DataFrame
    images: np.ndarray | ShardedImages
    skipped: list[Problem] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.samples) != len(self.images):
            raise ValueError(f"{len(self.samples)} samples but {len(self.images)} images")
        ids = self.samples["image_id"].astype(str)
        if ids.duplicated().any():
            dup = sorted(set(ids[ids.duplicated()]))
            raise DataError(f"dataset '{self.name}' lists {len(dup)} image id(s) more than once "
                            f"(e.g. {', '.join(dup[:3])}); every image needs its own image_id")

    @property
    def labels(self) -> np.ndarray:
        return self.samples["label"].to_numpy(dtype=np.int64)

    @property
    def groups(self) -> np.ndarray:
        return self.samples["patient_id"].astype(str).to_numpy()


class MammoDataset(ABC):
    """Base class of registered datasets.

    A subclass takes its own options as keyword arguments (they become
    ``params.<dataset>.<option>``) and passes the common settings below on:
    ``def __init__(self, my_option=1, **settings): super().__init__(**settings)``.

    Args:
        root: folder holding the dataset as its owners ship it (``None`` for generated data).
        image_size: ``(height, width)`` of the preprocessed images.
        cache_dir: folder for the decoded-image cache.
        on_bad_image: ``"fail"`` stops with the full list of problems; ``"skip"`` drops those
            inputs and records them in :attr:`LoadedDataset.skipped`.
        workers: processes used to decode images (``0``: one per CPU core).
    """

    def __init__(
        self,
        root: str | None = None,
        image_size: tuple[int, int] = (768, 384),
        cache_dir: str | Path = "~/.cache/ssl_bench",
        on_bad_image: str = "fail",
        workers: int = 0,
    ):
        if on_bad_image not in ("fail", "skip"):
            raise DataError(f"on_bad_image must be 'fail' or 'skip', got '{on_bad_image}'")
        self.root = Path(root).expanduser() if root else None
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.cache_dir = Path(cache_dir).expanduser()
        self.on_bad_image = on_bad_image
        self.workers = workers

    name: str = "dataset"  # set to the registered name by the registry
    #: False for a dataset without labels (``folder``): only a pretext stage's pool, never evaluated
    labelled: ClassVar[bool] = True
    #: False where patient ids are made from file paths (``folder``): they cannot be matched with
    #: another dataset's, so a pool's images are not left out by patient id across datasets
    patient_ids: ClassVar[bool] = True
    #: the option that gave :attr:`root`, named by the messages about it: the role the dataset
    #: was built for sets it (:func:`ssl_bench.data.loading.build_dataset`: ``--test-data-root``,
    #: ``--pretext-data-root``)
    root_flag: str = "--data-root"

    def require_root(self) -> Path:
        if self.root is None:
            raise DataError(f"dataset '{self.name}' needs {self.root_flag} PATH")
        if not self.root.is_dir():
            raise DataError(f"{self.root_flag} {self.root} is not a folder")
        return self.root

    @abstractmethod
    def scan(self) -> tuple[pd.DataFrame, list[Problem]]:
        """Read the metadata and match it with the files: the usable sample table and the problems."""

    def check_problems(self, problems: list[Problem]) -> None:
        """Raise with every problem listed unless ``on_bad_image='skip'``."""
        if problems and self.on_bad_image == "fail":
            listing = "\n".join(f"  - {p}" for p in problems)
            raise DataError(
                f"{len(problems)} bad input(s) in dataset '{self.name}' "
                f"(use --on-bad-image skip to leave them out):\n{listing}"
            )

    def load(self) -> LoadedDataset:
        """Scan, check, then decode + preprocess every image through the on-disk cache."""
        table, problems = self.scan()
        images, bad = load_cached_images(
            table, self.image_size, self.cache_dir, workers=self.workers
        )  # decoded even when the sheet has problems, so one message lists every bad input
        self.check_problems(problems + bad)
        if bad:
            keep = ~table["path"].isin({p.file for p in bad}).to_numpy()
            table, images = table[keep], images.subset(keep)
        if table.empty:
            raise DataError(f"dataset '{self.name}' has no usable images")
        table = table.reset_index(drop=True)
        return LoadedDataset(self.name, table[sample_columns(table)], images, problems + bad)
