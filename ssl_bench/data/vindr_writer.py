"""Write images as a VinDr-Mammo release tree (Nguyen et al., Scientific Data 2023, as PhysioNet
ships it): ``breast-level_annotations.csv`` and ``images/<study_id>/<image_id>.dicom``, read by
the real ``vindr_mammo`` loader (``ssl-bench data synth --format dicom --layout vindr``).

- One study per patient (VinDr has no patient id: a study is one exam of one woman), its
  ``study_id`` the first 32 hex digits of SHA-1 of the patient id, an image's ``image_id`` those
  of SHA-1 of the image id; ``series_id`` one per laterality and view.
- The sheet's ``split`` (``training``/``test``) by patient
  (:func:`.release_writer.official_test_patients`, a quarter of each class's patients by
  default).
- ``breast_birads``: ``BI-RADS 1``/``2`` for label 0, ``BI-RADS 4``/``5`` for label 1 (chosen from
  the image id), which the loader's default ``benign_birads``/``malignant_birads`` read back;
  ``breast_density`` ``DENSITY A``-``D`` from the phantom's ACR letter (``DENSITY B`` without one);
  ``height``/``width`` the image's.
- DICOM files as :func:`.release_writer.write_dicom` writes them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..fileio import atomic_write_bytes
from .base import OFFICIAL_SPLIT
from .release_writer import check_rows, digest, official_test_patients, write_canonical
from .vindr import SHEET, SPLIT_NAMES

SHEET_COLUMNS = (
    "study_id",
    "series_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "breast_birads",
    "breast_density",
    "split",
)
BENIGN_CHOICES = ("BI-RADS 1", "BI-RADS 2")
MALIGNANT_CHOICES = ("BI-RADS 4", "BI-RADS 5")
#: official_split -> the sheet's split column
SHEET_SPLITS = {v: k for k, v in SPLIT_NAMES.items()}


def _hex(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:32]


def write_vindr_tree(
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
    (``image_id, patient_id, label, laterality, view``, optionally ``density``) as a VinDr-Mammo
    tree in ``out_dir``.

    Returns:
        What was written, one row per input row: ``image_id``, ``patient_id`` (the study),
        ``label``, ``laterality``, ``view``, ``official_split`` (``train``/``test``), ``path``.
    """
    out = Path(out_dir)
    check_rows(images, table, bits_stored)
    test = official_test_patients(table, test_fraction)
    rows, written = [], []
    for i, row in enumerate(table.itertuples(index=False)):
        side, view = str(row.laterality).upper(), str(row.view).upper()
        study, image = _hex(f"study {row.patient_id}"), _hex(f"image {row.image_id}")
        split = "test" if str(row.patient_id) in test else "train"
        path = out / "images" / study / f"{image}.dicom"
        write_canonical(path, images[i], laterality=side, view=view, patient=study, bits_stored=bits_stored,
                        compress=compress, uid_seed=image)
        if on_image is not None:
            on_image()
        choices = MALIGNANT_CHOICES if int(row.label) == 1 else BENIGN_CHOICES
        letter = str(getattr(row, "density", ""))
        rows.append(
            [
                study,
                _hex(f"series {row.patient_id} {side} {view}"),
                image,
                side,
                view,
                str(images[i].shape[0]),
                str(images[i].shape[1]),
                choices[digest(image) % len(choices)],
                f"DENSITY {letter if letter in ('A', 'B', 'C', 'D') else 'B'}",
                SHEET_SPLITS[split],
            ]
        )
        written.append(
            {
                "image_id": image,
                "patient_id": study,
                "label": int(row.label),
                "laterality": side,
                "view": view,
                OFFICIAL_SPLIT: split,
                "path": str(path),
            }
        )
    atomic_write_bytes(out / SHEET, pd.DataFrame(rows, columns=list(SHEET_COLUMNS)).to_csv(index=False).encode("ascii"))
    return pd.DataFrame(written)
