"""A bench file's ``baseline``: the leaderboard tests every method against it and the
label-efficiency table tests each curve against the baseline's curve at the same fraction
(AUC difference on the same held-out images, Obuchowski's clustered test, Holm per fraction)."""

import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from ssl_bench.bench.plan import load_plan
from ssl_bench.cli import main
from ssl_bench.errors import ConfigError
from ssl_bench.report.stats import obuchowski_compare

BENCH = """
baseline: Raw-kNN
methods:
  Raw-kNN: {pretext: none, transfer: knn, params: {knn: {k: 3}}}
  Wide-kNN: {pretext: none, transfer: knn, params: {knn: {k: 9}}}
  Raw-linear: {pretext: none, transfer: linear}
label_fractions: [0.5, 1.0]
"""
OTHERS = ("Wide-kNN", "Raw-linear")


@pytest.fixture(scope="module")
def bench_out(smoke_bench):
    return smoke_bench(BENCH, "baseline")


def pooled(run_dir):
    return pd.concat(pd.read_csv(p) for p in sorted(run_dir.glob("folds/*/predictions.csv")))


def test_each_curve_is_tested_against_the_baseline_at_its_fraction(bench_out):
    table = pd.read_csv(bench_out / "label_efficiency.csv")
    assert set(table["method"]) == {"Raw-kNN", *OTHERS}
    base_rows = table[table["method"] == "Raw-kNN"]
    assert base_rows[["auc_diff", "p_auc", "p_auc_holm"]].isna().all().all()  # the baseline's own rows
    for fraction, suffix in ((0.5, "-f0.5"), (1.0, "")):
        base = pooled(bench_out / f"Raw-kNN{suffix}").set_index("image_id")
        raw = []
        for name in OTHERS:
            other = pooled(bench_out / f"{name}{suffix}").set_index("image_id").loc[base.index]
            row = table[(table["method"] == name) & (table["label_fraction"] == fraction)].iloc[0]
            expected = roc_auc_score(base["label"], other["score"]) - roc_auc_score(base["label"], base["score"])
            assert row["auc_diff"] == pytest.approx(100 * expected, abs=1e-6)  # percent points
            test = obuchowski_compare(base["label"].to_numpy(), other["score"].to_numpy(),
                                      base["score"].to_numpy(), base["patient_id"].astype(str).to_numpy())
            assert row["p_auc"] == pytest.approx(test.p_value, abs=5e-7)  # the CSV keeps 6 decimals
            raw.append(row)
        # Holm over the two methods compared at this fraction: min(1, 2 p) for the smaller p, and
        # the larger p never below it
        small, large = sorted(raw, key=lambda r: r["p_auc"])
        assert small["p_auc_holm"] == pytest.approx(min(1.0, 2 * small["p_auc"]), abs=2e-6)
        assert large["p_auc_holm"] == pytest.approx(max(small["p_auc_holm"], large["p_auc"]), abs=1e-6)


def test_leaderboard_uses_the_files_baseline(bench_out):
    md = (bench_out / "leaderboard.md").read_text()
    assert "p AUC vs Raw-kNN" in md  # the leaderboard's p-values, against the full-label baseline run
    assert "Δ AUC vs Raw-kNN (pts)" in md  # the efficiency table's column
    html = (bench_out / "leaderboard.html").read_text()
    assert "Δ AUC vs Raw-kNN (pts)" in html


def test_baseline_must_be_a_method_and_anchors_at_the_largest_fraction(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(BENCH.replace("[0.5, 1.0]", "[0.25, 0.5]"))
    plan = load_plan(path, "smoke")
    assert plan.baseline_run() == "Raw-kNN-f0.5"
    assert load_plan(path, "smoke", only=("Wide-kNN",)).baseline_run() is None  # --only left it out
    path.write_text(BENCH.replace("baseline: Raw-kNN", "baseline: ResNet"))
    with pytest.raises(ConfigError, match="baseline 'ResNet' is not one of its methods"):
        load_plan(path, "smoke")




def test_a_baseline_list_falls_back_in_order_and_says_why(tmp_path):
    """The label-efficiency bench's first baseline needs ImageNet weights: left out by --only or
    failed offline, the next one that finished is tested against, and one line says so."""
    path = tmp_path / "b.yaml"
    path.write_text(BENCH.replace("baseline: Raw-kNN", "baseline: [Raw-kNN, Wide-kNN]"))
    plan = load_plan(path, "smoke")
    assert plan.baseline_run() == "Raw-kNN" and plan.baseline_note() is None  # the first choice ran
    failed = lambda cfg: cfg.method != "Raw-kNN"  # noqa: E731  its jobs failed (e.g. no weights)
    assert plan.baseline_run(finished=failed) == "Wide-kNN"
    assert plan.baseline_note(finished=failed) == (
        "baseline: Raw-kNN did not finish; the others are tested against Wide-kNN instead")
    only = load_plan(path, "smoke", only=("Wide-kNN", "Raw-linear"))
    assert only.baseline_run() == "Wide-kNN"
    assert "Raw-kNN was left out by --only" in only.baseline_note()
    none = load_plan(path, "smoke", only=("Raw-linear",))
    assert none.baseline_run() is None
    assert "no p-values" in none.baseline_note() and "--baseline METHOD" in none.baseline_note()


def test_baseline_option_replaces_the_files_choice(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(BENCH)
    assert load_plan(path, "smoke", baseline="Raw-linear").baseline_run() == "Raw-linear"
    with pytest.raises(ConfigError, match="--baseline Raw-knn: no such method.*Did you mean 'Raw-kNN'"):
        load_plan(path, "smoke", baseline="Raw-knn")
    path.write_text(BENCH.replace("baseline: Raw-kNN", "baseline: [Raw-kNN, ResNet]"))
    with pytest.raises(ConfigError, match="baseline 'ResNet' is not one of its methods"):
        load_plan(path, "smoke")


def test_bench_says_in_one_line_which_baseline_it_tests_against(tmp_path):
    """``--only`` without the first baseline: the bench names the fallback and the leaderboard's
    p-values are against it (before, the baseline vanished silently and the tables had none)."""
    path = tmp_path / "b.yaml"
    path.write_text(BENCH.replace("baseline: Raw-kNN", "baseline: [Raw-kNN, Wide-kNN]")
                    .replace("[0.5, 1.0]", "[1.0]"))
    result = CliRunner().invoke(main, ["bench", str(path), "--profile", "smoke", "--folds", "2", "--quiet", "--explain", "0",
                                       "--out", str(tmp_path / "out"), "--only", "Wide-kNN", "--only", "Raw-linear"])
    assert result.exit_code == 0, result.output
    assert "baseline: Raw-kNN was left out by --only; the others are tested against Wide-kNN instead" in result.output
    assert "p AUC vs Wide-kNN" in (tmp_path / "out" / "leaderboard.md").read_text()
