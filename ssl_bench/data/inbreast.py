"""INbreast (Moreira et al., Academic Radiology 2012) in its release layout, as dataset ``inbreast``.

Layout under ``--data-root``::

    AllDICOMs/{File Name}_{patient hash}_MG_{L|R}_{CC|ML}_ANON.dcm
    INbreast.csv   (or INbreast.xls; reading .xls needs the optional package xlrd)

The sheet's quirks, all handled: ``;``-separated with CRLF line ends; ``Patient ID`` is the
literal ``removed``, so the patient comes from the hash in the DICOM name; ``File Name`` is the
DICOM name's numeric prefix; BI-RADS values are strings (``1 2 3 4a 4b 4c 5 6``); one ``ACR`` is
blank and one ``View`` is ``FB`` (not used). ``ACR`` (1-4) is the breast density, column ``density``. Labels: BI-RADS 1-2 benign, 4a-6 malignant,
3 excluded (``birads3="exclude"``, default) or benign (``birads3="benign"``, as some papers do).
The real sheet gives 287 benign + 100 malignant = 387 images.

Problems reported (file and reason): a sheet row whose DICOM is missing or ambiguous, a DICOM
with no sheet row, a DICOM name that does not follow the pattern, an unknown BI-RADS value, a
laterality that differs between sheet and file name. Corrupt DICOMs are found when decoding.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .base import SAMPLE_COLUMNS, MammoDataset
from .problem import Problem
from .sheets import clean_sheet, read_sheet, row_name
from .subgroups import DENSITY, acr_density

SHEET_COLUMNS = ("Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads")
REQUIRED_COLUMNS = ("Laterality", "View", "File Name", "Bi-Rads")
FILE_PATTERN = re.compile(r"^(?P<file>\d+)_(?P<patient>[^_]+)_MG_(?P<side>[LR])_(?P<view>[A-Z]+)_ANON\.dcm$", re.I)
BENIGN_BIRADS = ("1", "2")
MALIGNANT_BIRADS = ("4", "4a", "4b", "4c", "5", "6")


def _integer_text(value: str) -> str:
    """``"22678622.0"`` (a number read from Excel) -> ``"22678622"``; other text unchanged."""
    m = re.fullmatch(r"(\d+)\.0+", value)
    return m.group(1) if m else value


@DATASETS.register("inbreast")
class INbreast(MammoDataset):
    """INbreast full-field digital mammograms (release layout: AllDICOMs/ + INbreast.csv).

    Args:
        birads3: "exclude" leaves BI-RADS 3 images out; "benign" labels them benign.
    """

    def __init__(
        self,
        birads3: str = "exclude",
        **settings,
    ):
        super().__init__(**settings)
        if birads3 not in ("exclude", "benign"):
            raise ConfigError(f"params.inbreast.birads3 must be 'exclude' or 'benign', got '{birads3}'")
        self.birads3 = birads3

    # ------------------------------------------------------------------------------ metadata

    def read_sheet(self, root: Path) -> tuple[pd.DataFrame, Path]:
        csv, xls = root / "INbreast.csv", root / "INbreast.xls"
        if csv.is_file():
            table = read_sheet(csv, sep=";")
            if len(table.columns) == 1 and "," in table.columns[0]:
                table = read_sheet(csv, sep=",")
            return clean_sheet(table, csv, REQUIRED_COLUMNS), csv
        if xls.is_file():
            try:
                import xlrd  # noqa: F401
            except ImportError:
                raise DataError(
                    f"{xls}: reading .xls needs the package xlrd (pip install xlrd), "
                    "or save the sheet as INbreast.csv"
                ) from None
            try:
                table = pd.read_excel(xls, dtype=str, keep_default_na=False)
            except Exception as exc:
                raise DataError(f"{xls}: unreadable Excel sheet ({type(exc).__name__}: {exc})") from None
            table = clean_sheet(table, xls, REQUIRED_COLUMNS)
            return table.apply(lambda col: col.map(_integer_text)), xls
        raise DataError(f"{root}: no INbreast.csv or INbreast.xls (the INbreast release sheet) in the data root")

    def label(self, birads: str) -> int | None:
        """0 / 1, ``None`` when excluded; raises ``KeyError`` for an unknown value."""
        value = birads.strip().lower()
        if value in BENIGN_BIRADS:
            return 0
        if value in MALIGNANT_BIRADS:
            return 1
        if value == "3":
            return 0 if self.birads3 == "benign" else None
        raise KeyError(value)

    # ---------------------------------------------------------------------------------- scan

    def scan(self) -> tuple[pd.DataFrame, list[Problem]]:
        root = self.require_root()
        sheet, sheet_path = self.read_sheet(root)
        folder = root / "AllDICOMs"
        if not folder.is_dir():
            raise DataError(f"{root}: no AllDICOMs/ folder (INbreast release layout: AllDICOMs/*.dcm + INbreast.csv)")

        problems: list[Problem] = []
        files: dict[str, list[tuple[Path, re.Match]]] = {}
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() != ".dcm" or path.name.startswith("."):
                continue
            m = FILE_PATTERN.match(path.name)
            if m is None:
                problems.append(Problem(str(path), "name does not follow {File Name}_{patient}_MG_{L|R}_{view}_ANON.dcm"))
                continue
            files.setdefault(m.group("file"), []).append((path, m))

        rows, named = [], set()
        for index, row in sheet.iterrows():
            file_name = _integer_text(row["File Name"])
            where = row_name(sheet_path, index)
            named.add(file_name)
            try:
                label = self.label(row["Bi-Rads"])
            except KeyError:
                problems.append(Problem(where, f"File Name {file_name}: unknown Bi-Rads value '{row['Bi-Rads']}' "
                                               "(expected 1, 2, 3, 4a, 4b, 4c, 5 or 6)"))
                continue
            if label is None:
                continue
            matches = files.get(file_name, [])
            if not matches:
                problems.append(Problem(where, f"File Name {file_name}: no DICOM named {file_name}_*.dcm in {folder}"))
                continue
            if len(matches) > 1:
                names = ", ".join(p.name for p, _ in matches)
                problems.append(Problem(where, f"File Name {file_name}: {len(matches)} DICOMs match ({names})"))
                continue
            path, m = matches[0]
            side = row["Laterality"].upper()
            if side in ("L", "R") and side != m.group("side").upper():
                problems.append(Problem(str(path), f"laterality '{side}' in {sheet_path.name} but "
                                                   f"'{m.group('side').upper()}' in the file name"))
                continue
            rows.append({
                "image_id": file_name,
                "patient_id": m.group("patient"),
                "label": label,
                "laterality": side if side in ("L", "R") else m.group("side").upper(),
                "view": row["View"].upper(),
                "path": str(path),
                DENSITY: acr_density(row["ACR"]),
            })
        for file_name, matches in files.items():
            if file_name not in named:
                for path, _ in matches:
                    problems.append(Problem(str(path), f"no row in {sheet_path.name} has File Name {file_name}"))
        table = pd.DataFrame(rows, columns=[*SAMPLE_COLUMNS, DENSITY]).astype({"label": "int64"})
        return table, problems
