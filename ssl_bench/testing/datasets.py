"""The contract of a dataset (:class:`ssl_bench.data.base.MammoDataset`)."""
from __future__ import annotations

import contextlib
import tempfile
from typing import Any

import numpy as np

from ..data.base import OFFICIAL_SPLIT, SAMPLE_COLUMNS, LoadedDataset, MammoDataset
from ..data.subgroups import ACR_LETTERS, DENSITY, OPTIONAL_SUBGROUP_COLUMNS
from ..data.cache import ShardedImages
from ..registry import DATASETS
from .common import build_component, check_common, expect


def check_dataset(
    name_or_cls: Any,
    root: str | None = None,
    image_size: tuple[int, int] = (64, 32),
    cache_dir: str | None = None,
    **options: Any,
):
    """Check a dataset (:class:`ssl_bench.data.base.MammoDataset`) by loading it; returns the
    :class:`~ssl_bench.data.base.LoadedDataset`.

    - built as ``cls(root=..., image_size=..., cache_dir=..., on_bad_image="fail", workers=1,
      **options)``, a ``MammoDataset``; ``load()`` returns a ``LoadedDataset``;
    - the sample table has exactly the columns ``SAMPLE_COLUMNS`` in order (then, optionally,
      ``official_split`` with values ``train``/``test``), at least one row, unique string
      ``image_id``s, non-empty string ``patient_id``s, integer labels in {0, 1} (all -1 for a
      dataset with ``labelled = False``), ``laterality`` in ``L``/``R``/empty, string ``view`` and
      ``path``;
    - images: a float16 ``numpy`` array (or the cache's memory-mapped ``ShardedImages``)
      ``(N, H, W)`` at ``image_size``, finite, in [0, 1].

    ``cache_dir`` defaults to a temporary folder deleted afterwards.
    """
    name, cls, what = check_common(DATASETS, name_or_cls)
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ssl_bench_check_"))
        ds = build_component(cls, what, root=root, image_size=tuple(image_size), cache_dir=cache_dir,
                    on_bad_image="fail", workers=1, **options)
        expect(isinstance(ds, MammoDataset), what, f"must be a MammoDataset subclass, got {type(ds).__name__}")
        loaded = ds.load()
    expect(isinstance(loaded, LoadedDataset), what, f"load() must return a LoadedDataset, got {type(loaded).__name__}")
    table, images = loaded.samples, loaded.images
    optional = (OFFICIAL_SPLIT, *OPTIONAL_SUBGROUP_COLUMNS)
    expect(list(table.columns) == [*SAMPLE_COLUMNS, *(c for c in optional if c in table.columns)], what,
           f"sample table columns must be {list(SAMPLE_COLUMNS)} (+ any of {', '.join(optional)}, in that order), "
           f"got {list(table.columns)}")
    if DENSITY in table.columns:
        bad_density = set(table[DENSITY].fillna("")) - {"", *ACR_LETTERS}
        expect(not bad_density, what, f"{DENSITY} must be an ACR letter A-D or empty (data/subgroups.py acr_density), "
                                      f"got {sorted(map(repr, bad_density))[:5]}")
    if OFFICIAL_SPLIT in table.columns:
        bad_split = set(table[OFFICIAL_SPLIT]) - {"train", "test"}
        expect(not bad_split, what, f"{OFFICIAL_SPLIT} must be 'train' or 'test', got {sorted(map(repr, bad_split))[:5]}")
    n = len(table)
    expect(n > 0, what, "load() returned no samples")
    ids = table["image_id"].tolist()
    expect(all(isinstance(v, str) and v for v in ids), what, "image_id must be non-empty strings")
    expect(len(set(ids)) == n, what, "image_id values must be unique")
    expect(all(isinstance(v, str) and v for v in table["patient_id"]), what, "patient_id must be non-empty strings")
    labels = table["label"].tolist()
    valid = (0, 1) if getattr(ds, "labelled", True) else (-1,)
    expect(all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v in valid for v in labels), what,
            f"label must be the integers 0 (benign) / 1 (malignant) (-1 without labels), "
            f"got {sorted(set(map(repr, labels)))[:5]}")
    bad_side = set(table["laterality"]) - {"L", "R", ""}
    expect(not bad_side, what, f"laterality must be 'L', 'R' or '', got {sorted(map(repr, bad_side))}")
    for column in ("view", "path"):
        expect(all(isinstance(v, str) for v in table[column]), what, f"{column} must be strings")
    expect(isinstance(images, (np.ndarray, ShardedImages)), what,
           f"images must be a numpy array or the cache's ShardedImages, got {type(images).__name__}")
    images = np.asarray(images)
    expect(images.dtype == np.float16, what, f"images must be float16, got {images.dtype}")
    expect(images.shape == (n, *image_size), what, f"images must be (N, H, W) = {(n, *image_size)}, got {images.shape}")
    expect(bool(np.isfinite(images).all()), what, "images have non-finite values")
    lo, hi = float(images.min()), float(images.max())
    expect(lo >= 0.0 and hi <= 1.0, what, f"images must be in [0, 1], found [{lo}, {hi}]")
    return loaded
