"""Deterministic k-fold splits: stratified by label and grouped by patient (no patient in two
folds) with scikit-learn's ``StratifiedGroupKFold``, or image-level ``StratifiedKFold``."""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..errors import DataError


def make_folds(labels, groups, n_folds: int = 5, seed: int = 0, split: str = "patient") -> np.ndarray:
    """Fold index (0..n_folds-1) of every sample; the same inputs always give the same folds."""
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    n_minority = int(np.bincount(labels, minlength=2).min())
    if split == "patient":
        n_groups = len(np.unique(groups))
        if n_groups < n_folds:
            raise DataError(f"{n_groups} patients cannot make {n_folds} patient-grouped folds")
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels, groups)
    elif split == "image":
        if n_minority < n_folds:
            raise DataError(f"the smaller class has {n_minority} images, fewer than {n_folds} folds")
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        parts = splitter.split(np.zeros(len(labels)), labels)
    else:
        raise DataError(f"split must be 'patient' or 'image', got '{split}'")
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    for k, (_, test_idx) in enumerate(parts):
        fold_of[test_idx] = k
    return fold_of


def check_grouping(fold_of, groups) -> None:
    """Raise when any patient appears in two folds."""
    seen: dict[str, int] = {}
    for fold, group in zip(np.asarray(fold_of), np.asarray(groups)):
        if seen.setdefault(str(group), int(fold)) != int(fold):
            raise DataError(f"patient {group} appears in folds {seen[str(group)]} and {fold}")
