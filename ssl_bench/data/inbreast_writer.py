"""Write images as an INbreast release tree (real DICOM MG files + an INbreast-format sheet).

Lets the real ``inbreast`` loader be exercised end to end on generated data
(``ssl-bench data synth --format dicom --layout inbreast``) and in tests.

- ``AllDICOMs/{File Name}_{patient hash}_MG_{L|R}_{CC|ML}_ANON.dcm``: one DICOM MG file per image
  (:mod:`.release_writer`: ``BitsStored`` 14 (default) or 16, optionally RLE or JPEG 2000
  Lossless; right breasts stored mirrored, PatientOrientation ``P\\...``).
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
from .release_writer import check_rows, digest, write_canonical

BENIGN_CHOICES = ("1", "2")
MALIGNANT_CHOICES = ("4a", "4b", "4c", "5", "6")


def file_names(table: pd.DataFrame) -> list[str]:
    ids = [str(v) for v in table["image_id"]]
    if all(re.fullmatch(r"\d{8}", v) for v in ids) and len(set(ids)) == len(ids):
        return ids
    return [f"{20000000 + i:08d}" for i in range(len(ids))]


def patient_hash(patient_id: str) -> str:
    return hashlib.sha1(str(patient_id).encode()).hexdigest()[:16]


def birads_for(label: int, file_name: str) -> str:
    choices = MALIGNANT_CHOICES if int(label) == 1 else BENIGN_CHOICES
    return choices[digest(file_name) % len(choices)]


def write_inbreast_tree(out_dir, images: np.ndarray, table: pd.DataFrame, *, bits_stored: int = 14,
                        compress: str | None = None, on_image: Callable[[], None] | None = None) -> Path:
    """Write ``images`` (canonical, float in [0, 1], ``(N, H, W)``) described by ``table``
    (``image_id, patient_id, label, laterality, view``) as an INbreast tree; return ``out_dir``.
    ``on_image`` is called after each file (a progress bar's tick)."""
    out = Path(out_dir)
    check_rows(images, table, bits_stored)
    folder = out / "AllDICOMs"
    folder.mkdir(parents=True, exist_ok=True)
    lines = [";".join(SHEET_COLUMNS)]
    for i, (name, row) in enumerate(zip(file_names(table), table.itertuples(index=False))):
        side, view = str(row.laterality).upper(), str(row.view).upper()
        hashed = patient_hash(row.patient_id)
        token = "ML" if view == "MLO" else "CC"
        write_canonical(folder / f"{name}_{hashed}_MG_{side}_{token}_ANON.dcm", images[i], laterality=side,
                        view=view, patient=hashed, bits_stored=bits_stored, compress=compress, uid_seed=name)
        if on_image is not None:
            on_image()
        number = digest(name)
        date = f"20{10 + number % 3:02d}{1 + number % 12:02d}"
        acr = str(1 + (number >> 8) % 4)
        lines.append(";".join(["removed", "removed", side, view, date, name, acr, birads_for(row.label, name)]))
    atomic_write(out / "INbreast.csv", lambda fh: fh.write(("\r\n".join(lines) + "\r\n").encode("ascii")))
    return out
