"""Paired comparisons of methods on the images they both held out, with patients as the unit,
and Holm's adjustment across the methods compared.

- AUC: Obuchowski's (1997) clustered test of two correlated AUCs (patients as clusters; it
  reduces to DeLong's test with one image per patient);
- accuracy at the paper's threshold 0.5: a paired patient bootstrap of the difference
  (:func:`ssl_bench.report.stats.clustered_accuracy_test`);
- Holm's (1979) step-down adjustment over the methods compared with the same reference, since a
  leaderboard of 8 rows is a multiple comparison.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd

from .runs import RunResult
from .stats import clustered_accuracy_test, holm_adjust, obuchowski_compare

THRESHOLD = 0.5


class Comparison(NamedTuple):
    """One method against a reference: AUC difference (method - reference), raw p-values, and
    how many images and patients both held out."""

    auc_diff: float
    p_auc: float
    p_accuracy: float
    n_images: int
    n_patients: int


def paired(reference: RunResult, run: RunResult) -> pd.DataFrame:
    """The images both runs held out, with both scores (same label required)."""
    a = reference.predictions[["image_id", "patient_id", "label", "score"]].drop_duplicates("image_id")
    b = run.predictions[["image_id", "label", "score"]].drop_duplicates("image_id")
    both = a.merge(b, on="image_id", suffixes=("_ref", "_run"))
    return both[both["label_ref"] == both["label_run"]]


def _auc_test(y: np.ndarray, a: np.ndarray, b: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """AUC of ``a`` minus AUC of ``b`` and Obuchowski's p-value (NaN where undefined)."""
    try:
        result = obuchowski_compare(y, a, b, clusters)
    except ValueError:  # one class, or a class held by fewer than two patients
        return math.nan, math.nan
    return float(result.diff), float(result.p_value)


def _arrays(both: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    return (both["label_ref"].to_numpy(dtype=int), both["score_run"].to_numpy(dtype=float),
            both["score_ref"].to_numpy(dtype=float), both["patient_id"].astype(str).to_numpy())


def compare_auc(reference: RunResult, run: RunResult) -> tuple[float, float]:
    """``run``'s AUC minus ``reference``'s on their shared images, and Obuchowski's p-value."""
    return _auc_test(*_arrays(paired(reference, run)))


def compare(reference: RunResult, run: RunResult, n_boot: int, seed: int) -> Comparison:
    """``run`` against ``reference`` on their shared images (NaN where a test is undefined)."""
    both = paired(reference, run)
    y, a, b, clusters = _arrays(both)
    diff, p_auc = _auc_test(y, a, b, clusters)
    p_acc = math.nan
    if len(both) and len(np.unique(clusters)) > 1:
        p_acc = clustered_accuracy_test(y, a, b, clusters, threshold=THRESHOLD, n=n_boot, seed=seed).p_value
    return Comparison(diff, p_auc, p_acc, len(both), int(len(np.unique(clusters))))


def compare_all(runs: list[RunResult], reference: RunResult, n_boot: int, seed: int) -> dict[str, dict]:
    """``{method: {"auc_diff", "p_auc", "p_auc_holm", "p_accuracy", "p_accuracy_holm", "n_images"}}``
    for every run but the reference; Holm-adjusted over those methods."""
    others = [r for r in runs if r is not reference]
    results = [compare(reference, r, n_boot, seed) for r in others]
    holm_auc: np.ndarray | list[float] = holm_adjust([c.p_auc for c in results]) if results else []
    holm_acc: np.ndarray | list[float] = holm_adjust([c.p_accuracy for c in results]) if results else []
    return {r.method: {**c._asdict(), "p_auc_holm": float(ha), "p_accuracy_holm": float(hc)}
            for r, c, ha, hc in zip(others, results, holm_auc, holm_acc)}
