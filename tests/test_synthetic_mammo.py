"""The built-in synthetic mammography generator: cohort shape, determinism, geometry, files, and
that the class is learnable from lesions but not readable from global image statistics."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

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


def cross_validated_auc(features: np.ndarray, labels: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")[:, 1]
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


@pytest.mark.parametrize("size", [(128, 64), (256, 128)])
def test_global_statistics_do_not_reveal_the_class(size, default_128):
    table, images = default_128 if size == (128, 64) else generate(image_size=size)
    pixels = images.astype(np.float32)
    features = np.stack([pixels.mean(axis=(1, 2)), pixels.std(axis=(1, 2))], axis=1)
    assert cross_validated_auc(features, table["label"].to_numpy()) < 0.6


def test_lesions_make_the_class_learnable(default_128):
    """Cheap evidence that the signal exists: the brightest fine detail (image minus its blur, at
    three scales) already separates the classes; a CNN has much more to go on."""
    table, images = default_128
    pixels = images.astype(np.float32)
    features = np.stack(
        [(pixels - ndimage.gaussian_filter(pixels, (0, s, s))).max(axis=(1, 2)) for s in (1, 2, 3)],
        axis=1,
    )
    assert cross_validated_auc(features, table["label"].to_numpy()) > 0.6


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
