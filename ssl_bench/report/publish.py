"""Writing a report to files: the one path by which ``ssl-bench report --out FILE`` and the
leaderboard that ``ssl-bench bench`` leaves beside its runs are written.

:func:`write_report` writes one format (``md`` with its ROC figure beside it, ``csv``, or ``html``
with the figure embedded); :func:`write_leaderboard` is a bench's set of them:
``leaderboard.{md,csv,html}`` and ``roc.{png,svg}`` in one folder. Every file is written
atomically, so an interrupted write never leaves half a leaderboard.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import UserError
from ..fileio import atomic_write_text
from .html import to_html
from .leaderboard import Report
from .render import to_csv, to_markdown
from .roc import save_roc

FORMATS = ("md", "csv", "html")


def _make_folder(folder: Path) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror or exc}") from None


def write_report(report: Report, path: str | Path, fmt: str, roc: dict[str, Path] | None = None) -> dict[str, Path]:
    """Write ``report`` as ``fmt`` to ``path``; returns ``{fmt: path}`` plus the ROC figure files.

    ``roc``: the figure already saved (``{"png", "svg"} -> path``, as :func:`save_roc` returns);
    without it, ``md`` saves ``<stem>_roc.png``/``.svg`` beside ``path`` and ``html`` draws it.
    """
    if fmt not in FORMATS:
        raise UserError(f"unknown report format '{fmt}'; choose one of {', '.join(FORMATS)}")
    path = Path(path)
    _make_folder(path.parent)
    written: dict[str, Path] = {}
    try:
        if fmt == "md" and roc is None:
            roc = save_roc(report, path.with_name(f"{path.stem}_roc.png"), path.with_name(f"{path.stem}_roc.svg"))
        if fmt == "md":
            text = to_markdown(report, figure=roc["png"].name)
            written.update(roc)
        elif fmt == "csv":
            text = to_csv(report)
        else:
            text = to_html(report, png=roc["png"].read_bytes() if roc else None)
        atomic_write_text(path, text)
    except OSError as exc:
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
    for fmt in FORMATS:
        paths.update(write_report(report, out / f"leaderboard.{fmt}", fmt, roc=paths))
    return paths
