"""Images that load but are not what a model should be given: too small, without signal, or not
one mammogram view.

- **small**: the file is less than :data:`MIN_SIDE` pixels on a side (a thumbnail, a 1x1
  placeholder); preprocessing blows it up to the training size from a handful of pixels. Read
  from the file's header (DICOM ``Rows``/``Columns``, Pillow's size), not its pixels.
- **blank**: the preprocessed image spans less than :data:`BLANK_RANGE` (one 8-bit grey level):
  all black, constant, or windowed to one value.
- **not one view**: the image does not look like one mammogram (one breast, one view), e.g. a
  montage of the screening views side by side. Preprocessing keeps the largest bright region and
  pads its bounding box to the training aspect, so such an image is scored on one breast of
  several, or on a thin strip. :func:`not_one_view` says why from the tissue mask the crop is
  made from (:func:`~ssl_bench.data.preprocess.tissue_mask`): more than one breast-sized region
  (:func:`breast_regions`), or a breast region far wider than tall (:func:`breast_width_ratio`).

Neither small nor blank makes a dataset unusable, so neither is a bad input
(:class:`~ssl_bench.data.problem.Problem`): :func:`ssl_bench.data.loading.load_dataset` warns once
per load (one line: counts and the first ids, :class:`~ssl_bench.errors.DataWarning`) and
``ssl-bench data verify`` counts them. ``ssl-bench predict`` warns about each input that is not
one view, naming the file, and still scores it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import ndimage

from .preprocess import crop_box, source_size, tissue_mask

if TYPE_CHECKING:
    from .cache import ShardedImages

MIN_SIDE = 32  # pixels, on the file's shorter side
BLANK_RANGE = 1 / 255  # of the [0, 1] preprocessed range
SHOWN_IDS = 3  # ids named in a warning
#: a region of the tissue mask with at least this share of the largest one's area is another breast
OTHER_BREAST_SHARE = 1 / 3
#: a breast region more than this many times as wide as tall is not one breast view
MAX_WIDTH_RATIO = 1.25


def blank_rows(images: np.ndarray | ShardedImages, chunk: int = 64) -> np.ndarray:
    """Boolean mask of the images (``(N, H, W)``, values in [0, 1]) whose values span less than
    :data:`BLANK_RANGE`."""
    out = np.zeros(len(images), dtype=bool)
    for start in range(0, len(images), chunk):
        part = np.ascontiguousarray(images[start:start + chunk]).reshape(min(chunk, len(images) - start), -1)
        if part.dtype == np.float16:
            # non-negative float16 values order like their bit patterns: integer max/min, many
            # times faster than float16 arithmetic; a row with a sign bit (-0) takes the float path
            bits = part.view(np.uint16)
            high, low = bits.max(axis=1), bits.min(axis=1)
            signed = high >= 0x8000
            high, low = high.view(np.float16).astype(np.float32), low.view(np.float16).astype(np.float32)
            if signed.any():
                high[signed] = part[signed].max(axis=1)
                low[signed] = part[signed].min(axis=1)
        else:
            high, low = part.max(axis=1).astype(np.float32), part.min(axis=1).astype(np.float32)
        out[start:start + len(part)] = high - low < BLANK_RANGE
    return out


@dataclass
class ImageChecks:
    """The image ids of a dataset's small and blank images."""

    small: list[str] = field(default_factory=list)
    blank: list[str] = field(default_factory=list)

    def describe(self) -> str | None:
        """One line naming the counts and the first ids, or None when every image is fine."""
        parts = []
        for ids, what in ((self.small, f"smaller than {MIN_SIDE} px on a side"),
                          (self.blank, "blank (all one value, nothing to learn)")):
            if ids:
                shown = ", ".join(ids[:SHOWN_IDS]) + (", ..." if len(ids) > SHOWN_IDS else "")
                parts.append(f"{len(ids)} image{'s' if len(ids) != 1 else ''} {what}: {shown}")
        if not parts:
            return None
        return "; ".join(parts)


def check_images(samples: pd.DataFrame, images: np.ndarray | ShardedImages) -> ImageChecks:
    """Small (by the files' headers, ``samples['path']``) and blank (by ``images``) images."""
    ids = samples["image_id"].astype(str).tolist()
    paths = samples["path"].tolist() if "path" in samples.columns else [""] * len(ids)
    small = []
    for image_id, path in zip(ids, paths):
        size = source_size(path) if isinstance(path, str) and path else None  # "": a generated image
        if size is not None and min(size) < MIN_SIDE:
            small.append(image_id)
    blank = [image_id for image_id, is_blank in zip(ids, blank_rows(images)) if is_blank]
    return ImageChecks(small, blank)


def breast_regions(img: np.ndarray) -> int:
    """How many breast-sized regions the tissue mask of ``img`` (``(H, W)`` in [0, 1]) holds:
    regions with at least :data:`OTHER_BREAST_SHARE` of the largest one's area.

    Why: a mammogram shows one breast, so its tissue mask is one large region (plus, at most,
    small markers, labels or specks; the mask's opening already removes film-edge strips and
    text). A second region of comparable size is another breast: several views side by side,
    of which preprocessing keeps only the largest."""
    mask, _ = tissue_mask(img)
    labels, count = ndimage.label(mask)
    if count < 2:
        return count
    sizes = np.bincount(labels.ravel())[1:]
    return int((sizes >= OTHER_BREAST_SHARE * sizes.max()).sum())


def breast_width_ratio(img: np.ndarray) -> float:
    """Width over height of the bounding box of the breast region of ``img`` (the crop
    :func:`~ssl_bench.data.preprocess.crop_box` makes, without its margin).

    Why: one view's breast is taller than wide (it spans most of the detector's height along the
    chest wall and reaches less far toward the nipple; at most 0.77 on the generated views,
    orientation aside, as mirroring keeps the ratio). Views placed side by side whose breasts
    touch form one region several breasts wide, which preprocessing pads to the training aspect
    into a thin strip; so does a view stored on its side (rotated by 90 degrees)."""
    top, bottom, left, right = crop_box(img, margin=0.0)
    return (right - left) / max(1, bottom - top)


def not_one_view(img: np.ndarray) -> str:
    """Why ``img`` (``(H, W)`` in [0, 1], as loaded) does not look like one mammogram view, or
    ``""`` when it does: no region at all (a blank image), more than one breast-sized region
    (:func:`breast_regions`) or a breast region more than :data:`MAX_WIDTH_RATIO` times as wide
    as tall (:func:`breast_width_ratio`).

    Not caught: two views placed back to back (chest walls touching) form one region about as
    wide as one breast is tall (0.66 to 1.0 on generated views, which overlaps single views);
    telling where a chest wall is needs the breast's outline, which the Otsu mask does not always
    give (with a bright mass it can hold only the dense tissue)."""
    regions = breast_regions(img)
    if regions == 0:
        return "nothing stands out from the background"
    if regions > 1:
        return f"{regions} separate breast-sized regions, as in several views side by side"
    ratio = breast_width_ratio(img)
    if ratio > MAX_WIDTH_RATIO:
        return f"its breast region is {ratio:.1f} times as wide as tall, where one view's breast is taller than wide"
    return ""
