"""Pretraining on a pool (``--pretext-data DATASET``): the checks before a run, and the pool and
cache key of one fold's pretext stage.

The pool is another registered dataset (its labels ignored unless the pretext task uses labels),
e.g. ``folder``, every image under a folder, or the evaluation dataset itself. For fold ``k``
the pool loses every image of the held-out fold's patients, and any copy of a held-out image
(:func:`ssl_bench.data.pool.pool_exclusions`).
The stage's result is cached under ``<out>/.pretext-cache/<key>.pt``
(:mod:`ssl_bench.training.pretext_cache`) with :func:`stage_key`, a hash of everything it depends
on: the pretext task and all its options (defaults included: a changed default is another
stage), the backbone and its initialisation (a weights file by its identity, which changes when
the file is rewritten, :func:`ssl_bench.data.cache.file_identity`), the pool (dataset, root, all
its options, and the ids, content and, for a task that uses labels, labels of the images kept),
the image size, every ``train.*`` setting but the downstream ``epochs`` and ``pos_weight``, the
seed, the device type and precision, the versions of torch, timm, lightly and numpy, and the code
(:func:`ssl_bench.experiment.provenance.code_digest`, and the source file of a plugin's pretext
task or transfer). A pool that shares no patient with the evaluation data keeps the same images
for every fold, hence one key: its stage is trained once for all folds and label fractions (and for
``finetune``, ``linear`` and ``knn`` alike, which share the stage). Each fold records the key it
used in ``metrics.json`` (``pretext_pool``).
"""
from __future__ import annotations

import hashlib
import inspect
import json
import os
from pathlib import Path

import numpy as np
import torch

from .. import __version__, components
from ..config import DOWNSTREAM, SAMPLING, VOLATILE, Config, settings, weights_file
from ..data.base import LoadedDataset
from ..data.cache import file_identity
from ..data.digests import image_digests
from ..data.loading import load_pool, with_dataset
from ..data.pool import kept, pool_exclusions
from ..data.preprocess import PREPROCESS_VERSION
from ..errors import ConfigError, DataError
from ..fileio import file_sha256
from ..registry import DATASETS, PRETEXTS, TRANSFERS
from ..training.pretext_cache import PretextPool
from .provenance import PACKAGE, code_digest, library_versions

CACHE_FOLDER = ".pretext-cache"
# 2: backbones built on pretrained weights normalise their input (other modules and state_dict
# keys): a stage cached before is trained again, never loaded into the new structure
# 3: the options with their defaults, the libraries' versions, the code, and files' change times
KEY_VERSION = 3


def check_pretext_data(cfg: Config, pretext) -> None:
    """Fail before any data is loaded when ``--pretext-data`` cannot mean anything sound."""
    for role, name in (("--dataset", cfg.data.dataset), ("--test-dataset", cfg.data.test_dataset)):
        if name and not getattr(DATASETS.get(name), "labelled", True):
            raise ConfigError(f"dataset '{name}' has no labels, so a run cannot be evaluated on it ({role}); "
                              f"use it as --pretext-data, a pool for the pretext stage")
    pool = cfg.pretext_data.dataset
    if not pool:
        return
    pool_class = DATASETS.get(pool)
    transfer = TRANSFERS.get(cfg.transfer)
    if not getattr(transfer, "separate_pretext_stage", False):
        able = [n for n in TRANSFERS.names() if getattr(TRANSFERS.get(n), "separate_pretext_stage", False)]
        raise ConfigError(f"--pretext-data: transfer '{cfg.transfer}' trains its pretext task together with "
                          f"the classifier on the fold's images, so it has no pretext stage to pretrain on a "
                          f"pool; use a transfer with a separate pretext stage ({', '.join(able)})")
    if pretext.uses_labels and not getattr(pool_class, "labelled", True):
        raise ConfigError(f"pretext '{cfg.pretext}' uses the class labels, but the pool '{pool}' "
                          f"(--pretext-data) has none; choose a label-free pretext task or a labelled pool")
    if pretext.uses_labels and pool in (cfg.data.dataset, cfg.data.test_dataset) and cfg.data.label_fraction < 1:
        raise ConfigError(f"pretext '{cfg.pretext}' uses the class labels: on the evaluation dataset as pool "
                          f"(--pretext-data {pool}) it would train on labels outside the label fraction "
                          f"{cfg.data.label_fraction:g}")


def pool_fingerprint(pool: LoadedDataset, keep: np.ndarray, with_labels: bool) -> str:
    """SHA-1 of the kept images' ids, pixels and (``with_labels``) labels, in order."""
    h = hashlib.sha1()
    ids = pool.samples["image_id"].astype(str).to_numpy()[keep]
    for image_id, digest in zip(ids, image_digests(pool)[keep]):
        h.update(f"{image_id}\0{digest}\n".encode("utf-8", "surrogateescape"))
    if with_labels:
        h.update(np.ascontiguousarray(pool.labels[keep]).tobytes())
    return h.hexdigest()


def _initialisation(pretrained: str | None) -> str | None:
    """``model.pretrained`` with a weights file identified by :func:`file_identity` (path, size,
    modification and change times: a file rewritten in place is another file)."""
    if pretrained and weights_file(pretrained) and os.path.isfile(os.path.expanduser(pretrained)):
        return file_identity(os.path.realpath(os.path.expanduser(pretrained)))
    return pretrained


def plugin_source(component) -> str | None:
    """SHA-256 of the source file that defines ``component`` (a class or factory) when it lies
    outside ssl_bench, as a plugin's does (:func:`code_digest` covers ssl_bench's own); None for
    one of ssl_bench or one without a source file."""
    try:
        source = inspect.getsourcefile(component)
    except TypeError:
        return None
    if not source or Path(source).resolve().is_relative_to(PACKAGE):
        return None
    try:
        return file_sha256(source)
    except OSError:
        return None


def stage_key(cfg: Config, pretext, pool: LoadedDataset, keep: np.ndarray, device: torch.device,
              amp_dtype: torch.dtype | None) -> str:
    """The cache key of a pretext stage on the ``keep`` images of ``pool`` (see module docstring)."""
    t = cfg.train
    root = cfg.pretext_data.root
    assert cfg.pretext_data.dataset is not None
    payload = {
        "key_version": KEY_VERSION,
        "ssl_bench": __version__,
        # The code: every source file of ssl_bench but those that only orchestrate runs or read
        # them (provenance.ORCHESTRATION), hashed once per process. Hashing only the pretext
        # task's module would miss what the stage runs beside it (its views, the loop, the
        # optimiser and schedule builders, the backbone helpers, the pool's decoding); a stage
        # goes stale on an edit there as surely as on one of the task. An edit of the CLI or the
        # reports retrains nothing. A plugin's task or transfer adds its own source file.
        "code": code_digest(),
        "plugin_code": [plugin_source(type(pretext)), plugin_source(TRANSFERS.get(cfg.transfer))],
        "libraries": library_versions(),  # torch, timm, lightly, numpy
        "preprocess": PREPROCESS_VERSION,
        "pretext": cfg.pretext,
        # every option as the task is built with it, defaults included (params.* holds only the
        # options a user set: a changed default would otherwise reuse a stage of the old one)
        "pretext_params": components.resolved_options(PRETEXTS, cfg.pretext, cfg),
        "backbone": cfg.model.backbone,
        "pretrained": _initialisation(cfg.model.pretrained),
        "pool": {
            "dataset": cfg.pretext_data.dataset,
            "root": os.path.realpath(os.path.expanduser(root)) if root else None,
            "params": components.resolved_options(DATASETS, cfg.pretext_data.dataset, cfg),
            "images": pool_fingerprint(pool, keep, pretext.uses_labels),
        },
        # how the pool's images load: every data.* setting but the volatile ones and those that
        # choose among loaded images (config roles), for the pool's dataset
        "data": settings(with_dataset(cfg, cfg.pretext_data.dataset, root).data, (SAMPLING, VOLATILE)),
        # every training setting (pretext epochs, lr, batch, schedule, ...) but those that only
        # the downstream stage reads and those that never change results (how often a fold is
        # checkpointed), as each declares (config roles): a new setting is in the key by default
        "train": settings(t, (DOWNSTREAM, VOLATILE)),
        "seed": cfg.seed,
        "device": device.type,
        "precision": str(amp_dtype),
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def fold_pretext_pool(cfg: Config, pretext, loaded: LoadedDataset, fold_of: np.ndarray, k: int,
                      device: torch.device, amp_dtype: torch.dtype | None) -> PretextPool | None:
    """The pool of fold ``k``'s pretext stage (None without ``--pretext-data`` or without a
    pretext stage: pretext ``none`` or 0 pretext epochs)."""
    if not cfg.pretext_data.dataset or not pretext.trains or cfg.train.pretext_epochs <= 0:
        return None
    pool = load_pool(cfg)
    in_fold = fold_of == k
    held_out_dataset = cfg.data.test_dataset or cfg.data.dataset
    same_dataset = cfg.pretext_data.dataset == held_out_dataset
    match_patients = same_dataset or (DATASETS.get(cfg.pretext_data.dataset).patient_ids
                                      and DATASETS.get(held_out_dataset).patient_ids)
    reasons = pool_exclusions(pool.samples, loaded.samples[in_fold], match_patients,
                              image_digests(pool), image_digests(loaded)[in_fold])
    keep = kept(reasons)
    if not keep.any():
        raise DataError(f"the pool '{cfg.pretext_data.dataset}' (--pretext-data) has no image left once "
                        f"fold {k}'s patients are left out")
    index = np.flatnonzero(keep)

    def load() -> tuple[torch.Tensor, torch.Tensor]:
        images = torch.from_numpy(np.ascontiguousarray(pool.images[index])).unsqueeze(1).to(device)
        labels = torch.from_numpy(pool.labels[index].copy()).float().to(device)
        return images, labels

    info = {"dataset": cfg.pretext_data.dataset, "root": cfg.pretext_data.root, "n_images": int(keep.sum()),
            "n_excluded": int((~keep).sum()),
            # how many each rule left out (an image may be left out by several)
            "excluded": {reason: int(mask.sum()) for reason, mask in reasons.items()},
            "n_patients": int(len(np.unique(pool.groups[keep])))}
    return PretextPool(key=stage_key(cfg, pretext, pool, keep, device, amp_dtype),
                       cache_dir=Path(cfg.out).expanduser() / CACHE_FOLDER, seed=cfg.seed, load=load, info=info)
