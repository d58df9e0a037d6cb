"""The pretraining pool of one fold: which images of the pool (``--pretext-data``) the pretext
stage may see when fold ``k`` is held out.

A held-out image must never be pretrained on, nor any other image of its patient:

- when the pool is the dataset the held-out images come from (the same registered name, hence the
  same patient identifiers), every pool image of a held-out patient is left out;
- whatever the pool, a pool image that is one of the held-out files (the same file on disk) is
  left out, with every pool image of the same pool patient (another dataset's view of those files,
  e.g. a ``folder`` pool over the evaluation dataset's DICOMs).

A pool that loses no image this way shares no patient with the held-out fold; one that loses no
image for any fold is the same pool for every fold (and every label fraction), so its pretext
stage is trained once (:mod:`ssl_bench.experiment.pretext_pool`).
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd


def _resolved(paths) -> np.ndarray:
    return np.array([os.path.realpath(p) if p else "" for p in pd.Series(paths).fillna("").astype(str)], dtype=object)


def pool_keep_mask(pool: pd.DataFrame, held_out: pd.DataFrame, same_dataset: bool) -> np.ndarray:
    """Boolean mask over ``pool``'s rows: the images the pretext stage may use while the images
    of ``held_out`` (sample tables: ``patient_id``, ``path``) are held out."""
    patients = pool["patient_id"].astype(str).to_numpy()
    drop = np.zeros(len(pool), dtype=bool)
    if same_dataset:
        drop |= np.isin(patients, held_out["patient_id"].astype(str).unique())
    held_files = {p for p in _resolved(held_out["path"]) if p}
    if held_files:
        same_file = np.array([p in held_files for p in _resolved(pool["path"])], dtype=bool)
        drop |= np.isin(patients, np.unique(patients[same_file]))
    return ~drop
