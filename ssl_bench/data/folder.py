"""Every image under a folder, without labels, as dataset ``folder``: an unlabelled pool for the
pretext stage (``--pretext-data folder --pretext-data-root PATH``).

Reads every PNG, JPEG, TIFF and DICOM file under ``--data-root`` (any depth; ``.dcm``/``.dicom``
files, and files without an extension that carry the DICOM preamble), skipping hidden files and
folders, in sorted order, through the same decoding, preprocessing and image cache as every other
dataset (:mod:`ssl_bench.data.preprocess`, :mod:`ssl_bench.data.cache`): the DICOM's laterality
or the image itself decides the flip.

- ``image_id``: the file's path relative to the root (``a/b/1.png``);
- ``patient_id`` (option ``patient``): ``"parent"`` (default) the folder holding the file,
  relative to the root (``a/b``), so a tree of one folder per patient or study groups its images;
  a file directly in the root is its own patient (its path without the extension); ``"stem"``:
  every file its own patient (its path without the extension);
- ``label``: -1 (:data:`UNLABELLED`): the dataset has no labels (``labelled = False``), so it can
  be a pretraining pool but not the dataset a run evaluates on.

Problems reported (file and reason): files that cannot be decoded (found when decoding).
"""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .base import SAMPLE_COLUMNS, MammoDataset
from .dicom import is_dicom
from .problem import Problem

UNLABELLED = -1
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
PATIENT_RULES = ("parent", "stem")


def image_files(root: Path) -> list[Path]:
    """The images under ``root``, sorted by relative path, hidden names left out."""
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES or (suffix == "" and is_dicom(path)):
            found.append(path)
    return found


@DATASETS.register("folder")
class ImageFolder(MammoDataset):
    """Every PNG/JPEG/TIFF/DICOM under a folder, no labels: a pool for the pretext stage.

    Args:
        patient: "parent": a file's folder is its patient (a file in the root is its own); "stem":
            every file is its own patient.
    """

    labelled = False
    patient_ids = False  # made from the paths (option ``patient``), not a patient's identifier

    def __init__(self, patient: str = "parent", **settings):
        super().__init__(**settings)
        if patient not in PATIENT_RULES:
            raise ConfigError(f"params.folder.patient must be 'parent' or 'stem', got '{patient}'")
        self.patient = patient

    def patient_of(self, relative: Path) -> str:
        if self.patient == "parent" and len(relative.parts) > 1:
            return relative.parent.as_posix()
        return relative.with_suffix("").as_posix()

    def scan(self) -> tuple[pd.DataFrame, list[Problem]]:
        root = self.require_root()
        files = image_files(root)
        if not files:
            raise DataError(f"{root}: no PNG, JPEG, TIFF or DICOM file in this folder (dataset 'folder')")
        rows = []
        for path in files:
            relative = path.relative_to(root)
            rows.append({
                "image_id": relative.as_posix(),
                "patient_id": self.patient_of(relative),
                "label": UNLABELLED,
                "laterality": "",
                "view": "",
                "path": str(path),
            })
        return pd.DataFrame(rows, columns=list(SAMPLE_COLUMNS)).astype({"label": "int64"}), []
