"""External validation: each method's internal AUC (cross-validated on its training cohort) against
its AUC on an external cohort it was never trained on, and the drop between them.

Per pair of runs (declared by the bench file's ``external`` section, :mod:`ssl_bench.bench.external`;
this module is handed the run directories, never guesses them from names):

- internal AUC: the pooled out-of-fold AUC of the cross-validation run, as the leaderboard's, with
  its patient-clustered 95% CI (Obuchowski 1997, logit interval: :mod:`.pooled`);
- external AUC: the AUC of the external run's test images (all of the test cohort), with the same
  interval;
- the drop, internal minus external, with a 95% CI and a two-sided p-value: the two samples hold
  different patients, so the AUCs are independent and ``var(drop) = V_internal + V_external``,
  each the clustered variance (:func:`~ssl_bench.report.stats.independent_auc_compare`).

A drop is what the internal estimate overstated for a new population (another country, scanner,
film or digital); Steyerberg & Harrell (2016), J Clin Epidemiol 69:245-247; Collins et al.
(2015), TRIPOD. Numbers in percent, p-values as fractions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..experiment.metrics import pooled_auc
from .pooled import clustered_auc_interval
from .runs import RunResult, load_run
from .stats import independent_auc_compare

COLUMNS = (
    "method",
    "train",
    "test",
    "internal_auc",
    "internal_auc_lo",
    "internal_auc_hi",
    "external_auc",
    "external_auc_lo",
    "external_auc_hi",
    "drop",
    "drop_lo",
    "drop_hi",
    "p_drop",
    "internal_images",
    "internal_patients",
    "external_images",
    "external_patients",
    "internal_run",
    "external_run",
)


@dataclass(frozen=True)
class ExternalRuns:
    """One method's internal run on a training cohort and its external run on a test cohort."""

    method: str
    train: str  # the training cohort's name
    test: str  # the test cohort's name
    internal: Path  # the cross-validation run directory
    external: Path  # the run trained on all of ``train``, tested on all of ``test``


def _sample(run: RunResult) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The run's held-out labels, scores and patients (every completed fold's)."""
    p = run.predictions
    return (p["label"].to_numpy(dtype=int), p["score"].to_numpy(dtype=float), p["patient_id"].astype(str).to_numpy())


def _auc(y: np.ndarray, s: np.ndarray, patients: np.ndarray) -> tuple[float, float, float]:
    """AUC and its clustered interval, NaN where undefined (one class)."""
    if len(np.unique(y)) < 2:
        return math.nan, math.nan, math.nan
    lo, hi = clustered_auc_interval(y, s, patients)
    return pooled_auc(y, s), lo, hi


def external_row(pair: ExternalRuns) -> dict[str, object]:
    """The table's row of one pair (numbers in percent)."""
    internal, external = load_run(pair.internal), load_run(pair.external)
    a, b = _sample(internal), _sample(external)
    row: dict[str, object] = {"method": pair.method, "train": pair.train, "test": pair.test}
    for name, sample in (("internal", a), ("external", b)):
        auc, lo, hi = _auc(*sample)
        row.update(
            {
                f"{name}_auc": 100 * auc,
                f"{name}_auc_lo": 100 * lo,
                f"{name}_auc_hi": 100 * hi,
                f"{name}_images": len(sample[0]),
                f"{name}_patients": len(np.unique(sample[2])),
            }
        )
    try:
        test = independent_auc_compare(*a, *b)
        row.update(
            {
                "drop": 100 * test.diff,
                "drop_lo": 100 * test.ci_low,
                "drop_hi": 100 * test.ci_high,
                "p_drop": test.p_value,
            }
        )
    except ValueError:  # a class held by fewer than two patients in one sample: no variance
        row.update(
            {
                "drop": row["internal_auc"] - row["external_auc"],  # type: ignore[operator]
                "drop_lo": math.nan,
                "drop_hi": math.nan,
                "p_drop": math.nan,
            }
        )
    row.update({"internal_run": str(internal.path), "external_run": str(external.path)})
    return row


def external_table(pairs: list[ExternalRuns]) -> pd.DataFrame:
    """One row per pair, in the order given: :data:`COLUMNS`."""
    return pd.DataFrame([external_row(p) for p in pairs], columns=list(COLUMNS))
