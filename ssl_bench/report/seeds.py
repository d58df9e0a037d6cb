"""One leaderboard over several seeds: per method, the mean and sample std across seeds of each
seed's result (the per-seed fold means for the Table II metrics, the per-seed pooled values for
the pooled ones), as lightly's benchmarks and MedMNIST+ report them. Seeds change the folds, the
initialisation and the augmentation, so this spread is the one a reader should expect when
rerunning a method."""
from __future__ import annotations

import pandas as pd

from ..experiment.metric_specs import metric_specs
from .leaderboard import Report


def across_seeds(reports: dict[int, Report]) -> pd.DataFrame:
    """``method, seeds, <metric>_mean, <metric>_std`` (percent) over the seeds' reports for each
    metric of the ``seeds`` table (:mod:`ssl_bench.experiment.metric_specs`), ordered by mean
    pooled AUC (a method missing from a seed's report is counted in ``seeds``)."""
    columns = {spec.column: spec.name for spec in metric_specs("seeds")}
    rows = []
    for seed, report in sorted(reports.items()):
        t = report.table
        for _, r in t.iterrows():
            rows.append({"method": r["method"], "seed": seed,
                         **{name: r[col] for col, name in columns.items() if col in t.columns}})
    frame = pd.DataFrame(rows)
    grouped = frame.drop(columns="seed").groupby("method", sort=False)
    out = grouped.mean().add_suffix("_mean").join(grouped.std(ddof=1).add_suffix("_std"))
    out.insert(0, "seeds", frame.groupby("method", sort=False)["seed"].nunique())
    names = [name for name in columns.values() if f"{name}_mean" in out.columns]
    out = out[["seeds", *(f"{name}_{s}" for name in names for s in ("mean", "std"))]]
    return out.sort_values("oof_auc_mean", ascending=False).reset_index()
