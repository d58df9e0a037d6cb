"""The label-efficiency figure: pooled out-of-fold AUC (percent) against the label fraction, one
line per method with its patient-clustered 95% CI as a band (:mod:`.label_efficiency`). Drawn
like the ROC figure (:mod:`.roc`): matplotlib's object API on the Agg canvas, PNG and SVG with
fixed metadata so reruns produce identical files.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from .figures import figure_files, png_bytes
from .leaderboard import Report



def efficiency_figure(report: Report) -> Figure:
    """One line per method of ``report.label_efficiency`` (fraction on a log axis)."""
    table = report.label_efficiency
    assert table is not None
    fig = Figure(figsize=(6.4, 4.8), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (method, rows) in enumerate(table.groupby("method", sort=True)):
        rows = rows.sort_values("label_fraction")
        x = rows["label_fraction"].to_numpy(dtype=float)
        y = rows["oof_auc"].to_numpy(dtype=float)
        lo, hi = rows["oof_auc_lo"].to_numpy(dtype=float), rows["oof_auc_hi"].to_numpy(dtype=float)
        color = f"C{i % 10}"
        ax.plot(x, y, marker="o", color=color, linewidth=1.6, label=method)
        ok = np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            ax.fill_between(x[ok], lo[ok], hi[ok], color=color, alpha=0.18, linewidth=0)
    fractions = sorted(set(table["label_fraction"].astype(float)))
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(FixedLocator(fractions))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{100 * f:g}%" for f in fractions])
    ax.axhline(50, color="0.6", linestyle=":", linewidth=1, label="chance (AUC 50%)")
    ax.set(xlabel="Training labels used (share of each fold's training patients)",
           ylabel="Pooled out-of-fold AUC (%)")
    ax.grid(True, color="0.9", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(f"Label efficiency, {report.dataset} (bands: patient-clustered 95% CI)", fontsize=11)
    ax.legend(loc="lower right", fontsize=9, frameon=True, framealpha=0.95)
    return fig


def save_label_efficiency(report: Report, png: str | Path, svg: str | Path | None = None) -> dict[str, Path]:
    """Write the figure as PNG (150 dpi) and SVG; returns ``{"png", "svg"} -> path``."""
    fig = efficiency_figure(report)
    return figure_files(fig, png, svg)


def efficiency_png(report: Report, dpi: int = 150) -> bytes:
    """The figure as PNG bytes (to embed in HTML)."""
    return png_bytes(efficiency_figure(report), dpi)
