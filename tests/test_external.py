"""External validation (benchmarks/external.yaml): the bench's runs on generated CBIS-DDSM,
VinDr-Mammo and INbreast trees, the external table against the runs' predictions, the drop's
interval against a simulation and a patient bootstrap, and the study's refusals."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from scipy import stats
from sklearn.metrics import roc_auc_score

from ssl_bench.bench.plan import load_plan
from ssl_bench.cli import main
from ssl_bench.data.cbis_ddsm_writer import write_cbis_ddsm_tree
from ssl_bench.data.inbreast_writer import write_inbreast_tree
from ssl_bench.data.synthetic_mammo import generate
from ssl_bench.data.vindr_writer import write_vindr_tree
from ssl_bench.errors import ConfigError
from ssl_bench.report.leaderboard import build_report
from ssl_bench.report.stats import independent_auc_compare

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "external.yaml"
Q = stats.norm.ppf(0.975)


# --------------------------------------------------------------------------- the drop's interval


def _clustered_sample(rng: np.random.Generator, n_patients: int, separation: float):
    """Two images per patient sharing the patient's label and a patient effect (correlated scores)."""
    labels = np.repeat(rng.random(n_patients) < 0.4, 2).astype(int)
    labels[:4] = [1, 1, 0, 0]  # both classes, whatever the draw
    effect = np.repeat(rng.normal(0, 1, n_patients), 2)
    scores = separation * labels + effect + rng.normal(0, 0.7, 2 * n_patients)
    return labels, scores, np.repeat(np.arange(n_patients), 2).astype(str)


def test_drop_interval_formula_simulation_and_bootstrap():
    rng = np.random.default_rng(0)
    internal, external = _clustered_sample(rng, 120, 1.2), _clustered_sample(rng, 80, 0.6)
    result = independent_auc_compare(*internal, *external)
    # the point estimate: scikit-learn's AUCs
    drop = roc_auc_score(internal[0], internal[1]) - roc_auc_score(external[0], external[1])
    assert result.diff == pytest.approx(drop, abs=1e-12)
    # the formula written out: Wald interval and two-sided p from the standard error
    assert result.ci_low == pytest.approx(drop - Q * result.se, abs=1e-12)
    assert result.ci_high == pytest.approx(drop + Q * result.se, abs=1e-12)
    assert result.p_value == pytest.approx(2 * stats.norm.sf(abs(drop) / result.se), abs=1e-12)
    assert result.n_clusters == 200

    # the standard error against the spread of the drop over independent replicates of both cohorts
    drops, ses = [], []
    for _ in range(300):
        a, b = _clustered_sample(rng, 120, 1.2), _clustered_sample(rng, 80, 0.6)
        drops.append(roc_auc_score(a[0], a[1]) - roc_auc_score(b[0], b[1]))
        ses.append(independent_auc_compare(*a, *b).se)
    assert np.mean(ses) == pytest.approx(np.std(drops, ddof=1), rel=0.15)

    # and against a bootstrap over patients, each cohort resampled on its own
    def resample(sample):
        y, s, patients = sample
        ids = np.unique(patients)
        chosen = rng.choice(ids, ids.size)
        rows = np.concatenate([np.flatnonzero(patients == p) for p in chosen])
        return y[rows], s[rows]

    boot = []
    for _ in range(400):
        (ya, sa), (yb, sb) = resample(internal), resample(external)
        if len(np.unique(ya)) == 2 and len(np.unique(yb)) == 2:
            boot.append(roc_auc_score(ya, sa) - roc_auc_score(yb, sb))
    assert result.se == pytest.approx(np.std(boot, ddof=1), rel=0.15)


# ------------------------------------------------------------------------------------ the plan


@pytest.fixture()
def roots(tmp_path):
    out = {}
    for name in ("CBIS-DDSM", "VinDr-Mammo", "INbreast"):
        out[name] = str(tmp_path / name)
        Path(out[name]).mkdir()
    return out


def test_plan_declares_internal_and_external_runs(roots):
    plan = load_plan(BENCH, "smoke", {"out": "x"}, cohort_roots=roots)
    names = [c.name for c in plan.configs]
    assert names == [
        "ResNet-CBIS-DDSM-cv",
        "ResNet-CBIS-DDSM-to-INbreast",
        "ResNet-VinDr-Mammo-cv",
        "ResNet-VinDr-Mammo-to-INbreast",
        "SimCLR-CBIS-DDSM-cv",
        "SimCLR-CBIS-DDSM-to-INbreast",
        "SimCLR-VinDr-Mammo-cv",
        "SimCLR-VinDr-Mammo-to-INbreast",
    ]
    by_name = {c.name: c for c in plan.configs}
    cv, ext = by_name["ResNet-CBIS-DDSM-cv"], by_name["ResNet-CBIS-DDSM-to-INbreast"]
    assert (cv.data.dataset, cv.data.folds, cv.data.split, cv.data.test_dataset) == ("cbis_ddsm", 5, "patient", None)
    assert cv.params["cbis_ddsm"] == {"split": "train"} and cv.data.root == roots["CBIS-DDSM"]
    assert (ext.data.dataset, ext.data.folds, ext.data.test_dataset) == ("cbis_ddsm", 1, "inbreast")
    assert ext.data.test_root == roots["INbreast"] and ext.params["cbis_ddsm"] == {"split": "train"}
    assert by_name["ResNet-VinDr-Mammo-cv"].params["vindr_mammo"] == {"split": "training"}
    # each run records its cohorts, each cross-validation its method: the labels the report reads
    assert (cv.method, cv.data.cohort, cv.data.test_cohort) == ("ResNet", "CBIS-DDSM", None)
    assert (ext.data.cohort, ext.data.test_cohort) == ("CBIS-DDSM", "INbreast")
    assert by_name["ResNet-VinDr-Mammo-cv"].method == "ResNet"
    # the pairs are declared; the leaderboard ranks the first cohort's cross-validations only
    assert [(p.row, p.train, p.test, p.internal.name, p.external.name) for p in plan.external.pairs][:2] == [
        ("ResNet", "CBIS-DDSM", "INbreast", "ResNet-CBIS-DDSM-cv", "ResNet-CBIS-DDSM-to-INbreast"),
        ("ResNet", "VinDr-Mammo", "INbreast", "ResNet-VinDr-Mammo-cv", "ResNet-VinDr-Mammo-to-INbreast"),
    ]
    assert [c.name for c in plan.configs if plan.ranked(c)] == ["ResNet-CBIS-DDSM-cv", "SimCLR-CBIS-DDSM-cv"]
    assert plan.baseline_run() == "ResNet"


@pytest.mark.parametrize(
    "flags, sets, message",
    [
        ({"data.root": "/d"}, (), "data.root cannot be set"),
        ({}, ("data.test_dataset=inbreast",), "data.test_dataset cannot be set"),
        ({"data.split": "official"}, (), "data.split=official cannot be set"),
    ],
)
def test_plan_refuses_data_overrides(roots, flags, sets, message):
    with pytest.raises(ConfigError, match=message):
        load_plan(BENCH, "smoke", {"out": "x", **flags}, sets, cohort_roots=roots)


def test_plan_refuses_missing_roots_and_unknown_cohorts(roots, tmp_path):
    with pytest.raises(
        ConfigError, match=r"external.test.INbreast: root .* is not a folder; .*--cohort-root INbreast=DIR"
    ):
        load_plan(BENCH, "smoke", {"out": "x"}, cohort_roots={**roots, "INbreast": str(tmp_path / "none")})
    with pytest.raises(ConfigError, match="--cohort-root DDSM: no such cohort"):
        load_plan(BENCH, "smoke", {"out": "x"}, cohort_roots={**roots, "DDSM": str(tmp_path)})
    with pytest.raises(ConfigError, match="does not combine with label_fractions"):
        load_plan(BENCH, "smoke", {"out": "x"}, fractions=(0.5,), cohort_roots=roots)


# ---------------------------------------------------------------------------------- end to end


def _write_trees(root: Path) -> dict[str, Path]:
    shape = dict(image_size=(64, 32), n_patients=14, n_benign=22, n_malignant=12)
    trees = {"CBIS-DDSM": root / "cbis", "VinDr-Mammo": root / "vindr", "INbreast": root / "inbreast"}
    for seed, (writer, name) in enumerate(
        [(write_cbis_ddsm_tree, "CBIS-DDSM"), (write_vindr_tree, "VinDr-Mammo"), (write_inbreast_tree, "INbreast")]
    ):
        table, images = generate(seed=10 + seed, **shape)
        writer(trees[name], images, table)
    return trees


def _logit_se(auc: float, lo: float, hi: float) -> float:
    """The standard error behind a logit Wald interval (percent in, fraction out)."""
    a, lo, hi = auc / 100, lo / 100, hi / 100
    half = (math.log(hi / (1 - hi)) - math.log(lo / (1 - lo))) / 2
    return half * a * (1 - a) / Q


def _predictions(run: Path) -> pd.DataFrame:
    return pd.concat(
        [
            pd.read_csv(f, dtype={"image_id": str, "patient_id": str})
            for f in sorted(run.glob("folds/*/predictions.csv"))
        ],
        ignore_index=True,
    )


@pytest.fixture(scope="module")
def external_bench(tmp_path_factory):
    """The smoke external bench of the ResNet row on generated trees, run once for the module:
    its output folder, the trees, the bench's console output and the bytes of every file it
    wrote beside the runs (a test may delete and rebuild them)."""
    tmp_path = tmp_path_factory.mktemp("external")
    trees = _write_trees(tmp_path)
    out = tmp_path / "runs"
    args = [
        "bench",
        str(BENCH),
        "--profile",
        "smoke",
        "--only",
        "ResNet",
        "--folds",
        "2",
        "--explain",
        "0",
        "--quiet",
        "--out",
        str(out),
    ]
    for name, folder in trees.items():
        args += ["--cohort-root", f"{name}={folder}"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    written = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    return out, trees, result.output, written


def test_external_bench_end_to_end(external_bench):
    out, trees, output, _ = external_bench
    assert "External validation" in output

    runs = {p.name for p in out.iterdir() if (p / "config.yaml").is_file()}
    assert runs == {
        "ResNet-CBIS-DDSM-cv",
        "ResNet-CBIS-DDSM-to-INbreast",
        "ResNet-VinDr-Mammo-cv",
        "ResNet-VinDr-Mammo-to-INbreast",
    }
    inbreast = {p.name.split("_")[0] for p in (trees["INbreast"] / "AllDICOMs").glob("*.dcm")}
    cbis_train = {p.name for p in (trees["CBIS-DDSM"] / "CBIS-DDSM").iterdir() if "-Training_" in p.name}
    # internal: 2 folds over CBIS-DDSM's official training split only; external: every INbreast image
    cv = _predictions(out / "ResNet-CBIS-DDSM-cv")
    assert set(cv["image_id"]) == cbis_train
    for train in ("CBIS-DDSM", "VinDr-Mammo"):
        held = _predictions(out / f"ResNet-{train}-to-INbreast")
        assert set(held["image_id"]) == inbreast and len(held) == len(inbreast)

    table = pd.read_csv(out / "external.csv")
    assert list(zip(table["method"], table["train"], table["test"])) == [
        ("ResNet", "CBIS-DDSM", "INbreast"),
        ("ResNet", "VinDr-Mammo", "INbreast"),
    ]
    for _, row in table.iterrows():
        internal = _predictions(out / f"ResNet-{row['train']}-cv")
        external = _predictions(out / f"ResNet-{row['train']}-to-INbreast")
        auc_int = 100 * roc_auc_score(internal["label"], internal["score"])
        auc_ext = 100 * roc_auc_score(external["label"], external["score"])
        assert row["internal_auc"] == pytest.approx(auc_int, abs=1e-4)
        assert row["external_auc"] == pytest.approx(auc_ext, abs=1e-4)
        assert row["drop"] == pytest.approx(auc_int - auc_ext, abs=1e-4)
        assert row["internal_patients"] == internal["patient_id"].nunique()
        assert row["external_patients"] == external["patient_id"].nunique() == 14
        # var(drop) = var(internal) + var(external): the drop's Wald interval from the two AUCs' own
        se = math.hypot(
            _logit_se(row["internal_auc"], row["internal_auc_lo"], row["internal_auc_hi"]),
            _logit_se(row["external_auc"], row["external_auc_lo"], row["external_auc_hi"]),
        )
        assert row["drop_hi"] - row["drop_lo"] == pytest.approx(2 * Q * 100 * se, rel=1e-3)
        assert row["p_drop"] == pytest.approx(2 * stats.norm.sf(abs(row["drop"]) / (100 * se)), abs=1e-3)

    # the leaderboard ranks the CBIS-DDSM cross-validation alone, and shows the table
    leaderboard = pd.read_csv(out / "leaderboard.csv")
    assert leaderboard["run"].map(lambda r: Path(r).name).tolist() == ["ResNet-CBIS-DDSM-cv"]
    assert "## External validation" in (out / "leaderboard.md").read_text()
    assert "<h2>External validation</h2>" in (out / "leaderboard.html").read_text()


# ------------------------------------------------------------------ the report of saved runs


def _section(markdown: str, title: str) -> str:
    """A markdown section, from its heading to the next of its level."""
    return markdown.split(f"## {title}\n")[1].split("\n## ")[0]


def test_report_rebuilds_the_bench_leaderboard_and_external_table(external_bench):
    """ssl-bench report on the bench's folder, its leaderboard files deleted, writes them again:
    the leaderboard of the first cohort's cross-validation, external.csv and the section, byte
    for byte as the bench wrote them."""
    out, _, _, written = external_bench
    for name in written:
        (out / name).unlink()
    result = CliRunner().invoke(main, ["report", str(out), "--out-dir", str(out)])
    assert result.exit_code == 0, result.output
    for name in ("external.csv", "leaderboard.csv", "subgroups.csv"):
        assert (out / name).read_bytes() == written[name], name
    again, bench = (out / "leaderboard.md").read_text(), written["leaderboard.md"].decode()
    assert _section(again, "External validation") == _section(bench, "External validation")
    assert again.split("\n- ")[0] == bench.split("\n- ")[0]  # the title, the summary line and the table
    assert "the leaderboard ranks the 1 cross-validation(s) on CBIS-DDSM (cbis_ddsm)" in again
    # the terminal shows the same table of pairs
    shown = CliRunner().invoke(main, ["report", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "External validation" in shown.output and "VinDr-Mammo" in shown.output


def test_report_pairs_runs_by_their_configs_not_their_names(external_bench, tmp_path):
    """Under meaningless folder names the report finds the same pairs (the internal run's config
    equals its external run's but for the held-out images), and an external run whose
    cross-validation is there twice under two names is one error line."""
    out, _, _, _ = external_bench
    names = {
        "ResNet-CBIS-DDSM-cv": "d",
        "ResNet-CBIS-DDSM-to-INbreast": "a",
        "ResNet-VinDr-Mammo-cv": "b",
        "ResNet-VinDr-Mammo-to-INbreast": "c",
    }
    for run, name in names.items():
        shutil.copytree(out / run, tmp_path / "renamed" / name)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "renamed"), "--format", "csv"])
    assert result.exit_code == 0, result.output
    rep = build_report([tmp_path / "renamed"], baseline_required=False)
    assert rep.table["run"].map(lambda r: Path(r).name).tolist() == ["d"]
    table = rep.external
    assert list(zip(table["method"], table["train"], table["test"])) == [
        ("ResNet", "CBIS-DDSM", "INbreast"),
        ("ResNet", "VinDr-Mammo", "INbreast"),
    ]
    assert [(Path(i).name, Path(e).name) for i, e in zip(table["internal_run"], table["external_run"])] == [
        ("d", "a"),
        ("b", "c"),
    ]
    expected = pd.read_csv(out / "external.csv")
    numbers = [c for c in table.columns if c.endswith(("auc", "_lo", "_hi", "drop", "images", "patients"))]
    assert np.allclose(table[numbers].to_numpy(float), expected[numbers].to_numpy(float), equal_nan=True)

    # the training images are shared: runs at a label fraction pair with each other, never with
    # the cross-validation at another fraction (f: 0.5 with g: 0.5, not h: 0.25)
    for run, name, fraction in [
        ("ResNet-CBIS-DDSM-cv", "f", 0.5),
        ("ResNet-CBIS-DDSM-to-INbreast", "g", 0.5),
        ("ResNet-CBIS-DDSM-cv", "h", 0.25),
    ]:
        copy = shutil.copytree(out / run, tmp_path / "renamed" / name)
        config = yaml.safe_load((copy / "config.yaml").read_text())
        config["data"]["label_fraction"] = fraction
        (copy / "config.yaml").write_text(yaml.safe_dump(config))
    again = build_report([tmp_path / "renamed"], baseline_required=False).external
    assert [(Path(i).name, Path(e).name) for i, e in zip(again["internal_run"], again["external_run"])] == [
        ("d", "a"),
        ("f", "g"),
        ("b", "c"),
    ]

    shutil.copytree(out / "ResNet-CBIS-DDSM-cv", tmp_path / "renamed" / "e")
    twice = CliRunner().invoke(main, ["report", str(tmp_path / "renamed")])
    assert twice.exit_code != 0
    assert twice.output.strip().count("\n") == 0 and "is an external run of several cross-validations" in twice.output


def test_report_still_refuses_runs_that_are_not_comparable(external_bench, tmp_path):
    """Two cohorts' cross-validations without an external run are no study: one line, as before."""
    out, _, _, _ = external_bench
    folder = tmp_path / "mixed"
    for run in ("ResNet-CBIS-DDSM-cv", "ResNet-VinDr-Mammo-cv"):
        shutil.copytree(out / run, folder / run)
    result = CliRunner().invoke(main, ["report", str(folder)])
    assert result.exit_code != 0
    assert result.output.strip().count("\n") == 0 and "runs are not comparable: dataset differs" in result.output
