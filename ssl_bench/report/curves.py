"""Training curves of the methods of a report: each stage's losses per epoch, averaged over the
folds' ``history.csv`` (runs written before histories existed are left out). One panel per loss
(``bce`` for every method that trains a classifier, ``pretext``, ``ct`` for collab; with
``train.probe_every``, the online probes' AUCs ``probe_linear_auc`` and ``probe_knn_auc``), one line
per method and stage, so a diverging or flat loss is seen before its numbers are trusted."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from ..experiment.rundir import RunDir
from .figures import save_figure
from .leaderboard import Report



def mean_histories(report: Report) -> dict[str, pd.DataFrame]:
    """Per method: ``stage, epoch`` and each loss, the mean over its folds' histories."""
    out = {}
    for run in report.runs:
        rundir = RunDir(run.path)
        frames = [h for k in run.completed_folds if (h := rundir.read_history(k)) is not None and not h.empty]
        if frames:
            losses = pd.concat(frames).drop(columns=["lr", "seconds"], errors="ignore")
            out[run.method] = losses.groupby(["stage", "epoch"], sort=False).mean().reset_index()
    return out


def training_figure(histories: dict[str, pd.DataFrame]) -> Figure | None:
    """The figure (one panel per loss), or None when no run recorded a history."""
    losses = sorted({c for h in histories.values() for c in h.columns if c not in ("stage", "epoch")})
    if not losses:
        return None
    fig = Figure(figsize=(4.2 * len(losses), 3.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(losses), squeeze=False)[0]
    for ax, loss in zip(axes, losses):
        for i, (method, h) in enumerate(histories.items()):
            if loss not in h:
                continue
            for stage, part in h.dropna(subset=[loss]).groupby("stage", sort=False):
                ax.plot(part["epoch"], part[loss], color=f"C{i % 10}", marker="o", markersize=3,
                        linestyle="--" if stage == "pretext" else "-", label=f"{method} ({stage})")
        # history.csv's probe_* columns are the online probes' AUCs (training/online_probe.py)
        ax.set(title=loss, xlabel="epoch",
               ylabel="mean AUC over folds (online probe)" if loss.startswith("probe_") else "mean loss over folds")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, color="0.9", linewidth=0.8)
        ax.legend(fontsize=7)
    return fig


def save_training_curves(report: Report, png: str | Path, svg: str | Path | None = None) -> dict[str, Path]:
    """Write the training curves as PNG (and SVG); ``{}`` when no run has a history."""
    fig = training_figure(mean_histories(report))
    if fig is None:
        return {}
    png_path, svg_path = save_figure(fig, png, svg)
    return {"training_png": png_path, **({"training_svg": svg_path} if svg_path else {})}
