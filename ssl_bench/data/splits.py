"""Deterministic k-fold splits: stratified by label and grouped by patient (no patient in two
folds) with scikit-learn's ``StratifiedGroupKFold``, or image-level ``StratifiedKFold``; and the
nested, stratified, patient-grouped label-fraction subsets of a fold's training images
(:func:`label_subset`); and the given train/test split of ``--split official`` and
``--test-dataset`` (:func:`official_folds`)."""
from __future__ import annotations

import math

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


#: the fold of the images a given split uses for training only (never held out)
TRAIN_ONLY = -1


def official_folds(split, dataset: str) -> np.ndarray:
    """The one fold of a given train/test split: 0 for every ``"test"`` image (the held-out fold),
    :data:`TRAIN_ONLY` (-1) for every ``"train"`` one. ``split``: the sample table's
    ``official_split`` column (``None`` when the dataset has none)."""
    if split is None:
        raise DataError(f"dataset '{dataset}' has no official train/test split; use --split patient or "
                        f"--split image (or --test-dataset NAME to test on another dataset)")
    values = np.asarray(split).astype(str)
    unknown = sorted(set(values) - {"train", "test"})
    if unknown:
        raise DataError(f"dataset '{dataset}': {int(np.isin(values, unknown).sum())} image(s) belong to "
                        f"neither official split (split {unknown[0]!r}); --split official needs every "
                        f"image in 'train' or 'test'")
    n_test, n_train = int((values == "test").sum()), int((values == "train").sum())
    if not n_test or not n_train:
        raise DataError(f"dataset '{dataset}': its official split gives {n_train} training and {n_test} "
                        f"test images; --split official needs both (a dataset option keeping one split?)")
    return np.where(values == "test", 0, TRAIN_ONLY).astype(np.int64)


def check_grouping(fold_of, groups) -> None:
    """Raise when any patient appears in two folds."""
    seen: dict[str, int] = {}
    for fold, group in zip(np.asarray(fold_of), np.asarray(groups)):
        if seen.setdefault(str(group), int(fold)) != int(fold):
            raise DataError(f"patient {group} appears in folds {seen[str(group)]} and {fold}")


def check_fraction(fraction: float, what: str = "label fraction") -> float:
    """``fraction`` as a float in (0, 1], else a DataError."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        raise DataError(f"{what} must be a number in (0, 1], got {fraction!r}") from None
    if not (math.isfinite(f) and 0 < f <= 1):
        raise DataError(f"{what} must be in (0, 1], got {fraction!r}")
    return f


def n_kept(fraction: float, n: int) -> int:
    """``ceil(fraction * n)`` with float noise ignored (0.3 * 10 is 3, not 4)."""
    return min(n, math.ceil(round(fraction * n, 9)))


def patient_order(labels, groups, train_mask, seed: int, fold: int) -> dict[int, list[str]]:
    """The training patients of one (seed, fold), ranked once per class: a patient's class is the
    max of its training images' labels (malignant if any image is); each class's patients, sorted
    by id, are shuffled by a permutation seeded with ``(seed, fold, class)``. The order does not
    depend on the fraction, which is what makes the subsets nested."""
    labels, groups = np.asarray(labels), np.asarray(groups).astype(str)
    mask = np.asarray(train_mask, dtype=bool)
    table: dict[str, int] = {}
    for g, y in zip(groups[mask], labels[mask]):
        table[g] = max(table.get(g, 0), int(y))
    order = {}
    for c in (0, 1):
        patients = sorted(g for g, y in table.items() if y == c)
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(fold), c]))
        order[c] = [patients[i] for i in rng.permutation(len(patients))]
    return order


def label_subset(labels, groups, train_mask, fraction: float, seed: int = 0, fold: int = 0) -> np.ndarray:
    """The images (boolean mask over all samples) of the ``fraction`` subset of the training
    images ``train_mask`` of fold ``fold``.

    Rule: rank the training patients per class with :func:`patient_order` (seeded by ``(seed,
    fold, class)``), keep the first ``ceil(fraction * n_c)`` patients of each class ``c`` (``n_c``
    its training patients; at least one per non-empty class), and every training image of a kept
    patient. Hence subsets are grouped by patient (a patient is in or out with all its images),
    stratified (each class keeps the fraction of its patients, rounded up), nested (a smaller
    fraction's patients are a prefix of a larger one's) and deterministic per (seed, fold);
    ``fraction = 1`` keeps every training image. The held-out fold is never touched.
    """
    f = check_fraction(fraction)
    mask = np.asarray(train_mask, dtype=bool)
    if f >= 1.0:
        return mask.copy()
    order = patient_order(labels, groups, mask, seed, fold)
    kept = set()
    for patients in order.values():
        kept.update(patients[: n_kept(f, len(patients))])
    in_kept = np.array([g in kept for g in np.asarray(groups).astype(str)], dtype=bool)
    return mask & in_kept
