"""Reading dataset metadata sheets (CSV) with clear errors, shared by the real-data datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

import pandas as pd

from ..errors import DataError


def read_sheet(path: Path, sep: str = ",", required: Iterable[str] = ()) -> pd.DataFrame:
    """All cells as stripped strings (blank = ``""``), header names stripped.

    Raises:
        DataError: the file is missing or unreadable, or lacks a ``required`` column (all the
            missing ones are named, with the columns that were found).
    """
    if not path.is_file():
        raise DataError(f"{path}: metadata sheet not found")
    try:
        table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, skipinitialspace=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"{path}: unreadable CSV ({type(exc).__name__}: {exc})") from None
    return clean_sheet(table, path, required)


def clean_sheet(table: pd.DataFrame, path: Path, required: Iterable[str] = ()) -> pd.DataFrame:
    table = table.rename(columns=lambda c: str(c).strip())
    table = table.astype(str).apply(lambda col: col.str.strip())
    require_columns(table, required, path)
    return table


def require_columns(table: pd.DataFrame, required: Iterable[str], path: Path) -> None:
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}; "
            f"found {', '.join(repr(c) for c in table.columns)}"
        )


def row_name(path: Path, index: int) -> str:
    """``sheet.csv line N`` for the data row at position ``index`` (line 1 is the header)."""
    return f"{path} line {index + 2}"


def normalise_laterality(value: str) -> str:
    """``L``/``LEFT``/``left`` -> ``"L"``, ``R``/``RIGHT`` -> ``"R"``, anything else -> ``""``."""
    v = str(value).strip().upper()
    if v in ("L", "LEFT"):
        return "L"
    if v in ("R", "RIGHT"):
        return "R"
    return ""
