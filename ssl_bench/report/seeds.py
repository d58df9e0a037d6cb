"""One leaderboard over several seeds: per method, the mean and sample std across seeds of each
seed's result (the per-seed fold means for the Table II metrics, the per-seed pooled values for
the pooled ones), as lightly's benchmarks and MedMNIST+ report them. Seeds change the folds, the
initialisation and the augmentation, so this spread is the one a reader should expect when
rerunning a method."""
from __future__ import annotations

import pandas as pd

from ..experiment.metrics import METRICS
from .leaderboard import Report

#: the per-seed values summarised, as ``Report.table`` columns -> title
SEED_COLUMNS = {**{f"{m}_mean": m for m in METRICS}, "oof_auc": "pooled_auc", "auprc": "auprc",
                "sens_at_spec90": "sens_at_spec90", "op_sensitivity": "op_sensitivity",
                "op_specificity": "op_specificity"}


def across_seeds(reports: dict[int, Report]) -> pd.DataFrame:
    """``method, seeds, <metric>_mean, <metric>_std`` (percent) over the seeds' reports, ordered
    by mean pooled AUC (a method missing from a seed's report is counted in ``seeds``)."""
    rows = []
    for seed, report in sorted(reports.items()):
        t = report.table
        for _, r in t.iterrows():
            rows.append({"method": r["method"], "seed": seed,
                         **{title: r[col] for col, title in SEED_COLUMNS.items() if col in t.columns}})
    frame = pd.DataFrame(rows)
    grouped = frame.drop(columns="seed").groupby("method", sort=False)
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    out.insert(0, "seeds", frame.groupby("method", sort=False)["seed"].nunique())
    titles = [t for t in SEED_COLUMNS.values() if f"{t}_mean" in out.columns]
    out = out[["seeds", *(f"{t}_{s}" for t in titles for s in ("mean", "std"))]]
    return out.sort_values("pooled_auc_mean", ascending=False).reset_index()
