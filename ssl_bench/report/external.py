"""External validation: each method's internal AUC (cross-validated on its training cohort) against
its AUC on an external cohort it was never trained on, and the drop between them.

The pairs are found in the saved runs' configs, never in their names (:func:`external_pairs`): an
external run is one with a test dataset (``data.test_dataset``), and its internal partner the
cross-validation run whose config equals it but for what decides the held-out images (the
settings of the ``SAMPLING`` role: folds, split, test dataset and folder; not the label fraction,
which chooses the training images both share), what only places or labels a run (``VOLATILE``:
the cohorts' names among them), its name and display name, and the test dataset's options. A bench's ``external`` section (:mod:`ssl_bench.bench.external`)
declares the pairs it runs; the bench checks that these are the ones found.

Per pair of runs:

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

import numpy as np
import pandas as pd

from ..config import SAMPLING, without_roles
from ..errors import UserError
from ..experiment.metrics import pooled_auc
from ..experiment.rundir import comparable_config
from .pooled import clustered_auc_interval
from .runs import RunResult, comparability_issues
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


#: the settings that name a run rather than decide it (the run directory, the table's row)
NAMING = ("name", "method")


@dataclass(frozen=True)
class ExternalRuns:
    """One method's internal run on a training cohort and its external run on a test cohort."""

    method: str  # the internal run's method
    train: str  # the training cohort's name (``data.cohort``, else the dataset)
    test: str  # the test cohort's name (``data.test_cohort``, else the test dataset)
    internal: RunResult  # the cross-validation run
    external: RunResult  # the run trained on all of ``train``, tested on all of ``test``


def _test_dataset(run: RunResult) -> str | None:
    return run.data.get("test_dataset") or None


def _trained_as(run: RunResult) -> dict:
    """What a run's training shares with its partner: its config less the settings that decide
    the held-out images (``SAMPLING`` but the label fraction, which chooses the training images),
    place or label the run (``VOLATILE``, through
    :func:`~ssl_bench.experiment.rundir.comparable_config`), :data:`NAMING`, and the options of a
    test dataset other than the training dataset."""
    out = without_roles(comparable_config(run.config), (SAMPLING,))
    out["label_fraction"] = run.data.get("label_fraction", 1.0)
    for key in NAMING:
        out.pop(key, None)
    test = _test_dataset(run)
    if test and test != run.data.get("dataset"):
        (out.get("params") or {}).pop(test, None)
    return out


def external_pairs(runs: list[RunResult]) -> list[ExternalRuns]:
    """Every external run among ``runs`` (one with ``data.test_dataset``) with its internal partner,
    the cross-validation run trained as it was (:func:`_trained_as`); an external run without a
    partner among ``runs`` is in no pair. Sorted by method, training and test cohort, so that the
    table does not depend on the order the runs were given in.

    Raises:
        UserError: an external run has two partners (the same configuration run twice under two names).
    """
    internal = [r for r in runs if _test_dataset(r) is None]
    keys = [_trained_as(r) for r in internal]
    pairs = []
    for run in runs:
        if _test_dataset(run) is None:
            continue
        key = _trained_as(run)
        partners = [r for r, k in zip(internal, keys) if k == key]
        if len(partners) > 1:
            raise UserError(
                f"{run.path} is an external run of several cross-validations trained as it was "
                f"({', '.join(str(r.path) for r in partners)}); report one of them with it"
            )
        if partners:
            cv = partners[0]
            pairs.append(
                ExternalRuns(
                    cv.method,
                    str(cv.data.get("cohort") or cv.dataset),
                    str(run.data.get("test_cohort") or _test_dataset(run)),
                    cv,
                    run,
                )
            )
    return sorted(pairs, key=lambda p: (p.method, p.train, p.test, str(p.external.path)))


def ranked_runs(runs: list[RunResult], pairs: list[ExternalRuns]) -> tuple[list[RunResult], str]:
    """The leaderboard's runs of an external study: the cross-validations comparable with the first
    pair's internal run (same data, folds, split and seed), and the note that says so."""
    first = pairs[0].internal
    ranked = [r for r in runs if _test_dataset(r) is None and (r is first or not comparability_issues([first, r]))]
    paired = {id(r) for p in pairs for r in (p.internal, p.external)}
    others = [r for r in runs if all(r is not k for k in ranked)]
    outside = [r.path.name for r in others if id(r) not in paired]
    note = (
        f"External study: the leaderboard ranks the {len(ranked)} cross-validation(s) on {pairs[0].train} "
        f"({first.dataset}); the other {len(others) - len(outside)} run(s) are in the External validation "
        f"table only"
    )
    if outside:
        note += f"; left out, in no pair and not comparable with them: {', '.join(outside)}"
    return ranked, note + "."


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
    internal, external = pair.internal, pair.external
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
