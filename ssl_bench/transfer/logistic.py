"""The logistic-regression fit that the linear probe (``linear``, :mod:`ssl_bench.transfer.frozen`)
copies into its torch classifier, with the ``class_weight`` options the toolkit's scikit-learn
transfers share, and the choice of its regularisation ``C`` by cross-validation within the
training images, grouped by patient.

A fixed ``C`` is a choice of how much to trust features that differ from one pretext stage,
backbone and dataset to the next; the standard linear-evaluation protocols choose it on held-out
training data instead (e.g. Kornblith, Shlens and Le, "Do Better ImageNet Models Transfer
Better?", CVPR 2019: L2-regularised logistic regression, the strength chosen on a validation split
of the training set). :func:`choose_C` does that with scikit-learn: ``GridSearchCV`` over the grid
``Cs`` of ``StandardScaler`` + ``LogisticRegression`` (the scaler refitted in each inner fold),
scored by ROC AUC (the benchmark's measure), on ``StratifiedGroupKFold`` splits of the fold's
training images with the patients as groups (not shuffled: the same splits for the same images),
so that an image's other views never score it; the held-out fold is never seen. The first ``C``
of the grid among the best scores wins (with the grid ascending, the strongest regularisation).
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedGroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from ..errors import ToolkitWarning

CLASS_WEIGHTS = ("pos_weight", "balanced", "none")
#: the linear probe's default grid of C (inverse L2 strength on standardised features), ascending
DEFAULT_CS = (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
#: C where too few patients of a class leave no inner cross-validation (scikit-learn's default)
FALLBACK_C = 1.0


def class_weight_for(option: str, pos_weight: float) -> dict[int, float] | str | None:
    """scikit-learn's ``class_weight`` for a ``class_weight`` option: ``pos_weight`` (the paper's
    malignant weight, TSBN eq. 3), ``balanced`` or ``none``."""
    return {"pos_weight": {0: 1.0, 1: float(pos_weight)}, "balanced": "balanced", "none": None}[option]


def check_class_weight(class_weight: str) -> None:
    if class_weight not in CLASS_WEIGHTS:
        raise ValueError(f"class_weight must be one of {', '.join(CLASS_WEIGHTS)}, got {class_weight!r}")


def check_logistic_options(C: float | None, class_weight: str, max_iter: int) -> None:
    """The options a logistic-regression transfer shares, checked when it is built (a bad one is a
    ``ValueError`` the toolkit reports in one line); ``C`` None: chosen by :func:`choose_C`."""
    if C is not None and not C > 0:
        raise ValueError(f"C must be positive, got {C!r}")
    check_class_weight(class_weight)
    if max_iter < 1:
        raise ValueError(f"max_iter must be at least 1, got {max_iter!r}")


def check_grid(Cs: Any, folds: int) -> tuple[float, ...]:
    """The grid of ``C`` (a non-empty list of positive numbers, returned ascending) and the inner
    folds (at least 2), checked when the transfer is built.

    Raises:
        ValueError: anything else.
    """
    try:
        grid = tuple(sorted(float(c) for c in (Cs if isinstance(Cs, (list, tuple)) else [Cs])))
    except (TypeError, ValueError):
        raise ValueError(f"Cs must be a list of positive numbers, got {Cs!r}") from None
    if not grid or not all(c > 0 for c in grid):
        raise ValueError(f"Cs must be a list of positive numbers, got {Cs!r}")
    if int(folds) != folds or folds < 2:
        raise ValueError(f"cv_folds must be an integer of at least 2, got {folds!r}")
    return grid


def inner_folds(labels: np.ndarray, groups: np.ndarray, folds: int) -> int:
    """How many stratified, grouped inner folds the images allow: at most ``folds``, and no more
    than the groups (patients) holding each class, so that every inner fold can hold both."""
    per_class = [len(np.unique(groups[labels == c])) for c in np.unique(labels)]
    return min([int(folds), *per_class]) if len(per_class) > 1 else 0


def choose_C(features: np.ndarray, labels: np.ndarray, patients: np.ndarray | None, Cs: tuple[float, ...],
             class_weight, max_iter: int, folds: int) -> tuple[float, dict[str, Any]]:
    """The ``C`` of ``Cs`` with the best inner cross-validated ROC AUC on these training images
    (module docstring), and what the fold records of the choice.

    Args:
        features: ``(N, F)`` training features.
        labels: ``(N,)`` 0/1 labels.
        patients: ``(N,)`` patient ids (the groups); None where unknown: each image its own group.
        Cs: the grid, ascending.
        class_weight: scikit-learn's ``class_weight`` (:func:`class_weight_for`).
        max_iter: the solver's iterations.
        folds: the inner folds wanted (fewer when a class has fewer patients: :func:`inner_folds`).

    Returns:
        ``(C, record)``: ``record`` holds ``C``, ``chosen`` (``"inner cross-validation"``), ``Cs``,
        ``groups`` (``"patient"`` or ``"image"``), ``cv_folds`` and ``cv_auc`` (the mean inner AUC
        at ``C``); with fewer than 2 patients of a class, :data:`FALLBACK_C`, ``chosen``
        ``"fallback"`` and ``cv_folds`` 0, with one warning line.
    """
    grouped = patients is not None and len(patients) == len(labels)
    groups = np.asarray(patients) if grouped else np.arange(len(labels))
    record: dict[str, Any] = {"Cs": [float(c) for c in Cs], "groups": "patient" if grouped else "image"}
    n = inner_folds(labels, groups, folds)
    if n < 2:
        warnings.warn(f"linear probe: fewer than 2 {record['groups']}s of a class among the training images, so "
                      f"C cannot be cross-validated; C = {FALLBACK_C:g}", ToolkitWarning, stacklevel=2)
        return FALLBACK_C, {"C": FALLBACK_C, "chosen": "fallback", **record, "cv_folds": 0, "cv_auc": None}
    search = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression(class_weight=class_weight, max_iter=max_iter)),
        {"logisticregression__C": list(Cs)}, scoring="roc_auc", cv=StratifiedGroupKFold(n_splits=n), refit=False)
    # one BLAS/OpenMP thread: 35 small fits gain nothing from threads, and on a shared CPU spinning
    # threads made the search about 8 times slower (measured on this project's 2-core machine)
    with threadpool_limits(limits=1):
        search.fit(features, labels, groups=groups)
    C = float(search.best_params_["logisticregression__C"])
    return C, {"C": C, "chosen": "inner cross-validation", **record, "cv_folds": n,
               "cv_auc": float(search.best_score_)}


def fit_scaled_logistic(features: np.ndarray, labels: np.ndarray, C: float, class_weight, max_iter: int):
    """``(scaler, model)``: standardised features and a logistic regression on them."""
    scaler = StandardScaler().fit(features)
    model = LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter)
    with threadpool_limits(limits=1):  # as in choose_C
        model.fit(scaler.transform(features), labels)
    return scaler, model
