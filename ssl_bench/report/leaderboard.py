"""The leaderboard of a benchmark: one row per method, Table II layout, with pooled out-of-fold AUC,
significance against a baseline, the paper's reference rows and the runs' provenance.

Numbers (all in percent in the tables):
- accuracy, sensitivity, specificity, Youden, F1, AUC: mean and sample std (ddof=1) over the
  completed folds (:func:`~ssl_bench.experiment.metrics.summarize`), recomputed from each fold's
  ``predictions.csv``.
- pooled out-of-fold AUC: one ROC AUC over all held-out images of all folds, with a 95% logit
  confidence interval from DeLong's variance (:func:`~ssl_bench.report.stats.auc_confidence_interval`).
- p-values against the baseline (default ``ResNet``) on the images both runs held out: DeLong's
  test for the pooled AUC (DeLong et al. 1988, fast algorithm of Sun & Xu 2014) and a paired
  bootstrap over images for accuracy at threshold 0.5. Not corrected for multiple comparisons.

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
from ..experiment.metrics import METRICS, summarize
from .runs import RunResult, check_comparable, find_runs, load_run
from .stats import auc_confidence_interval, delong_test, paired_bootstrap_accuracy

__all__ = [
    "METRICS", "SORT_KEYS", "Report", "RunResult", "build_report", "load_reference", "load_run",
]

REFERENCE_LABEL = "paper (INbreast)"
REFERENCE_DATASET = "inbreast"
SORT_KEYS = (*METRICS, "oof_auc")
THRESHOLD = 0.5


@dataclass
class Report:
    """Everything a renderer needs; numbers in percent, p-values as fractions.

    ``table`` has one row per method, in leaderboard order: ``method, run, folds_done,
    folds_total, <metric>_mean, <metric>_std`` for the six metrics, ``oof_auc, oof_auc_lo,
    oof_auc_hi`` (pooled AUC and its 95% CI), ``p_auc, p_accuracy`` (only with a baseline; NaN
    on the baseline's row) and ``warning``.
    """

    runs: list[RunResult]  # in leaderboard order
    table: pd.DataFrame
    per_fold: dict[str, pd.DataFrame]  # method -> rows per fold (n, n_malignant, metrics)
    reference: pd.DataFrame | None  # paper rows, same metric columns as `table`
    baseline: str | None  # baseline method found among the runs, else None
    sort_by: str
    notes: list[str] = field(default_factory=list)
    n_boot: int = 2000

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
    known = {*METRICS, *(f"{m}_std" for m in METRICS)}
    if not known & set(df.columns):
        raise UserError(f"{p}: no metric columns; expected some of {', '.join(METRICS)} (percent)")
    out = pd.DataFrame({"method": df["method"].astype(str).str.strip()})
    for m in METRICS:
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


def _summary_row(run: RunResult) -> dict[str, Any]:
    mean, std = summarize([run.fold_metrics[k] for k in run.completed_folds])
    row: dict[str, Any] = {"method": run.method, "run": str(run.path),
                           "folds_done": len(run.completed_folds), "folds_total": run.n_folds}
    for m in METRICS:
        row[f"{m}_mean"] = _percent(mean[m])
        row[f"{m}_std"] = _percent(std[m])
    pred = run.predictions
    try:
        auc, lo, hi = auc_confidence_interval(pred["label"], pred["score"])
        row.update(oof_auc=_percent(auc), oof_auc_lo=_percent(lo), oof_auc_hi=_percent(hi))
    except ValueError:  # a single class among the pooled predictions
        row.update(oof_auc=math.nan, oof_auc_lo=math.nan, oof_auc_hi=math.nan)
    stored = run.summary.get("oof_auc")
    if isinstance(stored, (int, float)) and not math.isnan(stored) and not math.isnan(row["oof_auc"]) \
            and not run.partial and abs(100 * stored - row["oof_auc"]) > 1e-4:
        run.warnings.append("summary.json oof_auc disagrees with predictions.csv")
    return row


def _per_fold(run: RunResult) -> pd.DataFrame:
    rows = []
    for k in run.completed_folds:
        pred = run.predictions[run.predictions["fold"] == k]
        rows.append({"fold": k, "n": len(pred), "n_malignant": int(pred["label"].sum()),
                     **{m: _percent(run.fold_metrics[k][m]) for m in METRICS}})
    return pd.DataFrame(rows).set_index("fold")


def _paired(base: RunResult, run: RunResult) -> pd.DataFrame:
    """The images both runs held out, with both scores (same label required)."""
    a = base.predictions[["image_id", "label", "score"]].drop_duplicates("image_id")
    b = run.predictions[["image_id", "label", "score"]].drop_duplicates("image_id")
    both = a.merge(b, on="image_id", suffixes=("_base", "_run"))
    return both[both["label_base"] == both["label_run"]]


def _significance(runs: list[RunResult], base: RunResult, n_boot: int, seed: int,
                  notes: list[str]) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    n_base = base.predictions["image_id"].nunique()
    for run in runs:
        if run is base:
            continue
        both = _paired(base, run)
        if len(both) < n_base or len(both) < run.predictions["image_id"].nunique():
            notes.append(f"p-values of {run.method} use the {len(both)} images it shares with "
                         f"{base.method} (of {n_base}).")
        y = both["label_base"].to_numpy()
        try:
            p_auc = delong_test(y, both["score_run"], both["score_base"])[2]
        except ValueError:
            p_auc = math.nan
        if len(both):
            p_acc = paired_bootstrap_accuracy(y, both["score_run"] >= THRESHOLD,
                                              both["score_base"] >= THRESHOLD, n=n_boot, seed=seed)
        else:
            p_acc = math.nan
        out[run.method] = (p_auc, p_acc)
    return out


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
    return (exact or loose or [None])[0]


def build_report(
    run_dirs: Iterable[str | Path],
    reference: str | Path | pd.DataFrame | None = None,
    baseline: str | None = "ResNet",
    sort_by: str = "auc",
    allow_mixed: bool = False,
    n_boot: int = 2000,
    seed: int = 0,
) -> Report:
    """Load run directories, check they are comparable, and build the leaderboard."""
    dirs = list(run_dirs)
    if not dirs:
        raise UserError("no run directories given")
    dirs, skipped = find_runs(dirs)
    key = {"pooled_auc": "oof_auc", "oof": "oof_auc"}.get(sort_by.lower(), sort_by.lower())
    if key not in SORT_KEYS:
        raise UserError(f"cannot sort by '{sort_by}'; choose one of {', '.join(SORT_KEYS)}")
    runs = [load_run(d) for d in dirs]
    notes = skipped + [f"Not comparable, reported anyway (--allow-mixed): {issue}."
             for issue in check_comparable(runs, allow_mixed)]
    _unique_names(runs, notes)

    table = pd.DataFrame([_summary_row(r) for r in runs])
    base = _find_baseline(runs, baseline)
    if base is not None:
        pv = _significance(runs, base, n_boot, seed, notes)
        table["p_auc"] = [pv.get(m, (math.nan, math.nan))[0] for m in table["method"]]
        table["p_accuracy"] = [pv.get(m, (math.nan, math.nan))[1] for m in table["method"]]
        notes.insert(0, (
            f"p-values compare each method with the baseline {base.method} on the same held-out "
            f"images: DeLong's test for the pooled out-of-fold AUC and a paired bootstrap over images "
            f"({n_boot} resamples) for accuracy; not corrected for multiple comparisons."))
    elif baseline:
        names = ", ".join(r.method for r in runs)
        notes.insert(0, f"Baseline '{baseline}' is not among the runs ({names}); no p-values.")
    table["warning"] = ["; ".join(r.warnings) for r in runs]
    col = "oof_auc" if key == "oof_auc" else f"{key}_mean"
    order = table.sort_values([col, "method"], ascending=[False, True], na_position="last").index
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
                  base.method if base is not None else None, key, notes, n_boot)


def reference_comparison(report: Report) -> pd.DataFrame:
    """Rows per reference method: ours (if run), the paper's, and ours - paper (points)."""
    if report.reference is None:
        return pd.DataFrame()
    cols = [*(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "oof_auc"]
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
