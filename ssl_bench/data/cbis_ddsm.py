"""CBIS-DDSM (Lee et al., Scientific Data 2017) as downloaded from TCIA, as dataset ``cbis_ddsm``.

Layout under ``--data-root``: the four case-description CSVs
(``{mass,calc}_case_description_{train,test}_set.csv``; a subset is fine, e.g. mass only) and the
DICOM tree, either in ``CBIS-DDSM/`` or directly in the root. The CSV column ``image file path``
reads ``Mass-Training_P_00001_LEFT_CC/1.3.6.../1.3.6.../000000.dcm`` but the current TCIA download
(NBIA Data Retriever) writes ``Mass-Training_P_00001_LEFT_CC/<date>-DDSM-<n>/1.000000-full
mammogram images-<n>/1-1.dcm``. Only the first component (the subject folder of the full
mammogram) is the same in both, so it is the key: the CSV's exact path is used when it exists,
else the single ``.dcm`` inside that folder (any depth; a ``full mammogram`` series wins if there
are several).

One sample per full mammogram (subject folder): label 1 if any of its abnormalities is
``MALIGNANT``, 0 if all are ``BENIGN`` / ``BENIGN_WITHOUT_CALLBACK``; patient = ``patient_id``
(``P_00001``), which also groups a patient's mass and calc images; ``lesion_type`` is the sheet's kind (``mass``/``calcification``: CBIS-DDSM
keeps a mammogram once per kind, in folders named ``Mass-...`` and ``Calc-...``), ``density`` its
``breast_density`` (1-4, as an ACR letter). Option ``split``: ``"all"``
(default), ``"train"`` or ``"test"`` (the official split, from the CSV names). The sample table's
``official_split`` column (``train``/``test``, from the CSV's name, which the folder's
``Training``/``Test`` repeats) is what ``--split official`` uses. As released, a patient may have
mass images in one split and calc images in the other; the official split keeps them so.

Problems reported (file and reason): a CSV row whose folder or DICOM is missing or ambiguous, an
unknown pathology (the image is left out), a full-mammogram folder no CSV row names.
"""
from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .base import OFFICIAL_SPLIT, SAMPLE_COLUMNS, MammoDataset
from .problem import Problem
from .sheets import normalise_laterality, read_sheet, row_name
from .subgroups import DENSITY, LESION_TYPE, acr_density

CSV_NAMES = {
    ("mass", "train"): "mass_case_description_train_set.csv",
    ("calc", "train"): "calc_case_description_train_set.csv",
    ("mass", "test"): "mass_case_description_test_set.csv",
    ("calc", "test"): "calc_case_description_test_set.csv",
}
REQUIRED_COLUMNS = ("patient_id", "left or right breast", "image view", "pathology", "image file path")
PATHOLOGY = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
LESION_TYPES = {"mass": "mass", "calc": "calcification"}  # the sheet kind -> the lesion_type column
FULL_FOLDER = re.compile(r"^(?P<kind>Mass|Calc)-(?P<split>Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)$", re.I)


@DATASETS.register("cbis_ddsm")
class CBISDDSM(MammoDataset):
    """CBIS-DDSM scanned-film mammograms (TCIA download + case-description CSVs).

    Args:
        split: "all", "train" or "test": which official split's case-description CSVs are read.
    """

    def __init__(
        self,
        split: str = "all",
        **settings,
    ):
        super().__init__(**settings)
        if split not in ("all", "train", "test"):
            raise ConfigError(f"params.cbis_ddsm.split must be 'all', 'train' or 'test', got '{split}'")
        self.split = split

    def dicom_root(self, root: Path) -> Path:
        nested = root / "CBIS-DDSM"
        return nested if nested.is_dir() else root

    def scan(self) -> tuple[pd.DataFrame, list[Problem]]:
        root = self.require_root()
        splits = ("train", "test") if self.split == "all" else (self.split,)
        sheets = [(kind, split, root / CSV_NAMES[kind, split]) for kind in ("mass", "calc") for split in splits]
        sheets = [s for s in sheets if s[2].is_file()]
        if not sheets:
            wanted = ", ".join(CSV_NAMES[k, s] for k in ("mass", "calc") for s in splits)
            raise DataError(f"{root}: no CBIS-DDSM case-description CSV found (expected {wanted})")
        images_dir = self.dicom_root(root)
        problems: list[Problem] = []

        # one entry per full mammogram (subject folder), in CSV order
        entries: dict[str, dict] = {}
        for kind, split, csv in sheets:
            sheet = read_sheet(csv, sep=",", required=REQUIRED_COLUMNS)
            for index, row in sheet.iterrows():
                where = row_name(csv, index)
                relative = row["image file path"].replace("\\", "/").strip().strip("/")
                folder = relative.split("/")[0]
                if not folder:
                    problems.append(Problem(where, "empty 'image file path'"))
                    continue
                entry = entries.setdefault(folder, {
                    "split": split, "where": where, "relative": relative, "patient_id": row["patient_id"],
                    "laterality": normalise_laterality(row["left or right breast"]),
                    "view": row["image view"].upper(), "labels": [], "bad": [],
                    # mass sheets say breast_density, calcification sheets breast density
                    DENSITY: acr_density(row.get("breast_density", row.get("breast density", ""))),
                    LESION_TYPE: LESION_TYPES[kind],
                })
                pathology = row["pathology"].upper()
                if pathology in PATHOLOGY:
                    entry["labels"].append(PATHOLOGY[pathology])
                else:
                    entry["bad"].append(Problem(where, f"{folder}: unknown pathology '{row['pathology']}' "
                                                       "(expected MALIGNANT, BENIGN or BENIGN_WITHOUT_CALLBACK)"))

        rows = []
        for folder, entry in entries.items():
            if entry["bad"]:
                problems.extend(entry["bad"])
                continue
            path, reason = self.find_dicom(images_dir, folder, entry["relative"])
            if path is None:
                problems.append(Problem(entry["where"], reason))
                continue
            rows.append({
                "image_id": folder,
                "patient_id": entry["patient_id"],
                "label": max(entry["labels"]),
                "laterality": entry["laterality"],
                "view": entry["view"],
                "path": str(path),
                OFFICIAL_SPLIT: entry["split"],
                DENSITY: entry[DENSITY],
                LESION_TYPE: entry[LESION_TYPE],
            })

        kinds = {kind for kind, _, _ in sheets}
        split_names = {"train": "training", "test": "test"}
        wanted_splits = {split_names[s] for _, s, _ in sheets}
        if images_dir.is_dir():
            for sub in sorted(images_dir.iterdir()):
                m = FULL_FOLDER.match(sub.name)
                if (m and sub.is_dir() and sub.name not in entries and m.group("kind").lower() in kinds
                        and m.group("split").lower() in wanted_splits):
                    problems.append(Problem(str(sub), "full-mammogram folder named by no row of the case-description CSVs"))
        table = pd.DataFrame(rows, columns=[*SAMPLE_COLUMNS, OFFICIAL_SPLIT, DENSITY, LESION_TYPE]).astype({"label": "int64"})
        return table, problems

    @staticmethod
    def find_dicom(images_dir: Path, folder: str, relative: str) -> tuple[Path | None, str]:
        exact = images_dir / relative
        if exact.is_file():
            return exact, ""
        subject = images_dir / folder
        if not subject.is_dir():
            return None, f"no folder {folder} in {images_dir} for 'image file path' {relative}"
        found = sorted(subject.rglob("*.dcm"))
        if len(found) > 1:
            full = [p for p in found if "full mammogram" in str(p.relative_to(subject)).lower()]
            found = full or found
        if not found:
            return None, f"no .dcm file in {subject}"
        if len(found) > 1:
            names = ", ".join(str(p.relative_to(subject)) for p in found[:4])
            return None, f"{len(found)} DICOM files in {subject} ({names}), expected one full mammogram"
        return found[0], ""
