"""Saving a report's figures reproducibly: PNG without the software stamp, SVG without date or
creator and with fixed element ids, so the same report gives the same bytes."""
from __future__ import annotations

import io
from pathlib import Path

import matplotlib
from matplotlib.figure import Figure

PNG_META = {"Software": None}
SVG_META = {"Date": None, "Creator": None}


def save_figure(fig: Figure, png: str | Path, svg: str | Path | None = None) -> tuple[Path, Path | None]:
    """Write ``fig`` as PNG (150 dpi) and, when ``svg`` is given, SVG; returns both paths."""
    fig.savefig(Path(png), format="png", dpi=150, metadata=PNG_META)
    if svg is not None:
        with matplotlib.rc_context({"svg.hashsalt": "ssl-bench"}):  # stable element ids
            fig.savefig(Path(svg), format="svg", metadata=SVG_META)
    return Path(png), Path(svg) if svg is not None else None


def png_bytes(fig: Figure, dpi: int = 150) -> bytes:
    """``fig`` as PNG bytes, for embedding."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata=PNG_META)
    return buf.getvalue()


def figure_files(fig: Figure, png: str | Path, svg: str | Path | None = None) -> dict[str, Path]:
    """:func:`save_figure`, as the ``{"png", "svg"} -> path`` that the report's writers pass around."""
    png_path, svg_path = save_figure(fig, png, svg)
    return {"png": png_path, **({"svg": svg_path} if svg_path else {})}
