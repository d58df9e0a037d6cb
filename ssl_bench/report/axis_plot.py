"""The figure of a study axis (:mod:`.axes`): pooled out-of-fold AUC (percent) against the label
fraction or the image size, one line per method with its patient-clustered 95% CI as a band. Drawn
like the ROC figure (:mod:`.roc`): matplotlib's object API on the Agg canvas, PNG and SVG with
fixed metadata so reruns produce identical files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from .axes import Axis
from .figures import figure_files
from .leaderboard import Report


def axis_figure(report: Report, axis: Axis) -> Figure:
    """One line per method of ``report.axes[axis.name]``, the values on a logarithmic x axis
    (label fractions; image sizes by their pixels per image), each tick labelled with its value.

    Args:
        report: a report whose runs hold a curve along ``axis``.
        axis: the study axis.

    Returns:
        The figure, on its own Agg canvas.
    """
    table = report.axes[axis.name]
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    values = {axis.position(v): v for v in (axis.row_value(row) for _, row in table.iterrows())}
    for i, (method, rows) in enumerate(table.groupby("method", sort=True)):
        x = np.array([axis.position(axis.row_value(row)) for _, row in rows.iterrows()])
        order = np.argsort(x, kind="stable")
        x = x[order]
        y = rows["oof_auc"].to_numpy(dtype=float)[order]
        lo, hi = rows["oof_auc_lo"].to_numpy(dtype=float)[order], rows["oof_auc_hi"].to_numpy(dtype=float)[order]
        color = f"C{i % 10}"
        ax.plot(x, y, marker="o", color=color, linewidth=1.6, label=method)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.18, linewidth=0)
    positions = sorted(values)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(positions))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([axis.tick(values[p]) for p in positions])
    ax.axhline(50, color="0.6", linestyle=":", linewidth=1, label="chance (AUC 50%)")
    ax.set(xlabel=axis.x_label, ylabel="Pooled out-of-fold AUC (%)")
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(f"{axis.title}, {report.dataset} (bands: patient-clustered 95% CI)", fontsize=11)
    ax.legend(loc="lower right", fontsize=9, frameon=True, framealpha=0.95)
    return fig


def save_axis_figure(report: Report, png: str | Path, svg: str | Path | None, axis: Axis) -> dict[str, Path]:
    """Write :func:`axis_figure` as PNG (150 dpi) and SVG.

    Args:
        report: the report.
        png: the PNG's path.
        svg: the SVG's path, or None for none.
        axis: the study axis.

    Returns:
        ``{"png", "svg"} -> path``.
    """
    return figure_files(axis_figure(report, axis), png, svg)
