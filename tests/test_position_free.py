"""The position-free feature families (``ssl_bench.models.position_free``) against independent
computations (numpy, scipy.stats, scipy.ndimage on one image, hand-built images whose answer is
known), what they cannot see, and the gradient-boosted probe on data whose AUC is known."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, stats

from ssl_bench.models import position_free as pf

H, W = 32, 16


def breast_batch(n: int, seed: int, size=(H, W)) -> np.ndarray:
    """``n`` float32 images: a half-ellipse of textured tissue at the left edge (0.1..1), dim
    background (< 0.04) elsewhere."""
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    tissue = ((yy - h / 2) / (0.45 * h)) ** 2 + (xx / (0.8 * w)) ** 2 <= 1
    texture = ndimage.gaussian_filter(rng.random((n, h, w)), (0, 1, 1))
    x = np.where(tissue, np.clip(0.1 + 0.9 * (texture - texture.min()) / np.ptp(texture), 0, 1),
                 0.04 * rng.random((n, h, w)))
    return x.astype(np.float32)


def family(name: str, images) -> dict[str, np.ndarray]:
    """A family's features by name (each an ``(N,)`` column)."""
    values, names = pf.compute(images, name)
    assert values.dtype == np.float64 and values.shape == (len(images), len(names))
    assert len(set(names)) == len(names) and np.isfinite(values).all()
    return dict(zip(names, values.T))


# ------------------------------------------------------------------------------ each family
def test_intensity_is_numpys_histogram_and_percentiles_of_the_breast():
    x = breast_batch(4, seed=0)
    f = family("intensity", x)
    for i, image in enumerate(x):
        breast = image[image > 0.05]
        hist = np.histogram(breast, bins=32, range=(0.05, 1.0))[0] / breast.size
        np.testing.assert_allclose([f[f"hist_{b:02d}"][i] for b in range(32)], hist, atol=1e-12)
        np.testing.assert_allclose([f[f"p{q:g}"][i] for q in pf.PERCENTILES],
                                   np.percentile(breast.astype(np.float64), pf.PERCENTILES), rtol=1e-6)
        for level in pf.LEVELS:
            assert f[f"above_{level:g}"][i] == pytest.approx((breast > level).mean())


def test_moments_are_scipys_and_the_entropy_is_the_histograms():
    x = breast_batch(3, seed=1)
    f = family("moments", x)
    for i, image in enumerate(x.astype(np.float64)):
        breast = image[image > 0.05]
        p = np.histogram(breast, bins=64, range=(0.05, 1.0))[0] / breast.size
        want = {"mean": breast.mean(), "std": breast.std(), "skewness": stats.skew(breast),
                "kurtosis": stats.kurtosis(breast), "image_mean": image.mean(), "image_std": image.std(),
                "area": breast.size / image.size, "entropy": stats.entropy(p, base=2), "uniformity": (p**2).sum()}
        for name, value in want.items():
            assert f[name][i] == pytest.approx(value, rel=1e-6, abs=1e-9), name


def test_component_counts_and_sizes_of_hand_built_blobs():
    """A 128x64 breast at 0.2 with saturated blobs: 3 single pixels (tiny: 1 px <= 2 px), two
    diagonal neighbours (one 8-connected component of 2 px: tiny), a 4x4 (16 px: small), a 10x10
    (100 px: medium) and a 20x20 (400 px: large): 7 components above 0.9, whatever the threshold
    between 0.2 and 0.95."""
    image = np.zeros((128, 64), np.float32)
    image[4:124, 0:50] = 0.2
    for r, c in ((10, 5), (10, 40), (60, 20)):
        image[r, c] = 0.95
    image[30, 30] = image[31, 31] = 0.95
    image[40:44, 5:9] = 0.95
    image[80:90, 10:20] = 0.95
    image[95:115, 25:45] = 0.95
    f = family("components", image[None])
    breast = (image > 0.05).mean()  # breast area, a fraction of the image
    assert ndimage.label(image > 0.9, structure=np.ones((3, 3)))[1] == 7  # scipy on the one image
    assert f["gt0.9_count"][0] * breast == pytest.approx(7)
    assert [f[f"gt0.9_{c}"][0] * breast for c in pf.SIZE_CLASSES] == pytest.approx([4, 1, 1, 1])
    bright = 3 + 2 + 16 + 100 + 400
    assert f["gt0.9_area"][0] == pytest.approx(bright / (image > 0.05).sum())
    assert f["gt0.9_largest"][0] == pytest.approx(400 / (image > 0.05).sum())
    assert f["gt0.3_count"][0] == f["gt0.9_count"][0]
    # the breast's 99th percentile is 0.95 (521 of 6000 pixels): nothing is strictly above it
    assert f["gtp99_count"][0] == 0 and f["gtp90_count"][0] == f["gt0.9_count"][0]


def test_gradient_statistics_are_scipys_on_one_image():
    x = breast_batch(2, seed=2)
    f = family("gradients", x)
    image = x[1]
    breast = image > 0.05
    responses = {
        "grad0": np.hypot(ndimage.sobel(image, 0), ndimage.sobel(image, 1)) / 8,
        "lap0": -ndimage.laplace(image),
        **{f"grad{s}": s * ndimage.gaussian_gradient_magnitude(image, s) for s in pf.SCALES[1:]},
        **{f"lap{s}": -(s**2) * ndimage.gaussian_laplace(image, s) for s in pf.SCALES[1:]},
    }
    for tag, response in responses.items():
        v = response[breast].astype(np.float64)
        kind = "grad" if tag.startswith("grad") else "lap"
        percentiles = pf.GRADIENT_PERCENTILES if kind == "grad" else pf.LAPLACIAN_PERCENTILES
        levels = pf.GRADIENT_LEVELS if kind == "grad" else pf.LAPLACIAN_LEVELS
        want = {"mean": v.mean(), "std": v.std(), **{f"p{q:g}": np.percentile(v, q) for q in percentiles},
                **{f"above_{level:g}": (v > level).mean() for level in levels}}
        for name, value in want.items():
            assert f[f"{tag}_{name}"][1] == pytest.approx(value, rel=1e-4, abs=1e-6), f"{tag}_{name}"


def test_local_maxima_of_hand_built_peaks():
    """Five isolated peaks 0.3 above a flat breast count at every window and prominence up to
    0.2 (at a 3x3 window one stands 0.3 * 8/9 above the window's mean); two 0.04 above count at
    0.02 only; the flat breast itself (every pixel its window's maximum) never counts. (At a
    breast's edge, next to the dark background, pixels do stand out: here the breast fills the
    image.)"""
    image = np.full((64, 64), 0.4, np.float32)
    for k, (r, c) in enumerate([(8, 8), (8, 30), (25, 15), (40, 38), (55, 10), (25, 38), (55, 30)]):
        image[r, c] += 0.3 if k < 5 else 0.04
    f = family("local_maxima", image[None])
    for k in pf.MAXIMA_WINDOWS:  # per unit of breast area: the breast is the whole image, 64**2 pixels
        counts = [f[f"max{k}_gt{d:g}"][0] * 64**2 for d in pf.PROMINENCES]
        assert counts == pytest.approx([7, 5, 5, 5]), k


def test_profiles_and_thumbnail_are_area_averages():
    x = breast_batch(3, seed=3, size=(128, 64))
    f = family("profiles", x)
    rows = x.astype(np.float64).mean(axis=2).reshape(3, 16, 8).mean(axis=2)
    cols = x.astype(np.float64).mean(axis=1).reshape(3, 8, 8).mean(axis=2)
    np.testing.assert_allclose(np.stack([f[f"row_{i:02d}"] for i in range(16)], 1), rows, rtol=1e-6)
    np.testing.assert_allclose(np.stack([f[f"col_{i:02d}"] for i in range(8)], 1), cols, rtol=1e-6)
    t = family("thumbnail", x)
    want = x.astype(np.float64).reshape(3, 8, 16, 4, 16).mean(axis=(2, 4))
    np.testing.assert_allclose(np.stack([t[f"thumb_{i}_{j}"] for i in range(8) for j in range(4)], 1),
                               want.reshape(3, -1), rtol=1e-6)
    # a size no grid divides: block i covers rows [i*L//n, (i+1)*L//n)
    odd = breast_batch(1, seed=4, size=(100, 50))[0].astype(np.float64)
    edges = np.arange(17) * 100 // 16
    want_rows = [odd.mean(axis=1)[a:b].mean() for a, b in zip(edges[:-1], edges[1:])]
    np.testing.assert_allclose(family("profiles", odd[None])["row_05"], want_rows[5], rtol=1e-6)


# ------------------------------------------------------------------------ what they cannot see
def test_features_of_an_image_do_not_depend_on_the_batch():
    x = breast_batch(5, seed=5)
    together = pf.compute(x, "union")[0]
    alone = np.concatenate([pf.compute(x[i : i + 1], "union")[0] for i in range(5)])
    assert np.array_equal(together, alone)
    assert np.array_equal(pf.compute(x, "union", chunk=2)[0], together)


@pytest.mark.parametrize("name", ["intensity", "moments", "components", "gradients", "local_maxima"])
def test_image_families_ignore_where_things_are(name):
    """Turned by 180 degrees or flipped top to bottom, an image has the same intensity, moment,
    component, gradient and local-maximum features (up to float rounding of sums)."""
    x = breast_batch(3, seed=6)
    f = pf.compute(x, name)[0]
    for moved in (x[:, ::-1, ::-1], x[:, ::-1, :]):
        np.testing.assert_allclose(pf.compute(np.ascontiguousarray(moved), name)[0], f, rtol=1e-5, atol=1e-7)


def test_layout_families_see_only_their_resolution():
    """Profiles and thumbnail see where tissue lies at 16 rows x 8 columns and 8x4 blocks: a blob
    moved inside its block changes nothing; moved to another block, they see it."""
    base = np.full((1, 32, 16), 0.3, np.float32)
    here, nearby, far = base.copy(), base.copy(), base.copy()
    here[0, 4, 4] = nearby[0, 5, 5] = far[0, 20, 12] = 0.9
    for name in ("profiles", "thumbnail"):
        a, b, c = (pf.compute(v, name)[0] for v in (here, nearby, far))
        np.testing.assert_array_equal(a, b)
        assert not np.allclose(a, c)


def test_counts_and_sizes_are_the_same_at_twice_the_size():
    """Counts per unit of breast area and sizes as fractions of the image: an image upsampled 2x
    (each pixel a 2x2 block) has the same components above fixed levels, histogram, profiles
    and thumbnail. (Percentiles interpolate between other neighbours among 4x the pixels.)"""
    x = breast_batch(3, seed=7)
    big = np.kron(x, np.ones((1, 2, 2), np.float32))
    fixed = {"components": slice(0, 7 * len(pf.LEVELS)), "profiles": slice(None), "thumbnail": slice(None),
             "intensity": np.r_[0:32, 44:51]}  # the histogram and the fractions above levels
    for name, columns in fixed.items():
        np.testing.assert_allclose(pf.compute(big, name)[0][:, columns], pf.compute(x, name)[0][:, columns],
                                   rtol=1e-9, atol=1e-12)


def test_union_is_every_family_in_order():
    x = breast_batch(2, seed=8)
    values, names = pf.compute(x, "union")
    parts = [pf.compute(x, name) for name in pf.FAMILIES]
    np.testing.assert_array_equal(values, np.concatenate([p[0] for p in parts], axis=1))
    assert names == [f"{fam}.{n}" for fam, p in zip(pf.FAMILIES, parts) for n in p[1]]
    assert pf.feature_names() == names and len(names) == len(set(names))
    empty = pf.compute(np.zeros((1, H, W), np.float32), "union")[0]  # no breast at all: finite
    assert np.isfinite(empty).all()
    none, none_names = pf.compute(np.zeros((0, H, W), np.float32), "union")  # no image at all
    assert none.shape == (0, len(names)) and none_names == names
    with pytest.raises(ValueError, match="unknown feature family 'colour'"):
        pf.compute(x, "colour")


# ------------------------------------------------------------------------------------ the probe
def test_probe_auc_on_known_answers():
    rng = np.random.default_rng(9)
    patients = np.repeat(np.arange(100), 4)
    labels = np.repeat(rng.permutation(np.arange(100) % 3 == 0), 4).astype(int)  # a class per patient
    noise = rng.standard_normal((400, 5))
    assert pf.probe_auc(np.column_stack([labels, noise]), labels, patients, seed=0) == 1.0
    assert abs(pf.probe_auc(noise, labels, patients, seed=0) - 0.5) < 0.1
    again = pf.probe_auc(noise, labels, patients, seed=0)
    assert again == pf.probe_auc(noise, labels, patients, seed=0)  # seeded: reproducible
