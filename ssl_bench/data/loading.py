"""Build and load the configured datasets (kept in memory for the process, keyed by their
settings, so a bench of several methods decodes each once): the evaluation data (the dataset, or
with ``data.test_dataset`` the training dataset followed by the test dataset) and the pretext
stage's pool (``pretext_data``). Each load warns once about images with little to learn from
(:mod:`.image_checks`)."""
from __future__ import annotations

import dataclasses
import json
import warnings

import numpy as np
import pandas as pd

from .. import components
from ..config import SAMPLING, VOLATILE, Config, settings
from ..errors import DataError, DataWarning
from ..registry import DATASETS
from .base import OFFICIAL_SPLIT, LoadedDataset
from .digests import shared_images
from .image_checks import check_images

_loaded: dict[str, LoadedDataset] = {}

#: prefix of the training dataset's image and patient ids in a train/test pair (--test-dataset)
TRAIN_PREFIX = "train:"

#: the option that gives the root of the dataset of each role (the evaluation data, the test
#: dataset, the pretext stage's pool), which the dataset's messages about its root name
DATA_ROOT, TEST_ROOT, POOL_ROOT = "--data-root", "--test-data-root", "--pretext-data-root"


def dataset_key(cfg: Config) -> str:
    """What the loaded images depend on: every ``data.*`` setting but those that choose among the
    loaded images or never change them (config roles ``SAMPLING``, ``VOLATILE``), and the
    dataset's options."""
    return json.dumps([settings(cfg.data, (SAMPLING, VOLATILE)), cfg.component_params(cfg.data.dataset)],
                      sort_keys=True, default=str)


def with_dataset(cfg: Config, dataset: str, root: str | None) -> Config:
    """``cfg`` reading another dataset with the same preprocessing (image size, cache, options)."""
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, dataset=dataset, root=root))


def build_dataset(cfg: Config, root_flag: str = DATA_ROOT):
    """The dataset ``cfg.data`` names, built from ``cfg.data.root`` that ``root_flag`` gave
    (:data:`TEST_ROOT` for a test dataset, :data:`POOL_ROOT` for a pool): its messages name it."""
    d = cfg.data
    dataset = components.create(
        DATASETS,
        d.dataset,
        cfg,
        root=d.root,
        image_size=tuple(d.image_size),
        cache_dir=d.cache_dir,
        on_bad_image=d.on_bad_image,
        workers=d.workers,
    )
    dataset.root_flag = root_flag
    return dataset


def load_dataset(cfg: Config, root_flag: str = DATA_ROOT) -> LoadedDataset:
    key = dataset_key(cfg)
    if key not in _loaded:
        loaded = build_dataset(cfg, root_flag).load()
        weak = check_images(loaded.samples, loaded.images).describe()
        if weak:
            warnings.warn(f"dataset '{loaded.name}': {weak} (kept for training; 'ssl-bench data verify' "
                          f"counts them)", DataWarning, stacklevel=2)
        _loaded[key] = loaded
    return _loaded[key]


def train_test_pair(train: LoadedDataset, test: LoadedDataset) -> LoadedDataset:
    """All of ``train`` then all of ``test`` as one dataset whose ``official_split`` says which is
    which; the training rows' image and patient ids get :data:`TRAIN_PREFIX` (two datasets may
    use the same ids), the test rows keep theirs (they are what predictions.csv lists). Refused
    when a test image is also a training image (the same preprocessed pixels: :mod:`.digests`)."""
    shared = shared_images(train, test)
    if shared.any():
        ids = test.samples["image_id"].astype(str).to_numpy()[shared]
        raise DataError(f"the test dataset '{test.name}' shares {shared.sum()} of its {len(shared)} images with the "
                        f"training dataset '{train.name}' (identical pixels after preprocessing, e.g. "
                        f"{', '.join(ids[:3])}): the model would be tested on images it was trained on; remove "
                        f"them from one of the two")
    head = train.samples.assign(
        image_id=TRAIN_PREFIX + train.samples["image_id"].astype(str),
        patient_id=TRAIN_PREFIX + train.samples["patient_id"].astype(str),
        **{OFFICIAL_SPLIT: "train"},
    )
    tail = test.samples.assign(**{OFFICIAL_SPLIT: "test"})
    samples = pd.concat([head, tail], ignore_index=True)
    images = np.concatenate([train.images, test.images])
    return LoadedDataset(f"{train.name} -> {test.name}", samples, images, train.skipped + test.skipped)


def load_evaluation_data(cfg: Config) -> LoadedDataset:
    """What a run's folds are drawn from: the dataset, or the training/test pair of
    ``--test-dataset`` (same image size, cache and bad-image policy for both)."""
    d = cfg.data
    if not d.test_dataset:
        return load_dataset(cfg)
    test_cfg = with_dataset(cfg, d.test_dataset, d.test_root)
    key = json.dumps(["pair", dataset_key(cfg), dataset_key(test_cfg)])
    if key not in _loaded:
        _loaded[key] = train_test_pair(load_dataset(cfg), load_dataset(test_cfg, TEST_ROOT))
    return _loaded[key]


def load_pool(cfg: Config) -> LoadedDataset:
    """The pretext stage's pool (``pretext_data``), preprocessed like the evaluation data."""
    assert cfg.pretext_data.dataset is not None
    return load_dataset(with_dataset(cfg, cfg.pretext_data.dataset, cfg.pretext_data.root), POOL_ROOT)
