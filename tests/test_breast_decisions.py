"""Decisions per breast and per patient (ssl_bench/experiment/metrics.py decision_levels): the
RSNA 2023 probabilistic F1 against the challenge's own metric, and breast- and patient-level
sensitivity and specificity at the operating point against a pandas groupby, with their
patient-bootstrap intervals in the report."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from ssl_bench.experiment.clinical import net_benefit, probabilistic_f1
from ssl_bench.experiment.metrics import pooled_metrics
from ssl_bench.report.pooled import pooled_with_intervals


def pfbeta(labels, predictions, beta=1):
    """The RSNA Screening Mammography Breast Cancer Detection challenge's metric, as published
    with the competition (Kaggle, 2023), transcribed."""
    y_true_count, ctp, cfp = 0, 0, 0
    for idx in range(len(labels)):
        prediction = min(max(predictions[idx], 0), 1)
        if labels[idx]:
            y_true_count += 1
            ctp += prediction
        else:
            cfp += prediction
    beta_squared = beta * beta
    c_precision = ctp / (ctp + cfp)
    c_recall = ctp / y_true_count
    if c_precision > 0 and c_recall > 0:
        return (1 + beta_squared) * (c_precision * c_recall) / (beta_squared * c_precision + c_recall)
    return 0


def test_probabilistic_f1_is_the_challenges_metric():
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = (rng.random(60) < 0.3).astype(int)
        y[0] = 1
        p = rng.random(60) ** rng.uniform(0.3, 3)
        assert probabilistic_f1(y, p) == pytest.approx(pfbeta(y, p), rel=1e-12)
    calls = (rng.random(60) < 0.5).astype(float)  # hard 0/1 probabilities: the plain F1
    assert probabilistic_f1(y, calls) == pytest.approx(f1_score(y, calls.astype(int)))
    assert probabilistic_f1(y, np.zeros(60)) == 0.0 and np.isnan(probabilistic_f1(np.zeros(5), np.ones(5)))


def cohort(seed=3, patients=60):
    """Two views of each breast, two breasts per patient, patient-grouped folds; malignant
    breasts score higher; calibrated probabilities beside the scores."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(patients):
        sick_side = rng.choice(["L", "R", ""], p=[0.2, 0.2, 0.6])
        for side in "LR":
            label = int(side == sick_side)
            for view in ("CC", "MLO"):
                score = 1 / (1 + np.exp(-(1.5 * label + rng.normal() - 0.5)))
                rows.append({"image_id": f"p{p}_{side}_{view}", "patient_id": f"p{p:03d}", "label": label,
                             "score": score, "laterality": side, "fold": p % 3,
                             "calibrated": 0.8 * score ** 2})
    return pd.DataFrame(rows)


def test_breast_and_patient_decisions_equal_a_groupby():
    predictions = cohort()
    thresholds = {0: 0.45, 1: 0.5, 2: 0.55}
    metrics = pooled_metrics(predictions, thresholds)
    frame = predictions.assign(threshold=predictions["fold"].map(thresholds))
    for level, keys in (("breast", ["patient_id", "laterality"]), ("patient", ["patient_id"])):
        units = frame.groupby(keys).agg(label=("label", "max"), score=("score", "mean"),
                                        threshold=("threshold", "mean"), calibrated=("calibrated", "mean"))
        called = units["score"] >= units["threshold"]
        assert metrics[f"{level}_op_sensitivity"] == pytest.approx(called[units["label"] == 1].mean())
        assert metrics[f"{level}_op_specificity"] == pytest.approx(1 - called[units["label"] == 0].mean())
        if level == "breast":
            assert metrics["breast_pf1"] == pytest.approx(pfbeta(units["label"].to_numpy(),
                                                                 units["calibrated"].to_numpy()))
    no_side = predictions.assign(laterality="")
    assert np.isnan(pooled_metrics(no_side, thresholds)["breast_pf1"])  # no breasts without a side
    raw = pooled_metrics(predictions.drop(columns="calibrated"), thresholds)["breast_pf1"]
    units = frame.groupby(["patient_id", "laterality"]).agg(label=("label", "max"), score=("score", "mean"))
    assert raw == pytest.approx(pfbeta(units["label"].to_numpy(), units["score"].to_numpy()))


def test_intervals_of_the_decisions_hold_their_estimates():
    predictions = cohort(seed=4, patients=90)
    out = pooled_with_intervals(predictions, {0: 0.45, 1: 0.5, 2: 0.55}, n_boot=300)
    for name in ("breast_op_sensitivity", "breast_op_specificity", "patient_op_sensitivity",
                 "patient_op_specificity", "breast_pf1"):
        assert out[f"{name}_lo"] <= out[name] <= out[f"{name}_hi"], name
        assert out[f"{name}_hi"] - out[f"{name}_lo"] > 0.01, name  # a real interval, not a point


def test_the_max_aggregate_reaches_the_intervals_too():
    predictions = cohort(seed=5, patients=90)
    thresholds = {0: 0.45, 1: 0.5, 2: 0.55}
    out = pooled_with_intervals(predictions, thresholds, aggregate="max", n_boot=300)
    assert out["patient_op_sensitivity"] == pooled_metrics(predictions, thresholds, "max")["patient_op_sensitivity"]
    assert out["patient_op_sensitivity"] != pooled_metrics(predictions, thresholds, "mean")["patient_op_sensitivity"]
    for name in ("breast_op_sensitivity", "patient_op_sensitivity", "patient_op_specificity", "breast_pf1"):
        assert out[f"{name}_lo"] <= out[name] <= out[f"{name}_hi"], name


def test_net_benefit_is_vickers_and_elkins():
    rng = np.random.default_rng(6)
    y = (rng.random(300) < 0.25).astype(int)
    p = np.clip(0.25 + 0.4 * (y - 0.25) + 0.2 * rng.normal(size=300), 0, 1)
    thresholds = np.array([0.05, 0.1, 0.2, 0.3])
    for t, got in zip(thresholds, net_benefit(y, p, thresholds)):
        tp = sum(1 for yi, pi in zip(y, p) if pi >= t and yi == 1)
        fp = sum(1 for yi, pi in zip(y, p) if pi >= t and yi == 0)
        assert got == pytest.approx(tp / 300 - fp / 300 * t / (1 - t))
    prevalence = y.mean()  # calling everything malignant
    assert np.allclose(net_benefit(y, np.ones(300), thresholds), prevalence - (1 - prevalence) * thresholds / (1 - thresholds))
    assert np.allclose(net_benefit(y, np.zeros(300), thresholds), 0)
