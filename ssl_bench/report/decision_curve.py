"""The decision curve of a report (Vickers & Elkin 2006): each method's net benefit of calling a
breast malignant when its probability of malignancy (calibrated where the run recorded it,
aggregated over the breast's views) reaches a threshold probability, against that threshold, beside
calling every breast malignant and calling none. A method is worth using at the thresholds where
its curve lies above both."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..experiment.clinical import net_benefit
from ..experiment.metrics import decision_levels
from .figures import figure_files
from .leaderboard import Report, fold_thresholds

#: threshold probabilities of the curve: the range where screening decisions are made
THRESHOLDS = np.round(np.arange(0.01, 0.61, 0.01), 2)


def _breasts(report: Report, run) -> tuple[np.ndarray, np.ndarray] | None:
    levels = decision_levels(run.predictions, fold_thresholds(run), report.aggregate)
    if "breast" not in levels:
        return None
    groups, _, probability = levels["breast"]
    return groups.labels, probability


def has_breasts(report: Report) -> bool:
    """Whether the runs' predictions name each image's breast side (the curve is per breast)."""
    return all(_breasts(report, run) is not None for run in report.runs)


def decision_curve_figure(report: Report) -> Figure:
    fig = Figure(figsize=(7.2, 5.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    prevalence = None
    for i, run in enumerate(report.runs):
        breasts = _breasts(report, run)
        if breasts is None:
            continue
        labels, probability = breasts
        prevalence = labels.mean()
        ax.plot(THRESHOLDS, net_benefit(labels, probability, THRESHOLDS), color=f"C{i % 10}", linewidth=1.4,
                label=run.method)
    if prevalence is not None:
        treat_all = prevalence - (1 - prevalence) * THRESHOLDS / (1 - THRESHOLDS)
        ax.plot(THRESHOLDS, treat_all, color="black", linestyle="--", linewidth=1, label="call every breast malignant")
        ax.axhline(0, color="0.5", linestyle=":", linewidth=1, label="call none")
        ax.set_ylim(-0.05, max(0.05, prevalence * 1.1))
    ax.set(xlabel="Threshold probability of malignancy", ylabel="Net benefit (per breast)",
           title=f"Decision curves per breast, {report.dataset}")
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.legend(loc="upper right", fontsize=8, frameon=True, framealpha=0.95)
    return fig


def save_decision_curve(report: Report, png: str | Path, svg: str | Path | None = None) -> dict[str, Path]:
    """Write the decision curves as PNG (150 dpi) and SVG; returns ``{"png", "svg"} -> path``."""
    return figure_files(decision_curve_figure(report), png, svg)
