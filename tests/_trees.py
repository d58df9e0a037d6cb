"""Test helpers: INbreast, CBIS-DDSM and VinDr-Mammo folder trees with small pydicom-made DICOMs.

Each image is a half-ellipse 'breast' against its chest-wall edge (left edge for L, right edge
for R, as stored by the scanners: see ssl_bench.data.preprocess) on a dark background, written in
one of several encodings (``VARIANTS``: MONOCHROME1/2, windowed or not, uncompressed, RLE,
JPEG 2000, JPEG Lossless). ``expected_unit`` gives the hand-computed [0, 1] image the reader must
produce for it (min-max, window formula, inversion), before cropping.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from _dicom_factory import make_dicom

REAL_INBREAST_SHEET = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "inbreast" / "INbreast.csv"
SHAPE = (48, 36)  # rows, columns of the test DICOMs (>= 32 for JPEG 2000)

# name -> make_dicom options
VARIANTS = {
    "mono2": dict(photometric="MONOCHROME2", bits_stored=14),
    "mono1_rle": dict(photometric="MONOCHROME1", bits_stored=14, compress="rle"),
    "window_rle": dict(photometric="MONOCHROME2", bits_stored=12, window=(1500, 2400), compress="rle"),
    "mono2_j2k": dict(photometric="MONOCHROME2", bits_stored=16, compress="j2k"),
    "mono1_window_jpegll": dict(photometric="MONOCHROME1", bits_stored=12, window=(2000, 3000), compress="jpegll"),
}


def breast_values(side: str, seed: int, shape=SHAPE, top: int = 4095) -> np.ndarray:
    """Integer pixels: tissue (bright for MONOCHROME2 display) against the chest-wall edge."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[:h, :w]
    cx = 0 if side == "L" else w - 1
    inside = ((x - cx) / (0.6 * w)) ** 2 + ((y - h / 2) / (0.42 * h)) ** 2 <= 1
    values = rng.integers(0, top // 20, size=shape)
    values[inside] = rng.integers(top // 2, top, size=int(inside.sum()))
    return values


def stored_pixels(variant: str, side: str, seed: int) -> np.ndarray:
    """Pixels as stored: for MONOCHROME1 the tissue is low (dark-is-dense film convention)."""
    opts = VARIANTS[variant]
    top = 2 ** opts["bits_stored"] - 1
    values = breast_values(side, seed, top=min(top, 4095))
    return (min(top, 4095) - values) if opts["photometric"] == "MONOCHROME1" else values


def expected_unit(variant: str, pixels: np.ndarray) -> np.ndarray:
    """The [0, 1] image read_dicom must return for ``pixels`` written as ``variant`` (by hand)."""
    opts = VARIANTS[variant]
    x = pixels.astype(np.float64)
    if "window" in opts:
        c, w = opts["window"]
        out = np.clip((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)
    else:
        out = (x - x.min()) / (x.max() - x.min())
    return 1 - out if opts["photometric"] == "MONOCHROME1" else out


def write_image(path: Path, variant: str, side: str, seed: int, **extra) -> np.ndarray:
    pixels = stored_pixels(variant, side, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_dicom(path, pixels, **VARIANTS[variant], **extra)
    return pixels


# ------------------------------------------------------------------------------------ INbreast


def inbreast_patient(index: int) -> str:
    """Our stand-in patient hash for sheet row ``index``: four consecutive rows per patient."""
    return hashlib.sha1(f"patient-{index // 4}".encode()).hexdigest()[:16]


def build_inbreast(root: Path, rows: list[int] | None = None) -> pd.DataFrame:
    """Copy the REAL sheet to ``root`` and write a DICOM for each of its ``rows`` (default all).

    Returns the sheet with ``variant``, ``patient``, ``path`` and ``pixels`` (stored) columns.
    """
    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REAL_INBREAST_SHEET, root / "INbreast.csv")
    sheet = pd.read_csv(root / "INbreast.csv", sep=";", dtype=str, keep_default_na=False)
    names = list(VARIANTS)
    records = []
    for index, row in sheet.iterrows():
        if rows is not None and index not in rows:
            continue
        variant = names[index % len(names)]
        side = row["Laterality"]
        token = "ML" if row["View"] == "MLO" else row["View"]
        patient = inbreast_patient(index)
        path = root / "AllDICOMs" / f"{row['File Name']}_{patient}_MG_{side}_{token}_ANON.dcm"
        pixels = write_image(path, variant, side, seed=index, laterality=side)
        records.append({**row.to_dict(), "index": index, "variant": variant, "patient": patient,
                        "path": str(path), "pixels": pixels})
    return pd.DataFrame(records)


# ----------------------------------------------------------------------------------- CBIS-DDSM

MASS_HEADER = ("patient_id,breast_density,left or right breast,image view,abnormality id,abnormality type,"
               "mass shape,mass margins,assessment,pathology,subtlety,image file path,cropped image file path,"
               "ROI mask file path")
CALC_HEADER = ("patient_id,breast density,left or right breast,image view,abnormality id,abnormality type,"
               "calc type,calc distribution,assessment,pathology,subtlety,image file path,cropped image file path,"
               "ROI mask file path")

# (csv, patient, side, view, [pathologies], layout, variant)
CBIS_IMAGES = [
    ("mass_case_description_train_set.csv", "P_00001", "LEFT", "CC", ["MALIGNANT"], "tcia", "mono2"),
    ("mass_case_description_train_set.csv", "P_00001", "LEFT", "MLO", ["BENIGN", "MALIGNANT"], "csv", "mono2_j2k"),
    ("mass_case_description_train_set.csv", "P_00004", "RIGHT", "CC", ["BENIGN_WITHOUT_CALLBACK"], "tcia", "mono1_rle"),
    ("mass_case_description_train_set.csv", "P_00004", "RIGHT", "MLO", ["BENIGN", "BENIGN"], "tcia", "window_rle"),
    ("calc_case_description_test_set.csv", "P_00001", "RIGHT", "CC", ["MALIGNANT"], "tcia", "mono1_window_jpegll"),
    ("calc_case_description_test_set.csv", "P_00005", "LEFT", "MLO", ["BENIGN"], "tcia", "mono2"),
]


def cbis_folder(csv: str, patient: str, side: str, view: str) -> str:
    kind = "Mass" if csv.startswith("mass") else "Calc"
    split = "Training" if "train" in csv else "Test"
    return f"{kind}-{split}_{patient}_{side}_{view}"


def build_cbis(root: Path) -> dict[str, dict]:
    """CSV rows + DICOMs in ``root/CBIS-DDSM``; returns folder -> expected facts."""
    images = root / "CBIS-DDSM"
    lines: dict[str, list[str]] = {}
    expected = {}
    for seed, (csv, patient, side, view, pathologies, layout, variant) in enumerate(CBIS_IMAGES):
        folder = cbis_folder(csv, patient, side, view)
        csv_path = f"{folder}/1.3.6.1.4.1.9590.100.1.2.{1000 + seed}/1.3.6.1.4.1.9590.100.1.2.{2000 + seed}/000000.dcm"
        if layout == "csv":
            dicom = images / csv_path
        else:  # what the NBIA Data Retriever writes today
            dicom = images / folder / f"07-20-2016-DDSM-{7000 + seed}" / f"1.000000-full mammogram images-{900 + seed}" / "1-1.dcm"
        pixels = write_image(dicom, variant, side[0], seed=100 + seed)
        # the cropped-lesion series live in their own '<folder>_1' subject folder
        write_image(images / f"{folder}_1" / "x" / "1.000000-cropped images-1" / "1-1.dcm", "mono2", side[0], seed=1)
        header = MASS_HEADER if csv.startswith("mass") else CALC_HEADER
        rows = lines.setdefault(csv, [header])
        for n, pathology in enumerate(pathologies, 1):
            rows.append(f'{patient},{1 + seed % 4},{side},{view},{n},mass,OVAL,CIRCUMSCRIBED,4,{pathology},4,{csv_path},'
                        f'{folder}_{n}/1.3/1.4/000000.dcm,"{folder}_{n}/1.3/1.4/000001.dcm\n"')
        expected[folder] = {"patient_id": patient, "label": int("MALIGNANT" in pathologies),
                            "laterality": side[0], "view": view, "variant": variant, "pixels": pixels,
                            "split": "train" if "train" in csv else "test", "density": "ABCD"[seed % 4],
                            "lesion_type": "mass" if csv.startswith("mass") else "calcification"}
    for csv, rows in lines.items():
        (root / csv).write_text("\n".join(rows) + "\n")
    return expected


# -------------------------------------------------------------------------------------- VinDr

VINDR_HEADER = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
# (study, image, side, view, birads, split, variant)
VINDR_IMAGES = [
    ("s1", "a1", "R", "CC", "BI-RADS 1", "training", "mono1_rle"),
    ("s1", "a2", "R", "MLO", "BI-RADS 1", "training", "mono2"),
    ("s1", "a3", "L", "CC", "BI-RADS 4", "training", "window_rle"),
    ("s1", "a4", "L", "MLO", "BI-RADS 4", "training", "mono2_j2k"),
    ("s2", "b1", "R", "CC", "BI-RADS 3", "test", "mono2"),
    ("s2", "b2", "R", "MLO", "BI-RADS 5", "test", "mono1_window_jpegll"),
    ("s2", "b3", "L", "CC", "BI-RADS 2", "test", "mono2"),
]


def build_vindr(root: Path) -> dict[str, dict]:
    rows = [VINDR_HEADER]
    expected = {}
    for seed, (study, image, side, view, birads, split, variant) in enumerate(VINDR_IMAGES):
        pixels = write_image(root / "images" / study / f"{image}.dicom", variant, side, seed=200 + seed,
                             image_laterality=side, view=view)
        rows.append(f"{study},ser{seed},{image},{side},{view},{SHAPE[0]},{SHAPE[1]},{birads},DENSITY {'ABCD'[seed % 4]},{split}")
        expected[image] = {"patient_id": study, "birads": int(birads[-1]), "split": split, "variant": variant,
                           "pixels": pixels, "laterality": side, "density": "ABCD"[seed % 4]}
    (root / "breast-level_annotations.csv").write_text("\n".join(rows) + "\n")
    return expected
