"""Writing a report to files: the one path by which ``ssl-bench report --out FILE`` and the
leaderboard that ``ssl-bench bench`` leaves beside its runs are written.

:func:`write_report` writes one format (``md`` with its ROC figure beside it, ``csv``, or ``html``
with the figure embedded); :func:`write_leaderboard` is a bench's set of them:
``leaderboard.{md,csv,html}``, ``roc.{png,svg}``, the training curves ``training.{png,svg}``
(:mod:`.curves`), the figures of the report's sections (:data:`SECTION_FIGURES`: the
reliability diagrams ``reliability.{png,svg}`` of runs that recorded calibrated probabilities,
the decision curves ``decision_curve.{png,svg}`` of runs whose images name their breast), the
subgroup AUCs ``subgroups.csv`` of runs that recorded their images' subgroups and, when the runs hold a label-efficiency curve, ``label_efficiency.{png,svg,csv}``
in one folder. Every file is written
atomically, so an interrupted write never leaves half a leaderboard.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import UserError
from ..fileio import atomic_write_text, out_of_space_error
from .curves import save_training_curves
from .efficiency_plot import save_label_efficiency
from .html import to_html
from .label_efficiency import has_curve
from .leaderboard import Report
from .decision_curve import has_breasts, save_decision_curve
from .reliability import has_calibrated, save_reliability
from .render import fmt_mean_std, markdown_table, to_csv, to_markdown
from .roc import save_roc
from .seeds import across_seeds

FORMATS = ("md", "csv", "html")
#: figures a report section shows when the runs allow it: name -> (whether they do, how to save it)
SECTION_FIGURES = {"reliability": (has_calibrated, save_reliability),
                   "decision_curve": (has_breasts, save_decision_curve)}


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None


def write_report(report: Report, path: str | Path, fmt: str, roc: dict[str, Path] | None = None,
                 efficiency: dict[str, Path] | None = None, figures: dict[str, dict[str, Path]] | None = None
                 ) -> dict[str, Path]:
    """Write ``report`` as ``fmt`` to ``path``; returns ``{fmt: path}`` plus the ROC figure files.

    ``roc``: the figure already saved (``{"png", "svg"} -> path``, as :func:`save_roc` returns);
    without it, ``md`` saves ``<stem>_roc.png``/``.svg`` beside ``path`` and ``html`` draws it.
    ``efficiency``: likewise the label-efficiency figure (:mod:`.efficiency_plot`), drawn only
    when the runs hold a curve (``md``: ``<stem>_label_efficiency.png``/``.svg``, returned as
    ``efficiency_png``/``efficiency_svg``). ``figures``: likewise the sections' figures
    (:data:`SECTION_FIGURES`, name -> ``{"png", "svg"}``), each drawn when the runs allow it
    (``md``: ``<stem>_<name>.png``/``.svg``, returned as ``<name>_png``/``<name>_svg``).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    _make_folder(path.parent)
    written: dict[str, Path] = {}
    try:
        if fmt == "md" and roc is None:
            roc = save_roc(report, path.with_name(f"{path.stem}_roc.png"), path.with_name(f"{path.stem}_roc.svg"))
        curve = has_curve(report.label_efficiency)
        if fmt == "md" and curve and efficiency is None:
            efficiency = save_label_efficiency(report, path.with_name(f"{path.stem}_label_efficiency.png"),
                                               path.with_name(f"{path.stem}_label_efficiency.svg"))
        figures = dict(figures or {})
        if fmt == "md":
            assert roc is not None
            for name, (applies, save) in SECTION_FIGURES.items():
                if name not in figures and applies(report):
                    figures[name] = save(report, path.with_name(f"{path.stem}_{name}.png"),
                                         path.with_name(f"{path.stem}_{name}.svg"))
            shown = efficiency if curve else None
            text = to_markdown(report, figure=roc["png"].name,
                               efficiency_figure=shown["png"].name if shown is not None else None,
                               figures={name: f["png"].name for name, f in figures.items()})
            written.update(roc)
            if shown is not None:
                written.update({f"efficiency_{k}": v for k, v in shown.items()})
            written.update({f"{name}_{k}": v for name, f in figures.items() for k, v in f.items()})
        elif fmt == "csv":
            text = to_csv(report)
        else:
            text = to_html(report, png=roc["png"].read_bytes() if roc else None,
                           efficiency=efficiency["png"].read_bytes() if curve and efficiency else None,
                           figures={name: f["png"].read_bytes() for name, f in figures.items()})
        atomic_write_text(path, text)
    except OSError as exc:  # a figure (matplotlib writes it); the report itself is OutOfSpace when full
        full = out_of_space_error(exc, getattr(exc, "filename", None) or path)
        if full is not None:
            raise full from None
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    written[fmt] = path
    return written


def write_leaderboard(report: Report, out_dir: str | Path) -> dict[str, Path]:
    """A bench's leaderboard in ``out_dir``: ``leaderboard.md``, ``leaderboard.csv``,
    ``leaderboard.html``, ``roc.png`` and ``roc.svg``; returns ``{"md", "csv", "html", "png",
    "svg"} -> path``."""
    out = Path(out_dir)
    _make_folder(out)
    try:
        paths = save_roc(report, out / "roc.png", out / "roc.svg")
    except OSError as exc:
        raise UserError(f"cannot write {out / 'roc.png'}: {exc.strerror or exc}") from None
    efficiency = None
    if has_curve(report.label_efficiency):  # label_efficiency.{png,svg,csv}
        try:
            efficiency = save_label_efficiency(report, out / "label_efficiency.png", out / "label_efficiency.svg")
            atomic_write_text(out / "label_efficiency.csv",
                              report.label_efficiency.to_csv(index=False, float_format="%.6g"))
        except OSError as exc:
            raise UserError(f"cannot write {out / 'label_efficiency.png'}: {exc.strerror or exc}") from None
    figures = {}
    for name, (applies, save) in SECTION_FIGURES.items():  # reliability.{png,svg}, decision_curve.{png,svg}
        if applies(report):
            try:
                figures[name] = save(report, out / f"{name}.png", out / f"{name}.svg")
            except OSError as exc:
                raise UserError(f"cannot write {out / f'{name}.png'}: {exc.strerror or exc}") from None
    roc = {"png": paths["png"], "svg": paths["svg"]}
    for fmt in FORMATS:
        paths.update(write_report(report, out / f"leaderboard.{fmt}", fmt, roc=roc, efficiency=efficiency,
                                  figures=figures))
    if report.subgroups is not None:  # subgroups.csv: every method's AUC per subgroup
        try:
            atomic_write_text(out / "subgroups.csv", report.subgroups.to_csv(index=False, float_format="%.6g"))
        except OSError as exc:
            raise UserError(f"cannot write {out / 'subgroups.csv'}: {exc.strerror or exc}") from None
        paths["subgroups_csv"] = out / "subgroups.csv"
    if efficiency is not None:
        paths.update({"efficiency_png": efficiency["png"], "efficiency_svg": efficiency["svg"],
                      "efficiency_csv": out / "label_efficiency.csv"})
    try:
        paths.update(save_training_curves(report, out / "training.png", out / "training.svg"))
    except OSError as exc:
        raise UserError(f"cannot write {out / 'training.png'}: {exc.strerror or exc}") from None
    return paths


def write_seed_leaderboard(reports: dict[int, Report], out_dir: str | Path) -> dict[str, Path]:
    """``leaderboard-seeds.md`` and ``.csv`` in ``out_dir``: every method's mean ± std across the
    seeds' results (:func:`~ssl_bench.report.seeds.across_seeds`)."""
    out = Path(out_dir)
    _make_folder(out)
    table = across_seeds(reports)
    titles = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    shown = pd.DataFrame({"Method": table["method"], "Seeds": table["seeds"].astype(str),
                          **{t: [fmt_mean_std(m, s) for m, s in zip(table[f"{t}_mean"], table[f"{t}_std"])]
                             for t in titles}})
    seeds = ", ".join(map(str, sorted(reports)))
    text = (f"# Leaderboard across seeds {seeds}\n\nPer method: mean ± sample std across seeds of each "
            f"seed's result (percent): fold means for the Table II metrics, pooled values for the "
            f"pooled ones. Per-seed leaderboards: seed-<s>/leaderboard.md.\n\n{markdown_table(shown)}\n")
    paths = {"md": out / "leaderboard-seeds.md", "csv": out / "leaderboard-seeds.csv"}
    try:
        atomic_write_text(paths["md"], text)
        atomic_write_text(paths["csv"], table.to_csv(index=False))
    except OSError as exc:
        raise UserError(f"cannot write {paths['md']}: {exc.strerror or exc}") from None
    return paths
