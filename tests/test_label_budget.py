"""The training budget of a label-fraction fold (experiment/label_budget.py): with
``train.label_budget=steps`` a fold on a fraction of its labels trains as many images' worth of
steps as on all of them; with ``epochs`` it keeps the profile's epochs."""
import json
import math

import pandas as pd
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.experiment.label_budget import fold_budget_config, scaled_epochs
from ssl_bench.experiment.rundir import comparable_config


def test_scaled_epochs_formula():
    # the quick profile's 8 epochs on a fold of 310 images, trained on 36 of them: 8 * 310 / 36 = 68.9
    assert scaled_epochs(8, 310, 36) == 69
    assert scaled_epochs(4, 310, 36) == 35
    assert scaled_epochs(3, 100, 50) == 6  # exact ratios stay exact
    assert scaled_epochs(8, 310, 310) == 8 and scaled_epochs(8, 310, 0) == 8
    assert scaled_epochs(0, 310, 36) == 0  # no pretext stage stays none


def test_budget_config_scales_only_what_trains_on_the_subset():
    cfg = build_config("quick", {"pretext": "simclr"}, {"data.label_fraction": 0.1})
    steps = fold_budget_config(cfg, 310, 36, pretext_on_subset=True)
    assert (steps.train.epochs, steps.train.pretext_epochs) == (69, 35)
    pool = fold_budget_config(cfg, 310, 36, pretext_on_subset=False)  # the pool does not shrink
    assert (pool.train.epochs, pool.train.pretext_epochs) == (69, 4)
    assert (cfg.train.epochs, cfg.train.pretext_epochs) == (8, 4)  # the run's config is untouched
    same = build_config("quick", {"pretext": "simclr"}, {"data.label_fraction": 0.1, "train.label_budget": "epochs"})
    assert fold_budget_config(same, 310, 36, True) is same


def run_fraction(tmp_path, *extra):
    args = ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--folds", "3",
            "--epochs", "1", "--label-fraction", "0.3", "--out", str(tmp_path), "--quiet", *extra]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return tmp_path / "none-finetune-f0.3"


def test_fold_trains_and_records_the_scaled_epochs(tmp_path):
    run = run_fraction(tmp_path)
    folds = pd.read_csv(run / "folds.csv")
    summary = json.loads((run / "summary.json").read_text())
    for k in range(3):
        metrics = json.loads((run / "folds" / str(k) / "metrics.json").read_text())
        n_all = int((folds["fold"] != k).sum())
        expected = math.ceil(n_all / metrics["n_train_images"])
        assert expected > 1 and metrics["epochs"] == expected
        history = pd.read_csv(run / "folds" / str(k) / "history.csv")
        assert list(history["epoch"]) == list(range(1, expected + 1))  # trained, not just recorded
        assert summary["train_subsets"][str(k)]["epochs"] == expected


def test_epochs_budget_keeps_the_epochs(tmp_path):
    run = run_fraction(tmp_path, "--set", "train.label_budget=epochs")
    for k in range(3):
        assert json.loads((run / "folds" / str(k) / "metrics.json").read_text())["epochs"] == 1
        assert len(pd.read_csv(run / "folds" / str(k) / "history.csv")) == 1


def test_budget_is_identity_for_fractions_only():
    full = build_config("smoke", {}).to_dict()
    assert comparable_config(full) == comparable_config(
        build_config("smoke", {}, {"train.label_budget": "epochs"}).to_dict())  # all labels: no difference
    steps = build_config("smoke", {}, {"data.label_fraction": 0.5}).to_dict()
    epochs = build_config("smoke", {}, {"data.label_fraction": 0.5, "train.label_budget": "epochs"}).to_dict()
    assert comparable_config(steps) != comparable_config(epochs)
    before = {**epochs, "train": {k: v for k, v in epochs["train"].items() if k != "label_budget"}}
    assert comparable_config(before) == comparable_config(epochs)  # fraction runs before budgets: same epochs


def test_bad_budget_is_one_clear_line():
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--set", "train.label_budget=images"])
    assert result.exit_code != 0
    assert "train.label_budget must be steps or epochs, got 'images'" in result.output
