"""Subgroup results (issue: view, laterality, density, lesion type, manufacturer): the clustered
covariance of subgroup AUCs against a patient bootstrap, the heterogeneity test's level and power by
simulation, the subgroup variables the loaders and the phantom record, and the report's section
recomputed with scikit-learn from a real smoke run's files."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image
from scipy import stats
from sklearn.metrics import roc_auc_score

from ssl_bench.cli import main
from ssl_bench.data import synthetic_mammo
from ssl_bench.data.manifest import Manifest
from ssl_bench.data.subgroups import acr_density
from ssl_bench.report.leaderboard import build_report
from ssl_bench.report.publish import write_leaderboard
from ssl_bench.report.stats import clustered_auc_variance, heterogeneity_test, subgroup_auc_covariance


def two_view_cohort(rng, n_patients: int, shift_mlo: float = 0.0):
    """Each patient: one breast in CC and MLO, one label, a patient effect both views share (so
    the two view AUCs are correlated through the patients); MLO scores shifted by ``shift_mlo``
    for malignant images (a real difference between the views)."""
    label = rng.random(n_patients) < 0.35
    patient_effect = rng.normal(size=n_patients)
    y = np.repeat(label, 2).astype(int)
    view = np.tile(["CC", "MLO"], n_patients)
    clusters = np.repeat(np.arange(n_patients), 2)
    s = 1.0 * y + 0.9 * patient_effect[clusters] + rng.normal(size=y.size)
    s = s + shift_mlo * y * (view == "MLO")
    return y, s, clusters, view


def test_cross_covariance_of_two_views_matches_a_patient_bootstrap():
    rng = np.random.default_rng(0)
    y, s, clusters, view = two_view_cohort(rng, 400)
    values, aucs, cov = subgroup_auc_covariance(y, s, clusters, view)
    assert list(values) == ["CC", "MLO"]
    for i, v in enumerate(values):
        member = view == v
        assert aucs[i] == pytest.approx(roc_auc_score(y[member], s[member]), abs=1e-12)
        assert cov[i, i] == pytest.approx(clustered_auc_variance(y[member], s[member], clusters[member])[1], rel=1e-12)
    # the patient bootstrap: resample patients (both their views), recompute both view AUCs
    n = clusters.max() + 1
    cc, mlo = np.flatnonzero(view == "CC"), np.flatnonzero(view == "MLO")  # row i of each is patient i
    def mann_whitney(labels, scores):  # the AUC from the positives' rank sum (ties: midranks)
        ranks = stats.rankdata(scores)
        m = labels.sum()
        return (ranks[labels == 1].sum() - m * (m + 1) / 2) / (m * (labels.size - m))

    boot = []
    for _ in range(1500):
        pick = rng.integers(0, n, n)
        boot.append([mann_whitney(y[cc][pick], s[cc][pick]), mann_whitney(y[mlo][pick], s[mlo][pick])])
    reference = np.cov(np.asarray(boot).T)
    assert cov[0, 1] > 0.3 * np.sqrt(cov[0, 0] * cov[1, 1])  # strongly correlated, as built
    assert cov[0, 1] == pytest.approx(reference[0, 1], rel=0.15)
    # the variance of the difference, which the heterogeneity test divides by
    assert cov[0, 0] + cov[1, 1] - 2 * cov[0, 1] == pytest.approx(
        reference[0, 0] + reference[1, 1] - 2 * reference[0, 1], rel=0.2)


def test_subgroups_without_a_common_patient_are_uncorrelated():
    rng = np.random.default_rng(1)
    y, s, clusters, _ = two_view_cohort(rng, 200)
    density = np.where(clusters % 3 == 0, "A", np.where(clusters % 3 == 1, "B", "C"))  # one per patient
    _, _, cov = subgroup_auc_covariance(y, s, clusters, density)
    assert cov.shape == (3, 3)
    assert np.count_nonzero(cov - np.diag(np.diag(cov))) == 0


def test_a_one_class_subgroup_has_no_auc_and_stays_out():
    y = np.array([0, 1, 0, 1, 0, 0, 1, 0, 0, 0])
    s = np.arange(10.0)
    clusters = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    groups = np.array(["a"] * 7 + ["benign only"] * 3)
    values, aucs, cov = subgroup_auc_covariance(y, s, clusters, groups)
    assert list(values) == ["a"] and cov.shape == (1, 1)
    q, df, p = heterogeneity_test(aucs, cov)
    assert np.isnan(q) and df == 0 and np.isnan(p)


def test_two_subgroups_give_the_squared_z_of_their_difference_and_any_contrasts_the_same_q():
    aucs = np.array([0.81, 0.74])
    cov = np.array([[0.0016, 0.0007], [0.0007, 0.0019]])
    q, df, p = heterogeneity_test(aucs, cov)
    z = (aucs[0] - aucs[1]) / np.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1])
    assert (q, df) == (pytest.approx(z ** 2, rel=1e-12), 1)
    assert p == pytest.approx(2 * stats.norm.sf(abs(z)), rel=1e-9)
    three = np.array([0.81, 0.74, 0.70])
    cov3 = np.array([[0.0016, 0.0007, 0.0], [0.0007, 0.0019, 0.0], [0.0, 0.0, 0.0025]])
    q3, df3, _ = heterogeneity_test(three, cov3)
    other = np.array([[1, -1, 0], [0, 1, -1]], dtype=float)  # successive differences instead
    d = other @ three
    assert df3 == 2 and q3 == pytest.approx(float(d @ np.linalg.inv(other @ cov3 @ other.T) @ d), rel=1e-10)


def test_heterogeneity_test_holds_its_level_and_finds_a_real_difference():
    rng = np.random.default_rng(7)

    def rejections(shift: float, sims: int) -> float:
        hits = 0
        for _ in range(sims):
            y, s, clusters, view = two_view_cohort(rng, 150, shift)
            _, aucs, cov = subgroup_auc_covariance(y, s, clusters, view)
            hits += heterogeneity_test(aucs, cov)[2] < 0.05
        return hits / sims

    null = rejections(0.0, 400)
    # 400 draws: a true rate of 5% falls in [2.5%, 8%] with probability > 0.99
    assert 0.025 <= null <= 0.08, null
    assert rejections(1.2, 100) >= 0.8


@pytest.mark.parametrize("value, letter", [(1, "A"), ("2", "B"), (3.0, "C"), ("4.0", "D"), ("DENSITY A", "A"),
                                           ("density d", "D"), ("c", "C"), ("", ""), ("  ", ""), (None, ""),
                                           (float("nan"), ""), ("5", ""), ("dense", "")])
def test_acr_density_spellings(value, letter):
    assert acr_density(value) == letter


def test_the_phantom_records_density_and_lesion_type_as_drawn():
    table, render = synthetic_mammo.generate_lazily(image_size=(64, 32), n_patients=40, n_benign=80,
                                                    n_malignant=30, seed=3)
    assert set(table["density"]) <= {"A", "B", "C", "D"} and table.groupby("patient_id")["density"].nunique().max() == 1
    # denser breasts are drawn with more (brighter) glandular tissue: the mean breast intensity of
    # the images rises with the recorded category
    brightness = pd.Series([render(i)[render(i) > 0.05].mean() for i in range(len(table))])
    by_category = brightness.groupby(table["density"]).mean()
    assert by_category.is_monotonic_increasing, by_category
    kinds = table.groupby("lesion_type")["label"].agg(["min", "max"])
    assert set(kinds.index) <= {"mass", "calcification", "mass+calcification", "distortion", "none"}
    assert kinds.loc["none", "max"] == 0  # a breast without a finding is benign
    masses = table[table["finding"].str.endswith("_mass")]
    assert (masses["lesion_type"] == "mass").all()
    assert (table.loc[table["finding"].str.contains(r"\+calcs"), "lesion_type"] == "mass+calcification").all()


@pytest.fixture(scope="module")
def phantom_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("subgroups")
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--folds", "2", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    return out / "none-finetune"


def test_a_run_records_its_images_subgroups_and_the_report_recomputes_them(phantom_run, tmp_path):
    recorded = pd.read_csv(phantom_run / "subgroups.csv", dtype=str, keep_default_na=False)
    cohort = yaml.safe_load((phantom_run / "config.yaml").read_text())["params"]["synthetic"]
    table, _ = synthetic_mammo.generate_lazily(image_size=(64, 32), n_patients=cohort["n_patients"],
                                               n_benign=cohort["n_benign"], n_malignant=cohort["n_malignant"],
                                               seed=cohort.get("seed", 0))
    assert list(recorded.columns) == ["image_id", "view", "laterality", "density", "lesion_type"]
    truth = table.set_index("image_id").loc[recorded["image_id"]]
    for column in ("view", "laterality", "density", "lesion_type"):
        assert list(recorded[column]) == list(truth[column]), column

    report = build_report([phantom_run])
    assert report.subgroups is not None
    predictions = pd.concat([pd.read_csv(p, dtype={"image_id": str})
                             for p in sorted(phantom_run.glob("folds/*/predictions.csv"))])
    data = predictions.drop(columns="laterality").merge(recorded, on="image_id")
    assert set(report.subgroups["variable"]) == {"view", "laterality", "density", "lesion_type"}
    for row in report.subgroups.itertuples():
        rows = data[data[row.variable] == row.subgroup]
        assert (row.n_images, row.n_malignant, row.n_patients) == (len(rows), rows["label"].sum(),
                                                                   rows["patient_id"].nunique())
        if rows["label"].nunique() == 2:
            assert row.auc == pytest.approx(100 * roc_auc_score(rows["label"], rows["score"]), abs=1e-9)
        else:
            assert np.isnan(row.auc)
    written = write_leaderboard(report, tmp_path / "board")
    assert pd.read_csv(written["subgroups_csv"]).shape[0] == len(report.subgroups)
    md = written["md"].read_text()
    for heading in ("## Subgroups", "### View", "### Laterality", "### Breast density (ACR)", "### Lesion type"):
        assert heading in md
    assert "<h2>Subgroups</h2>" in written["html"].read_text()


def test_a_run_before_subgroups_reports_without_the_section(phantom_run, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(phantom_run, old)
    (old / "subgroups.csv").unlink()
    report = build_report([old])
    assert report.subgroups is None
    assert "Subgroups" not in write_leaderboard(report, tmp_path / "board")["md"].read_text()


def test_a_manifest_carries_the_subgroup_columns_it_has(tmp_path):
    for name in ("a.png", "b.png"):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / name)
    (tmp_path / "with.csv").write_text("path,label,density,lesion_type\na.png,0,2,Mass\nb.png,1,DENSITY D,\n")
    (tmp_path / "without.csv").write_text("path,label\na.png,0\nb.png,1\n")
    with_columns, _ = Manifest(csv=str(tmp_path / "with.csv"), image_size=(8, 8), cache_dir=str(tmp_path)).scan()
    assert list(with_columns["density"]) == ["B", "D"] and list(with_columns["lesion_type"]) == ["mass", ""]
    assert "manufacturer" not in with_columns
    without, _ = Manifest(csv=str(tmp_path / "without.csv"), image_size=(8, 8), cache_dir=str(tmp_path)).scan()
    assert not {"density", "lesion_type", "manufacturer"} & set(without.columns)
