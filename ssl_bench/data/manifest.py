"""Any labelled image list as a dataset (``manifest``): a CSV of ``path,label[,patient_id][,laterality][,view]``.

Option ``csv`` (default ``manifest.csv``): the CSV, relative to ``--data-root`` or absolute.
``path``: a DICOM, PNG or TIFF file, relative to the CSV's folder or absolute. ``label``: ``0``/``1``
or ``benign``/``malignant`` (any case). ``patient_id`` (recommended: folds are grouped by it)
defaults to the image itself, i.e. every image its own patient. ``laterality`` (``L``/``R``/
``LEFT``/``RIGHT``) decides the flip to the canonical side; without it the DICOM's own laterality
or the image decides. ``image_id`` is the optional column of that name, else the ``path`` cell.
Optional subgroup columns, reported by ``ssl-bench report`` (:mod:`ssl_bench.data.subgroups`):
``density`` (ACR ``A``-``D`` or ``1``-``4``), ``lesion_type`` and ``manufacturer`` (any text).

Problems reported (file and reason): a missing file, an unknown label, a path listed twice.
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import DataError
from ..registry import DATASETS
from .base import SAMPLE_COLUMNS, MammoDataset
from .problem import Problem
from .sheets import normalise_laterality, read_sheet, row_name
from .subgroups import DENSITY, LESION_TYPE, MANUFACTURER, acr_density

LABELS = {"0": 0, "1": 1, "benign": 0, "malignant": 1, "0.0": 0, "1.0": 1}


@DATASETS.register("manifest")
class Manifest(MammoDataset):
    """Images listed in a CSV (path,label[,patient_id][,laterality][,view]); DICOM, PNG or TIFF.

    Args:
        csv: the CSV listing the images, relative to --data-root or absolute.
    """

    def __init__(
        self,
        csv: str = "manifest.csv",
        **settings,
    ):
        super().__init__(**settings)
        self.csv = csv

    def csv_path(self) -> Path:
        given = Path(self.csv).expanduser()
        if given.is_absolute():
            return given
        if self.root is None:
            raise DataError(f"dataset 'manifest' needs {self.root_flag} PATH (or an absolute params.manifest.csv)")
        return self.require_root() / given

    def scan(self) -> tuple[pd.DataFrame, list[Problem]]:
        csv = self.csv_path()
        sheet = read_sheet(csv, sep=",", required=("path", "label"))
        base = csv.parent
        problems: list[Problem] = []
        rows = []
        seen: dict[str, str] = {}
        for index, row in sheet.iterrows():
            where = row_name(csv, index)
            cell = row["path"]
            if not cell:
                problems.append(Problem(where, "empty path"))
                continue
            path = Path(cell).expanduser()
            path = path if path.is_absolute() else base / path
            label = LABELS.get(row["label"].lower())
            if label is None:
                problems.append(Problem(where, f"{cell}: unknown label '{row['label']}' (expected 0, 1, benign or malignant)"))
                continue
            if str(path) in seen:
                problems.append(Problem(where, f"{cell}: listed twice (also on {seen[str(path)]})"))
                continue
            seen[str(path)] = where
            if not path.is_file():
                problems.append(Problem(str(path), f"file not found (listed on {where})"))
                continue
            image_id = row.get("image_id", "") or cell
            rows.append({
                "image_id": image_id,
                "patient_id": row.get("patient_id", "") or image_id,
                "label": label,
                "laterality": normalise_laterality(row.get("laterality", "")),
                "view": str(row.get("view", "")).upper(),
                "path": str(path),
                DENSITY: acr_density(row.get(DENSITY, "")),
                LESION_TYPE: str(row.get(LESION_TYPE, "")).strip().lower(),
                MANUFACTURER: str(row.get(MANUFACTURER, "")).strip(),
            })
        given = [c for c in (DENSITY, LESION_TYPE, MANUFACTURER) if c in sheet.columns]
        table = pd.DataFrame(rows, columns=[*SAMPLE_COLUMNS, DENSITY, LESION_TYPE, MANUFACTURER])
        table = table[[*SAMPLE_COLUMNS, *given]].astype({"label": "int64"})
        return table, problems
