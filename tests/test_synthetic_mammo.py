"""The built-in synthetic mammography generator: cohort shape, determinism, geometry, files; that
the class is not readable from non-spatial image summaries nor from position-free features, and
that it is readable from the lesions' morphology (a positive control)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage, stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedGroupKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from ssl_bench.data import synthetic_mammo as sm
from ssl_bench.models import position_free as pf
from ssl_bench.data.synthetic_mammo import (
    BENIGN_FINDINGS,
    MALIGNANT_FINDINGS,
    TABLE_COLUMNS,
    generate,
    write_png_set,
)

SMOKE = {"n_patients": 24, "n_benign": 40, "n_malignant": 20}


@pytest.fixture(scope="module")
def default_128():
    """The default (INbreast-shaped) cohort at 128x64."""
    return generate(image_size=(128, 64))


def grouped_auc(features: np.ndarray, table: pd.DataFrame) -> float:
    """Pooled out-of-fold AUC of a standardised logistic regression, 5 folds grouped by patient
    (as the benchmark splits: both views of a breast never straddle train and test)."""
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    folds = StratifiedGroupKFold(5, shuffle=True, random_state=0)
    labels = table["label"].to_numpy()
    scores = cross_val_predict(model, features, labels, groups=table["patient_id"].to_numpy(),
                               cv=folds, method="predict_proba")[:, 1]
    return roc_auc_score(labels, scores)


def check_counts(table: pd.DataFrame, images: np.ndarray, n_patients, n_benign, n_malignant, size):
    assert list(table.columns) == list(TABLE_COLUMNS)
    assert len(table) == n_benign + n_malignant == len(images)
    assert images.shape[1:] == size and images.dtype == np.float16
    assert 0.0 <= float(images.min()) and float(images.max()) <= 1.0
    assert table["image_id"].is_unique
    assert (table["label"] == 0).sum() == n_benign and (table["label"] == 1).sum() == n_malignant
    per_patient = table.groupby("patient_id").size()
    assert len(per_patient) == n_patients and per_patient.between(2, 4).all()
    assert set(table["laterality"]) <= {"L", "R"} and set(table["view"]) <= {"CC", "MLO"}
    assert (table["image_id"] == table["patient_id"] + "_" + table["laterality"] + "_" + table["view"]).all()


def test_default_cohort_is_inbreast_shaped(default_128):
    check_counts(*default_128, 115, 287, 100, (128, 64))


def test_smoke_cohort_counts():
    table, images = generate(image_size=(64, 32), **SMOKE)
    check_counts(table, images, 24, 40, 20, (64, 32))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"n_patients": 10, "n_benign": 40, "n_malignant": 5}, "between 20 and 40"),
        ({"n_patients": 10, "n_benign": 10, "n_malignant": 5}, "between 20 and 40"),
        ({"n_patients": 10, "n_benign": 30, "n_malignant": 0}, "at least one benign and one malignant"),
        ({"n_patients": 10, "n_benign": 0, "n_malignant": 30}, "at least one benign and one malignant"),
        ({"n_patients": 5, "n_benign": 9, "n_malignant": 11}, "even number"),  # 4 views each
        ({"n_patients": 0}, "n_patients"),
        ({"image_size": (8, 4)}, "at least 16x16"),
        ({"image_size": "big"}, "height, width"),
        ({"orientation": "upside-down"}, "orientation"),
        ({"seed": -1}, "seed"),
        ({"difficulty": "trivial"}, "difficulty"),
        ({"difficulty": 0}, "difficulty"),
    ],
)
def test_impossible_settings_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(**{"image_size": (32, 16), **SMOKE, **kwargs})


def test_same_seed_same_output_other_seed_differs():
    table, images = generate(image_size=(64, 32), seed=3, **SMOKE)
    table_again, images_again = generate(image_size=(64, 32), seed=3, **SMOKE)
    pd.testing.assert_frame_equal(table, table_again)
    assert np.array_equal(images, images_again)
    other_table, other_images = generate(image_size=(64, 32), seed=4, **SMOKE)
    assert not np.array_equal(images, other_images)
    assert not table["label"].equals(other_table["label"])


def test_lesion_is_in_both_views_of_its_breast(default_128):
    table, _ = default_128
    breasts = table.groupby(["patient_id", "laterality"])
    assert (breasts["label"].nunique() == 1).all() and (breasts["finding"].nunique() == 1).all()
    assert (breasts.size() == 2).sum() > 100  # most breasts are seen in CC and MLO
    malignant = table["finding"].isin(list(MALIGNANT_FINDINGS))
    assert (malignant == (table["label"] == 1)).all()
    assert set(table["finding"]) == set(BENIGN_FINDINGS) | set(MALIGNANT_FINDINGS)


def test_findings_follow_their_tables_and_mirror_across_classes(default_128):
    """Findings are dealt, not drawn: each class has its table's mix exactly (to a breast), and
    among breasts with a finding about as many of each class have a mass core and calcifications
    (the primitives a position-free summary could count)."""
    table, _ = default_128
    breasts = table.drop_duplicates(["patient_id", "laterality"])
    for label, shares in ((0, BENIGN_FINDINGS), (1, MALIGNANT_FINDINGS)):
        counts = breasts.loc[breasts["label"] == label, "finding"].value_counts()
        expected = pd.Series(shares) * counts.sum()
        assert (counts.reindex(expected.index) - expected).abs().max() < 1
    for primitive in (sm.MASS_FINDINGS, sm.CALC_FINDINGS):
        share = {}
        for label, table_ in ((0, BENIGN_FINDINGS), (1, MALIGNANT_FINDINGS)):
            with_finding = {f: p for f, p in table_.items() if f != "none"}
            share[label] = sum(p for f, p in with_finding.items() if f in primitive) / sum(with_finding.values())
        assert share[0] == pytest.approx(share[1], abs=0.05)


# Non-spatial summaries of an image: what a classifier could read without looking at shapes.
# The breast is every pixel above the dark background (~0.015).
BREAST = 0.05
MAX_SHORTCUT_AUC = 0.65


def _breast_pixels(images: np.ndarray) -> list[np.ndarray]:
    return [image[image > BREAST] for image in images]


def histogram(images: np.ndarray) -> np.ndarray:
    """32-bin intensity histogram of the breast, as fractions of its pixels."""
    return np.stack([np.histogram(v, bins=32, range=(0, 1))[0] / v.size
                     for v in _breast_pixels(images)])


def brightest(images: np.ndarray) -> np.ndarray:
    """The brightest pixel and the high percentiles of the breast."""
    return np.stack([np.percentile(v, [100, 99.9, 99.5, 99, 95]) for v in _breast_pixels(images)])


def brightest_pixel(images: np.ndarray) -> np.ndarray:
    """The brightest pixel alone (v2's strongest shortcut)."""
    return images.max(axis=(1, 2))[:, None]


def global_statistics(images: np.ndarray) -> np.ndarray:
    """Moments and percentiles of the image and of its breast, breast area, dense fractions."""
    rows = []
    for image, v in zip(images, _breast_pixels(images)):
        rows.append([image.mean(), image.std(), v.mean(), v.std(), stats.skew(v), stats.kurtosis(v),
                     *np.percentile(v, [1, 5, 25, 50, 75, 90]), v.size / image.size,
                     (v > 0.4).mean(), (v > 0.5).mean()])
    return np.array(rows)


def thumbnail(images: np.ndarray) -> np.ndarray:
    """8x4 area-averaged thumbnail (where the bright tissue lies, not its shapes)."""
    n, h, w = images.shape
    return images.reshape(n, 8, h // 8, 4, w // 4).mean(axis=(2, 4)).reshape(n, -1)


@pytest.mark.parametrize(
    "probe", [histogram, brightest, brightest_pixel, global_statistics, thumbnail],
    ids=lambda probe: probe.__name__,
)
def test_non_spatial_summaries_do_not_reveal_the_class(probe, default_128):
    """Benign and malignant findings are built from the same primitives, and the finding mix
    mirrors across classes. What is left is that 12% of benign breasts have no finding at all,
    which perfect detection of *a* finding turns into an AUC of 0.56; the summaries must stay near
    that."""
    table, images = default_128
    assert grouped_auc(probe(images.astype(np.float32)), table) <= MAX_SHORTCUT_AUC


# Position-free features (issue 23, item 2): families that neither locate nor describe a lesion,
# read by gradient-boosted trees, patient-grouped 5 folds. Phantom version 5 leaked through fine
# bright structure (pooled AUC at 128x64: intensity 0.719, components 0.817, gradients 0.939,
# local maxima 0.790, union 0.957); version 6 draws every primitive alike in both classes.
# The paper size (768x384) is measured by benchmarks/phantom_probes.py (minutes, not for the suite).


@pytest.fixture(scope="module")
def position_free_128(default_128):
    """Every family's features of the default cohort at 128x64 (the union: their concatenation)."""
    features = {name: pf.compute(default_128[1], name)[0] for name in pf.FAMILIES}
    features["union"] = np.concatenate(list(features.values()), axis=1)
    return features


@pytest.mark.parametrize("family", [*pf.FAMILIES, "union"])
def test_position_free_features_do_not_reveal_the_class(family, default_128, position_free_128):
    """Gradient-boosted trees on each position-free family, and on all of them, read the class no
    better than a pooled AUC of 0.65 (the finding-free benign breasts alone allow 0.56, see
    above): the class must take a lesion's morphology to read."""
    table, _ = default_128
    auc = pf.probe_auc(position_free_128[family], table["label"].to_numpy(), table["patient_id"].to_numpy(), seed=0)
    assert auc <= MAX_SHORTCUT_AUC, f"{family}: pooled AUC {auc:.3f}"


def _finding_alone(render: sm.ImageRenderer, i: int) -> tuple[np.ndarray, tuple[float, float], float]:
    """Image ``i``'s finding drawn without tissue or normal lines, its centre (pixels) and the
    direction of the nipple from it (radians), from the generator's own plan of that image."""
    breast, view, _, geometry, lesion, _ = render.plan(i)
    height = render.shape[0]
    layer = sm._draw_structures(render.shape, geometry, breast.finding, lesion, view, float(height), "standard", None)
    y, x = sm._lesion_center(geometry, lesion, view)
    return layer, (y * height, x * height), sm._nipple_direction(geometry, y, x)


def morphology(layer: np.ndarray, centre, nipple: float) -> list[float]:
    """What a reader says of a lesion, measured on the lesion: how its edges face its centre
    (a round margin faces it, spicules run along the radius), how elongated it is and whether its
    long axis points to the nipple (a cast along the ducts) or across, how many pieces it has
    and how ragged its outline is."""
    cy, cx = centre
    yy, xx = np.mgrid[: layer.shape[0], : layer.shape[1]] + 0.5
    dy, dx = yy - cy, xx - cx
    r = np.hypot(dy, dx) + 1e-6
    gy, gx = ndimage.sobel(layer, 0), ndimage.sobel(layer, 1)
    g = np.hypot(gy, gx)
    facing = ((gy * dy + gx * dx) / (g * r + 1e-9)) ** 2
    w = layer / layer.sum()
    my, mx = (w * dy).sum(), (w * dx).sum()
    cov = np.cov(np.stack([dy.ravel() - my, dx.ravel() - mx]), aweights=w.ravel() + 1e-12)
    eigenvalues, vectors = np.linalg.eigh(cov)
    axis = np.arctan2(vectors[0, 1], vectors[1, 1])
    rings = [(r >= lo * np.sqrt(eigenvalues[1])) & (r < hi * np.sqrt(eigenvalues[1])) for lo, hi in ((0, 1), (1, 2), (2, 4))]
    mask = layer > 0.3 * layer.max()
    pieces = ndimage.label(mask)[1]
    perimeter = (mask ^ ndimage.binary_erosion(mask)).sum()
    return [*((facing * g * ring).sum() / ((g * ring).sum() + 1e-9) for ring in rings),
            np.log(eigenvalues[1] / (eigenvalues[0] + 1e-9)), np.cos(axis - nipple) ** 2, pieces,
            perimeter**2 / (mask.sum() + 1)]


def test_lesion_morphology_reveals_the_class():
    """The positive control: what a lesion looks like (its margin, the lines converging on it, the
    shape and direction of a calcification cast) reads the class among the images that have one,
    where the position-free features of the whole image cannot (above)."""
    size = (128, 64)
    table, render = sm.generate_lazily(image_size=size)
    has = (table["finding"] != "none").to_numpy()
    features = np.array([morphology(*_finding_alone(render, i)) for i in np.flatnonzero(has)])
    auc = pf.probe_auc(features, table["label"].to_numpy()[has], table["patient_id"].to_numpy()[has], seed=0)
    assert auc >= 0.9, f"pooled AUC {auc:.3f}"


def _lesion_layers(finding: str, height: int, n: int = 40, lines: bool = False,
                   difficulty="standard") -> list[np.ndarray]:
    """``n`` lesions of one finding drawn at ``height x height/2`` (CC view, mid-breast), alone or
    (``lines``) with the breast's normal linear structures, which spicules replace."""
    geometry = {"a": 0.8, "cy": 0.5, "b_up": 0.4, "b_down": 0.4, "squareness": 2.0, "pectoral": None}
    layers = []
    for i in range(n):
        lesion = sm._plan_lesion(finding, np.random.default_rng(i))
        lesion.update(depth=0.5, offset={"CC": 0.0, "MLO": 0.0})
        rng = np.random.default_rng(1000 + i) if lines else None
        layers.append(sm._draw_structures((height, height // 2), geometry, finding, lesion, "CC", float(height),
                                          difficulty, rng))
    return layers


@pytest.mark.parametrize(
    "benign, malignant",
    [("round_mass", "irregular_mass"), ("oval_mass", "spiculated_mass"), ("vascular_calcs", "segmental_calcs"),
     ("oval_mass+calcs", "spiculated_mass+calcs")],
)
@pytest.mark.parametrize("height", [128, 768])
def test_benign_and_malignant_findings_are_equally_bright(benign, malignant, height):
    """A malignant finding with the breast's normal lines (spicules replace some of them) is as
    bright as its benign counterpart with its lines: its brightest pixel, its 4 and 16 brightest
    (within 10%), and it adds about as much intensity (within 20%)."""
    brightest, added = {}, {}
    for finding in (benign, malignant):
        layers = _lesion_layers(finding, height, n=40 if height == 128 else 12, lines=True)
        top = np.array([np.sort(layer.ravel())[::-1][:16] for layer in layers])
        brightest[finding] = [top[:, 0].mean(), top[:, :4].mean(), top.mean()]
        added[finding] = np.mean([layer.sum() for layer in layers])
    np.testing.assert_allclose(brightest[malignant], brightest[benign], rtol=0.1)
    assert 0.8 < added[malignant] / added[benign] < 1.2


@pytest.mark.parametrize("finding", ["oval_mass", "spiculated_mass", "vascular_calcs", "segmental_calcs"])
def test_lesions_keep_their_integrated_intensity_at_any_size(finding):
    """Lesions are supersampled and area-averaged: fine detail fades at small sizes but does not
    vanish or grow (integrated intensity per image area within 5% from 64x32 to 768x384)."""
    small = [x.sum() / 64**2 for x in _lesion_layers(finding, 64, n=8)]
    large = [x.sum() / 768**2 for x in _lesion_layers(finding, 768, n=8)]
    np.testing.assert_allclose(small, large, rtol=0.05)


def test_difficulty_scales_every_lesion_contrast():
    """``difficulty`` multiplies what a finding adds (mass, lines and specks alike) by its factor."""
    for finding in ("spiculated_mass+calcs", "oval_mass+calcs"):
        standard = _lesion_layers(finding, 128, n=3)
        for name, factor in sm.DIFFICULTY.items():
            for layer, scaled in zip(standard, _lesion_layers(finding, 128, n=3, difficulty=name)):
                np.testing.assert_allclose(scaled, factor * layer, rtol=1e-5, atol=1e-6)


def test_dark_background_and_canonical_orientation(default_128):
    _, images = default_128
    pixels = images.astype(np.float32)
    width = pixels.shape[2]
    assert pixels[:, :, -3:].mean() < 0.05  # beyond the nipple: background
    assert pixels[:, 60:68, :4].mean() > 0.15  # at the chest wall, mid-height: breast
    left, right = pixels[:, :, : width // 2].mean(axis=(1, 2)), pixels[:, :, width // 2 :].mean(axis=(1, 2))
    assert (left > right).all()


def test_laterality_orientation_mirrors_right_breasts():
    table, canonical = generate(image_size=(64, 32), **SMOKE)
    table_lat, stored = generate(image_size=(64, 32), orientation="laterality", **SMOKE)
    pd.testing.assert_frame_equal(table, table_lat)
    right = (table["laterality"] == "R").to_numpy()
    assert np.array_equal(stored[right], canonical[right][:, :, ::-1])
    assert np.array_equal(stored[~right], canonical[~right])
    half = stored.shape[2] // 2
    tissue_right = stored[:, :, half:].astype(np.float32).mean(axis=(1, 2))
    tissue_left = stored[:, :, :half].astype(np.float32).mean(axis=(1, 2))
    assert (tissue_right[right] > tissue_left[right]).all()  # R: chest wall on the right edge


def test_write_png_set_round_trip(tmp_path):
    kwargs = {"n_patients": 3, "n_benign": 5, "n_malignant": 3}
    csv_path = write_png_set(tmp_path / "synth", image_size=(64, 32), seed=1, **kwargs)
    assert csv_path == tmp_path / "synth" / "labels.csv"
    written = pd.read_csv(csv_path, dtype={"image_id": str, "patient_id": str})
    table, images = generate(image_size=(64, 32), seed=1, orientation="laterality", **kwargs)
    assert list(written.columns) == [*TABLE_COLUMNS, "path"]
    pd.testing.assert_frame_equal(written[list(TABLE_COLUMNS)], table)
    for row, image in zip(written.itertuples(), images):
        assert row.path == f"images/{row.image_id}.png"
        with Image.open(tmp_path / "synth" / row.path) as png:
            assert png.mode == "I;16"
            values = np.asarray(png).astype(np.float64) / 65535
        assert np.abs(values - image.astype(np.float64)).max() <= 1 / 65535


def test_write_png_set_unwritable_target_raises_oserror(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OSError):
        write_png_set(blocker / "out", image_size=(32, 16), n_patients=1, n_benign=1, n_malignant=2)
