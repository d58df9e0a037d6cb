"""External validation (benchmarks/external.yaml): the bench's runs on generated CBIS-DDSM,
VinDr-Mammo and INbreast trees, the external table against the runs' predictions, the drop's
interval against a simulation and a patient bootstrap, and the study's refusals."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
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


def test_external_bench_end_to_end(tmp_path):
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
    assert "External validation" in result.output

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
