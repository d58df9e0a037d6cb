"""Images that load but carry (almost) nothing to learn from: too small, or without signal.

- **small**: the file is less than :data:`MIN_SIDE` pixels on a side (a thumbnail, a 1x1
  placeholder); preprocessing blows it up to the training size from a handful of pixels. Read
  from the file's header (DICOM ``Rows``/``Columns``, Pillow's size), not its pixels.
- **blank**: the preprocessed image spans less than :data:`BLANK_RANGE` (one 8-bit grey level):
  all black, constant, or windowed to one value.

Neither makes a dataset unusable, so neither is a bad input (:class:`~ssl_bench.data.problem.Problem`):
:func:`ssl_bench.data.loading.load_dataset` warns once per load (one line: counts and the first
ids, :class:`~ssl_bench.errors.DataWarning`) and ``ssl-bench data verify`` counts them.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .preprocess import source_size

MIN_SIDE = 32  # pixels, on the file's shorter side
BLANK_RANGE = 1 / 255  # of the [0, 1] preprocessed range
SHOWN_IDS = 3  # ids named in a warning


def blank_rows(images: np.ndarray, chunk: int = 64) -> np.ndarray:
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


def check_images(samples: pd.DataFrame, images: np.ndarray) -> ImageChecks:
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
