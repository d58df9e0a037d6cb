"""Writing a report to files: the one path by which ``ssl-bench report --out FILE`` and the
leaderboard that ``ssl-bench bench`` leaves beside its runs are written.

:func:`write_report` writes one format (``md`` with its ROC figure beside it, ``csv``, or ``html``
with the figure embedded); :func:`write_leaderboard` is a bench's set of them:
``leaderboard.{md,csv,html}``, ``roc.{png,svg}``, the training curves ``training.{png,svg}``
(:mod:`.curves`), the figures of the report's sections (:data:`SECTION_FIGURES`: the
reliability diagrams ``reliability.{png,svg}`` of runs that recorded calibrated probabilities,
the decision curves ``decision_curve.{png,svg}`` of runs whose images name their breast, and the
curve of each study axis along which the runs hold one, :mod:`.axes`:
``label_efficiency.{png,svg}`` and ``resolution.{png,svg}``, each with its table as CSV beside
it), the subgroup AUCs ``subgroups.csv`` of runs that recorded their images' subgroups, and a
bench's external validation ``external.csv`` (:mod:`.external`), in one folder. Every file is written
atomically, so an interrupted write never leaves half a leaderboard.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd

from ..errors import UserError
from ..fileio import atomic_write_text, out_of_space_error
from .axes import AXES, Axis
from .axis_plot import save_axis_figure
from .curves import save_training_curves
from .html import to_html
from .leaderboard import Report
from .decision_curve import has_breasts, save_decision_curve
from .reliability import has_calibrated, save_reliability
from .render import curves, fmt_mean_std, markdown_table, to_csv, to_markdown
from .roc import save_roc
from .seeds import across_seeds

FORMATS = ("md", "csv", "html")


def _holds_curve(axis: Axis, report: Report) -> bool:
    return axis in curves(report)


#: figures a report section shows when the runs allow it: name -> (whether they do, how to save it)
SECTION_FIGURES: dict[str, tuple[Callable[[Report], bool], Callable[[Report, Path, Path], dict[str, Path]]]] = {
    "reliability": (has_calibrated, save_reliability),
    "decision_curve": (has_breasts, save_decision_curve),
    **{axis.name: (partial(_holds_curve, axis), partial(save_axis_figure, axis=axis)) for axis in AXES}}


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None


def write_report(report: Report, path: str | Path, fmt: str, roc: dict[str, Path] | None = None,
                 figures: dict[str, dict[str, Path]] | None = None) -> dict[str, Path]:
    """Write ``report`` as ``fmt`` to ``path``; returns ``{fmt: path}`` plus the figure files.

    ``roc``: the figure already saved (``{"png", "svg"} -> path``, as :func:`save_roc` returns);
    without it, ``md`` saves ``<stem>_roc.png``/``.svg`` beside ``path`` and ``html`` draws it.
    ``figures``: likewise the sections' figures (:data:`SECTION_FIGURES`, name -> ``{"png",
    "svg"}``: reliability, decision curve, the study axes' curves), each drawn when the runs allow
    it (``md``: ``<stem>_<name>.png``/``.svg``, returned as ``<name>_png``/``<name>_svg``).
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    _make_folder(path.parent)
    written: dict[str, Path] = {}
    try:
        if fmt == "md" and roc is None:
            roc = save_roc(report, path.with_name(f"{path.stem}_roc.png"), path.with_name(f"{path.stem}_roc.svg"))
        figures = dict(figures or {})
        if fmt == "md":
            assert roc is not None
            for name, (applies, save) in SECTION_FIGURES.items():
                if name not in figures and applies(report):
                    figures[name] = save(report, path.with_name(f"{path.stem}_{name}.png"),
                                         path.with_name(f"{path.stem}_{name}.svg"))
            text = to_markdown(report, figure=roc["png"].name,
                               figures={name: f["png"].name for name, f in figures.items()})
            written.update(roc)
            written.update({f"{name}_{k}": v for name, f in figures.items() for k, v in f.items()})
        elif fmt == "csv":
            text = to_csv(report)
        else:
            text = to_html(report, png=roc["png"].read_bytes() if roc else None,
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
    ``leaderboard.html``, ``roc.png`` and ``roc.svg``, the sections' figures and the study axes'
    tables; returns ``{"md", "csv", "html", "png", "svg"} -> path`` plus ``<figure>_png`` and
    ``<figure>_svg`` per section figure, ``<axis>_csv`` per study axis with a curve
    (``label_efficiency_csv``, ``resolution_csv``), ``subgroups_csv`` and ``external_csv`` when the
    report has them."""
    out = Path(out_dir)
    _make_folder(out)
    try:
        paths = save_roc(report, out / "roc.png", out / "roc.svg")
    except OSError as exc:
        raise UserError(f"cannot write {out / 'roc.png'}: {exc.strerror or exc}") from None
    figures = {}
    for name, (applies, save) in SECTION_FIGURES.items():  # reliability, decision_curve, the axes' curves
        if applies(report):
            try:
                figures[name] = save(report, out / f"{name}.png", out / f"{name}.svg")
            except OSError as exc:
                raise UserError(f"cannot write {out / f'{name}.png'}: {exc.strerror or exc}") from None
    for axis in curves(report):  # label_efficiency.csv, resolution.csv
        table = paths[f"{axis.name}_csv"] = out / f"{axis.name}.csv"
        try:
            atomic_write_text(table, report.axes[axis.name].to_csv(index=False, float_format="%.6g"))
        except OSError as exc:
            raise UserError(f"cannot write {table}: {exc.strerror or exc}") from None
    roc = {"png": paths["png"], "svg": paths["svg"]}
    for fmt in FORMATS:
        paths.update(write_report(report, out / f"leaderboard.{fmt}", fmt, roc=roc, figures=figures))
    if report.external is not None:  # external.csv: internal vs external AUC and the drop
        try:
            atomic_write_text(out / "external.csv", report.external.to_csv(index=False, float_format="%.6g"))
        except OSError as exc:
            raise UserError(f"cannot write {out / 'external.csv'}: {exc.strerror or exc}") from None
        paths["external_csv"] = out / "external.csv"
    if report.subgroups is not None:  # subgroups.csv: every method's AUC per subgroup
        try:
            atomic_write_text(out / "subgroups.csv", report.subgroups.to_csv(index=False, float_format="%.6g"))
        except OSError as exc:
            raise UserError(f"cannot write {out / 'subgroups.csv'}: {exc.strerror or exc}") from None
        paths["subgroups_csv"] = out / "subgroups.csv"
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
