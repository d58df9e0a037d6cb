"""Study axes of a report: a setting along which one method was run several times, one run
directory per value, and each method's pooled out-of-fold AUC (with its patient-clustered 95% CI,
Obuchowski 1997, from :mod:`.pooled`) at each value, a curve. Two axes exist:

- the **label fraction** (``data.label_fraction``; ``--label-fraction``, a bench file's
  ``label_fractions``): label efficiency, ``label_efficiency.{png,svg,csv}``;
- the **image size** (``data.image_size``; a bench file's ``image_sizes``, ``bench
  --image-size``): resolution, ``resolution.{png,svg,csv}``.

Runs that differ only in an axis' setting make one curve of that axis: they are grouped by their
method (the bench row or run name without the axis' suffix, ``-f<fraction>`` or
``-<height>x<width>``) and their configuration without that setting, the run name and the
settings that do not decide results. They are comparable point by point, because every value
keeps the same held-out images (same ``folds.csv``; :func:`ssl_bench.report.runs.comparability_issues`
checks them).

With a baseline run, each curve is also tested against the baseline's curve at the same value,
the question a user with that many labels, or that detector, asks ("does this pretext task beat my
baseline at my label budget, at my resolution?"): the AUC difference on the same held-out images,
Obuchowski's (1997) clustered test, and Holm's (1979) adjustment over the methods compared at
that value.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Callable, TypeGuard

import numpy as np
import pandas as pd

from ..components import size_suffix
from ..experiment.rundir import comparable_config
from .runs import RunResult
from .significance import compare_auc
from .stats import holm_adjust

#: the pooled AUC columns of every axis table, after the axis' own columns
AUC_COLUMNS = ("oof_auc", "oof_auc_lo", "oof_auc_hi", "run")
#: with a baseline: AUC minus the baseline curve's at the same value (percent points), p, Holm's p
TEST_COLUMNS = ("auc_diff", "p_auc", "p_auc_holm")


@dataclass(frozen=True)
class Axis:
    """One study axis: how a run's value is read, named, shown and drawn."""

    #: the section, the files' stem (``<name>.{png,svg,csv}``) and the key of ``Report.axes``
    name: str
    title: str
    #: the table's column holding the value as the tests group it (a number or ``HxW``)
    column: str
    #: the config keys (``section.key``) that vary along the axis, left out when grouping runs into curves
    settings: tuple[str, ...]
    #: the run's value on the axis
    value: Callable[[RunResult], Any]
    #: the suffix a run name carries for a value (``""``: none)
    suffix: Callable[[Any], str]
    #: the table's columns for a run at a value: ``column`` and any more
    columns: Callable[[RunResult, Any], dict[str, Any]]
    #: the value of a row of the axis' table
    row_value: Callable[[pd.Series], Any]
    #: the value's position on the figure's logarithmic x axis, and the order of the table
    position: Callable[[Any], float]
    #: the value as a tick label
    tick: Callable[[Any], str]
    #: the figure's x label
    x_label: str


def run_fraction(run: RunResult) -> float:
    """The run's label fraction (1 for runs written before label fractions existed)."""
    value = run.data.get("label_fraction", 1.0)
    try:
        return float(value) if value is not None else 1.0
    except (TypeError, ValueError):
        return 1.0


def run_size(run: RunResult) -> tuple[int, int]:
    """The run's image size ``(height, width)``; ``(0, 0)`` when its config does not say."""
    value = run.data.get("image_size") or ()
    try:
        height, width = (int(v) for v in value)
    except (TypeError, ValueError):
        return (0, 0)
    return (height, width)


def _mean_count(run: RunResult, key: str) -> float:
    stored = [run.stored_metrics[k].get(key) for k in run.completed_folds]
    values = [float(v) for v in stored if isinstance(v, (int, float))]
    return float(np.mean(values)) if values else math.nan


LABEL_FRACTION = Axis(
    name="label_efficiency", title="Label efficiency", column="label_fraction",
    settings=("data.label_fraction", "train.label_budget"),  # the budget: how a fraction is trained
    value=run_fraction,
    suffix=lambda f: "" if f >= 1.0 else f"-f{f:g}",
    columns=lambda run, f: {"label_fraction": f, "n_train_images": _mean_count(run, "n_train_images"),
                            "n_train_patients": _mean_count(run, "n_train_patients")},
    row_value=lambda row: float(row["label_fraction"]), position=float, tick=lambda f: f"{100 * f:g}%",
    x_label="Training labels used (share of each fold's training patients)",
)

IMAGE_SIZE = Axis(
    name="resolution", title="Resolution", column="image_size",
    settings=("data.image_size",),
    value=run_size,
    suffix=size_suffix,
    columns=lambda run, size: {"image_size": f"{size[0]}x{size[1]}", "image_height": size[0],
                               "image_width": size[1]},
    row_value=lambda row: (int(row["image_height"]), int(row["image_width"])),
    position=lambda size: float(size[0] * size[1]) or 1.0, tick=lambda size: f"{size[0]}x{size[1]}",
    x_label="Image size (height x width in pixels; axis: pixels per image)",
)

#: every axis, in the order of the report's sections
AXES = (LABEL_FRACTION, IMAGE_SIZE)


def base_method(run: RunResult, axis: Axis) -> str:
    """The method's name without ``axis``' suffix: a run name ends ``-<height>x<width>`` then
    ``-f<fraction>`` (:func:`ssl_bench.components.run_name`), and the report may add `` (folder)``."""
    suffix = axis.suffix(axis.value(run))
    if not suffix:
        return run.method
    return re.sub(rf"{re.escape(suffix)}(?=(-f[0-9.e+-]+)?( \(|$))", "", run.method, count=1)


def _signature(run: RunResult, axis: Axis) -> str:
    config = comparable_config(run.config)
    for setting in axis.settings:
        section, key = setting.split(".", 1)
        (config.get(section) or {}).pop(key, None)
    for key in ("name", "method", "profile"):
        config.pop(key, None)
    return json.dumps(config, sort_keys=True, default=str)


def axis_table(runs: list[RunResult], table: pd.DataFrame, axis: Axis, baseline: RunResult | None = None
               ) -> pd.DataFrame:
    """One row per run (``runs[i]`` is ``table``'s row ``i``): ``method`` (the curve it belongs
    to), ``axis``' columns (label fraction: ``label_fraction`` and the mean per fold of
    ``n_train_images`` and ``n_train_patients``; image size: ``image_size`` as ``HxW``,
    ``image_height``, ``image_width``), ``oof_auc, oof_auc_lo, oof_auc_hi`` (percent) and ``run``;
    sorted by method, then value. With a ``baseline`` run, also :data:`TEST_COLUMNS` against its
    curve (:func:`baseline_tests`).

    Args:
        runs: the report's runs.
        table: the leaderboard's table, row ``i`` that of ``runs[i]``, with the pooled AUC columns.
        axis: :data:`LABEL_FRACTION` or :data:`IMAGE_SIZE`.
        baseline: the report's baseline run, or None.

    Returns:
        The table (empty columns but ``method`` when ``runs`` is empty).
    """
    signatures: dict[str, set[str]] = {}
    for run in runs:
        signatures.setdefault(base_method(run, axis), set()).add(_signature(run, axis))
    rows, order = [], []
    for run, (_, row) in zip(runs, table.iterrows()):
        name = base_method(run, axis)
        if len(signatures[name]) > 1:  # one name, several configurations: one curve each
            name = f"{name} [{hashlib.sha1(_signature(run, axis).encode()).hexdigest()[:6]}]"
        value = axis.value(run)
        order.append(axis.position(value))
        rows.append({"method": name, **axis.columns(run, value), "oof_auc": row["oof_auc"],
                     "oof_auc_lo": row.get("oof_auc_lo", math.nan), "oof_auc_hi": row.get("oof_auc_hi", math.nan),
                     "run": str(run.path)})
    columns = ["method", *(axis.columns(runs[0], axis.value(runs[0])) if runs else {}), *AUC_COLUMNS]
    out = pd.DataFrame(rows, columns=columns).assign(_position=order)
    out = out.sort_values(["method", "_position"], kind="stable").drop(columns="_position").reset_index(drop=True)
    if baseline is not None:
        out = baseline_tests(out, {str(r.path): r for r in runs}, str(baseline.path), axis)
    return out


def baseline_curve(table: pd.DataFrame, baseline_run: str) -> str | None:
    """The curve (method) the baseline run belongs to."""
    match = table.loc[table["run"] == baseline_run, "method"]
    return str(match.iloc[0]) if len(match) else None


def baseline_tests(table: pd.DataFrame, runs: dict[str, RunResult], baseline_run: str, axis: Axis) -> pd.DataFrame:
    """``table`` with :data:`TEST_COLUMNS`: each run against the baseline curve's run at the
    same value of ``axis``, Holm-adjusted over the runs compared at that value; NaN on the
    baseline's own rows and at values the baseline was not run at."""
    out = table.copy()
    for column in TEST_COLUMNS:
        out[column] = math.nan
    base = baseline_curve(out, baseline_run)
    for _value, rows in out.groupby(axis.column):
        reference = rows.loc[rows["method"] == base, "run"]
        others = rows[rows["method"] != base]
        if reference.empty or others.empty:
            continue
        tests = [compare_auc(runs[reference.iloc[0]], runs[path]) for path in others["run"]]
        out.loc[others.index, "auc_diff"] = [100 * diff for diff, _ in tests]
        out.loc[others.index, "p_auc"] = [p for _, p in tests]
        out.loc[others.index, "p_auc_holm"] = holm_adjust([p for _, p in tests])
    return out


def has_curve(table: pd.DataFrame | None, axis: Axis) -> TypeGuard[pd.DataFrame]:
    """Whether ``table`` (an :func:`axis_table` of ``axis``) holds a curve: some method at two or
    more values."""
    if table is None or table.empty:
        return False
    return bool((table.groupby("method")[axis.column].nunique() > 1).any())
