"""The ROC figure of a leaderboard, like Fig. 4 of the TSBN paper: one pooled out-of-fold ROC
curve per method (all held-out images of all folds), its AUC in the legend, and the chance
diagonal. Drawn with matplotlib's object API on the Agg canvas (no pyplot, no global state), saved
as PNG and SVG with fixed metadata so reruns produce identical files.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from .figures import figure_files
from .leaderboard import Report, pooled_curves

_STYLES = ("-", "--", "-.", ":")


def roc_figure(curves: Sequence[tuple[str, np.ndarray, np.ndarray, float]], title: str = "",
               baseline: str | None = None) -> Figure:
    """``curves``: ``(name, labels, scores, auc_percent)``; the legend lists them in that order."""
    fig = Figure(figsize=(6.4, 6.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    for i, (name, y, s, auc) in enumerate(curves):
        if len(np.unique(y)) < 2:
            continue
        fpr, tpr, _ = roc_curve(y, s)
        label = f"{name} (AUC {auc:.1f}%)" if not math.isnan(auc) else name
        is_base = name == baseline  # the baseline: black dashed, as a reference curve
        ax.plot(fpr, tpr, color="black" if is_base else colors[i % 10],
                linestyle="--" if is_base else _STYLES[(i // 10) % len(_STYLES)],
                linewidth=2.0 if i == 0 else 1.5, label=label)
    ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="chance (AUC 50%)")
    ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal",
           xlabel="False positive rate (1 - specificity)", ylabel="True positive rate (sensitivity)")
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    if title:
        ax.set_title(title, fontsize=11)
    ax.legend(loc="lower right", fontsize=9, frameon=True, framealpha=0.95)
    return fig


def report_figure(report: Report) -> Figure:
    run = report.runs[0]
    title = f"Pooled out-of-fold ROC, {report.dataset}, {run.n_folds}-fold CV"
    curves = sorted(pooled_curves(report), key=lambda c: -c[3] if not math.isnan(c[3]) else math.inf)
    return roc_figure(curves, title=title, baseline=report.baseline)


def save_roc(report: Report, png: str | Path, svg: str | Path | None = None) -> dict[str, Path]:
    """Write the report's ROC figure as PNG (150 dpi) and SVG; returns ``{"png", "svg"} -> path``."""
    fig = report_figure(report)
    return figure_files(fig, png, svg)
