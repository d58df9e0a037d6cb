"""The leaderboard of a benchmark: one row per method, Table II layout, with pooled out-of-fold
metrics, significance against a baseline and against a non-spatial control, the paper's reference
rows and the runs' provenance.

Numbers (all in percent in the tables):
- accuracy, sensitivity, specificity, Youden, F1, AUC: mean and sample std (ddof=1) over the
  completed folds (:func:`~ssl_bench.experiment.metrics.summarize`), recomputed from each fold's
  ``predictions.csv``, at the paper's threshold 0.5;
- pooled over all held-out images of all folds, with patient-clustered 95% CIs
  (:mod:`.pooled`): ROC AUC, AUPRC, sensitivity at 90% / 95% specificity, breast- and
  patient-level AUC (views aggregated by ``aggregate``), and sensitivity/specificity at each
  fold's own operating point (chosen on its training predictions);
- p-values against the baseline (default ``ResNet``) and the control (default ``Non-spatial``,
  the non-spatial baseline row) on the images both runs held out, patients as the unit, raw and
  Holm-adjusted over the methods compared (:mod:`.significance`);
- degenerate folds (constant scores, or >= 95% of held-out images on one side of 0.5) counted
  and named in the warnings.

:func:`build_report` builds the :class:`Report` that renderers (:mod:`.render`, :mod:`.html`,
:mod:`.roc`) turn into text and figures and :mod:`.publish` writes to files.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pandas as pd

from ..errors import UserError
from ..experiment.metric_specs import LOWER, MetricSpec, metric_specs, sort_keys, sort_spec
from ..experiment.metrics import AGGREGATES, summarize
from ..experiment.calibration import expected_calibration_error
from ..experiment.operating_point import degenerate_reason
from .axes import AXES, axis_table
from .external import external_pairs, external_table, ranked_runs
from .pooled import pooled_with_intervals
from .runs import NoCompletedFold, RunResult, check_comparable, find_runs, load_run, operating_threshold
from .significance import compare_all
from .subgroups import subgroup_table

__all__ = [
    "Report", "RunResult", "build_report", "load_reference", "load_run",
]

DEFAULT_BASELINE = "ResNet"  # the paper's supervised baseline row
REFERENCE_LABEL = "paper (INbreast)"
REFERENCE_DATASET = "inbreast"
#: how the notes name the resampling unit of every interval and test
UNIT_NOTE = ("patients are the resampling unit: pooled, breast- and patient-level AUCs get "
             "Obuchowski's clustered variance (1997), AUPRC and sensitivities at fixed specificity a "
             "patient bootstrap ({n_boot} resamples), and paired tests compare AUCs with Obuchowski's "
             "clustered test and accuracies (threshold 0.5) with a paired patient bootstrap")


@dataclass
class Report:
    """Everything a renderer needs; numbers in percent, p-values as fractions.

    ``table`` has one row per method, in leaderboard order (the control last): ``method, role``
    (``"control"`` or ``""``), ``run, folds_done, folds_total``, ``<metric>_mean, <metric>_std``
    for each fold metric, ``<metric>, <metric>_lo, <metric>_hi`` for each pooled one (its value
    and 95% interval, e.g. ``oof_auc``: the pooled AUC; :mod:`ssl_bench.experiment.metric_specs`), ``ece`` and
    ``ece_calibrated`` (expected calibration error of the pooled raw and calibrated probabilities;
    NaN for runs before calibration), ``degenerate`` (number of degenerate folds), with a baseline ``p_auc, p_auc_holm, p_accuracy, p_accuracy_holm``
    (NaN on its row), with a control ``control_auc_diff, control_p_auc, control_p_auc_holm,
    beats_control``, and ``warning``.
    """

    runs: list[RunResult]  # in leaderboard order
    table: pd.DataFrame
    per_fold: dict[str, pd.DataFrame]  # method -> rows per fold (n, n_malignant, metrics)
    reference: pd.DataFrame | None  # paper rows, same metric columns as `table`
    baseline: str | None  # baseline method found among the runs, else None
    sort_by: str
    notes: list[str] = field(default_factory=list)
    n_boot: int = 1000
    control: str | None = None  # the non-spatial control found among the runs, else None
    aggregate: str = "mean"
    #: per study axis (:mod:`.axes`: ``label_efficiency``, ``resolution``), pooled AUC per method
    #: and value, one row per run
    axes: dict[str, pd.DataFrame] = field(default_factory=dict)
    #: pooled AUC per method and subgroup, with heterogeneity p-values (:mod:`.subgroups`)
    subgroups: pd.DataFrame | None = None
    #: with external runs and their internal partners (a bench's external study): internal vs
    #: external AUC and the drop per method and cohort pair (:func:`.external.external_table`);
    #: None without them
    external: pd.DataFrame | None = None

    @property
    def has_p_values(self) -> bool:
        return self.baseline is not None

    @property
    def dataset(self) -> str:
        return self.runs[0].dataset


def load_reference(path: str | Path) -> pd.DataFrame:
    """Read a reference CSV (``benchmarks/table2_paper.csv``): ``method`` plus percent columns
    ``<metric>`` and ``<metric>_std`` for the Table II metrics; any may be empty."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"reference file not found: {p}")
    try:
        df = pd.read_csv(p)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise UserError(f"cannot read reference file {p}: {exc}") from None
    if "method" not in df.columns:
        raise UserError(f"{p}: the reference CSV needs a 'method' column, found {', '.join(df.columns)}")
    table_ii = [spec.name for spec in metric_specs("threshold", pooled=False)]
    known = {*table_ii, *(f"{m}_std" for m in table_ii)}
    if not known & set(df.columns):
        raise UserError(f"{p}: no metric columns; expected some of {', '.join(table_ii)} (percent)")
    out = pd.DataFrame({"method": df["method"].astype(str).str.strip()})
    for m in table_ii:
        for src, dst in ((m, f"{m}_mean"), (f"{m}_std", f"{m}_std")):
            try:
                out[dst] = pd.to_numeric(df[src], errors="raise") if src in df else math.nan
            except (ValueError, TypeError):
                raise UserError(f"{p}: column '{src}' must hold numbers (percent)") from None
    # the paper's AUC is read off its ROC figure: a pooled curve, so it compares with oof_auc
    out["oof_auc"] = out.pop("auc_mean")
    out["auc_mean"] = math.nan
    return out


def _percent(value: float) -> float:
    return 100.0 * value if value is not None and not math.isnan(value) else math.nan


def _shown(spec: MetricSpec, value: float) -> float:
    """A metric's value as the tables hold it (:meth:`MetricSpec.shown`; NaN where undefined)."""
    return spec.shown(value) if value is not None and not math.isnan(value) else math.nan


def _summary_row(run: RunResult, aggregate: str, n_boot: int, seed: int) -> dict[str, Any]:
    mean, std = summarize([run.fold_metrics[k] for k in run.completed_folds])
    row: dict[str, Any] = {"method": run.method, "role": "", "run": str(run.path),
                           "folds_done": len(run.completed_folds), "folds_total": run.n_folds}
    for spec in metric_specs(pooled=False):
        row[f"{spec.name}_mean"] = _shown(spec, mean.get(spec.name, math.nan))
        row[f"{spec.name}_std"] = _shown(spec, std.get(spec.name, math.nan))
    thresholds = fold_thresholds(run)
    pooled = pooled_with_intervals(run.predictions, thresholds, aggregate, n_boot, seed)
    for spec in metric_specs(pooled=True):
        for end in ("", "_lo", "_hi"):
            row[spec.name + end] = _shown(spec, pooled[spec.compute + end])
    labels, calibrated = run.predictions["label"].to_numpy(), run.predictions["calibrated"].to_numpy(dtype=float)
    row["ece"] = _percent(expected_calibration_error(labels, run.predictions["score"].to_numpy(dtype=float)))
    row["ece_calibrated"] = _percent(expected_calibration_error(labels, calibrated)) \
        if np.isfinite(calibrated).all() else math.nan  # runs before calibration have none
    degenerate = {k: degenerate_reason(run.predictions.loc[run.predictions["fold"] == k, "score"])
                  for k in run.completed_folds}
    degenerate = {k: why for k, why in degenerate.items() if why}
    row["degenerate"] = len(degenerate)
    run.degenerate = degenerate  # shown in the "Degenerate folds" column and the per-fold table
    return row


def fold_thresholds(run: RunResult) -> dict[int, float]:
    """Each completed fold's operating threshold (:func:`~.runs.operating_threshold`), as the pooled
    metrics take them."""
    return {k: operating_threshold(run.stored_metrics[k]) for k in run.completed_folds}


def _per_fold(run: RunResult) -> pd.DataFrame:
    rows = []
    for k in run.completed_folds:
        pred = run.predictions[run.predictions["fold"] == k]
        rows.append({"fold": k, "n": len(pred), "n_malignant": int(pred["label"].sum()),
                     **{s.name: _shown(s, run.fold_metrics[k][s.name])
                        for s in metric_specs("threshold", pooled=False)},
                     "op_threshold": operating_threshold(run.stored_metrics[k]),
                     "degenerate": run.degenerate.get(k, "")})
    return pd.DataFrame(rows).set_index("fold")


def _unique_names(runs: list[RunResult], notes: list[str]) -> None:
    counts = pd.Series([r.method for r in runs]).value_counts()
    for name in counts[counts > 1].index:
        notes.append(f"{counts[name]} runs are named {name!r}; each is labelled with its folder.")
    for r in runs:
        if counts[r.method] > 1:
            r.method = f"{r.method} ({r.path.name})"
    if len({r.method for r in runs}) < len(runs):
        raise UserError("two runs have the same method name and folder name; rename one folder")


def _find_baseline(runs: list[RunResult], baseline: str | None) -> RunResult | None:
    if not baseline:
        return None
    exact = [r for r in runs if r.method == baseline]
    loose = [r for r in runs if r.method.lower() == baseline.lower()]
    return next(iter(exact or loose), None)


def build_report(
    run_dirs: Iterable[str | Path],
    reference: str | Path | pd.DataFrame | None = None,
    baseline: str | None = "ResNet",
    sort_by: str = "oof_auc",
    allow_mixed: bool = False,
    n_boot: int = 1000,
    baseline_required: bool = True,
    allow_edited: bool = False,
    seed: int = 0,
    control: str | None = "Non-spatial",
    aggregate: str = "mean",
) -> Report:
    """Load run directories, check they are comparable, and build the leaderboard.
    Among runs with external runs (:func:`~ssl_bench.report.external.external_pairs`: a
    ``data.test_dataset`` run and its cross-validation partner), the leaderboard ranks the
    cross-validations comparable with the first pair's (unless ``allow_mixed``) and the report
    holds the external table of every pair. ``baseline_required=False``: a baseline that is not
    among the runs is no note (the default baseline of ``ssl-bench report``, which the user did
    not ask for)."""
    given = list(run_dirs)
    if not given:
        raise UserError("no run directories given")
    if aggregate not in AGGREGATES:
        raise UserError(f"--aggregate must be one of {', '.join(AGGREGATES)}, got '{aggregate}'")
    if n_boot < 100:
        raise UserError(f"--n-boot must be at least 100, got {n_boot}")
    dirs, skipped = find_runs(given)
    key = {"pooled_auc": "oof_auc", "oof": "oof_auc"}.get(sort_by.lower(), sort_by.lower())
    by = sort_spec(key)
    if by is None:
        raise UserError(f"cannot sort by '{sort_by}'; choose one of {', '.join(sort_keys())}")
    runs, unfinished = [], []
    for d in dirs:
        try:
            runs.append(load_run(d, allow_edited))
        except NoCompletedFold as exc:  # still training (a bench beside it, say): left out, said
            if len(dirs) == 1:
                raise
            unfinished.append(str(exc.path))
    if not runs:
        raise UserError(f"no run among {', '.join(map(str, dirs))} has a completed fold yet")
    if unfinished:
        skipped = skipped + [f"Skipped {len(unfinished)} run(s) without a completed fold yet: {', '.join(unfinished)}."]
    pairs = external_pairs(runs)
    if pairs and not allow_mixed:  # an external study: one comparable group ranked, every pair tabled
        runs, study = ranked_runs(runs, pairs)
        skipped = skipped + [study]
    notes = skipped + [f"Not comparable, reported anyway (--allow-mixed): {issue}."
             for issue in check_comparable(runs, allow_mixed)]
    _unique_names(runs, notes)

    table = pd.DataFrame([_summary_row(r, aggregate, n_boot, seed) for r in runs])
    base = _find_baseline(runs, baseline)
    ctrl = _find_baseline(runs, control)
    if ctrl is not None and ctrl is base:
        ctrl = None
    if base is not None:
        _add_comparisons(table, runs, base, "", n_boot, seed, notes)
        compared = len(runs) - 1
        notes.insert(0, (f"p-values compare each method with the baseline {base.method} on the same "
                         f"held-out images; Holm-adjusted values (Holm 1979) correct for the "
                         f"{compared} method{'s' if compared > 1 else ''} compared.") if compared else
                     f"The baseline {base.method} is the only method: nothing is compared with it.")
    elif baseline and baseline_required:
        names = ", ".join(r.method for r in runs)
        notes.insert(0, f"Baseline '{baseline}' is not among the runs ({names}); no p-values.")
    if ctrl is not None:
        _add_comparisons(table, runs, ctrl, "control_", n_boot, seed, notes)
        table["beats_control"] = [math.nan if r is ctrl or math.isnan(p) else bool(p < 0.05 and d > 0)
                                  for r, p, d in zip(runs, table["control_p_auc_holm"], table["control_auc_diff"])]
        table.loc[[r is ctrl for r in runs], "role"] = "control"
        notes.append(f"{ctrl.method} is the control: gradient-boosted trees on position-free features "
                     f"(intensities, bright components, gradients, local maxima, profiles, a thumbnail; "
                     f"no lesion located or described). A method 'beats' it when its pooled AUC is "
                     f"higher with a Holm-adjusted p < 0.05; one that does not has not shown that it "
                     f"reads lesions rather than density, brightness or another shortcut.")
    notes.append(UNIT_NOTE.format(n_boot=n_boot)[0].upper() + UNIT_NOTE.format(n_boot=n_boot)[1:] + ".")
    table["warning"] = ["; ".join(r.warnings) for r in runs]
    order = table.assign(_control=table["role"] == "control").sort_values(
        ["_control", by.column, "method"], ascending=[True, by.direction == LOWER, True], na_position="last").index
    table = table.loc[order].reset_index(drop=True)
    runs = [runs[i] for i in order]

    ref = None
    if reference is not None:
        ref = reference if isinstance(reference, pd.DataFrame) else load_reference(reference)
        if runs[0].dataset.lower() != REFERENCE_DATASET:
            notes.append(f"Reference rows are the TSBN paper's numbers on INbreast; these runs use "
                         f"the dataset '{runs[0].dataset}' (another dataset), so differences are "
                         f"not like-for-like.")
    for r in runs:
        if r.partial:
            notes.append(f"{r.method} is partial ({len(r.completed_folds)}/{r.n_folds} folds): its "
                         f"means cover the completed folds only.")
    return Report(runs, table, {r.method: _per_fold(r) for r in runs}, ref,
                  base.method if base is not None else None, key, notes, n_boot,
                  ctrl.method if ctrl is not None else None, aggregate,
                  {axis.name: axis_table(runs, table, axis, base) for axis in AXES}, subgroup_table(runs),
                  external_table(pairs) if pairs else None)


def _add_comparisons(table: pd.DataFrame, runs: list[RunResult], ref: RunResult, prefix: str,
                     n_boot: int, seed: int, notes: list[str]) -> None:
    """Columns ``<prefix>auc_diff, <prefix>p_auc[_holm], <prefix>p_accuracy[_holm]`` (NaN on the
    reference's own row), and a note for every method compared on fewer images than it has."""
    results = compare_all(runs, ref, n_boot, seed)
    n_ref = ref.predictions["image_id"].nunique()
    for run in runs:
        shared = results.get(run.method, {}).get("n_images")
        if shared is not None and (shared < n_ref or shared < run.predictions["image_id"].nunique()):
            notes.append(f"p-values of {run.method} against {ref.method} use the {shared} images they "
                         f"share (of {n_ref}).")
    for name in ("auc_diff", "p_auc", "p_auc_holm", "p_accuracy", "p_accuracy_holm"):
        table[prefix + name] = [results.get(r.method, {}).get(name, math.nan) for r in runs]


def reference_comparison(report: Report) -> pd.DataFrame:
    """Rows per reference method: ours (if run), the paper's, and ours - paper (points)."""
    if report.reference is None:
        return pd.DataFrame()
    cols = [*(f"{m.name}_{s}" for m in metric_specs("threshold", pooled=False) for s in ("mean", "std")), "oof_auc"]
    ours = report.table.set_index("method")
    rows = []
    for _, ref in report.reference.iterrows():
        name = ref["method"]
        rows.append({"method": name, "source": REFERENCE_LABEL, **{c: ref[c] for c in cols}})
        if name in ours.index:
            mine = ours.loc[name]
            rows.insert(len(rows) - 1, {"method": name, "source": "ours", **{c: mine[c] for c in cols}})
            diff = {c: mine[c] - ref[c] for c in cols if not c.endswith("_std")}
            rows.append({"method": name, "source": "ours - paper", **diff})
    return pd.DataFrame(rows, columns=["method", "source", *cols])


def pooled_curves(report: Report) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """``(method, labels, scores, pooled AUC in percent)`` per run, in leaderboard order."""
    out = []
    for run, auc in zip(report.runs, report.table["oof_auc"]):
        p = run.predictions
        out.append((run.method, p["label"].to_numpy(), p["score"].to_numpy(), float(auc)))
    return out
