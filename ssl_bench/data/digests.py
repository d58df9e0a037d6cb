"""Content identity of preprocessed images: a SHA-1 of each image's pixels, so that one image
reached two ways (a copy at another path, another dataset's view of the same archive, a test set
that is the training set) is recognised whatever it is called. Two files match only when their
preprocessed pixels are identical; the digests of a loaded dataset are computed once per process."""
from __future__ import annotations

import hashlib

import numpy as np

from .base import LoadedDataset

_digests: dict[int, tuple[object, np.ndarray]] = {}


def image_digests(loaded: LoadedDataset) -> np.ndarray:
    """SHA-1 (hex) of each image's pixels, in the order of ``loaded.samples``."""
    cached = _digests.get(id(loaded.images))
    if cached is None or cached[0] is not loaded.images:  # an id reused by a new array
        digests = np.array([hashlib.sha1(np.ascontiguousarray(im).tobytes()).hexdigest() for im in loaded.images],
                           dtype=object)
        cached = _digests[id(loaded.images)] = (loaded.images, digests)
    return cached[1]


def shared_images(a: LoadedDataset, b: LoadedDataset) -> np.ndarray:
    """Boolean mask over ``b``'s rows: the images whose pixels equal one of ``a``'s."""
    return np.isin(image_digests(b), image_digests(a))
