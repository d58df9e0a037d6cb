"""Label fractions across a bench: the plan expands them like seeds, and the report draws the
label-efficiency curve (pooled AUC with its clustered CI per fraction) and its table."""
import pandas as pd
import pytest
from click.testing import CliRunner

from ssl_bench.bench.plan import load_plan
from ssl_bench.cli import main
from ssl_bench.components import run_name
from ssl_bench.errors import ConfigError
from ssl_bench.report.axes import LABEL_FRACTION, has_curve
from ssl_bench.report.leaderboard import build_report

BENCH = """
methods:
  kNN: {pretext: none, transfer: knn, params: {knn: {k: 3}}}
label_fractions: [0.25, 0.5, 1.0]
"""


def test_plan_expands_fractions(tmp_path):
    path = tmp_path / "b.yaml"
    path.write_text(BENCH)
    plan = load_plan(path, "smoke")
    assert [run_name(c) for c in plan.configs] == ["kNN-f0.25", "kNN-f0.5", "kNN"]
    assert [c.data.label_fraction for c in plan.configs] == [0.25, 0.5, 1.0]
    assert plan.methods == ["kNN-f0.25", "kNN-f0.5", "kNN"]
    flagged = load_plan(path, "smoke", fractions=(0.1,), seeds=(0, 1))  # the flag replaces the file's
    assert [run_name(c) for c in flagged.configs] == ["kNN-seed0-f0.1", "kNN-seed1-f0.1"]
    path.write_text(BENCH.replace("[0.25, 0.5, 1.0]", "[0.5, 2]"))
    with pytest.raises(ConfigError, match="label_fractions"):
        load_plan(path, "smoke")


@pytest.fixture(scope="module")
def bench_out(smoke_bench):
    return smoke_bench(BENCH, "fractions")


def test_bench_writes_curve_and_table(bench_out):
    for name in ("label_efficiency.png", "label_efficiency.svg", "label_efficiency.csv"):
        assert (bench_out / name).is_file(), name
    table = pd.read_csv(bench_out / "label_efficiency.csv")
    assert list(table["method"]) == ["kNN"] * 3 and list(table["label_fraction"]) == [0.25, 0.5, 1.0]
    assert (table["n_train_images"].diff().dropna() > 0).all()
    assert (table["oof_auc_lo"] <= table["oof_auc"]).all() and (table["oof_auc"] <= table["oof_auc_hi"]).all()
    html = (bench_out / "leaderboard.html").read_text()
    assert "<h2>Label efficiency</h2>" in html and html.count("data:image/png;base64,") >= 2
    md = (bench_out / "leaderboard.md").read_text()
    assert "## Label efficiency" in md and "(label_efficiency.png)" in md


def test_held_out_folds_identical_across_fractions(bench_out):
    folds = [pd.read_csv(bench_out / name / "folds.csv") for name in ("kNN-f0.25", "kNN-f0.5", "kNN")]
    assert folds[0].equals(folds[1]) and folds[0].equals(folds[2])
    report = build_report([bench_out / n for n in ("kNN-f0.25", "kNN-f0.5", "kNN")], n_boot=200)
    assert has_curve(report.axes["label_efficiency"], LABEL_FRACTION)
    pooled = report.table.set_index("run")["oof_auc"]
    for _, row in report.axes["label_efficiency"].iterrows():  # the curve's points are the leaderboard's pooled AUCs
        assert row["oof_auc"] == pooled[row["run"]]


def test_report_md_writes_the_curve_beside(bench_out, tmp_path):
    target = tmp_path / "r.md"
    result = CliRunner().invoke(main, ["report", *(str(bench_out / n) for n in ("kNN-f0.25", "kNN")),
                                       "--out", str(target), "--n-boot", "200"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r_label_efficiency.png").is_file()
    one = build_report([bench_out / "kNN"], n_boot=200)
    assert not has_curve(one.axes["label_efficiency"], LABEL_FRACTION)  # one fraction: no curve, no section
