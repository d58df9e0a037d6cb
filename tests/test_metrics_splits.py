"""Metrics against scikit-learn and hand counts; patient-grouped stratified folds."""
import math

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_auc_score

from ssl_bench.data.splits import check_grouping, make_folds
from ssl_bench.experiment.metrics import threshold_statistics, summarize
from ssl_bench.errors import DataError


def test_metrics_hand_computed():
    labels = [1, 1, 1, 0, 0, 0, 0, 0]
    scores = [0.9, 0.6, 0.2, 0.7, 0.1, 0.3, 0.4, 0.05]
    m = threshold_statistics(labels, scores)
    # TP=2 FN=1 FP=1 TN=4
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["sensitivity"] == pytest.approx(2 / 3)
    assert m["specificity"] == pytest.approx(4 / 5)
    assert m["youden"] == pytest.approx(2 / 3 + 4 / 5 - 1)
    assert m["f1"] == pytest.approx(f1_score(labels, np.array(scores) >= 0.5))
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert m["auc"] == pytest.approx(roc_auc_score(labels, scores))


def test_threshold_is_inclusive_and_single_class_auc_is_nan():
    m = threshold_statistics([1, 0], [0.5, 0.49])
    assert m["accuracy"] == 1.0
    assert math.isnan(threshold_statistics([0, 0], [0.1, 0.7])["auc"])


def test_summary_uses_sample_std():
    folds = [dict.fromkeys(["accuracy", "sensitivity", "specificity", "youden", "f1", "auc"], v) for v in (0.5, 0.7, 0.9)]
    mean, std = summarize(folds)
    assert mean["auc"] == pytest.approx(0.7)
    assert std["auc"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))


def _toy_patients(n_patients=60, seed=0):
    rng = np.random.default_rng(seed)
    groups, labels = [], []
    for p in range(n_patients):
        k = rng.integers(2, 5)
        lab = int(rng.random() < 0.3)
        groups += [f"P{p}"] * k
        labels += [lab] * k
    return np.array(labels), np.array(groups)


def test_patient_grouped_folds_are_deterministic_and_stratified():
    labels, groups = _toy_patients()
    folds = make_folds(labels, groups, 5, seed=3)
    assert np.array_equal(folds, make_folds(labels, groups, 5, seed=3))
    assert not np.array_equal(folds, make_folds(labels, groups, 5, seed=4))
    check_grouping(folds, groups)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    rates = [labels[folds == k].mean() for k in range(5)]
    assert max(rates) - min(rates) < 0.2


def test_image_split_mixes_patients_and_grouping_check_catches_it():
    labels, groups = _toy_patients()
    folds = make_folds(labels, groups, 5, seed=0, split="image")
    assert set(folds) == set(range(5))
    with pytest.raises(DataError, match="appears in folds"):
        check_grouping(folds, groups)
