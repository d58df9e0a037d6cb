"""``ssl-bench power``: the patients a study needs to show an AUC difference (or non-inferiority)
between two methods, from finished runs' patient-clustered variance components.

Checked three ways: the sample-size formula against hand arithmetic on fixed numbers; the
variance components against Obuchowski's formulas written as loops (tests/test_clustered_stats.py);
and simulated studies of the size it plans, whose rejection rate under the leaderboard's clustered
test must be the power asked for. The command runs on fabricated run directories.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from scipy import stats

from ssl_bench.cli import main
from ssl_bench.report.power import patients_needed, power_at, variance_components
from ssl_bench.report.stats import obuchowski_compare, obuchowski_covariance
from test_clustered_stats import obuchowski_by_hand, simulate_patients
from test_report import cohort, make_bench, write_run

Z_975, Z_95, Z_80, Z_90 = 1.959963984540054, 1.6448536269514722, 0.8416212335729143, 1.2815515655446004


def test_sample_size_by_hand():
    """s_a^2 = 0.09, s_b^2 = 0.10, r = 0.5: s_d^2 = 0.19 - 2 x 0.5 x 0.3 x sqrt(0.1) = 0.0951317;
    to detect 0.05 at alpha 0.05 with power 0.8: 0.0951317 x (1.959964 + 0.841621)^2 / 0.05^2 =
    298.67, so 299 patients; with power 0.9, (1.959964 + 1.281552)^2: 399.9 -> 400. Non-inferiority
    within 0.05, true difference 0: (1.644854 + 0.841621)^2 -> 235.3 -> 236; true difference 0.02:
    / 0.07^2 -> 120.0 -> 121."""
    var_diff = 0.09 + 0.10 - 2 * 0.5 * math.sqrt(0.09 * 0.10)
    assert var_diff == pytest.approx(0.0951317, abs=1e-7)
    assert var_diff * (Z_975 + Z_80) ** 2 / 0.05 ** 2 == pytest.approx(298.67, abs=0.01)
    assert patients_needed(var_diff, 0.05) == 299
    assert patients_needed(var_diff, 0.05, power=0.9) == math.ceil(var_diff * (Z_975 + Z_90) ** 2 / 0.05 ** 2) == 400
    assert patients_needed(var_diff, 0.0, margin=0.05) == math.ceil(var_diff * (Z_95 + Z_80) ** 2 / 0.05 ** 2) == 236
    assert patients_needed(var_diff, 0.02, margin=0.05) == math.ceil(var_diff * (Z_95 + Z_80) ** 2 / 0.07 ** 2) == 121
    # the power of a study: at the planned size at least the power asked for, one patient fewer below it
    assert power_at(var_diff, 299, 0.05) >= 0.8 > power_at(var_diff, 298, 0.05)
    assert power_at(var_diff, 100, 0.05) == pytest.approx(stats.norm.cdf(0.05 * math.sqrt(100 / var_diff) - Z_975))
    assert power_at(var_diff, 236, 0.0, margin=0.05) >= 0.8 > power_at(var_diff, 235, 0.0, margin=0.05)
    # a size that is a whole number in exact arithmetic is not rounded up by floating point
    exact = 0.05 ** 2 / (Z_975 + Z_80) ** 2 * 300
    assert patients_needed(exact, 0.05) == 300


def test_components_are_the_clustered_covariance_per_patient():
    """The per-patient components are Obuchowski's clustered (co)variances (as loops over patients,
    independent of the vectorised code) times the number of patients."""
    y, a, b, pid = simulate_patients(np.random.default_rng(3), n_patients=30)
    c = variance_components(y, a, b, pid)
    aucs, cov = obuchowski_by_hand(y, np.vstack([a, b]), pid)
    assert (c.auc, c.auc_reference) == pytest.approx(tuple(aucs), abs=1e-12)
    assert (c.var, c.var_reference, c.cov) == pytest.approx((30 * cov[0, 0], 30 * cov[1, 1], 30 * cov[0, 1]), rel=1e-9)
    assert c.var_diff == pytest.approx(30 * (cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), rel=1e-9)
    assert c.correlation == pytest.approx(cov[0, 1] / math.sqrt(cov[0, 0] * cov[1, 1]))
    assert (c.n_patients, c.n_images, c.n_malignant_patients) == (30, len(y), len(np.unique(pid[y == 1])))


def test_simulated_studies_of_the_planned_size_have_the_power():
    """Binormal scores of two methods with patient effects (test_clustered_stats.simulate_patients:
    labels per patient, 2-4 images each, correlated methods): AUCs Phi(1/2) and Phi(0.3), a true
    difference of 0.0736. A pilot of 20000 patients gives the components; the planned study (444
    patients) is simulated 600 times and the leaderboard's clustered test (Obuchowski) rejects in
    0.813 of them (measured; 0.798 over 1000 other seeds; the binomial SE at 600 is 0.016, the
    tolerance 3 of them). Non-inferiority within 0.05 of two equal methods (748 patients): the
    clustered one-sided test shows it in 0.788 of 400 studies (measured; SE 0.020)."""
    truth = stats.norm.cdf(0.5) - stats.norm.cdf(0.3)
    pilot = variance_components(*simulate_patients(np.random.default_rng(0), n_patients=20000))
    n = patients_needed(pilot.var_diff, truth)
    assert 350 < n < 550
    rejected = 0
    for i in range(600):
        test = obuchowski_compare(*simulate_patients(np.random.default_rng(1000 + i), n_patients=n))
        rejected += test.p_value < 0.05 and test.diff > 0
    assert rejected / 600 == pytest.approx(0.8, abs=0.05)

    equal = dict(effect_a=0.8, effect_b=0.8)
    pilot = variance_components(*simulate_patients(np.random.default_rng(1), n_patients=20000, **equal))
    n = patients_needed(pilot.var_diff, 0.0, margin=0.05)
    shown = 0
    for i in range(400):
        test = obuchowski_compare(*simulate_patients(np.random.default_rng(5000 + i), n_patients=n, **equal))
        shown += (test.diff + 0.05) / test.se > Z_95
    assert shown / 400 == pytest.approx(0.8, abs=0.06)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return make_bench(tmp_path_factory.mktemp("pilot"), {"ResNet": 0.9, "SimCLR": 1.3, "TSBN-U": 1.7})


def expected_patients(reference, run, delta, power=0.8, alpha=0.05):
    """From the runs' predictions.csv: I x (V_a + V_b - 2 V_ab) of Obuchowski's covariance, then the formula."""
    a = pd.concat(pd.read_csv(p) for p in sorted(run.glob("folds/*/predictions.csv"))).set_index("image_id")
    b = pd.concat(pd.read_csv(p) for p in sorted(reference.glob("folds/*/predictions.csv"))).set_index("image_id")
    b = b.loc[a.index]
    _, cov = obuchowski_covariance(a["label"], a["patient_id"], a["score"], b["score"])
    var_diff = a["patient_id"].nunique() * (cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    z = stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)
    return math.ceil(var_diff * z ** 2 / delta ** 2)


def test_cli_prints_patients_needed(runs, tmp_path):
    resnet, simclr, tsbn = runs
    out = tmp_path / "power.csv"
    result = CliRunner().invoke(main, ["power", str(resnet), str(simclr), str(tsbn), "--delta", "0.05",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "Patients needed against ResNet" in result.output
    table = pd.read_csv(out).set_index("method")
    for name, run in (("SimCLR", simclr), ("TSBN-U", tsbn)):
        n = expected_patients(resnet, run, 0.05)
        assert table.loc[name, "patients"] == n and str(n) in result.output
        assert table.loc[name, "pilot_patients"] == 50
    # --baseline picks the reference; non-inferiority needs no --delta
    result = CliRunner().invoke(main, ["power", str(resnet), str(tsbn), "--baseline", "TSBN-U", "--margin", "0.05"])
    assert result.exit_code == 0, result.output
    assert "Patients needed against TSBN-U: non-inferiority within 0.05" in result.output


def test_cli_user_errors_are_one_line(runs, tmp_path):
    resnet, simclr, _ = runs
    labels, patients, fold, rng = cohort()
    elsewhere = write_run(tmp_path, "Elsewhere", labels, patients, fold, rng.random(len(labels)),
                          ids=np.array([f"other{j:04d}" for j in range(len(labels))]))
    cases = [
        ([str(resnet), "--delta", "0.05"], "needs two runs on the same patients"),
        ([str(resnet), str(elsewhere), "--delta", "0.05"], "are not runs on the same patients"),
        ([str(resnet), str(simclr), "--delta", "0"], "--delta is an AUC difference between 0 and 1"),
        ([str(resnet), str(simclr), "--delta", "-0.02"], "--delta is an AUC difference between 0 and 1"),
        ([str(resnet), str(simclr), "--delta", "2"], "--delta is an AUC difference between 0 and 1"),
        ([str(resnet), str(simclr)], "give --delta"),
        ([str(resnet), str(simclr), "--delta", "0.05", "--power", "1.2"], "--power must be between 0 and 1"),
        ([str(resnet), str(simclr), "--delta", "0.05", "--baseline", "Nope"], "--baseline Nope: no such run"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(main, ["power", *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output
