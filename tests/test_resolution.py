"""Image size as a study axis: a bench file's ``image_sizes`` (or ``bench --image-size``) runs every
method at every size over the profile's, one run directory per method and size, and the report
draws the resolution curve (pooled AUC with its clustered CI per size) with its table, tested
against the baseline's curve at the same size. Plan and report are checked on fabricated run
directories; one tiny bench runs the whole path, then ``ssl-bench power`` on it."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from ssl_bench.bench.plan import load_plan
from ssl_bench.cli import main
from ssl_bench.components import run_name
from ssl_bench.errors import ConfigError
from ssl_bench.report.axes import IMAGE_SIZE, LABEL_FRACTION, has_curve
from ssl_bench.report.leaderboard import build_report
from ssl_bench.report.publish import write_leaderboard
from ssl_bench.report.stats import obuchowski_compare
from test_report import cohort, write_run

BENCH = """
baseline: kNN
methods:
  kNN: {pretext: none, transfer: knn, params: {knn: {k: 3}}}
  Linear: {pretext: none, transfer: linear, fixed: {data: {image_size: [128, 64]}}}
image_sizes: [[48, 24], [96, 48]]
"""


def plan_of(tmp_path, text, profile="smoke", **kwargs):
    path = tmp_path / "b.yaml"
    path.write_text(text)
    return load_plan(path, profile, **kwargs)


def test_plan_runs_every_method_at_every_size_over_the_profile(tmp_path):
    plan = plan_of(tmp_path, BENCH)
    assert [run_name(c) for c in plan.configs] == ["kNN-48x24", "kNN-96x48", "Linear-48x24", "Linear-96x48"]
    assert plan.methods == ["kNN-48x24", "kNN-96x48", "Linear-48x24", "Linear-96x48"]
    # the sizes replace the smoke profile's 64x32 and a method's fixed size alike
    assert [c.data.image_size for c in plan.configs] == [(48, 24), (96, 48)] * 2
    assert plan.baseline_run() == "kNN-48x24"  # the first size listed is the reference
    both = plan_of(tmp_path, BENCH + "label_fractions: [0.5, 1.0]\n", seeds=(0, 1))
    assert "kNN-seed1-96x48-f0.5" in [run_name(c) for c in both.configs]
    assert "kNN-96x48-f0.5" in both.methods and both.baseline_run(seed=1) == "kNN-48x24"
    flagged = plan_of(tmp_path, BENCH, image_sizes=((32, 16),))  # --image-size replaces the file's
    assert [run_name(c) for c in flagged.configs] == ["kNN-32x16", "Linear-32x16"]


def test_image_sizes_per_profile(tmp_path):
    text = BENCH.replace("image_sizes: [[48, 24], [96, 48]]",
                         "image_sizes: {paper: [[768, 384], [1536, 768]], smoke: ['32x16', '48x24']}")
    assert [c.data.image_size for c in plan_of(tmp_path, text).configs] == [(32, 16), (48, 24)] * 2
    assert run_name(plan_of(tmp_path, text, "paper").configs[1]) == "kNN-1536x768"
    with pytest.raises(ConfigError, match="image_sizes gives no sizes for the quick profile"):
        plan_of(tmp_path, text, "quick")


@pytest.mark.parametrize("sizes, message", [
    ("[[48, 24], [48, 24]]", "lists 48x24 twice"),
    ("[[48, 24.5]]", r"each size is a pair of whole numbers \[height, width\], got \[48, 24.5\]"),
    ("[[48]]", "each size is a pair of whole numbers"),
    ("[[48, 0]]", "each side must be 16 to 8192 pixels"),
    ("[]", "expected at least one image size"),
    ("48", "expected a list of"),
    ("{tiny: [[48, 24]]}", "image_sizes names unknown profile"),
])
def test_bad_image_sizes_are_one_line(tmp_path, sizes, message):
    with pytest.raises(ConfigError, match=message):
        plan_of(tmp_path, BENCH.replace("[[48, 24], [96, 48]]", sizes))


def test_a_set_image_size_would_contradict_the_run_names(tmp_path):
    with pytest.raises(ConfigError, match="data.image_size cannot be set too"):
        plan_of(tmp_path, BENCH, sets=("data.image_size=64x32",))
    result = CliRunner().invoke(main, ["bench", str(tmp_path / "b.yaml"), "--profile", "smoke", "--quiet", "--explain", "0",
                                       "--image-size", "64x32,64x32"])
    assert result.exit_code == 2 and "--image-size lists 64x32 twice" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output


# ---------------------------------------------------------------------------------------------
# the report, on fabricated runs: two methods at two sizes, and one at half the labels


STRENGTH = {("ResNet", "64x32"): 0.6, ("ResNet", "128x64"): 1.0, ("SimCLR", "64x32"): 0.9,
            ("SimCLR", "128x64"): 1.4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sizes")
    labels, patients, fold, rng = cohort()
    latent = rng.normal(size=len(labels))
    dirs = {}
    for (method, size), strength in [*STRENGTH.items(), (("ResNet", "128x64-f0.5"), 0.7)]:
        h, w = (int(v) for v in size.split("-")[0].split("x"))
        logit = strength * (2 * labels - 1) + 0.8 * latent + rng.normal(size=len(labels))
        data = {"image_size": (h, w), "label_fraction": 0.5 if "-f" in size else 1.0}
        dirs[f"{method}-{size}"] = write_run(root, f"{method}-{size}", labels, patients, fold,
                                             1 / (1 + np.exp(-logit)), data=data)
    return dirs


def pooled(run_dir):
    return pd.concat(pd.read_csv(p) for p in sorted(run_dir.glob("folds/*/predictions.csv"))).set_index("image_id")


def test_resolution_table_and_tests_against_the_baseline_at_each_size(runs, tmp_path):
    report = build_report(list(runs.values()), baseline="ResNet-64x32", n_boot=200)
    table = report.axes["resolution"]
    assert has_curve(table, IMAGE_SIZE)
    curve = table[table["method"].isin(["ResNet", "SimCLR"])]
    assert list(curve["method"]) == ["ResNet", "ResNet", "SimCLR", "SimCLR"]
    assert list(curve["image_size"]) == ["64x32", "128x64"] * 2  # by pixels per image, not as text
    assert set(table["method"]) == {"ResNet", "SimCLR", "ResNet-f0.5"}  # the half-label run: its own point
    for _, row in curve.iterrows():
        run = pooled(runs[f"{row['method']}-{row['image_size']}"])
        assert row["oof_auc"] == pytest.approx(100 * roc_auc_score(run["label"], run["score"]))
        assert row["oof_auc_lo"] < row["oof_auc"] < row["oof_auc_hi"]
        if row["method"] == "SimCLR":  # against the baseline's curve at the same size
            base = pooled(runs[f"ResNet-{row['image_size']}"]).loc[run.index]
            test = obuchowski_compare(base["label"], run["score"], base["score"], base["patient_id"].astype(str))
            assert row["auc_diff"] == pytest.approx(100 * test.diff) and row["p_auc"] == pytest.approx(test.p_value)
        else:
            assert np.isnan(row["auc_diff"])
    # the label fraction is an axis of its own: ResNet-128x64 at two fractions, one curve
    efficiency = report.axes["label_efficiency"]
    assert has_curve(efficiency, LABEL_FRACTION)
    assert list(efficiency.loc[efficiency["method"] == "ResNet-128x64", "label_fraction"]) == [0.5, 1.0]

    paths = write_leaderboard(report, tmp_path / "board")
    for key in ("resolution_png", "resolution_svg", "resolution_csv", "label_efficiency_png"):
        assert paths[key].is_file(), key
    written = pd.read_csv(paths["resolution_csv"])
    assert list(written["image_size"]) == list(table["image_size"])
    html, md = paths["html"].read_text(), paths["md"].read_text()
    assert "<h2>Resolution</h2>" in html and "Δ AUC vs ResNet (pts)" in html
    assert "## Resolution" in md and "(resolution.png)" in md
    one_size = build_report([runs["ResNet-64x32"], runs["SimCLR-64x32"]], n_boot=200)
    assert not has_curve(one_size.axes["resolution"], IMAGE_SIZE)  # one size: no curve, no section


def test_a_bench_with_two_sizes_draws_its_curve_and_plans_the_next_study(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text("methods:\n  kNN: {pretext: none, transfer: knn, params: {knn: {k: 3}}}\n"
                    "image_sizes: [[32, 16], [48, 24]]\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["bench", str(path), "--profile", "smoke", "--explain", "0", "--folds", "2", "--out", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"resolution: {out / 'resolution.png'}, {out / 'resolution.csv'}" in result.output
    table = pd.read_csv(out / "resolution.csv")
    assert list(table["method"]) == ["kNN", "kNN"] and list(table["image_size"]) == ["32x16", "48x24"]
    assert pd.read_csv(out / "kNN-32x16" / "folds.csv").equals(pd.read_csv(out / "kNN-48x24" / "folds.csv"))
    result = CliRunner().invoke(main, ["power", str(out), "--delta", "0.05"])
    assert result.exit_code == 0, result.output
    assert "Patients needed against kNN-32x16" in result.output and "kNN-48x24" in result.output


@pytest.mark.parametrize("profile, sizes", [("smoke", [(64, 32), (32, 16)]),
                                            ("quick", [(128, 64), (64, 32), (256, 128)]),
                                            ("paper", [(768, 384), (384, 192), (1536, 768)])])
def test_the_resolution_bench_plans_its_profiles_sizes(profile, sizes):
    plan = load_plan(Path(__file__).resolve().parents[1] / "benchmarks" / "resolution.yaml", profile)
    methods = ("ResNet", "SimCLR", "TSBN-U", "Non-spatial")
    assert [run_name(c) for c in plan.configs] == [f"{m}-{h}x{w}" for m in methods for h, w in sizes]
    assert [c.data.image_size for c in plan.configs] == sizes * len(methods)
    h, w = sizes[0]
    assert plan.baseline_run() == f"ResNet-{h}x{w}" and plan.control_run() == f"Non-spatial-{h}x{w}"
