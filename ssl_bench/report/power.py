"""Planning the next study: how many patients it needs to show that one method's AUC beats
another's (or is not worse by more than a margin), from the variance components of finished pilot
runs on the same patients.

Sample size from the variance of an AUC difference, as in Obuchowski (1998), "Sample size
calculations in studies of test accuracy", Statistical Methods in Medical Research 7:371-392
(sec. 3, comparing the accuracy of two tests on the same subjects), with the variance and the
covariance of the two AUCs estimated from the pilot by Obuchowski's (1997) patient-clustered
method (:func:`ssl_bench.report.stats.obuchowski_covariance`, the leaderboard's test), and the
one-sided non-inferiority form of Blackwelder (1982), "'Proving the null hypothesis' in clinical
trials", Controlled Clinical Trials 3:345-353.

With ``I`` pilot patients, the clustered variances ``V_a``, ``V_b`` and covariance ``V_ab`` of the
two AUCs give the per-patient components ``s_a^2 = I V_a``, ``s_b^2 = I V_b``, ``s_ab = I V_ab``
(correlation ``r = s_ab / (s_a s_b)``), and a study of ``n`` patients estimates the difference
with variance ``s_d^2 / n``, ``s_d^2 = s_a^2 + s_b^2 - 2 s_ab``. Then

- superiority, a two-sided test at ``alpha`` with power ``1 - beta`` to detect a difference
  ``delta``: ``n = s_d^2 (z_{1-alpha/2} + z_{1-beta})^2 / delta^2``;
- non-inferiority within ``margin``, one-sided at ``alpha``, the true difference ``delta`` (0 by
  default): ``n = s_d^2 (z_{1-alpha} + z_{1-beta})^2 / (delta + margin)^2``;

rounded up to whole patients. Assumptions: the study draws patients of the pilot's case mix (the
same prevalence, images per patient and share of patients with both classes, so that the variance
scales as ``1 / n``); the pilot's variance components hold at the AUCs the study will meet (one
variance under the null and the alternative, where Obuchowski 1998 allows two); the normal
approximation of the AUC difference; one comparison (with several, ``alpha`` divided by their
number is the conservative Bonferroni bound of the leaderboard's Holm adjustment). The pilot's
scores are pooled out-of-fold predictions, each fold's from its own model; a study that scores new
patients with one model has variance components of its own, which the pilot estimates.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import UserError
from .runs import RunResult
from .significance import paired
from .stats import obuchowski_covariance

#: the table's columns (:func:`power_table`); AUCs and differences as fractions
COLUMNS = ("method", "baseline", "auc", "auc_baseline", "auc_diff", "correlation", "sd_diff", "pilot_patients",
           "pilot_power", "patients", "images", "malignant_patients")


class VarianceComponents(NamedTuple):
    """Two methods' AUCs on the same patients and their per-patient variance components: the
    clustered (co)variances times the number of patients, which a study of ``n`` patients of the
    same case mix divides by ``n``."""

    auc: float
    auc_reference: float
    var: float  # s_a^2: n_patients x the clustered variance of ``auc``
    var_reference: float  # s_b^2
    cov: float  # s_ab: n_patients x the clustered covariance of the two AUCs
    n_patients: int
    n_images: int
    n_malignant_patients: int  # patients with a malignant image

    @property
    def correlation(self) -> float:
        """The correlation of the two AUC estimates (between-method correlation), NaN without variance."""
        denominator = math.sqrt(self.var * self.var_reference)
        return self.cov / denominator if denominator > 0 else math.nan

    @property
    def var_diff(self) -> float:
        """``s_d^2 = s_a^2 + s_b^2 - 2 s_ab``: per patient, the variance of the AUC difference."""
        return self.var + self.var_reference - 2.0 * self.cov


def variance_components(labels, scores, scores_reference, patients) -> VarianceComponents:
    """The per-patient variance components of two methods' AUCs on the same images.

    Args:
        labels: each image's label (1 malignant).
        scores: the method's score of each image.
        scores_reference: the reference's (baseline's) score of the same images.
        patients: each image's patient id.

    Returns:
        The AUCs, ``s_a^2, s_b^2, s_ab`` (Obuchowski's 1997 clustered covariance times the number
        of patients) and the pilot's counts.

    Raises:
        ValueError: one class, or fewer than two patients holding each class.
    """
    y = np.asarray(labels, dtype=int)
    ids = np.asarray(patients).astype(str)
    aucs, cov = obuchowski_covariance(y, ids, scores, scores_reference)
    n = int(np.unique(ids).size)
    return VarianceComponents(float(aucs[0]), float(aucs[1]), n * float(cov[0, 0]), n * float(cov[1, 1]),
                              n * float(cov[0, 1]), n, int(y.size), int(np.unique(ids[y == 1]).size))


def _quantiles(alpha: float, power: float, one_sided: bool) -> tuple[float, float]:
    """``(z_{1-alpha/2} or z_{1-alpha}, z_power)``."""
    return float(stats.norm.ppf(1 - (alpha if one_sided else alpha / 2))), float(stats.norm.ppf(power))


def patients_needed(var_diff: float, delta: float, power: float = 0.8, alpha: float = 0.05,
                    margin: float | None = None) -> int:
    """The patients a study needs (see the module's formulas).

    Args:
        var_diff: ``s_d^2``, the per-patient variance of the AUC difference (> 0).
        delta: superiority: the AUC difference to detect (> 0); non-inferiority: the true
            difference assumed (>= 0).
        power: the probability of showing it, ``1 - beta``.
        alpha: the test's level (two-sided for superiority, one-sided for non-inferiority).
        margin: the non-inferiority margin (> 0), or None for superiority.

    Returns:
        The number of patients, rounded up.
    """
    z_alpha, z_power = _quantiles(alpha, power, margin is not None)
    effect = delta + (margin or 0.0)
    # a relative 1e-9 keeps a size that is a whole number in exact arithmetic from rounding up
    return max(1, math.ceil(var_diff * (z_alpha + z_power) ** 2 / effect ** 2 * (1 - 1e-9)))


def power_at(var_diff: float, n_patients: int, delta: float, alpha: float = 0.05,
             margin: float | None = None) -> float:
    """The power of a study of ``n_patients`` (the inverse of :func:`patients_needed`; for the
    two-sided test, the far tail's share is left out, as in the sample size).

    Args:
        var_diff: ``s_d^2``.
        n_patients: the study's patients.
        delta: as in :func:`patients_needed`.
        alpha: as in :func:`patients_needed`.
        margin: as in :func:`patients_needed`.

    Returns:
        The probability that the test shows the difference (or non-inferiority).
    """
    z_alpha, _ = _quantiles(alpha, 0.5, margin is not None)
    effect = delta + (margin or 0.0)
    return float(stats.norm.cdf(effect * math.sqrt(n_patients / var_diff) - z_alpha))


def check_design(delta: float | None, power: float, alpha: float, margin: float | None) -> float:
    """The true difference of the design, after checking every setting.

    Args:
        delta: ``--delta``: required for superiority; for non-inferiority, optional (0).
        power: ``--power``, in (0, 1).
        alpha: ``--alpha``, in (0, 1).
        margin: ``--margin``, in (0, 1), or None.

    Returns:
        ``delta``, or 0 for a non-inferiority design without one.

    Raises:
        UserError: a setting out of its range, or superiority without ``delta``.
    """
    for name, value in (("--power", power), ("--alpha", alpha)):
        if not 0 < value < 1:
            raise UserError(f"{name} must be between 0 and 1, got {value:g}")
    if margin is not None and not 0 < margin < 1:
        raise UserError(f"--margin is an AUC difference between 0 and 1 (e.g. 0.05), got {margin:g}")
    if delta is None:
        if margin is None:
            raise UserError("give --delta (the AUC difference to detect, e.g. 0.02) or --margin (non-inferiority)")
        return 0.0
    if not 0 < delta < 1:
        raise UserError(f"--delta is an AUC difference between 0 and 1 (e.g. 0.02 for 2 points), got {delta:g}")
    return delta


def pilot(reference: RunResult, run: RunResult) -> VarianceComponents:
    """The variance components of ``run`` against ``reference`` on their held-out images, which
    must be the same images of the same patients.

    Args:
        reference: the baseline run.
        run: the other run.

    Returns:
        :func:`variance_components` of their pooled out-of-fold scores.

    Raises:
        UserError: the runs hold out different images, or the same images with other labels or
            patients, or too few patients of a class for a variance.
    """
    both = paired(reference, run)
    mine = run.predictions.drop_duplicates("image_id")
    theirs = reference.predictions.drop_duplicates("image_id")
    same_patients = (both["patient_id"].astype(str).to_numpy()
                     == mine.set_index("image_id").loc[both["image_id"], "patient_id"].astype(str).to_numpy())
    if len(both) != len(mine) or len(both) != len(theirs) or not same_patients.all():
        raise UserError(f"{run.path} and {reference.path} are not runs on the same patients ({len(both)} images "
                        f"agree of {len(mine)} and {len(theirs)}): a power analysis compares methods on the "
                        f"same images")
    try:
        return variance_components(both["label_ref"], both["score_run"], both["score_ref"], both["patient_id"])
    except ValueError as exc:
        raise UserError(f"{run.path}: no clustered variance of its AUC ({exc})") from None


def power_table(runs: list[RunResult], baseline: RunResult, delta: float | None, power: float = 0.8,
                alpha: float = 0.05, margin: float | None = None) -> pd.DataFrame:
    """Per run but the baseline: the patients a study needs against the baseline.

    Args:
        runs: finished runs on the same patients (the baseline among them or not).
        baseline: the run each other is compared with.
        delta: the AUC difference to detect (superiority), or the true difference assumed
            (non-inferiority, default 0); a fraction (0.02 = 2 points).
        power: the power wanted.
        alpha: the test's level.
        margin: the non-inferiority margin, or None for superiority.

    Returns:
        One row per run, :data:`COLUMNS`: the pilot's AUCs and their difference (run minus
        baseline), the correlation of the two AUC estimates, ``sd_diff`` (``s_d``, per patient),
        the pilot's patients and the power they give, and the study's ``patients`` with the
        ``images`` and ``malignant_patients`` they bring at the pilot's case mix.

    Raises:
        UserError: a setting out of range (:func:`check_design`), no run to compare, runs on
            other patients, or two runs that score every image alike (no variance).
    """
    delta = check_design(delta, power, alpha, margin)
    others = [r for r in runs if r is not baseline]
    if not others:
        raise UserError("a power analysis needs two runs on the same patients: a method and the baseline")
    rows = []
    for run in others:
        c = pilot(baseline, run)
        if not c.var_diff > 0:
            raise UserError(f"{run.path} and {baseline.path} rank the images alike: their AUC difference has "
                            f"no variance to plan from")
        n = patients_needed(c.var_diff, delta, power, alpha, margin)
        rows.append({"method": run.method, "baseline": baseline.method, "auc": c.auc, "auc_baseline": c.auc_reference,
                     "auc_diff": c.auc - c.auc_reference, "correlation": c.correlation,
                     "sd_diff": math.sqrt(c.var_diff), "pilot_patients": c.n_patients,
                     "pilot_power": power_at(c.var_diff, c.n_patients, delta, alpha, margin), "patients": n,
                     "images": math.ceil(n * c.n_images / c.n_patients),
                     "malignant_patients": math.ceil(n * c.n_malignant_patients / c.n_patients)})
    return pd.DataFrame(rows, columns=list(COLUMNS))
