"""The label-efficiency table of a report: each method's pooled out-of-fold AUC (with its
patient-clustered 95% CI, Obuchowski 1997, from :mod:`.pooled`) at each label fraction it was run
with (``data.label_fraction``, ``--label-fraction``).

Runs that differ only in their label fraction make one curve: they are grouped by their method
(the bench row or run name without its ``-f<fraction>`` suffix) and their configuration without
the label fraction, the run name and the settings that do not decide results. They are
comparable point by point, because every fraction keeps the same held-out folds (same
``folds.csv``; :func:`ssl_bench.report.runs.comparability_issues` checks the images).
"""
from __future__ import annotations

import hashlib
import json
import math
import re

import numpy as np
import pandas as pd

from ..experiment.rundir import comparable_config
from .runs import RunResult

COLUMNS = ("method", "label_fraction", "n_train_images", "n_train_patients", "oof_auc", "oof_auc_lo",
           "oof_auc_hi", "run")


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
    values = [run.stored_metrics[k].get(key) for k in run.completed_folds]
    values = [float(v) for v in values if isinstance(v, (int, float))]
    return float(np.mean(values)) if values else math.nan


def efficiency_table(runs: list[RunResult], table: pd.DataFrame) -> pd.DataFrame:
    """One row per run (``runs[i]`` is ``table``'s row ``i``): ``method`` (the curve it belongs to),
    ``label_fraction``, the mean per fold of ``n_train_images`` and ``n_train_patients``,
    ``oof_auc, oof_auc_lo, oof_auc_hi`` (percent) and ``run``; sorted by method, then fraction."""
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
    return out.sort_values(["method", "label_fraction"], kind="stable").reset_index(drop=True)


def has_curve(efficiency: pd.DataFrame | None) -> bool:
    """Whether the runs hold a label-efficiency curve: some method at two or more fractions."""
    if efficiency is None or efficiency.empty:
        return False
    return bool((efficiency.groupby("method")["label_fraction"].nunique() > 1).any())
