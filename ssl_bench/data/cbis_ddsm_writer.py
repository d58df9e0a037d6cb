"""Write images as a CBIS-DDSM release tree (Lee et al., Scientific Data 2017, as TCIA ships it):
the case-description CSVs and the DICOM tree the NBIA Data Retriever writes, read by the real
``cbis_ddsm`` loader (``ssl-bench data synth --format dicom --layout cbis-ddsm``).

- The official split, by patient (:func:`.release_writer.official_test_patients`, a quarter of
  each class's patients by default): every image of a patient is in ``Training`` or in ``Test``.
- One image, one abnormality, one case-description row: a phantom whose lesion type is
  ``calcification`` goes to ``calc_case_description_{train,test}_set.csv`` (folder ``Calc-...``),
  every other to ``mass_case_description_...`` (``Mass-...``); pathology ``MALIGNANT`` for label
  1, ``BENIGN`` or ``BENIGN_WITHOUT_CALLBACK`` for 0 (chosen from the folder name); density 1-4
  from the phantom's ACR letter (empty when it has none: 2).
- Patients are ``P_00001`` ... in the order of the table's first appearance of each patient.
- ``CBIS-DDSM/<Kind>-<Training|Test>_<patient>_<LEFT|RIGHT>_<CC|MLO>/<date>-DDSM-<n>/1.000000-full
  mammogram images-<n>/1-1.dcm``, while the CSV's ``image file path`` has the release's older
  ``<folder>/1.3.6.1.4.1.9590.100.1.2.<n>/.../000000.dcm`` (the loader keys on the folder);
  DICOM files as :func:`.release_writer.write_dicom` writes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..fileio import atomic_write_bytes
from .base import OFFICIAL_SPLIT
from .cbis_ddsm import CSV_NAMES
from .release_writer import check_rows, digest, official_test_patients, write_canonical

MASS_COLUMNS = (
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "mass shape",
    "mass margins",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
CALC_COLUMNS = (
    "patient_id",
    "breast density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "calc type",
    "calc distribution",
    "assessment",
    "pathology",
    "subtlety",
    "image file path",
    "cropped image file path",
    "ROI mask file path",
)
SIDES = {"L": "LEFT", "R": "RIGHT"}


def _pathology(label: int, folder: str) -> str:
    if int(label) == 1:
        return "MALIGNANT"
    return ("BENIGN", "BENIGN_WITHOUT_CALLBACK")[digest(folder) % 2]


def _density(letter: object) -> str:
    return str(1 + "ABCD".index(str(letter))) if str(letter) in ("A", "B", "C", "D") else "2"


def write_cbis_ddsm_tree(
    out_dir,
    images: np.ndarray,
    table: pd.DataFrame,
    *,
    bits_stored: int = 16,
    compress: str | None = None,
    test_fraction: float = 0.25,
    on_image: Callable[[], None] | None = None,
) -> pd.DataFrame:
    """Write ``images`` (canonical, float in [0, 1], ``(N, H, W)``) described by ``table``
    (``image_id, patient_id, label, laterality, view``, optionally ``lesion_type``, ``density``)
    as a CBIS-DDSM tree in ``out_dir``.

    Returns:
        What was written, one row per input row: ``image_id`` (the subject folder), ``patient_id``
        (``P_...``), ``label``, ``laterality``, ``view``, ``official_split`` (``train``/``test``),
        ``path`` (the DICOM file).
    """
    out = Path(out_dir)
    check_rows(images, table, bits_stored)
    test = official_test_patients(table, test_fraction)
    numbers = {p: i + 1 for i, p in enumerate(dict.fromkeys(table["patient_id"].astype(str)))}
    sheets: dict[tuple[str, str], list[list[str]]] = {}
    written = []
    for i, row in enumerate(table.itertuples(index=False)):
        side, view = str(row.laterality).upper(), str(row.view).upper()
        patient = f"P_{numbers[str(row.patient_id)]:05d}"
        split = "test" if str(row.patient_id) in test else "train"
        kind = "calc" if getattr(row, "lesion_type", "") == "calcification" else "mass"
        folder = f"{kind.capitalize()}-{'Test' if split == 'test' else 'Training'}_{patient}_{SIDES[side]}_{view}"
        path = (
            out
            / "CBIS-DDSM"
            / folder
            / f"07-20-2016-DDSM-{1000 + i}"
            / f"1.000000-full mammogram images-{2000 + i}"
            / "1-1.dcm"
        )
        write_canonical(path, images[i], laterality=side, view=view, patient=patient, bits_stored=bits_stored,
                        compress=compress, uid_seed=folder)
        if on_image is not None:
            on_image()
        uid = f"1.3.6.1.4.1.9590.100.1.2.{3000 + i}"
        lesion = ["mass", "OVAL", "CIRCUMSCRIBED"] if kind == "mass" else ["calcification", "PLEOMORPHIC", "CLUSTERED"]
        sheets.setdefault((kind, split), []).append(
            [
                patient,
                _density(getattr(row, "density", "")),
                SIDES[side],
                view,
                "1",
                *lesion,
                "4" if int(row.label) == 1 else "3",
                _pathology(int(row.label), folder),
                "3",
                f"{folder}/{uid}/{uid}.1/000000.dcm",
                f"{folder}_1/{uid}/{uid}.2/000000.dcm",
                f"{folder}_1/{uid}/{uid}.2/000001.dcm",
            ]
        )
        written.append(
            {
                "image_id": folder,
                "patient_id": patient,
                "label": int(row.label),
                "laterality": side,
                "view": view,
                OFFICIAL_SPLIT: split,
                "path": str(path),
            }
        )
    for (kind, split), rows in sheets.items():
        header = MASS_COLUMNS if kind == "mass" else CALC_COLUMNS
        data = pd.DataFrame(rows, columns=list(header)).to_csv(index=False).encode("ascii")
        atomic_write_bytes(out / CSV_NAMES[kind, split], data)
    return pd.DataFrame(written)
