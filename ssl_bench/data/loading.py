"""Build and load the configured dataset (kept in memory for the process, keyed by its settings,
so a bench of several methods decodes it once)."""
from __future__ import annotations

import json

from .. import components
from ..config import Config
from ..registry import DATASETS
from .base import LoadedDataset

_loaded: dict[str, LoadedDataset] = {}


def dataset_key(cfg: Config) -> str:
    d = cfg.data
    return json.dumps(
        [d.dataset, d.root, list(d.image_size), d.on_bad_image, cfg.component_params(d.dataset)],
        sort_keys=True,
        default=str,
    )


def build_dataset(cfg: Config):
    d = cfg.data
    return components.create(
        DATASETS,
        d.dataset,
        cfg,
        root=d.root,
        image_size=tuple(d.image_size),
        cache_dir=d.cache_dir,
        on_bad_image=d.on_bad_image,
        workers=d.workers,
    )


def load_dataset(cfg: Config) -> LoadedDataset:
    key = dataset_key(cfg)
    if key not in _loaded:
        _loaded[key] = build_dataset(cfg).load()
    return _loaded[key]
