"""VinDr-Mammo (Nguyen et al., Scientific Data 2023) as released, as dataset ``vindr_mammo``.

Layout under ``--data-root``: ``breast-level_annotations.csv`` (columns ``study_id, series_id,
image_id, laterality, view_position, height, width, breast_birads, breast_density, split``) and
``images/<study_id>/<image_id>.dicom``.

Labels from ``breast_birads`` (``"BI-RADS 1"`` .. ``"BI-RADS 5"``): options ``benign_birads``
(default ``"1,2"``) and ``malignant_birads`` (default ``"4,5"``); any other category (3 by
default) is left out. ``split``: ``"all"`` (default), ``"training"`` or ``"test"`` (the official
column), which also gives the sample table's ``official_split`` (``train``/``test``) for
``--split official``. ``breast_density`` (``DENSITY A`` .. ``DENSITY D``) is the ``density``
column. VinDr has no patient identifier, so a study (one exam of one woman) is the patient group.

Problems reported (file and reason): a row whose DICOM is missing, an unknown BI-RADS value, a
duplicated ``image_id``, a DICOM under ``images/`` with no row.
"""
from __future__ import annotations

import re
from typing import Any

import pandas as pd

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .base import OFFICIAL_SPLIT, SAMPLE_COLUMNS, MammoDataset
from .problem import Problem
from .sheets import normalise_laterality, read_sheet, row_name
from .subgroups import DENSITY, acr_density

SHEET = "breast-level_annotations.csv"
REQUIRED_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_birads")
SPLIT_NAMES = {"training": "train", "test": "test"}  # the sheet's split column -> official_split
BIRADS = re.compile(r"^(?:BI-?RADS\s*)?([1-5])$", re.I)


def parse_birads_set(value: Any, option: str) -> frozenset[int]:
    """``"1,2"``, ``2``, ``[4, 5]`` or ``"BI-RADS 4, BI-RADS 5"`` -> ``{...}``, each in 1..5."""
    items = value if isinstance(value, (list, tuple, set, frozenset)) else str(value).split(",")
    out = set()
    for item in items:
        text = str(item).strip()
        if not text:
            continue
        m = BIRADS.match(text)
        if m is None or not 1 <= int(m.group(1)) <= 5:
            raise ConfigError(f"params.vindr_mammo.{option}: '{text}' is not a BI-RADS category 1-5")
        out.add(int(m.group(1)))
    return frozenset(out)


@DATASETS.register("vindr_mammo")
class VinDrMammo(MammoDataset):
    """VinDr-Mammo full-field digital mammograms (breast-level_annotations.csv + images/).

    Args:
        split: "all" rows, or only those whose split column is "training" or "test".
        benign_birads: BI-RADS categories labelled benign, e.g. "1,2".
        malignant_birads: BI-RADS categories labelled malignant; images of any other category
            are left out.
    """

    def __init__(
        self,
        split: str = "all",
        benign_birads: str = "1,2",
        malignant_birads: str = "4,5",
        **settings,
    ):
        super().__init__(**settings)
        if split not in ("all", "training", "test"):
            raise ConfigError(f"params.vindr_mammo.split must be 'all', 'training' or 'test', got '{split}'")
        self.split = split
        self.benign = parse_birads_set(benign_birads, "benign_birads")
        self.malignant = parse_birads_set(malignant_birads, "malignant_birads")
        if self.benign & self.malignant:
            raise ConfigError(
                f"params.vindr_mammo: BI-RADS {sorted(self.benign & self.malignant)} "
                "is both benign and malignant"
            )

    def scan(self) -> tuple[pd.DataFrame, list[Problem]]:
        root = self.require_root()
        csv = root / SHEET
        if not csv.is_file():
            raise DataError(f"{root}: no {SHEET} (VinDr-Mammo layout: {SHEET} + images/<study_id>/<image_id>.dicom)")
        required = REQUIRED_COLUMNS + (("split",) if self.split != "all" else ())
        sheet = read_sheet(csv, sep=",", required=required)
        images = root / "images"
        problems: list[Problem] = []
        rows = []
        seen: dict[str, str] = {}
        for index, row in sheet.iterrows():
            where = row_name(csv, index)
            image_id, study_id = row["image_id"], row["study_id"]
            if image_id in seen:
                problems.append(Problem(where, f"image_id {image_id} already on {seen[image_id]}"))
                continue
            seen[image_id] = where
            if self.split != "all" and row["split"].lower() != self.split:
                continue
            m = BIRADS.match(row["breast_birads"])
            if m is None:
                problems.append(Problem(where, f"image {image_id}: unknown breast_birads '{row['breast_birads']}' "
                                               "(expected 'BI-RADS 1' .. 'BI-RADS 5')"))
                continue
            category = int(m.group(1))
            if category in self.benign:
                label = 0
            elif category in self.malignant:
                label = 1
            else:
                continue
            path = images / study_id / f"{image_id}.dicom"
            if not path.is_file():
                problems.append(Problem(where, f"image {image_id}: file not found: {path}"))
                continue
            rows.append({
                "image_id": image_id,
                "patient_id": study_id,
                "label": label,
                "laterality": normalise_laterality(row["laterality"]),
                "view": row["view_position"].upper(),
                "path": str(path),
                OFFICIAL_SPLIT: SPLIT_NAMES.get(row.get("split", "").strip().lower(), ""),
                DENSITY: acr_density(row.get("breast_density", "")),
            })
        if images.is_dir():
            for path in sorted(images.glob("*/*.dicom")):
                if path.stem not in seen:
                    problems.append(Problem(str(path), f"no row in {SHEET} has image_id {path.stem}"))
        table = pd.DataFrame(rows, columns=[*SAMPLE_COLUMNS, OFFICIAL_SPLIT, DENSITY]).astype({"label": "int64"})
        return table, problems
