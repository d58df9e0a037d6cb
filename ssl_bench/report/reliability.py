"""The reliability diagram of a report (Naeini et al. 2015; scikit-learn's ``calibration_curve``):
for each method, the observed rate of malignancy against the mean predicted probability over ten
equal-width bins of its pooled out-of-fold probabilities, raw scores on the left and scores
calibrated on each fold's training images on the right (:mod:`ssl_bench.experiment.calibration`).
A calibrated model lies on the diagonal."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..experiment.calibration import reliability_curve
from .figures import figure_files
from .leaderboard import Report


def reliability_figure(report: Report) -> Figure:
    fig = Figure(figsize=(11.0, 5.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    panels = fig.subplots(1, 2, sharey=True)
    for ax, column, title in ((panels[0], "score", "Raw scores"),
                              (panels[1], "calibrated", "Calibrated on the training folds (Platt)")):
        for i, run in enumerate(report.runs):
            p = run.predictions[column].to_numpy(dtype=float)
            y = run.predictions["label"].to_numpy()
            if not np.isfinite(p).all() or len(np.unique(y)) < 2:
                continue
            predicted, observed = reliability_curve(y, p)
            ax.plot(predicted, observed, marker="o", markersize=3, linewidth=1.4, color=f"C{i % 10}",
                    label=run.method)
        ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1, label="perfectly calibrated")
        ax.set(xlim=(-0.01, 1.01), ylim=(-0.01, 1.01), aspect="equal", title=title,
               xlabel="Mean predicted probability of malignancy")
        ax.grid(True, color="0.9", linewidth=0.8)
        ax.set_axisbelow(True)
    panels[0].set_ylabel("Observed rate of malignancy")
    panels[1].legend(loc="upper left", fontsize=8, frameon=True, framealpha=0.95)
    return fig


def has_calibrated(report: Report) -> bool:
    """Whether any run recorded calibrated probabilities (runs before calibration did not)."""
    return any(np.isfinite(r.predictions["calibrated"].to_numpy(dtype=float)).all() for r in report.runs)


def save_reliability(report: Report, png: str | Path, svg: str | Path | None = None) -> dict[str, Path]:
    """Write the reliability diagram as PNG (150 dpi) and SVG; returns ``{"png", "svg"} -> path``."""
    return figure_files(reliability_figure(report), png, svg)
