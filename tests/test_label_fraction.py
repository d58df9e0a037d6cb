"""Label fractions: the nested, stratified, patient-grouped training subsets of each fold
(data/splits.py label_subset), and ``--label-fraction`` on ``run`` recording them."""
import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.components import run_name
from ssl_bench.config import build_config
from ssl_bench.data.splits import label_subset, make_folds
from ssl_bench.errors import ConfigError, DataError

FRACTIONS = (0.1, 0.25, 0.3, 0.5, 0.75, 1.0)


def toy(n_patients=60, seed=0):
    """Patients with 1 to 4 images each; about a third malignant (all their images)."""
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    for p in range(n_patients):
        y = int(rng.random() < 0.35)
        for _ in range(rng.integers(1, 5)):
            groups.append(f"p{p:03d}")
            labels.append(y)
    return np.array(labels), np.array(groups)


def patient_class(labels, groups, mask):
    out = {}
    for g, y in zip(groups[mask], labels[mask]):
        out[g] = max(out.get(g, 0), int(y))
    return out


@pytest.mark.parametrize("seed", [0, 3])
def test_subsets_nested_stratified_grouped(seed):
    labels, groups = toy(seed=seed)
    fold_of = make_folds(labels, groups, 5, seed)
    for k in range(5):
        train = fold_of != k
        full = patient_class(labels, groups, train)
        previous = np.zeros_like(train)
        for f in FRACTIONS:
            sub = label_subset(labels, groups, train, f, seed, k)
            assert not (sub & (fold_of == k)).any()  # never a held-out image
            assert (sub <= train).all()
            assert (previous <= sub).all()  # nested: a smaller fraction is a subset
            kept = patient_class(labels, groups, sub)
            for g in kept:  # grouped: a kept patient keeps all its training images
                assert sub[(groups == g) & train].all()
            for c in (0, 1):  # stratified: ceil(f * n_c) patients of each class
                n_c = sum(1 for y in full.values() if y == c)
                assert sum(1 for y in kept.values() if y == c) == min(n_c, math.ceil(round(f * n_c, 9)))
            previous = sub
        assert (previous == train).all()  # fraction 1 is the whole training fold


def test_subsets_deterministic_and_seeded():
    labels, groups = toy()
    fold_of = make_folds(labels, groups, 5, 0)
    a = label_subset(labels, groups, fold_of != 0, 0.25, 0, 0)
    assert (a == label_subset(labels, groups, fold_of != 0, 0.25, 0, 0)).all()
    assert not (a == label_subset(labels, groups, fold_of != 0, 0.25, 1, 0)).all()
    assert (fold_of == make_folds(labels, groups, 5, 0)).all()  # the folds do not depend on fractions


def test_float_noise_and_bad_fractions():
    labels = np.array([0] * 10 + [1] * 10)
    groups = np.array([f"p{i}" for i in range(20)])
    sub = label_subset(labels, groups, np.ones(20, bool), 0.3, 0, 0)
    assert sub.sum() == 6  # 0.3 * 10 = 3 per class, not 4
    for bad in (0, -0.1, 1.5, float("nan")):
        with pytest.raises(DataError):
            label_subset(labels, groups, np.ones(20, bool), bad)


def test_config_and_run_name():
    cfg = build_config("smoke", {"pretext": "simclr", "transfer": "finetune"}, {"data.label_fraction": 0.25})
    assert run_name(cfg) == "simclr-finetune-f0.25"
    assert run_name(build_config("smoke", {"name": "x"})) == "x"
    with pytest.raises(ConfigError):
        build_config("smoke", {}, {"data.label_fraction": 0})
    result = CliRunner().invoke(main, ["run", "--label-fraction", "0.5,2", "--profile", "smoke"])
    assert result.exit_code != 0 and "(0, 1]" in result.output


def test_run_records_fractions_and_keeps_held_out_folds(tmp_path):
    result = CliRunner().invoke(main, ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke",
                                       "--folds", "3", "--epochs", "1", "--label-fraction", "0.3,1.0",
                                       "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    small, full = tmp_path / "none-finetune-f0.3", tmp_path / "none-finetune"
    assert pd.read_csv(small / "folds.csv").equals(pd.read_csv(full / "folds.csv"))
    folds = pd.read_csv(full / "folds.csv", dtype={"patient_id": str})
    for k in range(3):
        ms, mf = (json.loads((r / "folds" / str(k) / "metrics.json").read_text()) for r in (small, full))
        assert ms["label_fraction"] == 0.3 and mf["label_fraction"] == 1.0
        train = folds[folds["fold"] != k]
        assert mf["n_train_images"] == len(train) and mf["n_train_patients"] == train["patient_id"].nunique()
        assert 0 < ms["n_train_images"] < mf["n_train_images"]
        assert 0 < ms["n_train_patients"] < mf["n_train_patients"]
        ps, pf = (pd.read_csv(r / "folds" / str(k) / "predictions.csv") for r in (small, full))
        assert list(ps["image_id"]) == list(pf["image_id"])  # the same held-out images
    summary = json.loads((small / "summary.json").read_text())
    assert summary["label_fraction"] == 0.3
    assert set(summary["train_subsets"]) == {"0", "1", "2"}


def test_runs_before_label_fractions_resume_and_fractions_are_identity():
    from ssl_bench.config import migrate
    from ssl_bench.experiment.rundir import comparable_config

    new = build_config("smoke", {}).to_dict()
    old = {**new, "data": {k: v for k, v in new["data"].items() if k != "label_fraction"}}
    assert comparable_config(migrate(old)) == comparable_config(new)  # an old run directory resumes
    quarter = build_config("smoke", {}, {"data.label_fraction": 0.25}).to_dict()
    assert comparable_config(quarter) != comparable_config(new)  # a fraction is part of the identity


def test_resume_refuses_another_fraction_in_the_same_directory(tmp_path):
    args = ["run", "--pretext", "none", "--transfer", "knn", "--profile", "smoke", "--folds", "2",
            "--out", str(tmp_path), "--quiet", "--name", "x"]
    assert CliRunner().invoke(main, [*args, "--set", "data.label_fraction=0.5"]).exit_code == 0
    metrics = tmp_path / "x-f0.5" / "folds" / "0" / "metrics.json"
    before = metrics.stat().st_mtime_ns
    again = CliRunner().invoke(main, [*args, "--label-fraction", "0.5"])  # the same run: resumed, nothing redone
    assert again.exit_code == 0 and metrics.stat().st_mtime_ns == before
    shutil.copytree(tmp_path / "x-f0.5", tmp_path / "x-f0.25",  # a directory of fraction 0.5 under the 0.25 name
                    ignore=shutil.ignore_patterns(".lock"))
    refused = CliRunner().invoke(main, [*args, "--label-fraction", "0.25"])
    assert refused.exit_code != 0 and "different configuration" in refused.output
