"""The training budget of a label-fraction fold (experiment/label_budget.py): with
``train.label_budget=steps`` a fold on a fraction of its labels takes as many optimiser steps as
on all of them; with ``epochs`` it keeps the profile's epochs."""
import json
import math

import pandas as pd
from click.testing import CliRunner

import torch

from ssl_bench.cli import main
from ssl_bench.config import build_config, migrate
from ssl_bench.experiment.fold import train_and_score_fold
from ssl_bench.experiment.run import prepare_run
from ssl_bench.experiment.label_budget import fold_budget_config, scaled_epochs
from ssl_bench.experiment.rundir import comparable_config
from ssl_bench.training.progress import TrainingProgress


def test_scaled_epochs_formula():
    # the quick profile's 8 epochs of 20 steps (310 images in batches of 16: 19 + a last batch of 6),
    # trained on 36 images (3 steps an epoch: 16 + 16 + 4): ceil(8 * 20 / 3) = 54 epochs, 162 steps
    assert scaled_epochs(8, 20, 3) == 54
    assert scaled_epochs(4, 20, 3) == 27
    assert scaled_epochs(3, 10, 5) == 6  # exact ratios stay exact
    assert scaled_epochs(8, 20, 20) == 8 and scaled_epochs(8, 20, 0) == 8
    assert scaled_epochs(0, 20, 3) == 0  # no pretext stage stays none


def test_budget_config_scales_only_what_trains_on_the_subset():
    cfg = build_config("quick", {"pretext": "simclr"}, {"data.label_fraction": 0.1})
    steps = fold_budget_config(cfg, 310, 36, pretext_on_subset=True)
    assert (steps.train.epochs, steps.train.pretext_epochs) == (54, 27)
    pool = fold_budget_config(cfg, 310, 36, pretext_on_subset=False)  # the pool does not shrink
    assert (pool.train.epochs, pool.train.pretext_epochs) == (54, 4)
    assert (cfg.train.epochs, cfg.train.pretext_epochs) == (8, 4)  # the run's config is untouched
    same = build_config("quick", {"pretext": "simclr"}, {"data.label_fraction": 0.1, "train.label_budget": "epochs"})
    assert fold_budget_config(same, 310, 36, True) is same
    # 4 data-parallel workers drop a last batch under 8 images: 34 images take 2 steps, 310 take 19
    workers = build_config("quick", {"pretext": "simclr"}, {"data.label_fraction": 0.1, "train.pretext_workers": 4})
    assert fold_budget_config(workers, 310, 34, pretext_on_subset=True).train.pretext_epochs == math.ceil(4 * 19 / 2)


class StepCounter(TrainingProgress):
    """Counts the optimiser steps each training stage takes (the loop reports every one)."""

    def __init__(self):
        super().__init__(enabled=False)
        self.steps: dict[str, int] = {}
        self.stage = None

    def start_stage(self, name, epochs, steps_per_epoch):
        super().start_stage(name, epochs, steps_per_epoch)
        self.stage = name
        self.steps.setdefault(name, 0)

    def step(self):
        super().step()
        self.steps[self.stage] += 1


def fold_steps(tmp_path, fraction: float) -> tuple[dict[str, int], int]:
    cfg = build_config("smoke", {"pretext": "simclr", "transfer": "finetune", "out": str(tmp_path / str(fraction))},
                       {"data.label_fraction": fraction, "train.epochs": 2, "train.pretext_epochs": 1,
                        "train.batch_size": 8})
    run = prepare_run(cfg)
    counter = StepCounter()
    result = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, torch.device("cpu"), progress=counter)
    return counter.steps, int(result.metrics.get("n_train_images", (run.fold_of != 0).sum()))


def test_a_fraction_takes_the_whole_folds_optimiser_steps(tmp_path):
    """Counted as the training loop takes them, each stage on a fraction's subset takes as many
    optimiser steps as on the whole fold, and less than one epoch of the subset more. (Scaling the
    epochs by the ratio of images took up to 1.37x the steps: a partial last batch is a whole step.)"""
    full, n_all = fold_steps(tmp_path, 1.0)
    part, n_subset = fold_steps(tmp_path, 0.3)
    assert n_subset < n_all and set(part) == set(full) == {"pretext", "finetune"}
    for stage in full:
        one_epoch = smoke_steps(n_subset)
        assert full[stage] <= part[stage] < full[stage] + one_epoch, (stage, full, part, n_all, n_subset)


def smoke_steps(n: int, batch: int = 8) -> int:
    """Steps of one epoch of ``n`` images in the smoke profile's batches (a last batch of one dropped)."""
    return n // batch + (n % batch >= 2)


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
        expected = math.ceil(smoke_steps(n_all) / smoke_steps(metrics["n_train_images"]))
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
    assert comparable_config(migrate(before)) == comparable_config(epochs)  # fraction runs before budgets: same epochs


def test_bad_budget_is_one_clear_line():
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--set", "train.label_budget=images"])
    assert result.exit_code != 0
    assert "train.label_budget must be steps or epochs, got 'images'" in result.output
