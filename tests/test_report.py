"""``ssl-bench report``: leaderboard numbers against an independent recomputation from the runs'
predictions.csv files, comparability checks, partial and broken runs, the self-contained HTML
page, and the click command.

The fixtures write run directories exactly as the run-directory contract (ssl_bench/experiment/rundir.py) describes them (config.yaml
from ``Config.to_dict()``, env.json, folds/<k>/{metrics,predictions}, summary.json) from seeded
random scores; the recomputation below uses scikit-learn directly, not ssl_bench.
"""
from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, roc_auc_score

from ssl_bench.report.render import to_csv, to_markdown
from ssl_bench.report.leaderboard import build_report, load_run
from ssl_bench.report.publish import write_leaderboard
from ssl_bench.cli import main
from ssl_bench.config import Config
from ssl_bench.errors import UserError
from ssl_bench.experiment.rundir import RunDir

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "benchmarks" / "table2_paper.csv"
METHODS = {"ResNet": 0.9, "SimCLR": 1.2, "GM-F-ResNet": 1.3, "TSBN-U": 1.7, "TSBN-R": 1.5}
METRICS = ("accuracy", "sensitivity", "specificity", "youden", "f1", "auc")


# ---------------------------------------------------------------------------------------------
# fixtures: fake run directories


def sk_metrics(y, s) -> dict[str, float]:
    """The Table II metrics, straight from scikit-learn (threshold 0.5, malignant = 1)."""
    pred = (np.asarray(s) >= 0.5).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    sens, spec = tp / (tp + fn), tn / (tn + fp)
    return {"accuracy": accuracy_score(y, pred), "sensitivity": sens, "specificity": spec,
            "youden": sens + spec - 1, "f1": f1_score(y, pred, zero_division=0),
            "auc": roc_auc_score(y, s)}


def cohort(n=150, folds=5, seed=0):
    """Labels, patients (3 images each, one class per patient) and patient-grouped stratified folds."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.zeros(n - n // 3, int), np.ones(n // 3, int)]
    patients = np.arange(n) // 3
    fold = np.empty(n, int)
    for c in (0, 1):
        pts = rng.permutation(np.unique(patients[labels == c]))
        for j, p in enumerate(pts):
            fold[patients == p] = j % folds
    return labels, patients, fold, rng


def write_run(root: Path, name: str, labels, patients, fold, scores, *, dataset="synthetic",
              split="patient", seed=0, folds=5, ids=None, started="2025-01-01T10:00:00+00:00",
              data=None) -> Path:
    """A run directory ``root/<name lowercased>`` of method ``name``; ``data``: other ``data.*`` settings."""
    cfg = Config(method=name, name=name.lower(), profile="quick", seed=seed)
    cfg.data.dataset, cfg.data.split, cfg.data.folds = dataset, split, folds
    for key, value in (data or {}).items():
        setattr(cfg.data, key, value)
    d = root / name.lower()
    (d / "folds").mkdir(parents=True)
    (d / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
    (d / "env.json").write_text(json.dumps({
        "ssl_bench": "0.1.0", "torch": "2.5.1", "timm": "1.0.12", "python": "3.11.7",
        "git_commit": "0123456789abcdef0123456789abcdef01234567", "device": "NVIDIA H100 80GB HBM3",
        "started": started, "finished": "2025-01-01T12:00:00+00:00",
        "dataset": {"name": dataset, "n_images": len(labels), "n_benign": int((labels == 0).sum()),
                    "n_malignant": int(labels.sum()), "n_patients": int(len(np.unique(patients)))}}))
    ids = np.array([f"img{j:04d}" for j in range(len(labels))]) if ids is None else ids
    per_fold = []
    for k in range(folds):
        idx = fold == k
        fd = d / "folds" / str(k)
        fd.mkdir()
        pd.DataFrame({"image_id": ids[idx], "patient_id": [f"p{p:03d}" for p in patients[idx]],
                      "label": labels[idx], "score": scores[idx]}).to_csv(fd / "predictions.csv", index=False)
        m = sk_metrics(labels[idx], scores[idx])
        per_fold.append(m)
        (fd / "metrics.json").write_text(json.dumps({k2: float(v) for k2, v in m.items()}))
    frame = pd.DataFrame(per_fold)
    (d / "summary.json").write_text(json.dumps({
        "method": name, "folds": folds, "mean": frame.mean().to_dict(), "std": frame.std(ddof=1).to_dict(),
        "oof_auc": roc_auc_score(labels, scores)}))
    return d


def make_bench(root: Path, methods=METHODS, **kwargs) -> list[Path]:
    labels, patients, fold, rng = cohort(folds=kwargs.get("folds", 5), seed=kwargs.get("seed", 0))
    latent = rng.normal(size=len(labels))  # shared difficulty: the methods' scores correlate
    dirs = []
    for name, strength in methods.items():
        logit = strength * (2 * labels - 1) + 0.8 * latent + rng.normal(size=len(labels)) - 0.3
        dirs.append(write_run(root, name, labels, patients, fold, 1 / (1 + np.exp(-logit)), **kwargs))
    return dirs


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> list[Path]:
    return make_bench(tmp_path_factory.mktemp("runs"))


@pytest.fixture(scope="module")
def written(bench, tmp_path_factory) -> dict[str, Path]:
    """The files of ``write_leaderboard`` (what ``bench`` writes at its end), with the paper rows."""
    return write_leaderboard(build_report(bench, reference=PAPER), tmp_path_factory.mktemp("leaderboard"))


def recompute(run_dir: Path) -> dict[str, float]:
    """Independent recomputation of a leaderboard row (percent) from predictions.csv files."""
    frames = [pd.read_csv(p) for p in sorted((run_dir / "folds").glob("*/predictions.csv"))]
    folds = pd.DataFrame([sk_metrics(f["label"], f["score"]) for f in frames]) * 100
    row = {f"{m}_mean": folds[m].mean() for m in METRICS}
    row.update({f"{m}_std": folds[m].std(ddof=1) for m in METRICS})
    pooled = pd.concat(frames)
    row["oof_auc"] = 100 * roc_auc_score(pooled["label"], pooled["score"])
    row["folds"] = folds
    return row


# ---------------------------------------------------------------------------------------------
# numbers


def test_csv_numbers_equal_recomputation(bench, written):
    paths = written
    assert {k: p.name for k, p in paths.items()} == {
        "md": "leaderboard.md", "csv": "leaderboard.csv", "html": "leaderboard.html",
        "png": "roc.png", "svg": "roc.svg"}
    df = pd.read_csv(paths["csv"])
    ours = df[df["source"] == "ours"].set_index("method")
    assert sorted(ours.index) == sorted(METHODS)
    for d in bench:
        expected = recompute(d)
        row = ours.loc[json.loads((d / "summary.json").read_text())["method"]]
        for key in (*(f"{m}_{s}" for m in METRICS for s in ("mean", "std")), "oof_auc"):
            assert row[key] == pytest.approx(expected[key], abs=1e-3), key
        assert row["oof_auc_lo"] < row["oof_auc"] < row["oof_auc_hi"]
    assert list(ours["oof_auc"]) == sorted(ours["oof_auc"], reverse=True)  # default sort: pooled AUC
    assert math.isnan(ours.loc["ResNet", "p_auc"]) and math.isnan(ours.loc["ResNet", "p_accuracy"])
    p = ours.drop("ResNet")[["p_auc", "p_accuracy"]].to_numpy()
    assert ((p > 0) & (p <= 1)).all()
    assert ours.loc["TSBN-U", "p_auc"] < 0.05  # strength 1.7 vs 0.9 on 150 images


def test_markdown_numbers_equal_recomputation(bench, written):
    md = written["md"].read_text()
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in md.splitlines() if re.match(r"\| \d+ \|", line)}
    assert sorted(rows) == sorted(METHODS)
    header = next(line for line in md.splitlines() if line.startswith("| # |"))
    cols = [c.strip() for c in header.strip("|").split("|")]
    # the leaderboard leads with pooled AUC and the operating point; threshold-0.5 figures come second
    assert cols[:6] == ["#", "Method", "Folds", "Pooled AUC [95% CI]", "Op. sens. [95% CI]", "Op. spec. [95% CI]"]
    assert not {"Accuracy", "Sensitivity", "Specificity"} & set(cols)
    second = md.split("## At the paper's threshold 0.5\n\n", 1)[1].split("\n## ", 1)[0]
    assert md.index("| # |") < md.index("## At the paper's threshold 0.5")
    threshold = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
                 for line in second.splitlines() if line.startswith("| ") and not line.startswith("| Method")}
    threshold_cols = [c.strip() for c in next(line for line in second.splitlines()
                                              if line.startswith("| Method")).strip("|").split("|")]
    assert sorted(threshold) == sorted(METHODS)
    csv = pd.read_csv(written["csv"]).query("source == 'ours'").set_index("method")
    for d in bench:
        expected = recompute(d)
        name = json.loads((d / "summary.json").read_text())["method"]
        cells = dict(zip(cols, rows[name]))
        at_half = dict(zip(threshold_cols, threshold[name]))
        for m, title in zip(METRICS, ("Accuracy", "Sensitivity", "Specificity", "Youden", "F1", "AUC")):
            assert at_half[title] == f"{expected[f'{m}_mean']:.2f} ± {expected[f'{m}_std']:.2f}"
        assert cells["Pooled AUC [95% CI]"].startswith(f"{expected['oof_auc']:.2f} [")
        for col, title in (("op_sensitivity", "Op. sens. [95% CI]"), ("op_specificity", "Op. spec. [95% CI]")):
            row = csv.loc[name]
            assert cells[title] == f"{row[col]:.2f} [{row[col + '_lo']:.2f}, {row[col + '_hi']:.2f}]"
        assert cells["Folds"] == "5/5"
        # per-fold table: one column per fold
        section = md.split(f"### {name}\n\n", 1)[1].split("\n\n", 1)[0]
        acc = next(line for line in section.splitlines() if line.startswith("| Accuracy"))
        values = [c.strip() for c in acc.strip("|").split("|")][1:6]
        assert values == [f"{v:.2f}" for v in expected["folds"]["accuracy"]]
    assert "p AUC vs ResNet" in md and "Holm" in md
    assert "![Pooled out-of-fold ROC curves](roc.png)" in md
    for fact in ("**Dataset:** synthetic: 150 images (100 benign, 50 malignant), 50 patients",
                 "NVIDIA H100 80GB HBM3", "0123456789ab", "**Profile:** quick", "**Image size:** 768x384",
                 "**Run dates:** 2025-01-01T10:00:00+00:00 to 2025-01-01T12:00:00+00:00"):
        assert fact in md, fact


def test_reference_rows_and_differences(bench):
    rep = build_report(bench, reference=PAPER)
    df = pd.read_csv(io.StringIO(to_csv(rep)))
    paper = df[df["source"] == "paper (INbreast)"].set_index("method")
    assert len(paper) == 7 and paper.loc["TSBN-U", "oof_auc"] == 89.3
    assert math.isnan(paper.loc["ResNet", "oof_auc"])
    diff = df[df["source"] == "ours - paper"].set_index("method")
    ours = df[df["source"] == "ours"].set_index("method")
    assert sorted(diff.index) == sorted(METHODS)  # only methods both have
    assert diff.loc["SimCLR", "accuracy_mean"] == pytest.approx(
        ours.loc["SimCLR", "accuracy_mean"] - 84.46, abs=1e-3)
    assert diff.loc["TSBN-R", "oof_auc"] == pytest.approx(ours.loc["TSBN-R", "oof_auc"] - 89.9, abs=1e-3)
    md = to_markdown(rep)
    assert "| TSBN-U | paper (INbreast) | 85.53 ± 1.87 |" in md
    assert "another dataset" in md


def test_reference_on_inbreast_is_not_another_dataset(tmp_path):
    dirs = make_bench(tmp_path, {"ResNet": 1.0, "TSBN-U": 1.5}, dataset="inbreast")
    rep = build_report(dirs, reference=PAPER)
    assert not any("another dataset" in n for n in rep.notes)


def test_sort_by_and_missing_baseline(bench):
    rep = build_report(bench, sort_by="accuracy", baseline="NoSuchMethod")
    acc = list(rep.table["accuracy_mean"])
    assert acc == sorted(acc, reverse=True)
    assert "p_auc" not in rep.table.columns and "p_accuracy" not in to_csv(rep)
    assert any("Baseline 'NoSuchMethod' is not among the runs" in n for n in rep.notes)
    assert "p AUC" not in to_markdown(rep)
    with pytest.raises(UserError, match="cannot sort by 'speed'"):
        build_report(bench, sort_by="speed")


# ---------------------------------------------------------------------------------------------
# comparability, partial and broken runs


@pytest.mark.parametrize("field, value, expect", [
    ("dataset", "cbis_ddsm", "dataset differs: 'synthetic' in"),
    ("split", "image", "split differs: 'patient' in"),
    ("seed", 1, "seed differs: '0' in"),
])
def test_mixed_runs_refused_then_allowed(tmp_path, field, value, expect):
    a = make_bench(tmp_path / "a", {"ResNet": 1.0, "TSBN-U": 1.5})
    b = make_bench(tmp_path / "b", {"SimCLR": 1.2}, **{field: value})
    with pytest.raises(UserError, match=re.escape(expect)) as err:
        build_report(a + b)
    assert str(b[0]) in str(err.value) and "--allow-mixed" in str(err.value)
    rep = build_report(a + b, allow_mixed=True)
    assert len(rep.table) == 3 and any(expect in n for n in rep.notes)


def test_mixed_folds_and_images_refused(tmp_path):
    a = make_bench(tmp_path / "a", {"ResNet": 1.0})
    b = make_bench(tmp_path / "b", {"SimCLR": 1.2}, folds=4)
    with pytest.raises(UserError, match="number of folds differs: '5' in"):
        build_report(a + b)
    labels, patients, fold, rng = cohort()
    ids = np.array([f"other{j:04d}" for j in range(len(labels))])
    c = write_run(tmp_path / "c", "TSBN-U", labels, patients, fold, rng.random(len(labels)), ids=ids)
    with pytest.raises(UserError, match="fold 0 holds different images"):
        build_report(a + [c])
    rep = build_report(a + [c], allow_mixed=True)  # no shared images: no p-value, no crash
    assert math.isnan(rep.table.set_index("method").loc["TSBN-U", "p_auc"])


def test_partial_run_is_reported_with_a_warning(tmp_path):
    dirs = make_bench(tmp_path, {"ResNet": 1.0, "TSBN-U": 1.5})
    shutil.rmtree(dirs[1] / "folds" / "3")
    (dirs[1] / "summary.json").unlink()  # the runner writes it at the end
    rep = build_report(dirs)
    row = rep.table.set_index("method").loc["TSBN-U"]
    assert (row["folds_done"], row["folds_total"]) == (4, 5)
    assert row["warning"].startswith("partial: 4/5 folds (missing 3)")
    assert row["accuracy_mean"] == pytest.approx(recompute(dirs[1])["accuracy_mean"], abs=1e-9)
    md = to_markdown(rep)
    assert "| Warning |" in md and "4/5" in md and "| missing |" in md


def test_broken_run_directories(tmp_path, bench):
    with pytest.raises(UserError, match="run directory not found: .*nowhere"):
        load_run(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty has no config.yaml"):
        load_run(tmp_path / "empty")
    run = tmp_path / "run"
    shutil.copytree(bench[0], run)
    (run / "folds" / "2" / "metrics.json").write_text("{not json")
    with pytest.raises(UserError, match=r"folds/2/metrics.json is not valid JSON"):
        load_run(run)
    (run / "folds" / "2" / "metrics.json").write_text("{}")
    pd.read_csv(run / "folds" / "1" / "predictions.csv").drop(columns="score").to_csv(
        run / "folds" / "1" / "predictions.csv", index=False)
    with pytest.raises(UserError, match=r"folds/1/predictions.csv: missing column\(s\) score"):
        load_run(run)
    shutil.rmtree(run / "folds")
    with pytest.raises(UserError, match="no completed fold"):
        load_run(run)


def test_metrics_json_disagreeing_with_predictions_is_flagged(tmp_path, bench):
    run = tmp_path / "run"
    shutil.copytree(bench[0], run)
    m = json.loads((run / "folds" / "0" / "metrics.json").read_text())
    m["accuracy"] += 0.1
    (run / "folds" / "0" / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(UserError, match="was edited after the run: fold 0: metrics.json disagrees"):
        load_run(run)
    assert any("fold 0: metrics.json disagrees" in w for w in load_run(run, allow_edited=True).warnings)
    result = CliRunner().invoke(main, ["report", str(run), "--format", "csv", "--n-boot", "200"])
    assert result.exit_code == 2 and "--allow-edited" in result.output
    result = CliRunner().invoke(main, ["report", str(run), "--format", "csv", "--n-boot", "200", "--allow-edited"])
    assert result.exit_code == 0, result.output


def toolkit_run(root: Path) -> Path:
    """A run whose folds ``RunDir.write_fold`` wrote (what ``ssl-bench run`` calls), with
    lateralities and a ``folds.csv``."""
    labels, patients, fold, rng = cohort(folds=2)
    scores = rng.uniform(0.05, 0.95, size=len(labels))
    run = write_run(root, "Written", labels, patients, fold, scores, folds=2)
    shutil.rmtree(run / "folds")
    ids = np.array([f"img{j:04d}" for j in range(len(labels))])
    pids = np.array([f"p{p:03d}" for p in patients])
    pd.DataFrame({"image_id": ids, "patient_id": pids, "label": labels, "fold": fold}).to_csv(
        run / "folds.csv", index=False)
    side = np.where(np.arange(len(labels)) % 2, "L", "R")
    for k in range(2):
        idx = fold == k
        predictions = pd.DataFrame({"image_id": ids[idx], "patient_id": pids[idx], "label": labels[idx],
                                    "score": scores[idx], "laterality": side[idx]})
        RunDir(run).write_fold(k, sk_metrics(labels[idx], scores[idx]), predictions, b"")
    return run


def edit_predictions(run: Path, column: str) -> None:
    """Edit fold 0's predictions.csv as text, leaving every other value as written: a patient id
    moved to another patient, a laterality flipped, or the highest score raised by 1e-9 (the
    order of all scores, every threshold metric and AUC unchanged)."""
    path = run / "folds" / "0" / "predictions.csv"
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    if column == "patient_id":
        df.loc[0, "patient_id"] = next(p for p in df["patient_id"] if p != df.loc[0, "patient_id"])
    elif column == "laterality":
        df.loc[0, "laterality"] = {"L": "R", "R": "L"}[df.loc[0, "laterality"]]
    else:
        top = df["score"].astype(float).idxmax()
        df.loc[top, "score"] = repr(float(df.loc[top, "score"]) + 1e-9)
    df.to_csv(path, index=False)


@pytest.mark.parametrize("column", ["patient_id", "laterality", "score"])
def test_any_edit_of_predictions_csv_is_refused(tmp_path, column):
    """Issue 25 item 2: an edited patient id or laterality (which change the patient and breast
    AUCs) and an order-preserving score edit (which changes no metric the check recomputes) are
    refused in one line naming the file, exit 2; --allow-edited reports them with a warning."""
    run = toolkit_run(tmp_path)
    assert load_run(run).warnings == []  # untouched: no warning, no error
    assert CliRunner().invoke(main, ["report", str(run), "--format", "csv", "--n-boot", "200"]).exit_code == 0
    edit_predictions(run, column)
    with pytest.raises(UserError, match=r"folds/0/predictions.csv is not the file the run wrote"):
        load_run(run)
    res = CliRunner().invoke(main, ["report", str(run), "--format", "csv", "--n-boot", "200"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    line = " ".join(res.stderr.split())  # rich may wrap the one line
    assert res.stderr.count("error:") == 1 and line.startswith(f"error: {run} was edited after the run")
    assert "folds/0/predictions.csv is not the file the run wrote" in line and "--allow-edited" in line
    res = CliRunner().invoke(main, ["report", str(run), "--format", "csv", "--n-boot", "200", "--allow-edited"])
    assert res.exit_code == 0, res.output
    assert "folds/0/predictions.csv is not the file the run wrote" in pd.read_csv(io.StringIO(res.stdout))["warning"][0]


def test_runs_written_before_the_digest_are_checked_by_folds_csv_and_summary(tmp_path, bench):
    """Folds without a recorded digest (every run before issue 25 item 2, docs/results): a patient
    id that folds.csv contradicts is refused, and so is a summary.json whose pooled AUC the
    predictions no longer give (a score edit that keeps each fold's order but not the pooled one)."""
    labels, patients, fold, _ = cohort()
    folds_csv = pd.DataFrame({"image_id": [f"img{j:04d}" for j in range(len(labels))],
                              "patient_id": [f"p{p:03d}" for p in patients], "label": labels, "fold": fold})
    run = tmp_path / "patient"
    shutil.copytree(bench[0], run)
    folds_csv.to_csv(run / "folds.csv", index=False)
    assert load_run(run).warnings == []
    path = run / "folds" / "0" / "predictions.csv"
    pred = pd.read_csv(path, dtype=str)
    pred.loc[0, "patient_id"] = "p999"
    pred.to_csv(path, index=False)
    with pytest.raises(UserError, match="fold 0: predictions.csv disagrees with folds.csv on patient_id"):
        load_run(run)
    run = tmp_path / "scores"
    shutil.copytree(bench[0], run)
    path = run / "folds" / "0" / "predictions.csv"
    pred = pd.read_csv(path)
    low = pred["score"] < 0.5
    pred.loc[low, "score"] = pred.loc[low, "score"] / 2  # fold 0's order and threshold metrics kept
    pred.to_csv(path, index=False)
    with pytest.raises(UserError, match="summary.json's oof_auc is not the pooled AUC"):
        load_run(run)
    assert any("summary.json's oof_auc" in w for w in load_run(run, allow_edited=True).warnings)


def test_predictions_of_other_images_than_folds_csv_are_refused(tmp_path, bench):
    run = tmp_path / "run"
    shutil.copytree(bench[0], run)
    labels, patients, fold, _ = cohort()
    pd.DataFrame({"image_id": [f"img{j:04d}" for j in range(len(labels))], "patient_id": patients,
                  "label": labels, "fold": (fold + 1) % 5}).to_csv(run / "folds.csv", index=False)
    with pytest.raises(UserError, match="predictions.csv holds other images than folds.csv assigns"):
        load_run(run)


# ---------------------------------------------------------------------------------------------
# HTML and figures


def test_html_is_one_self_contained_file(written):
    paths = written
    html = paths["html"].read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "http://" not in html and "https://" not in html
    for tag in ("<script", "<link", "@import", "url(", "<iframe"):
        assert tag not in html.lower()
    png = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert png and base64.b64decode(png.group(1))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Holm-adjusted" in html and "Pooled metrics clinicians read" in html
    assert html.count("<h3>") == len(METHODS)  # a per-fold table per method
    assert "paper (INbreast)" in html and "NVIDIA H100 80GB HBM3" in html
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in paths["svg"].read_text()[:2000]
    legend = re.findall(r"TSBN-U \(AUC [\d.]+%\)", paths["svg"].read_text())
    assert legend  # the AUC is in the legend


# ---------------------------------------------------------------------------------------------
# the click command


def test_cli_report_formats(bench, tmp_path):
    runner = CliRunner()
    args = ["report", *map(str, bench)]
    res = runner.invoke(main, [*args, "--format", "csv", "--reference", str(PAPER)])
    assert res.exit_code == 0, res.output
    df = pd.read_csv(io.StringIO(res.stdout))
    assert set(df["source"]) == {"ours", "paper (INbreast)", "ours - paper"}
    res = runner.invoke(main, [*args, "--sort-by", "f1"])
    assert res.exit_code == 0 and "TSBN-U" in res.stdout and "Leaderboard" in res.stdout
    out = tmp_path / "r" / "report.html"
    res = runner.invoke(main, [*args, "--format", "html", "--out", str(out), "--baseline", "SimCLR"])
    assert res.exit_code == 0 and "p AUC vs SimCLR" in out.read_text()
    res = runner.invoke(main, [*args, "--format", "md", "--out", str(tmp_path / "r.md")])
    assert res.exit_code == 0 and (tmp_path / "r_roc.png").is_file()
    assert "(r_roc.png)" in (tmp_path / "r.md").read_text()


def test_cli_errors_are_one_line(bench, tmp_path):
    runner = CliRunner()
    res = runner.invoke(main, ["report", str(bench[0]), "--format", "html"])
    assert res.exit_code == 2 and "needs --out" in res.stderr
    bad = tmp_path / "no-such-run"
    res = runner.invoke(main, ["report", str(bench[0]), str(bad)])
    assert res.exit_code == 2
    assert " ".join(res.stderr.split()) == f"error: run directory not found: {bad}"  # rich may wrap
    assert "Traceback" not in res.output
    other = make_bench(tmp_path / "x", {"SimCLR": 1.0}, split="image")
    res = runner.invoke(main, ["report", str(bench[0]), str(other[0])])
    assert res.exit_code == 2 and "split differs" in res.stderr
    res = runner.invoke(main, ["report", str(bench[0]), str(other[0]), "--allow-mixed", "--format", "csv"])
    assert res.exit_code == 0
    res = runner.invoke(main, ["report"])
    assert res.exit_code == 2  # click: missing argument


def test_cli_on_a_bench_folder_glob(bench, tmp_path):
    """`ssl-bench report DIR/*` after a bench: the leaderboard files beside the runs are skipped,
    and `ssl-bench report DIR` stands for the runs inside DIR."""
    out = tmp_path / "bench"
    dirs = [shutil.copytree(d, out / d.name) for d in bench[:2]]
    write_leaderboard(build_report(dirs), out)
    runner = CliRunner()
    res = runner.invoke(main, ["report", *map(str, sorted(out.iterdir())), "--format", "html",
                               "--out", str(tmp_path / "r.html")])
    assert res.exit_code == 0, res.output
    assert "Skipped 5 file(s) that are not run directories" in (tmp_path / "r.html").read_text()
    res = runner.invoke(main, ["report", str(out), "--format", "csv"])
    assert res.exit_code == 0 and len(pd.read_csv(io.StringIO(res.stdout))) == 2


def test_one_run_says_one_method_and_names_no_baseline_it_was_not_asked_for(tmp_path):
    """Issue 15, case 9: "1 methods", and a complaint about the default baseline ResNet that the
    user never asked for."""
    (one,) = make_bench(tmp_path / "one", {"SimCLR": 1.2})
    md = CliRunner().invoke(main, ["report", str(one), "--format", "md"])
    assert md.exit_code == 0, md.output
    assert "1 method ·" in md.stdout and "1 methods" not in md.stdout
    assert "Baseline" not in md.stdout and "ResNet" not in md.stdout
    asked = CliRunner().invoke(main, ["report", str(one), "--format", "md", "--baseline", "ResNet"])
    assert "Baseline 'ResNet' is not among the runs (SimCLR); no p-values." in asked.stdout
    two = make_bench(tmp_path / "two", {"ResNet": 1.0, "SimCLR": 1.2})
    both = CliRunner().invoke(main, ["report", *map(str, two), "--format", "md"])
    assert "2 methods ·" in both.stdout and "compare each method with the baseline ResNet" in both.stdout
    assert "correct for the 1 method compared." in both.stdout
    alone = make_bench(tmp_path / "alone", {"ResNet": 1.0})
    only = CliRunner().invoke(main, ["report", *map(str, alone), "--format", "md", "--baseline", "ResNet"])
    assert "The baseline ResNet is the only method: nothing is compared with it." in only.stdout
    assert "0 methods" not in only.stdout


def test_a_run_without_a_completed_fold_is_left_out_with_a_note(tmp_path, bench):
    """A run still training its first fold (a bench writing beside the runs reported) is skipped
    with one note; alone, or with no other run, it is still the one-line error."""
    unfinished = tmp_path / "Unfinished"
    shutil.copytree(bench[0], unfinished)
    shutil.rmtree(unfinished / "folds")
    rep = build_report([*bench, unfinished])
    assert len(rep.table) == len(bench)
    assert any(n.startswith("Skipped 1 run(s) without a completed fold yet") and str(unfinished) in n
               for n in rep.notes)
    with pytest.raises(UserError, match="no completed fold"):
        build_report([unfinished])
    other = tmp_path / "Other"
    shutil.copytree(unfinished, other)
    with pytest.raises(UserError, match="has a completed fold yet"):
        build_report([unfinished, other])


def test_a_bench_folder_stands_for_its_runs_with_one_note(bench, tmp_path):
    """Issue 28, item 3: `ssl-bench report bench-runs/table2` (a bench's output folder, not a run
    directory) reports the runs inside it and says so in one note; `ssl-bench report bench-runs`
    (the folder of every bench's output) is one line naming a bench folder to report instead."""
    out = tmp_path / "bench-runs" / "table2"
    dirs = [shutil.copytree(d, out / d.name) for d in bench[:2]]
    (out / ".pretext-cache").mkdir()  # a hidden folder beside the runs is no run
    write_leaderboard(build_report(dirs), out)
    rep = build_report([out])
    assert len(rep.table) == 2
    assert f"Reported the 2 run directories inside {out}: {dirs[0].name}, {dirs[1].name}." in rep.notes
    md = CliRunner().invoke(main, ["report", str(out), "--format", "md"], env={"COLUMNS": "300"})
    assert md.exit_code == 0, md.output
    assert md.stdout.count(f"Reported the 2 run directories inside {out}") == 1
    parent = CliRunner().invoke(main, ["report", str(out.parent)])
    assert parent.exit_code == 2
    assert parent.output.strip().splitlines() == [
        f"error: {out.parent} holds the output folders of 1 bench(es), not run directories: report one "
        f"of them, e.g. ssl-bench report {out}"]


def test_nothing_degenerate_is_marked_best_and_the_title_says_profile_and_dataset(tmp_path):
    """A model that calls every image malignant at 0.5 has the highest threshold sensitivity (100%)
    and says nothing by it: its folds are degenerate, so no value of it is marked best."""
    labels, patients, fold, rng = cohort()
    dirs = make_bench(tmp_path, {"ResNet": 1.0, "Better": 1.8})
    always = 0.96 + 0.03 * rng.random(len(labels)) * (0.5 + 0.5 * labels)  # every score above 0.5
    dirs.append(write_run(tmp_path, "AllMalignant", labels, patients, fold, always))
    report = build_report(dirs)
    assert report.table.set_index("method").loc["AllMalignant", "degenerate"] == 5
    html = (write_leaderboard(report, tmp_path / "board"))["html"].read_text()
    assert "<title>ssl-bench leaderboard: synthetic · profile quick</title>" in html

    def cells(section: str, method: str) -> list[str]:
        row = re.search(rf"<tr[^>]*>(?:(?!</tr>).)*?>{method}</td>.*?</tr>", html.split(section, 1)[1]).group(0)
        return re.findall(r'<td class="([^"]*)">', row)

    threshold = "<h2>At the paper's threshold 0.5</h2>"  # its table: Method, then the six metrics
    assert html.index('<table class="board">') < html.index(threshold)
    all_malignant = cells(threshold, "AllMalignant")
    assert report.table.set_index("method").loc["AllMalignant", "sensitivity_mean"] == 100
    assert "best" not in all_malignant[2]  # its 100% sensitivity
    assert any("best" in c[2] for c in (cells(threshold, "ResNet"), cells(threshold, "Better")))
    assert not any("best" in c for c in all_malignant)
    assert "best" in cells("<h2>Leaderboard</h2>", "Better")[3]  # the highest pooled AUC of the others
    md = to_markdown(report)
    assert md.startswith("# Leaderboard: synthetic · profile quick\n")
    assert "· profile quick · dataset synthetic" in md


def test_the_committed_table2_leaderboard_rewrites_from_its_runs(monkeypatch):
    """docs/results/table2-quick's leaderboard.md and .csv are what the report writes from its run
    directories today, byte for byte (as its README says: ssl-bench report recomputes them)."""
    monkeypatch.chdir(REPO)  # the committed files name the runs relative to the repository
    board = Path("docs/results/table2-quick")
    report = build_report(sorted(str(p) for p in (board / "runs").iterdir()), reference=PAPER.relative_to(REPO))
    md = to_markdown(report, figure="roc.png", figures={"decision_curve": "decision_curve.png"})
    assert md == (board / "leaderboard.md").read_text()
    assert to_csv(report) == (board / "leaderboard.csv").read_text()
