"""Real dataset layouts (INbreast with the real sheet, CBIS-DDSM, VinDr-Mammo, manifest), every
bad input, and the image cache, on trees of small DICOMs made by pydicom."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from _dicom_factory import truncate
from _trees import (
    REAL_INBREAST_SHEET,
    build_cbis,
    build_inbreast,
    build_vindr,
    expected_unit,
    inbreast_patient,
    write_image,
)
from ssl_bench.data import cache as cache_module
from ssl_bench.data.base import Problem
from ssl_bench.data.cbis_ddsm import CBISDDSM
from ssl_bench.data.inbreast import INbreast
from ssl_bench.data.manifest import Manifest
from ssl_bench.data.preprocess import preprocess_file, preprocess_image
from ssl_bench.data.vindr import VinDrMammo
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.registry import DATASETS

SIZE = (32, 16)
INBREAST_LABEL = {"1": 0, "2": 0, "4a": 1, "4b": 1, "4c": 1, "5": 1, "6": 1}

needs_sheet = pytest.mark.skipif(not REAL_INBREAST_SHEET.is_file(), reason=f"{REAL_INBREAST_SHEET} not present")


def make(cls, root, tmp_path, **kw):
    kw.setdefault("on_bad_image", "fail")
    return cls(root=str(root), image_size=SIZE, cache_dir=str(tmp_path / "cache"), workers=1, **kw)


def expected_image(variant, pixels, side):
    return preprocess_image(expected_unit(variant, pixels).astype(np.float32), SIZE, side)


def assert_pixels(loaded, image_id, variant, pixels, side):
    i = loaded.samples.index[loaded.samples["image_id"] == image_id][0]
    want = expected_image(variant, pixels, side)
    np.testing.assert_allclose(loaded.images[i].astype(np.float32), want, atol=2e-3)  # float16 cache
    # the chest wall ends up on the left whatever side was stored
    assert loaded.images[i][:, : SIZE[1] // 2].astype(np.float32).sum() > loaded.images[i][:, SIZE[1] // 2 :].astype(np.float32).sum()


def test_registered():
    assert {"inbreast", "cbis_ddsm", "vindr_mammo", "manifest"} <= set(DATASETS.names())


# ------------------------------------------------------------------------------------ INbreast


@pytest.fixture(scope="module")
def inbreast_tree(tmp_path_factory):
    if not REAL_INBREAST_SHEET.is_file():
        pytest.skip(f"{REAL_INBREAST_SHEET} not present")
    root = tmp_path_factory.mktemp("inbreast")
    return root, build_inbreast(root)


@needs_sheet
def test_inbreast_real_sheet_counts_labels_patients_pixels(inbreast_tree, tmp_path):
    root, sheet = inbreast_tree
    loaded = make(INbreast, root, tmp_path).load()
    assert len(loaded.samples) == 387 and (loaded.labels == 0).sum() == 287 and (loaded.labels == 1).sum() == 100
    assert loaded.skipped == []
    kept = sheet[sheet["Bi-Rads"] != "3"]
    assert list(loaded.samples["image_id"]) == list(kept["File Name"])  # sheet order
    assert list(loaded.labels) == [INBREAST_LABEL[b] for b in kept["Bi-Rads"]]
    assert list(loaded.samples["patient_id"]) == [inbreast_patient(i) for i in kept["index"]]
    assert loaded.samples["patient_id"].nunique() == len({inbreast_patient(i) for i in kept["index"]})
    assert list(loaded.samples["laterality"]) == list(kept["Laterality"])
    # the sheet's ACR 1-4 as the density letter; its one blank ACR stays unknown
    acr = {"1": "A", "2": "B", "3": "C", "4": "D"}
    assert list(loaded.samples["density"]) == [acr.get(str(v).strip(), "") for v in kept["ACR"]]
    assert (loaded.samples["density"] == "").sum() == (kept["ACR"].astype(str).str.strip() == "").sum()
    assert set(loaded.samples["view"]) == {"CC", "MLO", "FB"} or set(loaded.samples["view"]) == {"CC", "MLO"}
    assert loaded.images.dtype == np.float16 and loaded.images.shape == (387, *SIZE)
    # pixel values: one image of every encoding, both sides
    for _, row in kept.groupby(["variant", "Laterality"]).head(1).iterrows():
        assert_pixels(loaded, row["File Name"], row["variant"], row["pixels"], row["Laterality"])
    for image in loaded.images.astype(np.float32):
        assert image[:, :8].sum() > image[:, 8:].sum()


@needs_sheet
def test_inbreast_birads3_as_benign(inbreast_tree, tmp_path):
    root, _ = inbreast_tree
    table, problems = make(INbreast, root, tmp_path, birads3="benign").scan()
    assert problems == [] and (table["label"] == 0).sum() == 287 + 23 and (table["label"] == 1).sum() == 100
    with pytest.raises(ConfigError, match="birads3"):
        make(INbreast, root, tmp_path, birads3="maybe")


@pytest.fixture
def small_inbreast(tmp_path):
    if not REAL_INBREAST_SHEET.is_file():
        pytest.skip(f"{REAL_INBREAST_SHEET} not present")
    root = tmp_path / "ib"
    sheet = build_inbreast(root, rows=list(range(12)))
    # keep only the sheet rows that have images (a subset of the real sheet)
    lines = (root / "INbreast.csv").read_bytes().split(b"\r\n")
    (root / "INbreast.csv").write_bytes(b"\r\n".join(lines[:13]) + b"\r\n")
    return root, sheet[sheet["Bi-Rads"] != "3"].reset_index(drop=True)


def test_inbreast_corrupt_dicom(small_inbreast, tmp_path):
    root, sheet = small_inbreast
    bad = sheet.loc[0, "path"]
    truncate(bad, 0.5)
    with pytest.raises(DataError) as err:
        make(INbreast, root, tmp_path).load()
    assert os.path.basename(bad) in str(err.value) and "truncated" in str(err.value)
    loaded = make(INbreast, root, tmp_path, on_bad_image="skip").load()
    assert len(loaded.samples) == len(sheet) - 1
    assert [p.file for p in loaded.skipped] == [bad]
    assert list(loaded.samples["image_id"]) == list(sheet["File Name"][1:])
    assert list(loaded.labels) == [INBREAST_LABEL[b] for b in sheet["Bi-Rads"][1:]]
    row = sheet.iloc[1]
    assert_pixels(loaded, row["File Name"], row["variant"], row["pixels"], row["Laterality"])


def test_inbreast_row_without_image_and_image_without_row(small_inbreast, tmp_path):
    root, sheet = small_inbreast
    missing = sheet.loc[2, "File Name"]
    os.remove(sheet.loc[2, "path"])
    stray = root / "AllDICOMs" / "99999999_0123456789abcdef_MG_L_CC_ANON.dcm"
    write_image(stray, "mono2", "L", seed=9)
    (root / "AllDICOMs" / "README.dcm").write_text("not an image")
    table, problems = make(INbreast, root, tmp_path).scan()
    messages = [str(p) for p in problems]
    line = sheet.loc[2, "index"] + 2  # the header is line 1
    assert any(f"INbreast.csv line {line}: File Name {missing}: no DICOM named {missing}_*.dcm" in m for m in messages)
    assert f"{stray}: no row in INbreast.csv has File Name 99999999" in messages
    assert any("README.dcm: name does not follow" in m for m in messages)
    assert len(problems) == 3
    with pytest.raises(DataError, match="3 bad input"):
        make(INbreast, root, tmp_path).load()
    loaded = make(INbreast, root, tmp_path, on_bad_image="skip").load()
    assert list(loaded.samples["image_id"]) == [f for f in sheet["File Name"] if f != missing]
    assert len(loaded.skipped) == 3


def test_inbreast_unknown_birads_and_laterality_mismatch(small_inbreast, tmp_path):
    root, sheet = small_inbreast
    text = (root / "INbreast.csv").read_bytes().decode()
    first, second = sheet.loc[0], sheet.loc[1]
    text = text.replace(f";{first['File Name']};{first['ACR']};{first['Bi-Rads']}\r\n",
                        f";{first['File Name']};{first['ACR']};7\r\n")
    flipped = "L" if second["Laterality"] == "R" else "R"
    text = text.replace(f"removed;removed;{second['Laterality']};{second['View']};{second['Acquisition date']};{second['File Name']}",
                        f"removed;removed;{flipped};{second['View']};{second['Acquisition date']};{second['File Name']}")
    (root / "INbreast.csv").write_bytes(text.encode())
    table, problems = make(INbreast, root, tmp_path).scan()
    assert len(problems) == 2
    assert f"File Name {first['File Name']}: unknown Bi-Rads value '7'" in str(problems[0])
    assert f"laterality '{flipped}' in INbreast.csv but '{second['Laterality']}' in the file name" in str(problems[1])
    assert list(table["image_id"]) == list(sheet["File Name"][2:])


def test_inbreast_missing_column_fails_at_once(small_inbreast, tmp_path):
    root, _ = small_inbreast
    text = (root / "INbreast.csv").read_bytes().decode().replace(";Bi-Rads\r\n", ";BIRADS\r\n", 1)
    (root / "INbreast.csv").write_bytes(text.encode())
    with pytest.raises(DataError, match=r"INbreast\.csv: missing column\(s\) 'Bi-Rads'; found .*'BIRADS'"):
        make(INbreast, root, tmp_path).scan()


def test_inbreast_layout_errors(tmp_path):
    with pytest.raises(DataError, match="no INbreast.csv or INbreast.xls"):
        make(INbreast, tmp_path, tmp_path).scan()
    (tmp_path / "INbreast.xls").write_bytes(b"\xd0\xcf\x11\xe0")
    try:
        import xlrd  # noqa: F401
    except ImportError:
        with pytest.raises(DataError, match="needs the package xlrd"):
            make(INbreast, tmp_path, tmp_path).scan()
    with pytest.raises(DataError, match="needs --data-root"):
        INbreast(root=None).scan()


# ----------------------------------------------------------------------------------- CBIS-DDSM


def test_cbis_ddsm_layouts_labels_patients_pixels(tmp_path):
    root = tmp_path / "cbis"
    expected = build_cbis(root)
    loaded = make(CBISDDSM, root, tmp_path).load()
    assert loaded.skipped == []
    assert list(loaded.samples["image_id"]) == list(expected)
    for folder, facts in expected.items():
        row = loaded.samples.set_index("image_id").loc[folder]
        assert (row["patient_id"], row["label"], row["laterality"], row["view"], row["density"], row["lesion_type"]) == (
            facts["patient_id"], facts["label"], facts["laterality"], facts["view"], facts["density"],
            facts["lesion_type"])
        assert_pixels(loaded, folder, facts["variant"], facts["pixels"], facts["laterality"])
    assert loaded.samples.groupby("patient_id").size().to_dict() == {"P_00001": 3, "P_00004": 2, "P_00005": 1}
    assert list(loaded.labels) == [1, 1, 0, 0, 1, 0]
    train, _ = make(CBISDDSM, root, tmp_path, split="train").scan()
    test, _ = make(CBISDDSM, root, tmp_path, split="test").scan()
    assert len(train) == 4 and len(test) == 2
    with pytest.raises(ConfigError, match="split"):
        make(CBISDDSM, root, tmp_path, split="val")


def test_cbis_ddsm_bad_inputs(tmp_path):
    root = tmp_path / "cbis"
    expected = build_cbis(root)
    folders = list(expected)
    csv = root / "mass_case_description_train_set.csv"
    csv.write_text(csv.read_text().replace(",BENIGN_WITHOUT_CALLBACK,", ",UNPROVEN,"))  # P_00004 RIGHT CC
    shutil.rmtree(root / "CBIS-DDSM" / folders[3])  # P_00004 RIGHT MLO: folder gone
    write_image(root / "CBIS-DDSM" / "Mass-Training_P_00099_LEFT_CC" / "a" / "b" / "1-1.dcm", "mono2", "L", 1)
    table, problems = make(CBISDDSM, root, tmp_path).scan()
    messages = [str(p) for p in problems]
    assert len(problems) == 3, messages
    assert any(f"{folders[2]}: unknown pathology 'UNPROVEN'" in m for m in messages)
    assert any(f"no folder {folders[3]} in" in m for m in messages)
    assert any("Mass-Training_P_00099_LEFT_CC: full-mammogram folder named by no row" in m for m in messages)
    loaded = make(CBISDDSM, root, tmp_path, on_bad_image="skip").load()
    assert list(loaded.samples["image_id"]) == [folders[i] for i in (0, 1, 4, 5)]
    assert list(loaded.labels) == [1, 1, 1, 0]


def test_cbis_ddsm_missing_column_and_no_csv(tmp_path):
    root = tmp_path / "cbis"
    build_cbis(root)
    csv = root / "calc_case_description_test_set.csv"
    csv.write_text(csv.read_text().replace(",pathology,", ",diagnosis,", 1))
    with pytest.raises(DataError, match=r"calc_case_description_test_set\.csv: missing column\(s\) 'pathology'"):
        make(CBISDDSM, root, tmp_path).scan()
    with pytest.raises(DataError, match="no CBIS-DDSM case-description CSV"):
        make(CBISDDSM, tmp_path / "cbis" / "CBIS-DDSM", tmp_path).scan()


# -------------------------------------------------------------------------------------- VinDr


def test_vindr_labels_split_patients_pixels(tmp_path):
    root = tmp_path / "vindr"
    expected = build_vindr(root)
    loaded = make(VinDrMammo, root, tmp_path).load()
    assert list(loaded.samples["image_id"]) == ["a1", "a2", "a3", "a4", "b2", "b3"]  # BI-RADS 3 left out
    assert list(loaded.labels) == [0, 0, 1, 1, 1, 0]
    assert list(loaded.samples["patient_id"]) == ["s1"] * 4 + ["s2"] * 2
    assert list(loaded.samples["density"]) == [expected[i]["density"] for i in loaded.samples["image_id"]]
    for image_id in loaded.samples["image_id"]:
        facts = expected[image_id]
        assert_pixels(loaded, image_id, facts["variant"], facts["pixels"], facts["laterality"])
    table, _ = make(VinDrMammo, root, tmp_path, benign_birads="1,2,3", malignant_birads="5").scan()
    assert dict(zip(table["image_id"], table["label"])) == {"a1": 0, "a2": 0, "b1": 0, "b2": 1, "b3": 0}
    training, _ = make(VinDrMammo, root, tmp_path, split="training").scan()
    test, _ = make(VinDrMammo, root, tmp_path, split="test").scan()
    assert list(training["image_id"]) == ["a1", "a2", "a3", "a4"] and list(test["image_id"]) == ["b2", "b3"]
    with pytest.raises(ConfigError, match="both benign and malignant"):
        make(VinDrMammo, root, tmp_path, benign_birads="1,4")
    with pytest.raises(ConfigError, match="not a BI-RADS category"):
        make(VinDrMammo, root, tmp_path, malignant_birads="7")


def test_vindr_bad_inputs(tmp_path):
    root = tmp_path / "vindr"
    build_vindr(root)
    csv = root / "breast-level_annotations.csv"
    csv.write_text(csv.read_text().replace("a2,R,MLO,48,36,BI-RADS 1", "a2,R,MLO,48,36,BI-RADS 9"))
    os.remove(root / "images" / "s1" / "a3.dicom")
    write_image(root / "images" / "s3" / "zz.dicom", "mono2", "L", 3)
    table, problems = make(VinDrMammo, root, tmp_path).scan()
    messages = [str(p) for p in problems]
    assert len(problems) == 3, messages
    assert any("image a2: unknown breast_birads 'BI-RADS 9'" in m for m in messages)
    assert any("image a3: file not found" in m for m in messages)
    assert any(m.endswith("zz.dicom: no row in breast-level_annotations.csv has image_id zz") for m in messages)
    loaded = make(VinDrMammo, root, tmp_path, on_bad_image="skip").load()
    assert list(loaded.samples["image_id"]) == ["a1", "a4", "b2", "b3"] and list(loaded.labels) == [0, 1, 1, 0]
    csv.write_text(csv.read_text().replace("breast_birads", "birads"))
    with pytest.raises(DataError, match=r"missing column\(s\) 'breast_birads'"):
        make(VinDrMammo, root, tmp_path).scan()


# ----------------------------------------------------------------------------------- manifest


def test_manifest_png_tiff_dicom(tmp_path):
    root = tmp_path / "m"
    (root / "img").mkdir(parents=True)
    pixels = write_image(root / "img" / "a.dcm", "mono1_rle", "R", 1, laterality="R")
    png = (expected_unit("mono1_rle", pixels) * 65535).round().astype(np.uint16)
    Image.fromarray(png[:, ::-1].copy()).save(root / "img" / "b.png")  # stored chest wall left
    Image.fromarray(png).save(root / "img" / "c.tif")
    absolute = root / "img" / "c.tif"
    (root / "manifest.csv").write_text(
        "path,label,patient_id,laterality\n"
        "img/a.dcm,malignant,p1,\n"
        "img/b.png,Benign,p1,L\n"
        f"{absolute},1,,RIGHT\n"
    )
    loaded = make(Manifest, root, tmp_path).load()
    assert list(loaded.labels) == [1, 0, 1]
    assert list(loaded.samples["patient_id"]) == ["p1", "p1", str(absolute)]
    assert list(loaded.samples["laterality"]) == ["", "L", "R"]
    want = expected_image("mono1_rle", pixels, "R")
    for image in loaded.images:  # the same breast through three formats and two orientations
        np.testing.assert_allclose(image.astype(np.float32), want, atol=3e-3)


def test_manifest_bad_inputs(tmp_path):
    root = tmp_path / "m"
    (root / "img").mkdir(parents=True)
    write_image(root / "img" / "a.dcm", "mono2", "L", 1)
    write_image(root / "img" / "b.dcm", "mono2", "L", 2)
    write_image(root / "img" / "c.dcm", "mono2_j2k", "L", 3)
    truncate(root / "img" / "c.dcm", 0.5)
    (root / "list.csv").write_text(
        "path,label\nimg/a.dcm,0\nimg/gone.dcm,1\nimg/b.dcm,maybe\nimg/a.dcm,1\nimg/c.dcm,1\n"
    )
    ds = make(Manifest, root, tmp_path, csv="list.csv", on_bad_image="skip")
    table, problems = ds.scan()
    messages = [str(p) for p in problems]
    assert messages[0] == f"{root / 'img' / 'gone.dcm'}: file not found (listed on {root / 'list.csv'} line 3)"
    assert messages[1] == f"{root / 'list.csv'} line 4: img/b.dcm: unknown label 'maybe' (expected 0, 1, benign or malignant)"
    assert messages[2].startswith(f"{root / 'list.csv'} line 5: img/a.dcm: listed twice")
    loaded = ds.load()
    assert list(loaded.samples["path"]) == [str(root / "img" / "a.dcm")]
    assert loaded.skipped[-1].file == str(root / "img" / "c.dcm") and "truncated" in loaded.skipped[-1].reason
    (root / "nolabel.csv").write_text("path,patient_id\nimg/a.dcm,p\n")
    with pytest.raises(DataError, match=r"nolabel\.csv: missing column\(s\) 'label'"):
        make(Manifest, root, tmp_path, csv="nolabel.csv").scan()


# -------------------------------------------------------------------------------------- cache


@pytest.fixture
def manifest_root(tmp_path):
    root = tmp_path / "m"
    rows = ["path,label,laterality"]
    for i, (variant, side) in enumerate([("mono2", "L"), ("mono1_rle", "R"), ("window_rle", "L"), ("mono2_j2k", "R")]):
        write_image(root / f"{i}.dcm", variant, side, seed=i)
        rows.append(f"{i}.dcm,{i % 2},{side}")
    (root / "manifest.csv").write_text("\n".join(rows) + "\n")
    return root


def counting_decoder(monkeypatch):
    calls = []
    real = preprocess_file

    def wrapper(path, image_size, laterality=None):
        calls.append(os.path.basename(path))
        return real(path, image_size, laterality)

    monkeypatch.setattr(cache_module, "preprocess_file", wrapper)
    return calls


def test_cache_second_load_hits_and_touch_redecodes_one(manifest_root, tmp_path, monkeypatch):
    first = make(Manifest, manifest_root, tmp_path).load()

    def broken(*args, **kwargs):
        raise AssertionError("decoded although cached")

    monkeypatch.setattr(cache_module, "preprocess_file", broken)
    second = make(Manifest, manifest_root, tmp_path).load()
    np.testing.assert_array_equal(first.images, second.images)

    calls = counting_decoder(monkeypatch)
    st = os.stat(manifest_root / "2.dcm")
    os.utime(manifest_root / "2.dcm", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    third = make(Manifest, manifest_root, tmp_path).load()
    assert calls == ["2.dcm"]
    np.testing.assert_array_equal(first.images, third.images)

    calls.clear()  # another image size is another set of entries
    Manifest(root=str(manifest_root), image_size=(48, 24), cache_dir=str(tmp_path / "cache"), workers=1).load()
    assert sorted(calls) == ["0.dcm", "1.dcm", "2.dcm", "3.dcm"]
    entries = list((tmp_path / "cache" / "shards").rglob("*"))
    assert not [p for p in entries if p.name.startswith(".")]  # atomic writes leave no (hidden) temp files
    # one shard per version of the 4 images: the first, after the touch (3 copied, 1 decoded), at 48x24
    assert len([p for p in entries if p.suffix == ".npy"]) == 3
    assert len([p for p in entries if p.name.startswith("index-")]) == 3


def test_cache_parallel_equals_serial(manifest_root, tmp_path):
    serial = make(Manifest, manifest_root, tmp_path).load()
    parallel = Manifest(root=str(manifest_root), image_size=SIZE, cache_dir=str(tmp_path / "cache2"), workers=2).load()
    np.testing.assert_array_equal(serial.images, parallel.images)


def test_cache_failures_are_problems_not_exceptions(manifest_root, tmp_path):
    truncate(manifest_root / "1.dcm", 0.5)
    table = pd.DataFrame({"path": [str(manifest_root / f"{i}.dcm") for i in range(4)] + [str(tmp_path / "nope.dcm")],
                          "laterality": ["L", "R", "L", "R", ""]})
    images, problems = cache_module.load_cached_images(table, SIZE, tmp_path / "c", workers=2)
    assert images.shape == (5, *SIZE) and images.dtype == np.float16
    assert [p.file for p in problems] == [table.path[1], table.path[4]]
    assert "truncated" in problems[0].reason and problems[1] == Problem(table.path[4], "file not found")
    assert images[0].any() and images[2].any() and not images[1].any()
