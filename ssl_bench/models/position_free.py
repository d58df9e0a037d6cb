"""Position-free image features: what a classifier can read from a mammogram without locating or
describing a lesion, and a probe that measures how much of the class they give.

Each family maps a batch of grey images ``(N, H, W)`` in [0, 1] to ``(features (N, F) float64,
names)``; every image's features depend on that image alone (not on the batch). The breast is the
pixels above ``threshold`` (0.05, as the logistic Non-spatial control,
:mod:`ssl_bench.models.nonspatial`). Counts are per unit of breast area (the image's area is 1) and
sizes are fractions of the image's area, so that a family means the same at 128x64 and 768x384;
filter scales are in pixels (fine detail is measured at the pixel scale at every size).

- :func:`intensity`: the breast's 32-bin histogram (fractions of its pixels over ``(threshold,
  1]``), its percentiles :data:`PERCENTILES` (``numpy.percentile``'s linear interpolation) and the
  fractions of it above :data:`LEVELS`;
- :func:`moments`: mean, standard deviation, skewness and excess kurtosis of the breast
  (population moments), mean and standard deviation of the whole image, the breast area, the
  Shannon entropy (bits) and the uniformity (sum of squares) of its 64-bin histogram;
- :func:`components`: connected components (8-connected, ``scipy.ndimage.label``) of the breast
  pixels above each of :data:`LEVELS` and above the breast's own percentiles
  :data:`COMPONENT_PERCENTILES`: their number, the numbers of tiny, small, medium and large ones
  (area up to :data:`SIZE_EDGES` of the image, and above), all per unit of breast area; the
  fraction of the breast above the threshold and the largest component's share of the breast;
- :func:`gradients`: the gradient magnitude (Sobel, divided by 8 so that a unit ramp gives 1; at
  the scales :data:`SCALES` px, Gaussian derivatives, ``scipy.ndimage.gaussian_gradient_magnitude``)
  and the negative Laplacian (``scipy.ndimage.laplace``; ``gaussian_laplace``), scale-normalised by
  ``s`` and ``s**2`` (Lindeberg 1998, J. Comput. Vis. 30:79): over the breast, their mean,
  standard deviation, percentiles and the fractions above fixed levels;
- :func:`local_maxima`: the breast's local maxima of each window :data:`MAXIMA_WINDOWS` (a pixel
  equal to the window's maximum, ``scipy.ndimage.maximum_filter``) standing out from the window's
  mean by more than each of :data:`PROMINENCES`, per unit of breast area;
- :func:`profiles`: the mean intensity of each row and each column, area-averaged into
  :data:`PROFILE_BINS` bins (where the tissue lies along one axis, not where a lesion is);
- :func:`thumbnail`: the image area-averaged to a :data:`THUMBNAIL` grid;
- :func:`union`: all of them, in that order (:data:`FAMILIES`).

A family that separates the classes of a phantom is a shortcut no lesion is needed for:
:func:`probe_auc` fits scikit-learn's ``HistGradientBoostingClassifier`` in patient-grouped
stratified folds and returns the pooled out-of-fold AUC. The Non-spatial control
(:mod:`ssl_bench.transfer.nonspatial`) fits the same trees on :func:`union`; a change to any
family changes what a saved control computes, hence :data:`FEATURES_VERSION`.
"""
from __future__ import annotations

import functools
from typing import Callable

import numpy as np
from scipy import ndimage
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold
from threadpoolctl import threadpool_limits

#: bump whenever a family's output changes (a saved Non-spatial control records it)
FEATURES_VERSION = 1
THRESHOLD = 0.05
HISTOGRAM_BINS = 32
ENTROPY_BINS = 64
PERCENTILES = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 100.0)
LEVELS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
COMPONENT_PERCENTILES = (90.0, 95.0, 99.0, 99.5, 99.9)
#: component size classes, as fractions of the image's area (2, 16 and 128 px at 128x64)
SIZE_EDGES = (1 / 4096, 1 / 512, 1 / 64)
SIZE_CLASSES = ("tiny", "small", "medium", "large")
SCALES = (0, 1, 2, 4)
GRADIENT_PERCENTILES = (50.0, 90.0, 99.0, 100.0)
GRADIENT_LEVELS = (0.02, 0.05, 0.1)
LAPLACIAN_PERCENTILES = (1.0, 50.0, 90.0, 99.0, 100.0)
LAPLACIAN_LEVELS = (0.01, 0.03, 0.1)
MAXIMA_WINDOWS = (3, 5, 9)
PROMINENCES = (0.02, 0.05, 0.1, 0.2)
PROFILE_BINS = (16, 8)  # rows, columns
THUMBNAIL = (8, 4)
CHUNK = 64  # images per pass of :func:`compute` (bounds memory at 768x384)

Family = Callable[..., "tuple[np.ndarray, list[str]]"]


# ------------------------------------------------------------------------------------ helpers
def as_batch(images) -> np.ndarray:
    """``(N, H, W)`` float32 (one ``(H, W)`` image becomes a batch of one)."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"expected images (N, H, W), got shape {x.shape}")
    return x


def _flat(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1)


def masked_moments(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``(N, 4)``: mean, standard deviation, skewness, excess kurtosis of each row's masked
    values (population moments; the standard deviation clamped at 1e-6 in the ratios; 0 for an
    empty row)."""
    v, m = _flat(values).astype(np.float64), _flat(mask)
    n = np.maximum(m.sum(axis=1), 1)
    mean = np.where(m, v, 0.0).sum(axis=1) / n
    d = np.where(m, v - mean[:, None], 0.0)
    d2 = d * d
    var = d2.sum(axis=1) / n
    std = np.sqrt(var)
    s = np.maximum(std, 1e-6)
    skew = (d2 * d).sum(axis=1) / n / s**3
    kurt = (d2 * d2).sum(axis=1) / n / s**4 - 3.0
    empty = m.sum(axis=1) == 0
    return np.where(empty[:, None], 0.0, np.stack([mean, std, skew, kurt], axis=1))


def masked_percentiles(values: np.ndarray, mask: np.ndarray, q) -> np.ndarray:
    """``(N, len(q))``: ``numpy.percentile(row[mask_row], q)`` of each row (linear
    interpolation), 0 for an empty row."""
    v, m = _flat(values), _flat(mask)
    ordered = np.sort(np.where(m, v, np.inf), axis=1)  # masked values first, in order
    n = m.sum(axis=1)
    last = np.maximum(n - 1, 0)[:, None]
    pos = np.asarray(q, dtype=np.float64)[None, :] / 100.0 * last
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, last)
    a = np.take_along_axis(ordered, lo, axis=1).astype(np.float64)
    b = np.take_along_axis(ordered, hi, axis=1).astype(np.float64)
    a, b = np.where(n[:, None] > 0, a, 0.0), np.where(n[:, None] > 0, b, 0.0)
    return a + (pos - lo) * (b - a)


def masked_histogram(values: np.ndarray, mask: np.ndarray, bins: int, low: float, high: float) -> np.ndarray:
    """``(N, bins)``: each row's masked values counted in ``bins`` equal bins over ``[low,
    high]`` (``numpy.histogram``'s bins: left-closed, the last closed), as fractions of the
    masked values (0 for an empty row); values outside are not counted."""
    v, m = _flat(values).astype(np.float64), _flat(mask)
    inside = m & (v >= low) & (v <= high)
    idx = np.minimum(np.floor((v - low) / (high - low) * bins), bins - 1).astype(np.int64)
    rows = np.broadcast_to(np.arange(v.shape[0])[:, None], v.shape)
    counts = np.bincount((rows * bins + idx)[inside], minlength=v.shape[0] * bins).reshape(-1, bins)
    return counts / np.maximum(m.sum(axis=1), 1)[:, None]


def block_means(x: np.ndarray, bins: int, axis: int) -> np.ndarray:
    """Area-averaged resampling of ``axis`` into ``bins`` blocks (block ``i`` covers
    ``[i * L // bins, (i + 1) * L // bins)``; the reshape-mean when ``bins`` divides ``L``)."""
    length = x.shape[axis]
    if length < bins:
        raise ValueError(f"cannot average {length} values into {bins} bins")
    edges = np.arange(bins + 1) * length // bins
    sums = np.add.reduceat(x.astype(np.float64), edges[:-1], axis=axis)
    shape = [1] * x.ndim
    shape[axis] = bins
    return sums / np.diff(edges).reshape(shape)


def _breast(x: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """The breast mask and each image's breast area (fraction of its pixels, at least one pixel's)."""
    breast = x > threshold
    pixels = x.shape[1] * x.shape[2]
    area = np.maximum(breast.sum(axis=(1, 2)), 1) / pixels
    return breast, area


def _fmt(v: float) -> str:
    return f"{v:g}"


# ----------------------------------------------------------------------------------- families
def intensity(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """The breast's histogram, percentiles and fractions above fixed levels (module docstring)."""
    x = as_batch(images)
    breast, _ = _breast(x, threshold)
    hist = masked_histogram(x, breast, HISTOGRAM_BINS, threshold, 1.0)
    pct = masked_percentiles(x, breast, PERCENTILES)
    n = np.maximum(breast.sum(axis=(1, 2)), 1)
    above = np.stack([((x > level) & breast).sum(axis=(1, 2)) / n for level in LEVELS], axis=1)
    names = ([f"hist_{i:02d}" for i in range(HISTOGRAM_BINS)] + [f"p{_fmt(q)}" for q in PERCENTILES]
             + [f"above_{_fmt(level)}" for level in LEVELS])
    return np.concatenate([hist, pct, above], axis=1), names


def moments(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """Global moments of the breast and of the image, breast area, histogram entropy and uniformity."""
    x = as_batch(images)
    breast, area = _breast(x, threshold)
    m = masked_moments(x, breast)
    whole = _flat(x).astype(np.float64)
    p = masked_histogram(x, breast, ENTROPY_BINS, threshold, 1.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.where(p > 0, p * np.log2(p), 0.0).sum(axis=1)
    uniformity = (p * p).sum(axis=1)
    area = np.where(breast.any(axis=(1, 2)), area, 0.0)
    feats = np.column_stack([m, whole.mean(axis=1), whole.std(axis=1), area, entropy, uniformity])
    return feats, ["mean", "std", "skewness", "kurtosis", "image_mean", "image_std", "area", "entropy", "uniformity"]


#: 8-connectivity within an image, none across the batch
_PLANE = np.zeros((3, 3, 3), dtype=bool)
_PLANE[1] = True


def component_statistics(mask: np.ndarray, breast_area: np.ndarray) -> np.ndarray:
    """``(N, 7)`` for a batch of masks ``(N, H, W)``: components per unit of breast area, the same
    for each size class (:data:`SIZE_EDGES`), the mask's share of the breast and the largest
    component's (``breast_area``: each image's breast as a fraction of its pixels)."""
    n_images, h, w = mask.shape
    labels, n = ndimage.label(mask, structure=_PLANE)
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:] / (h * w)  # fraction of the image
    # labels run in scan order and components stay in one image: image i holds a range of them
    last = np.maximum.accumulate(labels.reshape(n_images, -1).max(axis=1))
    image_of = np.repeat(np.arange(n_images), np.diff(np.concatenate([[0], last])))
    count = np.bincount(image_of, minlength=n_images)
    classes = np.digitize(sizes, SIZE_EDGES, right=True)  # 0 tiny (<= first edge) ... 3 large
    by_class = [np.bincount(image_of, weights=(classes == c), minlength=n_images) for c in range(len(SIZE_CLASSES))]
    largest = np.zeros(n_images)
    np.maximum.at(largest, image_of, sizes)
    total = np.bincount(image_of, weights=sizes, minlength=n_images)
    return np.column_stack([count / breast_area, *[c / breast_area for c in by_class],
                            total / breast_area, largest / breast_area])


def components(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """Connected components of the breast above fixed levels and above its own percentiles."""
    x = as_batch(images)
    breast, area = _breast(x, threshold)
    cuts = [np.full(x.shape[0], level) for level in LEVELS]
    cuts += list(masked_percentiles(x, breast, COMPONENT_PERCENTILES).T)
    feats, names = [], []
    tags = [f"gt{_fmt(level)}" for level in LEVELS] + [f"gtp{_fmt(q)}" for q in COMPONENT_PERCENTILES]
    for cut, tag in zip(cuts, tags):
        mask = breast & (x > cut[:, None, None].astype(np.float32))
        feats.append(component_statistics(mask, area))
        names += [f"{tag}_count", *[f"{tag}_{c}" for c in SIZE_CLASSES], f"{tag}_area", f"{tag}_largest"]
    return np.concatenate(feats, axis=1), names


def gradient_magnitude(x: np.ndarray, scale: float) -> np.ndarray:
    """Scale-normalised gradient magnitude of each image of ``x`` ``(N, H, W)`` float32: Sobel / 8
    at scale 0, ``s`` times the Gaussian-derivative magnitude at scale ``s`` (what
    ``scipy.ndimage.gaussian_gradient_magnitude`` computes on one image)."""
    if scale == 0:  # scipy.ndimage.sobel of one image: derivative along one axis, [1, 2, 1] along the other
        d, smooth = [-1, 0, 1], [1, 2, 1]
        gy = ndimage.correlate1d(ndimage.correlate1d(x, d, axis=1), smooth, axis=2)
        gx = ndimage.correlate1d(ndimage.correlate1d(x, d, axis=2), smooth, axis=1)
        return np.hypot(gy, gx) / np.float32(8.0)
    sigma = (0, scale, scale)
    gy = ndimage.gaussian_filter(x, sigma, order=(0, 1, 0))
    gx = ndimage.gaussian_filter(x, sigma, order=(0, 0, 1))
    return np.float32(scale) * np.hypot(gy, gx)


def negative_laplacian(x: np.ndarray, scale: float) -> np.ndarray:
    """Scale-normalised negative Laplacian of each image (bright spots and ridges positive): minus
    ``scipy.ndimage.laplace`` at scale 0, minus ``s**2`` times ``gaussian_laplace`` at scale ``s``
    (one image's, never across the batch)."""
    if scale == 0:
        return -(ndimage.correlate1d(x, [1, -2, 1], axis=1) + ndimage.correlate1d(x, [1, -2, 1], axis=2))
    sigma = (0, scale, scale)
    lap = ndimage.gaussian_filter(x, sigma, order=(0, 2, 0)) + ndimage.gaussian_filter(x, sigma, order=(0, 0, 2))
    return np.float32(-(scale**2)) * lap


def _filter_statistics(response: np.ndarray, breast: np.ndarray, percentiles, levels) -> np.ndarray:
    m = masked_moments(response, breast)[:, :2]
    pct = masked_percentiles(response, breast, percentiles)
    n = np.maximum(breast.sum(axis=(1, 2)), 1)
    above = [((response > level) & breast).sum(axis=(1, 2)) / n for level in levels]
    return np.column_stack([m, pct, *above])


def gradients(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """Gradient-magnitude and Laplacian statistics over the breast at several scales."""
    x = as_batch(images)
    breast, _ = _breast(x, threshold)
    feats, names = [], []
    for kind, fn, percentiles, levels in (("grad", gradient_magnitude, GRADIENT_PERCENTILES, GRADIENT_LEVELS),
                                          ("lap", negative_laplacian, LAPLACIAN_PERCENTILES, LAPLACIAN_LEVELS)):
        for s in SCALES:
            feats.append(_filter_statistics(fn(x, s), breast, percentiles, levels))
            tag = f"{kind}{s}"
            names += [f"{tag}_mean", f"{tag}_std", *[f"{tag}_p{_fmt(q)}" for q in percentiles],
                      *[f"{tag}_above_{_fmt(v)}" for v in levels]]
    return np.concatenate(feats, axis=1), names


def local_maxima(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """Counts of prominent local maxima of the breast per unit of its area, at several windows."""
    x = as_batch(images)
    breast, area = _breast(x, threshold)
    feats, names = [], []
    for k in MAXIMA_WINDOWS:
        peak = (x == ndimage.maximum_filter(x, size=(1, k, k))) & breast
        contrast = x - ndimage.uniform_filter(x, size=(1, k, k))
        for delta in PROMINENCES:
            feats.append((peak & (contrast > delta)).sum(axis=(1, 2)) / (x.shape[1] * x.shape[2]) / area)
            names.append(f"max{k}_gt{_fmt(delta)}")
    return np.column_stack(feats), names


def profiles(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """Mean intensity of each row and column, area-averaged into :data:`PROFILE_BINS` bins."""
    x = as_batch(images)
    rows = block_means(x.mean(axis=2, dtype=np.float64), PROFILE_BINS[0], axis=1)
    cols = block_means(x.mean(axis=1, dtype=np.float64), PROFILE_BINS[1], axis=1)
    names = [f"row_{i:02d}" for i in range(PROFILE_BINS[0])] + [f"col_{i:02d}" for i in range(PROFILE_BINS[1])]
    return np.concatenate([rows, cols], axis=1), names


def thumbnail(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """The image area-averaged to a :data:`THUMBNAIL` grid, row by row."""
    x = as_batch(images)
    gh, gw = THUMBNAIL
    t = block_means(block_means(x, gh, axis=1), gw, axis=2)
    return t.reshape(x.shape[0], -1), [f"thumb_{i}_{j}" for i in range(gh) for j in range(gw)]


#: the families, in :func:`union`'s order
FAMILIES: dict[str, Family] = {
    "intensity": intensity,
    "moments": moments,
    "components": components,
    "gradients": gradients,
    "local_maxima": local_maxima,
    "profiles": profiles,
    "thumbnail": thumbnail,
}


def union(images, threshold: float = THRESHOLD) -> tuple[np.ndarray, list[str]]:
    """Every family, concatenated in :data:`FAMILIES` order; names prefixed ``family.``."""
    parts, names = [], []
    for family, fn in FAMILIES.items():
        f, n = fn(images, threshold)
        parts.append(f)
        names += [f"{family}.{name}" for name in n]
    return np.concatenate(parts, axis=1), names


def feature_names(family: str = "union") -> list[str]:
    """The names of a family's (or the union's) features, without images."""
    return list(_names(family))


@functools.lru_cache(maxsize=None)
def _names(family: str) -> tuple[str, ...]:
    return tuple(compute(np.zeros((1, 16, 16), np.float32), family)[1])


def compute(images, family: str = "union", threshold: float = THRESHOLD,
            chunk: int = CHUNK) -> tuple[np.ndarray, list[str]]:
    """A family's (or ``"union"``'s) features of any number of images, :data:`CHUNK` at a time
    (float16 images, e.g. a memory-mapped cache, are read chunk by chunk)."""
    fn = union if family == "union" else FAMILIES.get(family)
    if fn is None:
        raise ValueError(f"unknown feature family {family!r}; known: union, {', '.join(FAMILIES)}")
    if len(images) == 0:
        names = feature_names(family)
        return np.zeros((0, len(names))), names
    parts, names = [], []
    for start in range(0, len(images), chunk):
        f, names = fn(as_batch(images[start : start + chunk]), threshold)
        parts.append(f)
    return np.concatenate(parts, axis=0), names


# -------------------------------------------------------------------------------------- probe
def probe_auc(features, labels, patients, seed: int = 0, folds: int = 5) -> float:
    """Pooled out-of-fold AUC of ``HistGradientBoostingClassifier`` (scikit-learn's defaults,
    ``random_state=seed``) on ``features``, in ``folds`` stratified folds grouped by patient
    (``StratifiedGroupKFold``, shuffled with ``seed``): a patient's images never straddle
    training and test, as in the benchmark's splits. One OpenMP thread: a few hundred images gain
    little from threads, and on a shared CPU spinning threads slow a fit 20-30 times."""
    X = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels).astype(np.int64)
    scores = np.empty(len(y), dtype=np.float64)
    cv = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    with threadpool_limits(limits=1, user_api="openmp"):
        for train, test in cv.split(X, y, groups=np.asarray(patients)):
            model = HistGradientBoostingClassifier(random_state=seed).fit(X[train], y[train])
            scores[test] = model.predict_proba(X[test])[:, 1]
    return float(roc_auc_score(y, scores))
