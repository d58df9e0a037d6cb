"""The report's patient-clustered statistics, clinicians' metrics, control row, degenerate flags
and seed summary, against independent computations; the operating point chosen on training
predictions; the vectorised curve bootstrap against scikit-learn with sample weights."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from ssl_bench.experiment.clinical import sensitivity_at_specificity
from ssl_bench.experiment.operating_point import degenerate_reason, operating_threshold
from ssl_bench.report.curve_bootstrap import average_precision, cluster_weights
from ssl_bench.report.curve_bootstrap import sensitivity_at_specificity as weighted_sens_at_spec
from ssl_bench.report.leaderboard import build_report
from ssl_bench.report.seeds import across_seeds
from ssl_bench.report.significance import paired
from ssl_bench.report.stats import clustered_accuracy_test, holm_adjust, obuchowski_test
from test_report import METHODS, cohort, make_bench, write_run

N_BOOT = 200


@pytest.fixture(scope="module")
def bench_with_control(tmp_path_factory):
    methods = {**METHODS, "Non-spatial": 0.2}
    return make_bench(tmp_path_factory.mktemp("runs"), methods)


@pytest.fixture(scope="module")
def report(bench_with_control):
    return build_report(bench_with_control, n_boot=N_BOOT)


def test_paired_tests_treat_patients_as_the_unit(report):
    t = report.table.set_index("method")
    base = next(r for r in report.runs if r.method == "ResNet")
    raw = {}
    for run in report.runs:
        if run.method == "ResNet":
            continue
        both = paired(base, run)
        y, clusters = both["label_ref"], both["patient_id"]
        expected = obuchowski_test(y, both["score_run"], both["score_ref"], clusters)[2]
        assert t.loc[run.method, "p_auc"] == pytest.approx(expected, rel=1e-9)
        acc = clustered_accuracy_test(y, both["score_run"], both["score_ref"], clusters, n=N_BOOT, seed=0)
        assert t.loc[run.method, "p_accuracy"] == pytest.approx(acc.p_value)
        raw[run.method] = expected
    holm = dict(zip(raw, holm_adjust(list(raw.values()))))
    for method, value in holm.items():
        assert t.loc[method, "p_auc_holm"] == pytest.approx(value)
        assert t.loc[method, "p_auc_holm"] >= t.loc[method, "p_auc"]
    assert any("Holm" in n for n in report.notes) and any("resampling unit" in n for n in report.notes)


def test_pooled_metrics_and_their_intervals(report):
    t = report.table.set_index("method")
    for run in report.runs:
        p = run.predictions
        row = t.loc[run.method]
        assert row["auprc"] == pytest.approx(100 * average_precision_score(p["label"], p["score"]))
        assert row["sens_at_spec90"] == pytest.approx(100 * sensitivity_at_specificity(p["label"], p["score"], 0.9))
        patients = p.groupby("patient_id").agg(label=("label", "max"), score=("score", "mean"))
        assert row["patient_auc"] == pytest.approx(100 * roc_auc_score(patients["label"], patients["score"]))
        assert math.isnan(row["breast_auc"])  # these runs record no laterality
        for m in ("oof_auc", "auprc", "sens_at_spec90", "patient_auc", "op_sensitivity", "op_specificity"):
            assert row[f"{m}_lo"] <= row[m] <= row[f"{m}_hi"], (run.method, m)
    # operating points of runs written before they existed: threshold 0.5
    r = report.runs[0]
    called = r.predictions["score"] >= 0.5
    assert t.loc[r.method, "op_sensitivity"] == pytest.approx(100 * called[r.predictions["label"] == 1].mean())


def test_control_row_and_who_beats_it(report):
    t = report.table
    assert t["method"].iloc[-1] == "Non-spatial" and t["role"].iloc[-1] == "control"
    beats = t.set_index("method")["beats_control"]
    assert beats["TSBN-U"] is True or beats["TSBN-U"] == True  # noqa: E712  (strength 1.7 vs 0.2)
    assert math.isnan(beats["Non-spatial"])
    assert ((t["control_p_auc_holm"] >= t["control_p_auc"]) | t["control_p_auc"].isna()).all()


def test_degenerate_folds_are_flagged(tmp_path):
    labels, patients, fold, rng = cohort()
    scores = 1 / (1 + np.exp(-(labels + rng.normal(size=len(labels)))))
    scores[fold == 2] = 0.7  # one fold with constant scores
    scores[fold == 3] = np.clip(scores[fold == 3] + 0.6, 0.51, 0.99)  # one fold all called malignant
    run = write_run(tmp_path, "Broken", labels, patients, fold, scores)
    rep = build_report([run], n_boot=N_BOOT)
    assert rep.runs[0].degenerate == {2: "constant scores (0.7)", 3: "100% of scores >= 0.5 (all malignant)"}
    assert rep.table.loc[0, "degenerate"] == 2
    assert degenerate_reason(np.r_[np.full(96, 0.2), np.full(4, 0.9)]) == "96% of scores < 0.5 (all benign)"
    assert degenerate_reason(np.r_[np.full(90, 0.2), np.full(10, 0.9)]) == ""


def test_operating_threshold_is_youden_on_training_scores_midway_into_the_gap():
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.4, 0.6, 0.7, 0.9])
    assert operating_threshold(y, s) == pytest.approx(0.5)  # between 0.4 and 0.6: J = 1
    y2 = np.array([0, 0, 1, 0, 1, 1])
    s2 = np.array([0.1, 0.2, 0.3, 0.4, 0.6, 0.9])  # J: t=0.3 -> 1 - 1/3 = 0.667; t=0.6 -> 0.667
    assert operating_threshold(y2, s2) == pytest.approx((0.6 + 0.4) / 2)  # ties: the higher one
    assert operating_threshold(np.zeros(4, int), np.arange(4.0)) == 0.5  # one class: the paper's


def test_curve_bootstrap_equals_scikit_learn_with_sample_weights():
    rng = np.random.default_rng(3)
    y = (rng.random(240) < 0.3).astype(int)
    s = np.round(rng.random(240) + 0.4 * y, 2)  # ties included
    weights = cluster_weights(np.arange(240) // 3, 40, seed=1)
    assert (weights.reshape(40, 80, 3) == weights.reshape(40, 80, 3)[:, :, :1]).all()  # whole patients
    ap, valid = average_precision(y, s, weights)
    assert valid.all()
    np.testing.assert_allclose(ap, [average_precision_score(y, s, sample_weight=w) for w in weights], atol=1e-12)
    for spec in (0.9, 0.95):
        sens, _ = weighted_sens_at_spec(y, s, weights, spec)
        expected = [sensitivity_at_specificity(np.repeat(y, w), np.repeat(s, w), spec) for w in weights]
        np.testing.assert_allclose(sens, expected, atol=1e-12)


def test_leaderboard_across_seeds(tmp_path):
    reports = {seed: build_report(make_bench(tmp_path / f"s{seed}", {"A": 1.5, "B": 0.5}, seed=seed),
                                  n_boot=N_BOOT, baseline="B", control=None) for seed in (0, 1, 2)}
    table = across_seeds(reports).set_index("method")
    per_seed = pd.DataFrame({s: r.table.set_index("method")["auc_mean"] for s, r in reports.items()})
    assert table.loc["A", "auc_mean"] == pytest.approx(per_seed.loc["A"].mean())
    assert table.loc["A", "auc_std"] == pytest.approx(per_seed.loc["A"].std(ddof=1))
    pooled = pd.DataFrame({s: r.table.set_index("method")["oof_auc"] for s, r in reports.items()})
    assert table.loc["B", "oof_auc_mean"] == pytest.approx(pooled.loc["B"].mean())
    assert list(table.index) == ["A", "B"] and (table["seeds"] == 3).all()


def test_cli_report_statistics_options(bench_with_control):
    from click.testing import CliRunner

    from ssl_bench.cli import main

    args = ["report", *map(str, bench_with_control), "--format", "csv", "--n-boot", "200"]
    mean = CliRunner().invoke(main, args)
    worst = CliRunner().invoke(main, args + ["--aggregate", "max"])
    assert mean.exit_code == 0 and worst.exit_code == 0, mean.output + worst.output
    a = pd.read_csv(pd.io.common.StringIO(mean.stdout)).query("source == 'ours'").set_index("method")
    b = pd.read_csv(pd.io.common.StringIO(worst.stdout)).query("source == 'ours'").set_index("method")
    assert (a["oof_auc"] == b["oof_auc"]).all() and not (a["patient_auc"] == b["patient_auc"]).all()
    assert {"auprc", "auprc_lo", "p_auc_holm", "beats_control", "degenerate"} <= set(a.columns)
    bad = CliRunner().invoke(main, args[:-2] + ["--n-boot", "10"])
    assert bad.exit_code == 2 and "--n-boot must be at least 100" in bad.output
    assert len(bad.output.strip().splitlines()) == 1


def test_training_curves_average_the_folds_histories(tmp_path):
    from ssl_bench.report.curves import mean_histories
    from ssl_bench.report.publish import write_leaderboard

    runs = make_bench(tmp_path / "runs", {"A": 1.5, "B": 0.5})
    assert "training_png" not in write_leaderboard(build_report(runs, n_boot=N_BOOT), tmp_path / "old")
    for k in range(5):  # fold k's bce falls from 1 + k to 0.5 + k
        pd.DataFrame({"stage": "finetune", "epoch": [1, 2], "bce": [1.0 + k, 0.5 + k], "lr": 1e-3,
                      "seconds": 0.1}).to_csv(runs[0] / "folds" / str(k) / "history.csv", index=False)
    report = build_report(runs, n_boot=N_BOOT)
    curves = mean_histories(report)
    assert list(curves) == ["A"]  # B has no history
    assert curves["A"]["bce"].tolist() == [3.0, 2.5]
    paths = write_leaderboard(report, tmp_path / "new")
    assert paths["training_png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths["training_svg"].is_file()
