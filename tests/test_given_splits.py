"""Given train/test splits: ``--split official`` (CBIS-DDSM's Training/Test, VinDr-Mammo's split
column) and ``--test-dataset`` (train on all of one dataset, test on another), each one fold;
the benchmark file of the label-efficiency grid planned into its runs."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from _trees import build_cbis, build_vindr
from ssl_bench.bench.plan import load_plan
from ssl_bench.cli import main
from ssl_bench.components import run_name
from ssl_bench.config import build_config
from ssl_bench.data import synthetic_mammo
from ssl_bench.data.inbreast import INbreast
from ssl_bench.data.inbreast_writer import write_inbreast_tree
from ssl_bench.data.loading import load_evaluation_data
from ssl_bench.data.splits import TRAIN_ONLY, official_folds
from ssl_bench.errors import ConfigError, DataError
from ssl_bench.experiment.run import prepare_run

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_cli(*args):
    return CliRunner().invoke(main, ["run", "--profile", "smoke", "--quiet", "--device", "cpu", *args])


def read_folds(run):
    return pd.read_csv(run / "folds.csv", dtype={"image_id": str, "patient_id": str})


def test_official_folds_rule():
    assert official_folds(["train", "test", "train"], "x").tolist() == [TRAIN_ONLY, 0, TRAIN_ONLY]
    for bad in (None, ["train", "train"], ["train", ""]):
        with pytest.raises(DataError):
            official_folds(bad, "x")


def test_official_split_cbis_ddsm(tmp_path):
    root = tmp_path / "cbis"
    expected = build_cbis(root)
    out = tmp_path / "runs"
    result = run_cli("--dataset", "cbis_ddsm", "--data-root", str(root), "--split", "official",
                     "--pretext", "none", "--transfer", "finetune", "--out", str(out))
    assert result.exit_code == 0, result.output
    run = out / "none-finetune-official"
    folds = read_folds(run)
    want = {folder: (0 if facts["split"] == "test" else TRAIN_ONLY) for folder, facts in expected.items()}
    assert dict(zip(folds["image_id"], folds["fold"])) == want
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["data"]["split"] == "official" and config["data"]["folds"] == 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["folds"] == 1 and not (run / "folds" / "1").exists()
    predictions = pd.read_csv(run / "folds" / "0" / "predictions.csv")
    assert set(predictions["image_id"]) == {f for f, fold in want.items() if fold == 0}
    assert list(predictions["label"]) == [expected[f]["label"] for f in predictions["image_id"]]


def test_official_split_vindr(tmp_path):
    root = tmp_path / "vindr"
    expected = build_vindr(root)
    cfg = build_config("smoke", flags={"device": "cpu", "data.dataset": "vindr_mammo", "data.root": str(root),
                                       "data.split": "official", "out": str(tmp_path / "runs")})
    assert cfg.data.folds == 1  # whatever the profile's folds
    run = prepare_run(cfg)
    folds = read_folds(run.rundir.path)
    kept = {i: f for i, f in expected.items() if f["birads"] != 3}  # BI-RADS 3 is left out
    assert dict(zip(folds["image_id"], folds["fold"])) == {
        i: (0 if f["split"] == "test" else TRAIN_ONLY) for i, f in kept.items()}


def test_no_official_split_is_one_line(tmp_path):
    result = run_cli("--split", "official", "--out", str(tmp_path))
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "has no official train/test split" in errors[0], result.output
    with pytest.raises(ConfigError):
        build_config("smoke", flags={"data.split": "official", "data.test_dataset": "inbreast"})


@pytest.fixture(scope="module")
def inbreast_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inbreast_gen")
    table, images = synthetic_mammo.generate(image_size=(96, 48), n_patients=8, n_benign=12, n_malignant=6, seed=9)
    write_inbreast_tree(root, images, table)
    return root


def test_test_dataset_synthetic_to_inbreast(tmp_path, inbreast_root):
    out = tmp_path / "runs"
    result = run_cli("--test-dataset", "inbreast", "--test-data-root", str(inbreast_root),
                     "--pretext", "none", "--transfer", "finetune", "--out", str(out))
    assert result.exit_code == 0, result.output
    run = out / "none-finetune-test-inbreast"
    cfg = build_config("smoke", flags={"device": "cpu", "data.test_dataset": "inbreast",
                                       "data.test_root": str(inbreast_root)})
    pair = load_evaluation_data(cfg)
    inbreast = INbreast(root=str(inbreast_root), image_size=cfg.data.image_size, cache_dir=cfg.data.cache_dir,
                        workers=1).load()
    synthetic_n = 60  # the smoke profile's synthetic set: 40 benign + 20 malignant
    test_rows = pair.samples.index[pair.samples["official_split"] == "test"]
    assert len(pair.samples) == synthetic_n + len(inbreast.samples) and list(test_rows) == list(
        range(synthetic_n, len(pair.samples)))
    # the test images are the INbreast tree preprocessed exactly as on their own
    np.testing.assert_array_equal(pair.images[test_rows], inbreast.images)
    folds = read_folds(run)
    assert (folds["fold"] == TRAIN_ONLY).sum() == synthetic_n and folds["image_id"].head(synthetic_n).str.startswith(
        "train:").all()
    predictions = pd.read_csv(run / "folds" / "0" / "predictions.csv", dtype={"image_id": str})
    assert list(predictions["image_id"]) == list(inbreast.samples["image_id"])
    assert list(predictions["label"]) == list(inbreast.labels)
    metrics = json.loads((run / "folds" / "0" / "metrics.json").read_text())
    assert metrics["n_train_images"] == synthetic_n
    assert json.loads((run / "summary.json").read_text())["folds"] == 1


# ------------------------------------------------------------------- the label-efficiency grid


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_label_efficiency_bench_plans_the_grid(profile):
    plan = load_plan(BENCHMARKS / "label_efficiency.yaml", profile)
    methods = {"Supervised-ImageNet": ("none", "finetune", "imagenet"),
               "Supervised-random": ("none", "finetune", None)}  # "none" reads as None
    for pretext, label in (("simclr", "SimCLR"), ("gsim", "GSIM")):
        for transfer in ("finetune", "linear", "knn"):
            methods[f"{label}-{transfer}"] = (pretext, transfer, None if profile == "smoke" else "imagenet")
    fractions = (0.1, 0.25, 0.5, 1.0)
    assert len(plan.configs) == len(methods) * len(fractions) == 32
    expected = [(f"{m}-f{f:g}" if f < 1 else m, f, *methods[m]) for f in fractions for m in methods]
    got = [(run_name(c), c.data.label_fraction, c.pretext, c.transfer, c.model.pretrained) for c in plan.configs]
    assert got == expected
    assert {c.data.folds for c in plan.configs} == {5} and {c.data.dataset for c in plan.configs} == {"synthetic"}


def test_runs_before_pools_and_test_datasets_resume():
    from ssl_bench.config import migrate
    from ssl_bench.experiment.rundir import comparable_config

    new = build_config("smoke", {}).to_dict()
    old = {k: v for k, v in new.items() if k != "pretext_data"}
    old["data"] = {k: v for k, v in new["data"].items() if k not in ("test_dataset", "test_root")}
    assert comparable_config(migrate(old)) == comparable_config(new)  # an old run directory resumes
    pooled = build_config("smoke", {}, {"pretext_data.dataset": "folder"}).to_dict()
    tested = build_config("smoke", {}, {"data.test_dataset": "inbreast"}).to_dict()
    assert comparable_config(pooled) != comparable_config(new) != comparable_config(tested)
