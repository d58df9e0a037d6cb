"""Write images as an INbreast release tree (real DICOM MG files + an INbreast-format sheet).

Lets the real ``inbreast`` loader be exercised end to end on generated data
(``ssl-bench data synth --format dicom --layout inbreast``) and in tests.

- ``AllDICOMs/{File Name}_{patient hash}_MG_{L|R}_{CC|ML}_ANON.dcm``: Digital Mammography X-Ray
  Image (For Presentation), 16-bit allocated, ``BitsStored`` 14 (default) or 16, MONOCHROME2,
  value ``round(x * (2**BitsStored - 1))``, no window (the reader then normalises min-max), with
  Laterality/ImageLaterality, ViewPosition and PatientOrientation; optionally RLE Lossless or
  JPEG 2000 Lossless compressed. Images come in canonical orientation (chest wall left) and are
  stored as a scanner does (see :mod:`ssl_bench.data.preprocess`): left breasts as given, right
  breasts mirrored (chest wall on the right edge, PatientOrientation ``P\\...``).
- ``INbreast.csv`` exactly like the real sheet: ``;``-separated, CRLF, header
  ``Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads``, patient
  fields ``removed``, BI-RADS strings: benign -> ``1``/``2``, malignant -> ``4a``/``4b``/``4c``/
  ``5``/``6``, chosen deterministically from the File Name.

``File Name`` is the table's ``image_id`` when every id is a unique 8-digit number, else
``20000000 + row``; the patient hash is the first 16 hex digits of SHA-1(patient_id).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from ..fileio import atomic_write
from .inbreast import SHEET_COLUMNS

BENIGN_CHOICES = ("1", "2")
MALIGNANT_CHOICES = ("4a", "4b", "4c", "5", "6")
COMPRESSIONS = (None, "rle", "j2k")
_ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"],
                ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}


def _digest(text: str) -> int:
    return int(hashlib.sha1(text.encode()).hexdigest()[:12], 16)


def file_names(table: pd.DataFrame) -> list[str]:
    ids = [str(v) for v in table["image_id"]]
    if all(re.fullmatch(r"\d{8}", v) for v in ids) and len(set(ids)) == len(ids):
        return ids
    return [f"{20000000 + i:08d}" for i in range(len(ids))]


def patient_hash(patient_id: str) -> str:
    return hashlib.sha1(str(patient_id).encode()).hexdigest()[:16]


def birads_for(label: int, file_name: str) -> str:
    choices = MALIGNANT_CHOICES if int(label) == 1 else BENIGN_CHOICES
    return choices[_digest(file_name) % len(choices)]


def write_dicom(path: Path, pixels: np.ndarray, *, laterality: str, view: str, patient: str,
                bits_stored: int = 14, compress: str | None = None, uid_seed: str = "") -> None:
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
    atomic_write(path, lambda fh: ds.save_as(fh, enforce_file_format=True))  # never half a file


def write_inbreast_tree(out_dir, images: np.ndarray, table: pd.DataFrame, *, bits_stored: int = 14,
                        compress: str | None = None, on_image: Callable[[], None] | None = None) -> Path:
    """Write ``images`` (canonical, float in [0, 1], ``(N, H, W)``) described by ``table``
    (``image_id, patient_id, label, laterality, view``) as an INbreast tree; return ``out_dir``.
    ``on_image`` is called after each file (a progress bar's tick)."""
    out = Path(out_dir)
    if len(images) != len(table):
        raise ValueError(f"{len(table)} table rows but {len(images)} images")
    if bits_stored not in (14, 16):
        raise ValueError(f"bits_stored must be 14 or 16, got {bits_stored}")
    folder = out / "AllDICOMs"
    folder.mkdir(parents=True, exist_ok=True)
    top = 2**bits_stored - 1
    lines = [";".join(SHEET_COLUMNS)]
    for i, (name, row) in enumerate(zip(file_names(table), table.itertuples(index=False))):
        side, view = str(row.laterality).upper(), str(row.view).upper()
        if side not in ("L", "R") or view not in ("CC", "MLO"):
            raise ValueError(f"row {i}: laterality must be L/R and view CC/MLO, got {side!r}, {view!r}")
        canonical = np.clip(np.asarray(images[i], dtype=np.float64), 0.0, 1.0)
        stored = canonical if side == "L" else canonical[:, ::-1]
        pixels = np.round(stored * top).astype(np.uint16)
        hashed = patient_hash(row.patient_id)
        token = "ML" if view == "MLO" else "CC"
        write_dicom(folder / f"{name}_{hashed}_MG_{side}_{token}_ANON.dcm", np.ascontiguousarray(pixels),
                    laterality=side, view=view, patient=hashed, bits_stored=bits_stored,
                    compress=compress, uid_seed=name)
        if on_image is not None:
            on_image()
        digest = _digest(name)
        date = f"20{10 + digest % 3:02d}{1 + digest % 12:02d}"
        acr = str(1 + (digest >> 8) % 4)
        lines.append(";".join(["removed", "removed", side, view, date, name, acr, birads_for(row.label, name)]))
    atomic_write(out / "INbreast.csv", lambda fh: fh.write(("\r\n".join(lines) + "\r\n").encode("ascii")))
    return out
