"""Test images never reach training (issue 25, item 3): a test dataset that is the training data
is refused, and a pretext pool loses every copy of a held-out image (same preprocessed pixels,
whatever its path or dataset) and every image of a held-out patient where both datasets carry
patient ids; each fold records how many images each rule left out."""
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.data import synthetic_mammo
from ssl_bench.data.base import LoadedDataset
from ssl_bench.data.digests import image_digests
from ssl_bench.data.loading import load_evaluation_data, load_pool, train_test_pair
from ssl_bench.data.pool import pool_exclusions
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.experiment.pretext_pool import fold_pretext_pool
from ssl_bench.experiment.run import compute_folds
from ssl_bench.registry import PRETEXTS

SIZE = (64, 32)


def loaded(name, ids, images, patients=None):
    samples = pd.DataFrame({"image_id": ids, "patient_id": patients or ids, "label": [0] * len(ids), "path": ""})
    return LoadedDataset(name, samples, np.asarray(images, dtype=np.float32))


def test_test_dataset_that_is_the_training_dataset_is_refused_before_training(tmp_path):
    """Before: `run --test-dataset synthetic` trained on the 60 test images and reported AUC 1.000."""
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--quiet", "--test-dataset", "synthetic",
                                       "--out", str(tmp_path)])
    assert result.exit_code == 2 and "is the training dataset" in result.output, result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())  # nothing written
    root = tmp_path / "INbreast"
    with pytest.raises(ConfigError, match="is the training dataset"):  # the same folder, spelled otherwise
        build_config("smoke", flags={"data.dataset": "inbreast", "data.root": str(root),
                                     "data.test_dataset": "inbreast", "data.test_root": str(root / "x" / "..")})
    build_config("smoke", flags={"data.dataset": "inbreast", "data.root": str(root),  # another folder: allowed
                                 "data.test_dataset": "inbreast", "data.test_root": str(tmp_path / "other")})


def test_test_images_equal_to_training_images_are_refused():
    rng = np.random.default_rng(0)
    train_images = rng.random((4, *SIZE))
    test_images = np.stack([rng.random(SIZE), train_images[2], rng.random(SIZE)])  # one copy, renamed
    train = loaded("a", ["a0", "a1", "a2", "a3"], train_images)
    test = loaded("b", ["b0", "copy-of-a2", "b2"], test_images)
    with pytest.raises(DataError, match=r"shares 1 of its 3 images .* e\.g\. copy-of-a2"):
        train_test_pair(train, test)
    test_images[1] = np.nextafter(test_images[1].astype(np.float32), np.float32(2))  # one ulp away: another image
    assert len(train_test_pair(train, loaded("b", ["b0", "b1", "b2"], test_images)).samples) == 7


def test_exclusion_rules_against_a_brute_force_reference():
    rng = np.random.default_rng(1)
    held_images = rng.random((3, 4, 4))
    pool_images = np.concatenate([rng.random((5, 4, 4)), held_images[[1]]])  # pool row 5: a copy
    pool = pd.DataFrame({"patient_id": ["u1", "u1", "p7", "u3", "u4", "u4"], "path": ""})
    held = pd.DataFrame({"patient_id": ["p7", "p8", "p9"], "path": ""})
    digests = lambda images: loaded("x", [str(i) for i in range(len(images))], images)  # noqa: E731
    got = pool_exclusions(pool, held, match_patients=True,
                          pool_digests=image_digests(digests(pool_images)), held_digests=image_digests(digests(held_images)))
    copies = [i for i in range(6) if any(np.array_equal(pool_images[i], h) for h in held_images)]
    assert copies == [5]
    copied_patients = set(pool["patient_id"][copies])
    assert got["same_pixels"].tolist() == [p in copied_patients for p in pool["patient_id"]]  # u4's two images
    assert got["held_out_patients"].tolist() == [p in set(held["patient_id"]) for p in pool["patient_id"]]
    without = pool_exclusions(pool, held, match_patients=False)  # a folder pool: ids made from paths
    assert not without["held_out_patients"].any() and not without["same_pixels"].any()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The evaluation set as PNGs with a manifest, and a copy of the same files in a folder tree
    (one folder per patient, as docs/datasets.md lays out a folder pool): the same archive twice."""
    base = tmp_path_factory.mktemp("export")
    csv = synthetic_mammo.write_png_set(base / "eval", image_size=SIZE, seed=5, n_patients=8, n_benign=12,
                                        n_malignant=6)
    table = pd.read_csv(csv)
    for patient, path in zip(table["patient_id"], table["path"]):
        target = base / "copy" / f"scan-{patient}" / f"{patient}-{path.split('/')[-1]}"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(base / "eval" / path, target)
    return base


def test_a_copy_of_the_held_out_images_is_left_out_of_the_pool(exported, tmp_path):
    """Before: across dataset names, held-out images were left out by path only, so a copy of the
    evaluation archive at another path stayed in every fold's pool."""
    cfg = build_config("smoke", flags={"device": "cpu", "pretext": "simclr", "transfer": "knn", "data.folds": 2,
                                       "data.dataset": "manifest", "data.root": str(exported / "eval"),
                                       "params.manifest": {"csv": "labels.csv"},
                                       "pretext_data.dataset": "folder", "pretext_data.root": str(exported / "copy"),
                                       "data.cache_dir": str(tmp_path / "cache"), "out": str(tmp_path)})
    data = load_evaluation_data(cfg)
    pool = load_pool(cfg)
    fold_of = compute_folds(cfg, data)
    for k in range(2):
        info = fold_pretext_pool(cfg, PRETEXTS.create("simclr"), data, fold_of, k, torch.device("cpu"), None).info
        held = data.images[fold_of == k]
        copies = [i for i in range(len(pool.images)) if any(np.array_equal(pool.images[i], h) for h in held)]
        assert copies, "the folder copy should hold identical images of the held-out fold"
        patients = set(pool.groups[copies])
        expected = int(np.isin(pool.groups, list(patients)).sum())
        assert info["excluded"] == {"held_out_patients": 0, "same_file": 0, "same_pixels": expected}
        assert info["n_excluded"] == expected and info["n_images"] == len(pool.images) - expected
