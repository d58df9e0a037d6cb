"""The pretraining pool of one fold: which images of the pool (``--pretext-data``) the pretext
stage may see when fold ``k`` is held out.

A held-out image must never be pretrained on, nor any other image of its patient. A pool image is
left out, with every pool image of the same pool patient where it says so:

- ``held_out_patients``: its patient is a held-out patient. Patient ids are compared when the pool
  is the dataset the held-out images come from (the same registered name), or when both datasets
  carry real patient ids (``MammoDataset.patient_ids``; a ``folder`` pool's ids are made from its
  paths, so they name no patient of another dataset);
- ``same_file`` (and its pool patient): it is one of the held-out files (the same file on disk),
  e.g. a ``folder`` pool over the evaluation dataset's DICOMs;
- ``same_pixels`` (and its pool patient): its preprocessed pixels equal a held-out image's
  (:mod:`.digests`): a copy at another path, or the same archive exported to PNG.

A pool that loses no image this way shares no patient with the held-out fold; one that loses no
image for any fold is the same pool for every fold (and every label fraction), so its pretext
stage is trained once (:mod:`ssl_bench.experiment.pretext_pool`). Each fold records how many
images each reason left out.
"""
from __future__ import annotations

import os

import numpy as np
import pandas as pd

#: why a pool image is left out, in the order they are checked
EXCLUSION_REASONS = ("held_out_patients", "same_file", "same_pixels")


def _resolved(paths) -> np.ndarray:
    return np.array([os.path.realpath(p) if p else "" for p in pd.Series(paths).fillna("").astype(str)], dtype=object)


def pool_exclusions(pool: pd.DataFrame, held_out: pd.DataFrame, match_patients: bool,
                    pool_digests: np.ndarray | None = None, held_digests: np.ndarray | None = None
                    ) -> dict[str, np.ndarray]:
    """Per reason (:data:`EXCLUSION_REASONS`), a boolean mask over ``pool``'s rows of the images
    it leaves out while the images of ``held_out`` (sample tables: ``patient_id``, ``path``) are
    held out; ``match_patients``: compare patient ids (see the module docstring); the digests
    (:func:`~ssl_bench.data.digests.image_digests` of each) add the ``same_pixels`` rule."""
    patients = pool["patient_id"].astype(str).to_numpy()
    no = np.zeros(len(pool), dtype=bool)
    out = dict.fromkeys(EXCLUSION_REASONS, no)
    if match_patients:
        out["held_out_patients"] = np.isin(patients, held_out["patient_id"].astype(str).unique())
    held_files = {p for p in _resolved(held_out["path"]) if p} if "path" in held_out else set()
    if held_files and "path" in pool:
        same_file = np.array([p in held_files for p in _resolved(pool["path"])], dtype=bool)
        out["same_file"] = np.isin(patients, np.unique(patients[same_file]))
    if pool_digests is not None and held_digests is not None and len(held_digests):
        same_pixels = np.isin(pool_digests, held_digests)
        out["same_pixels"] = np.isin(patients, np.unique(patients[same_pixels]))
    return out


def pool_keep_mask(pool: pd.DataFrame, held_out: pd.DataFrame, match_patients: bool,
                   pool_digests: np.ndarray | None = None, held_digests: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask over ``pool``'s rows: the images the pretext stage may use while the images
    of ``held_out`` are held out (no rule of :func:`pool_exclusions` leaves them out)."""
    return kept(pool_exclusions(pool, held_out, match_patients, pool_digests, held_digests))


def kept(exclusions: dict[str, np.ndarray]) -> np.ndarray:
    """The rows no rule of :func:`pool_exclusions`' result leaves out."""
    return ~np.logical_or.reduce(list(exclusions.values()))
