"""What the writers of a dataset release tree share (INbreast, CBIS-DDSM, VinDr-Mammo:
``ssl-bench data synth --format dicom --layout ...``): one DICOM MG file per image, its pixels as a
scanner stores them, and a release's official train/test split drawn by patient.

- :func:`write_dicom`: a Digital Mammography X-Ray Image (For Presentation) file (DICOM PS3.3
  A.26), 16-bit allocated, ``BitsStored`` 14 or 16, MONOCHROME2, no window (the reader then
  normalises min-max), with Laterality/ImageLaterality, ViewPosition and PatientOrientation;
  optionally RLE Lossless or JPEG 2000 Lossless compressed.
- :func:`stored_pixels`: a canonical image (chest wall left) as stored (see
  :mod:`ssl_bench.data.preprocess`): left breasts as given, right breasts mirrored, value
  ``round(x * (2**BitsStored - 1))``.
- :func:`write_canonical`: both, for one generated image: what each writer writes per image.
- :func:`official_test_patients`: the patients a release puts in its test split, chosen per class of
  patient (malignant if any image is) by a hash of the patient id, so a patient's images are all
  in one split and both classes are in both splits when each class has two patients or more.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..fileio import atomic_write

COMPRESSIONS = (None, "rle", "j2k")
BITS_STORED = (14, 16)
_ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}


def digest(text: str) -> int:
    """A stable number from ``text`` (the deterministic choices of a writer: BI-RADS, dates)."""
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16)


def check_rows(images: np.ndarray, table: pd.DataFrame, bits_stored: int) -> None:
    """ValueError unless ``images`` and ``table`` describe the same images, every one an L/R
    breast in a CC/MLO view, and ``bits_stored`` is one a writer supports."""
    if len(images) != len(table):
        raise ValueError(f"{len(table)} table rows but {len(images)} images")
    if bits_stored not in BITS_STORED:
        raise ValueError(f"bits_stored must be 14 or 16, got {bits_stored}")
    for i, row in enumerate(table.itertuples(index=False)):
        side, view = str(row.laterality).upper(), str(row.view).upper()
        if side not in ("L", "R") or view not in ("CC", "MLO"):
            raise ValueError(f"row {i}: laterality must be L/R and view CC/MLO, got {side!r}, {view!r}")


def stored_pixels(image: np.ndarray, side: str, bits_stored: int) -> np.ndarray:
    """A canonical image (float in [0, 1], chest wall left) as a scanner stores it: uint16,
    right breasts mirrored."""
    canonical = np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0)
    stored = canonical if side == "L" else canonical[:, ::-1]
    return np.ascontiguousarray(np.round(stored * (2**bits_stored - 1)).astype(np.uint16))


def write_canonical(path: Path, image: np.ndarray, *, laterality: str, view: str, patient: str,
                    bits_stored: int = 14, compress: str | None = None, uid_seed: str = "") -> None:
    """One generated image (canonical: float in [0, 1], chest wall left) as the scanner would have
    stored it (:func:`stored_pixels`), in a DICOM MG file (:func:`write_dicom`): what every
    release writer writes per image."""
    write_dicom(path, stored_pixels(image, laterality, bits_stored), laterality=laterality, view=view,
                patient=patient, bits_stored=bits_stored, compress=compress, uid_seed=uid_seed)


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    laterality: str,
    view: str,
    patient: str,
    bits_stored: int = 14,
    compress: str | None = None,
    uid_seed: str = "",
) -> None:
    """One DICOM MG file holding ``pixels`` (uint16, already in the stored orientation)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        JPEG2000Lossless,
        RLELossless,
        DigitalMammographyXRayImageStorageForPresentation as MG,
        generate_uid,
    )

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.SOPClassUID = MG
    ds.SOPInstanceUID = generate_uid(entropy_srcs=["sop", uid_seed])
    ds.StudyInstanceUID = generate_uid(entropy_srcs=["study", patient])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=["series", uid_seed])
    ds.file_meta.MediaStorageSOPClassUID = MG
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.Modality = "MG"
    ds.PatientID = patient
    ds.PatientName = "ANON"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Laterality = laterality
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PatientOrientation = _ORIENTATION.get((laterality, view), ["", ""])
    ds.BodyPartExamined = "BREAST"
    ds.set_pixel_data(pixels.astype(np.uint16), "MONOCHROME2", int(bits_stored), generate_instance_uid=False)
    if compress == "rle":
        ds.compress(RLELossless, generate_instance_uid=False)
    elif compress == "j2k":
        ds.compress(JPEG2000Lossless, generate_instance_uid=False)
    elif compress is not None:
        raise ValueError(f"compress must be one of {COMPRESSIONS}, got {compress!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda fh: ds.save_as(fh, enforce_file_format=True))  # never half a file


def official_test_patients(table: pd.DataFrame, test_fraction: float) -> set[str]:
    """The patients of ``table`` (``patient_id, label``) in the test split: per class of patient,
    ``round(test_fraction * n)`` of them (at least one of two or more, never all), those first
    in the order of a hash of their id."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    malignant = table.groupby(table["patient_id"].astype(str))["label"].max()
    chosen: set[str] = set()
    for _, patients in malignant.groupby(malignant):
        ids = sorted(patients.index, key=lambda p: hashlib.sha1(p.encode()).hexdigest())
        n = min(len(ids) - 1, max(1, math.floor(test_fraction * len(ids) + 0.5))) if len(ids) > 1 else 0
        chosen.update(ids[:n])
    return chosen
