"""Online probes during a pretext stage (issue 27 item 2): the patient-grouped split of the
training fold, the probes' AUCs against a k-NN and a logistic regression written out here, and a
smoke SimCLR run whose history.csv carries them while its predictions stay those of a run without."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from ssl_bench.cli import main
from ssl_bench.training.online_probe import probe_aucs, probe_split


def cohort(seed: int = 0, patients: int = 40):
    rng = np.random.default_rng(seed)
    patient = np.repeat(np.arange(patients), 3).astype(str)
    labels = np.repeat(rng.random(patients) < 0.35, 3).astype(int)
    features = rng.normal(size=(labels.size, 8)) + 2.5 * labels[:, None] * np.eye(8)[0]
    return features, labels, patient


def test_the_split_keeps_each_patient_on_one_side_and_both_classes_on_each():
    _, labels, patients = cohort()
    fit, score = probe_split(labels, patients, seed=3)
    assert set(patients[fit]).isdisjoint(patients[score])
    assert len(fit) + len(score) == len(labels) and 0.15 < len(score) / len(labels) < 0.35
    assert set(labels[score]) == {0, 1} and set(labels[fit]) == {0, 1}
    again = probe_split(labels, patients, seed=3)
    assert (again[0] == fit).all()
    assert probe_split(np.array([0, 0, 1, 1]), np.array(["a", "b", "c", "c"]), 0) is None  # one malignant patient


def test_probe_aucs_are_a_cosine_knn_vote_and_a_standardised_logistic_regression():
    features, labels, patients = cohort(1)
    fit, score = probe_split(labels, patients, seed=0)
    got = probe_aucs(features, labels, fit, score)
    # k-NN: the share of malignant images among the 20 training images of highest cosine similarity
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    nearest = np.argsort(-(unit[score] @ unit[fit].T), axis=1, kind="stable")[:, :20]
    vote = labels[fit][nearest].mean(axis=1)
    assert got["probe_knn_auc"] == pytest.approx(roc_auc_score(labels[score], vote), abs=1e-12)
    # linear: logistic regression (balanced classes, C = 1) on features standardised by the fit images
    mean, std = features[fit].mean(axis=0), features[fit].std(axis=0)
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=2000).fit((features[fit] - mean) / std, labels[fit])
    expected = roc_auc_score(labels[score], model.decision_function((features[score] - mean) / std))
    assert got["probe_linear_auc"] == pytest.approx(expected, abs=1e-9)
    assert got["probe_linear_auc"] > 0.75  # the features carry the label: the probe sees it
    one_class = probe_aucs(features, np.zeros_like(labels), fit, score)
    assert all(np.isnan(v) for v in one_class.values())


def test_a_simclr_run_logs_its_probes_and_predicts_as_without_them(tmp_path):
    def run(out, *extra):
        result = CliRunner().invoke(main, ["run", "--pretext", "simclr", "--transfer", "finetune", "--profile", "smoke",
                                           "--folds", "2", "--fold", "0", "--out", str(out), "--quiet", *extra])
        assert result.exit_code == 0, result.output
        return out / "simclr-finetune" / "folds" / "0"

    probed = run(tmp_path / "probed", "--set", "train.probe_every=1")
    plain = run(tmp_path / "plain")
    history = pd.read_csv(probed / "history.csv")
    pretext, finetune = history[history["stage"] == "pretext"], history[history["stage"] == "finetune"]
    for column in ("probe_linear_auc", "probe_knn_auc"):
        assert pretext[column].between(0, 1).all() and finetune[column].isna().all()
    assert "probe_knn_auc" not in pd.read_csv(plain / "history.csv").columns
    # the probes read the backbone in eval mode without a gradient: training is exactly the same
    assert (probed / "predictions.csv").read_bytes() == (plain / "predictions.csv").read_bytes()
