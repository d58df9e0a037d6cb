"""The label-efficiency table of a report: each method's pooled out-of-fold AUC (with its
patient-clustered 95% CI, Obuchowski 1997, from :mod:`.pooled`) at each label fraction it was run
with (``data.label_fraction``, ``--label-fraction``).

Runs that differ only in their label fraction make one curve: they are grouped by their method
(the bench row or run name without its ``-f<fraction>`` suffix) and their configuration without
the label fraction, the run name and the settings that do not decide results. They are
comparable point by point, because every fraction keeps the same held-out folds (same
``folds.csv``; :func:`ssl_bench.report.runs.comparability_issues` checks the images).

With a baseline run, each curve is also tested against the baseline's curve at the same label
fraction, the question a user with that many labels asks ("does this pretext task beat my
baseline at my label budget?"): the AUC difference on the same held-out images, Obuchowski's
(1997) clustered test, and Holm's (1979) adjustment over the methods compared at that fraction.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from typing import TypeGuard

import numpy as np
import pandas as pd

from ..experiment.rundir import comparable_config
from .runs import RunResult
from .significance import compare_auc
from .stats import holm_adjust

COLUMNS = ("method", "label_fraction", "n_train_images", "n_train_patients", "oof_auc", "oof_auc_lo",
           "oof_auc_hi", "run")
#: with a baseline: AUC minus the baseline curve's at the same fraction (percent points), p, Holm's p
TEST_COLUMNS = ("auc_diff", "p_auc", "p_auc_holm")


def run_fraction(run: RunResult) -> float:
    """The run's label fraction (1 for runs written before label fractions existed)."""
    value = run.data.get("label_fraction", 1.0)
    try:
        return float(value) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def base_method(run: RunResult) -> str:
    """The method's name without the ``-f<fraction>`` suffix of its label fraction."""
    suffix = f"-f{run_fraction(run):g}"
    name = run.method
    if run_fraction(run) < 1.0:
        name = re.sub(rf"{re.escape(suffix)}(?= \(|$)", "", name, count=1)
    return name


def _signature(run: RunResult) -> str:
    config = comparable_config(run.config)
    config["data"] = {k: v for k, v in config["data"].items() if k != "label_fraction"}
    config.get("train", {}).pop("label_budget", None)  # how a fraction is trained, not the method
    for key in ("name", "method", "profile"):
        config.pop(key, None)
    return json.dumps(config, sort_keys=True, default=str)


def _mean_count(run: RunResult, key: str) -> float:
    stored = [run.stored_metrics[k].get(key) for k in run.completed_folds]
    values = [float(v) for v in stored if isinstance(v, (int, float))]
    return float(np.mean(values)) if values else math.nan


def efficiency_table(runs: list[RunResult], table: pd.DataFrame, baseline: RunResult | None = None) -> pd.DataFrame:
    """One row per run (``runs[i]`` is ``table``'s row ``i``): ``method`` (the curve it belongs to),
    ``label_fraction``, the mean per fold of ``n_train_images`` and ``n_train_patients``,
    ``oof_auc, oof_auc_lo, oof_auc_hi`` (percent) and ``run``; sorted by method, then fraction.
    With a ``baseline`` run, also :data:`TEST_COLUMNS` against its curve (:func:`baseline_tests`)."""
    signatures: dict[str, set[str]] = {}
    for run in runs:
        signatures.setdefault(base_method(run), set()).add(_signature(run))
    rows = []
    for run, (_, row) in zip(runs, table.iterrows()):
        name = base_method(run)
        if len(signatures[name]) > 1:  # one name, several configurations: one curve each
            name = f"{name} [{hashlib.sha1(_signature(run).encode()).hexdigest()[:6]}]"
        rows.append({"method": name, "label_fraction": run_fraction(run),
                     "n_train_images": _mean_count(run, "n_train_images"),
                     "n_train_patients": _mean_count(run, "n_train_patients"),
                     "oof_auc": row["oof_auc"], "oof_auc_lo": row.get("oof_auc_lo", math.nan),
                     "oof_auc_hi": row.get("oof_auc_hi", math.nan), "run": str(run.path)})
    out = pd.DataFrame(rows, columns=list(COLUMNS))
    out = out.sort_values(["method", "label_fraction"], kind="stable").reset_index(drop=True)
    if baseline is not None:
        out = baseline_tests(out, {str(r.path): r for r in runs}, str(baseline.path))
    return out


def baseline_curve(efficiency: pd.DataFrame, baseline_run: str) -> str | None:
    """The curve (method) the baseline run belongs to."""
    match = efficiency.loc[efficiency["run"] == baseline_run, "method"]
    return str(match.iloc[0]) if len(match) else None


def baseline_tests(efficiency: pd.DataFrame, runs: dict[str, RunResult], baseline_run: str) -> pd.DataFrame:
    """``efficiency`` with :data:`TEST_COLUMNS`: each run against the baseline curve's run at the
    same label fraction, Holm-adjusted over the runs compared at that fraction; NaN on the
    baseline's own rows and at fractions the baseline was not run at."""
    out = efficiency.copy()
    for column in TEST_COLUMNS:
        out[column] = math.nan
    base = baseline_curve(out, baseline_run)
    for _fraction, rows in out.groupby("label_fraction"):
        reference = rows.loc[rows["method"] == base, "run"]
        others = rows[rows["method"] != base]
        if reference.empty or others.empty:
            continue
        tests = [compare_auc(runs[reference.iloc[0]], runs[path]) for path in others["run"]]
        out.loc[others.index, "auc_diff"] = [100 * diff for diff, _ in tests]
        out.loc[others.index, "p_auc"] = [p for _, p in tests]
        out.loc[others.index, "p_auc_holm"] = holm_adjust([p for _, p in tests])
    return out


def has_curve(efficiency: pd.DataFrame | None) -> TypeGuard[pd.DataFrame]:
    """Whether the runs hold a label-efficiency curve: some method at two or more fractions."""
    if efficiency is None or efficiency.empty:
        return False
    return bool((efficiency.groupby("method")["label_fraction"].nunique() > 1).any())
