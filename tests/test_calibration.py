"""Calibrated probabilities (ssl_bench/experiment/calibration.py): Platt scaling fitted on each
fold's training predictions, never on the held-out fold; the ECE and the reliability curve against
scikit-learn's calibration_curve; predict's p_calibrated; the report's calibration section."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from PIL import Image
from sklearn.calibration import calibration_curve

from ssl_bench.cli import main
from ssl_bench.experiment import fold as fold_module
from ssl_bench.experiment.calibration import calibrate, expected_calibration_error, fit_platt


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_platt_recovers_the_model_that_drew_the_labels():
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.02, 0.98, 200_000)
    a, b = 0.6, -0.8  # the true calibration map of these scores
    labels = rng.random(len(scores)) < sigmoid(a * np.log(scores / (1 - scores)) + b)
    fitted = fit_platt(labels, scores)
    assert fitted["method"] == "platt"
    assert fitted["a"] == pytest.approx(a, abs=0.02) and fitted["b"] == pytest.approx(b, abs=0.02)
    assert np.allclose(calibrate({"a": 1.0, "b": 0.0}, scores), scores)  # a=1, b=0: the identity
    assert fit_platt(np.zeros(5), np.linspace(0.1, 0.9, 5)) == {"method": "platt", "a": 1.0, "b": 0.0}


def test_ece_equals_the_bins_of_scikit_learns_calibration_curve():
    rng = np.random.default_rng(1)
    p = np.r_[rng.random(997), 0.1, 0.5, 1.0]  # edges included
    y = (rng.random(len(p)) < p ** 2).astype(int)
    observed, predicted = calibration_curve(y, p, n_bins=10, strategy="uniform")
    counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], p), minlength=10)
    reference = np.sum(counts[counts > 0] / len(p) * np.abs(observed - predicted))
    assert expected_calibration_error(y, p) == pytest.approx(reference, abs=1e-12)
    assert expected_calibration_error([0, 1, 0, 1], [0.9, 0.9, 0.9, 0.9]) == pytest.approx(0.4)
    perfect = rng.random(100_000)
    assert expected_calibration_error(rng.random(len(perfect)) < perfect, perfect) < 0.01


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("calibrated")
    seen = []
    real = fold_module.fit_platt
    fold_module.fit_platt = lambda labels, scores: seen.append(len(labels)) or real(labels, scores)
    try:
        result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--folds", "2", "--out", str(out), "--quiet"])
    finally:
        fold_module.fit_platt = real
    assert result.exit_code == 0, result.output
    return out / "none-finetune", seen


def test_each_fold_calibrates_its_held_out_scores_with_a_map_fitted_on_its_training_images(calibrated_run):
    run, seen = calibrated_run
    folds = pd.read_csv(run / "folds.csv")
    for k in (0, 1):
        metrics = json.loads((run / "folds" / str(k) / "metrics.json").read_text())
        predictions = pd.read_csv(run / "folds" / str(k) / "predictions.csv")
        assert seen[k] == metrics["n_train_images"] == int((folds["fold"] != k).sum())  # training images only
        assert np.allclose(predictions["calibrated"], calibrate(metrics["calibration"], predictions["score"]))
        held_out = fit_platt(predictions["label"], predictions["score"])
        assert (held_out["a"], held_out["b"]) != (metrics["calibration"]["a"], metrics["calibration"]["b"])


def test_predict_gives_the_folds_calibrated_probability(calibrated_run, tmp_path):
    run, _ = calibrated_run
    png = tmp_path / "scan.png"
    Image.fromarray((np.random.default_rng(2).random((64, 32)) * 255).astype(np.uint8)).save(png)
    result = CliRunner().invoke(main, ["predict", "--run", str(run), str(png), "--format", "json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.stdout)
    params = [json.loads((run / "folds" / str(k) / "metrics.json").read_text())["calibration"] for k in (0, 1)]
    expected = np.mean([calibrate(params[k], np.array([row[f"fold_{k}"]]))[0] for k in (0, 1)])
    assert row["p_calibrated"] == pytest.approx(expected, rel=1e-6)


def test_the_report_shows_each_ece_and_the_reliability_diagrams(calibrated_run, tmp_path):
    run, _ = calibrated_run
    result = CliRunner().invoke(main, ["report", str(run), "--out", str(tmp_path / "report.md")])
    assert result.exit_code == 0, result.output
    md = (tmp_path / "report.md").read_text()
    frames = pd.concat([pd.read_csv(run / "folds" / str(k) / "predictions.csv") for k in (0, 1)])
    raw = 100 * expected_calibration_error(frames["label"], frames["score"])
    calibrated = 100 * expected_calibration_error(frames["label"], frames["calibrated"])
    assert f"| none-finetune | {raw:.2f} | {calibrated:.2f} |" in md
    assert "![Reliability diagrams, raw and calibrated](report_reliability.png)" in md
    assert (tmp_path / "report_reliability.png").is_file()
    assert "![Decision curves per breast](report_decision_curve.png)" in md
    assert (tmp_path / "report_decision_curve.png").is_file()
