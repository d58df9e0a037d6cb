"""Pooled AUC per subgroup (view, laterality, breast density, lesion type, manufacturer), each with
its patient-clustered 95% CI, and a test of heterogeneity across a variable's subgroups.

Mammography reviewers ask whether a classifier works as well on CC as on MLO views, on dense as on
fatty breasts, on calcifications as on masses, on one vendor's images as on another's. A run
records each image's subgroup variables in ``subgroups.csv`` (written from the dataset's sample
table, :mod:`ssl_bench.data.subgroups`; blank where the dataset does not know them); here the
pooled out-of-fold scores are split by each variable. Per subgroup: images, patients, malignant
images and the image-level AUC with Obuchowski's (1997) clustered logit interval, patients as the
unit (as the leaderboard's pooled AUC). Per variable: the Wald test that the subgroup AUCs are
equal, their covariance through the patients they share included (a patient's CC and MLO images
fall in different view subgroups: :func:`~ssl_bench.report.stats.subgroup_auc_covariance`). A
subgroup with one class (the phantom's benign-only findings) is listed without an AUC and left out
of the test; blank values are left out of their variable. p-values are raw: a variable is a
question of its own, and several variables several questions, to be read as such.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..data.subgroups import SUBGROUP_COLUMNS
from ..experiment.metrics import pooled_auc
from .pooled import clustered_auc_interval
from .runs import RunResult
from .stats import heterogeneity_test, subgroup_auc_covariance

#: the long table's columns (AUCs in percent)
COLUMNS = ("method", "variable", "subgroup", "n_images", "n_patients", "n_malignant", "auc", "auc_lo",
           "auc_hi", "p_heterogeneity")


def _with_variables(run: RunResult) -> pd.DataFrame | None:
    """The run's pooled predictions with its images' subgroup variables, or None without them."""
    if run.subgroups is None:
        return None
    variables = [c for c in SUBGROUP_COLUMNS if c in run.subgroups.columns]
    table = run.subgroups[["image_id", *variables]].astype({"image_id": str})
    return run.predictions.merge(table, on="image_id", how="left", suffixes=("_predictions", ""))


def _variable_rows(method: str, variable: str, data: pd.DataFrame) -> list[dict]:
    """One row per subgroup of ``variable``; each carries the variable's heterogeneity p-value."""
    known = data[data[variable].fillna("").astype(str) != ""]
    groups = known[variable].astype(str).to_numpy()
    if np.unique(groups).size < 2:
        return []
    y = known["label"].to_numpy(dtype=int)
    s = known["score"].to_numpy(dtype=float)
    patients = known["patient_id"].astype(str).to_numpy()
    _, aucs, cov = subgroup_auc_covariance(y, s, patients, groups)
    _, _, p = heterogeneity_test(aucs, cov)
    rows = []
    for value in sorted(set(groups.tolist())):
        member = groups == value
        ym, sm = y[member], s[member]
        auc = pooled_auc(ym, sm)  # NaN with one class
        lo, hi = clustered_auc_interval(ym, sm, patients[member])
        rows.append({"method": method, "variable": variable, "subgroup": value, "n_images": int(member.sum()),
                     "n_patients": int(np.unique(patients[member]).size), "n_malignant": int(ym.sum()),
                     "auc": 100 * auc, "auc_lo": 100 * lo, "auc_hi": 100 * hi, "p_heterogeneity": p})
    return rows


def subgroup_table(runs: list[RunResult]) -> pd.DataFrame | None:
    """Every run's subgroup AUCs (:data:`COLUMNS`), or None when no run recorded subgroups with
    two or more values of a variable.

    Args:
        runs: the report's runs, in leaderboard order.

    Returns:
        One row per method, variable and subgroup; AUCs and their interval in percent,
        ``p_heterogeneity`` a fraction (NaN when fewer than two subgroups have an AUC).
    """
    rows: list[dict] = []
    for run in runs:
        data = _with_variables(run)
        if data is None:
            continue
        for variable in SUBGROUP_COLUMNS:
            if variable in data.columns:
                rows += _variable_rows(run.method, variable, data)
    return pd.DataFrame(rows, columns=list(COLUMNS)) if rows else None
