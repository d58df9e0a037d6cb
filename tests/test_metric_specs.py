"""Metrics are first-class (issue 24 item 2): a metric added to the one table of
``ssl_bench.experiment.metric_specs`` appears in a fold's metrics, the leaderboard (CSV, markdown,
HTML), the sort keys and their help, with nothing else edited; a run written before a fold metric
existed is reported with it computed from its predictions, and a changed score is still refused.

References are scikit-learn on the runs' predictions.csv, not ssl_bench's own computation."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.metrics import precision_score
from test_report import make_bench

from ssl_bench.cli import main
from ssl_bench.cli.report_cmd import sort_by_help
from ssl_bench.errors import UserError
from ssl_bench.experiment import metric_specs, metrics
from ssl_bench.experiment.metric_specs import FOLD, FOLD_SPREAD, INTERVALS, LOWER, MetricSpec, sort_keys
from ssl_bench.report.leaderboard import build_report, load_run
from ssl_bench.report.publish import write_leaderboard
from ssl_bench.report.render import to_csv, to_markdown

REPO = Path(__file__).resolve().parents[1]
COMMITTED_RUN = REPO / "docs" / "results" / "table2-quick" / "runs" / "ResNet"

#: a throwaway metric: the false discovery rate at 0.5, lower is better, in every table of Table II
FDR = MetricSpec("fdr", "FDR", FOLD, "fdr", FOLD_SPREAD, ("threshold", "csv", "seeds", "run"), direction=LOWER)


def fdr_reference(labels, scores) -> float:
    """The false discovery rate FP / (TP + FP) of calling malignant from 0.5, by scikit-learn."""
    return 1.0 - precision_score(labels, np.asarray(scores) >= 0.5, zero_division=0)


@pytest.fixture
def with_fdr(monkeypatch):
    """The table with FDR appended and its statistic beside the others (what adding it takes)."""
    statistics = metrics.threshold_statistics

    def with_its_statistic(labels, scores, threshold=0.5):
        out = statistics(labels, scores, threshold)
        called = np.asarray(scores) >= threshold
        out["fdr"] = float((np.asarray(labels)[called] == 0).mean()) if called.any() else 0.0
        return out

    monkeypatch.setattr(metric_specs, "METRIC_SPECS", (*metric_specs.METRIC_SPECS, FDR))
    monkeypatch.setattr(metrics, "threshold_statistics", with_its_statistic)


def test_a_metric_added_to_the_table_appears_in_folds_leaderboard_and_sort_keys(with_fdr, tmp_path):
    runs = make_bench(tmp_path / "runs", {"A": 0.4, "B": 1.0, "C": 1.6})  # metrics.json without fdr
    y = pd.read_csv(runs[0] / "folds" / "0" / "predictions.csv")
    assert metrics.fold_metrics(y["label"], y["score"], 0.7)["fdr"] == pytest.approx(
        fdr_reference(y["label"], y["score"])
    )

    report = build_report(runs, sort_by="fdr", n_boot=200)  # older runs: computed, not 'edited'
    assert all(not r.warnings for r in report.runs)
    expected = {}
    for run in runs:
        folds = [pd.read_csv(p) for p in sorted((run / "folds").glob("*/predictions.csv"))]
        values = 100 * np.array([fdr_reference(f["label"], f["score"]) for f in folds])
        expected[run.name.upper()] = (values.mean(), values.std(ddof=1))
    csv = pd.read_csv(io.StringIO(to_csv(report))).set_index("method")
    for method, (mean, std) in expected.items():
        assert csv.loc[method, "fdr_mean"] == pytest.approx(mean, rel=1e-5)
        assert csv.loc[method, "fdr_std"] == pytest.approx(std, rel=1e-5)
    assert list(csv.index) == sorted(expected, key=lambda m: expected[m][0])  # lower is better: first

    md = to_markdown(report)
    assert "sorted by mean fold FDR" in md
    threshold_table = md.split("## At the paper's threshold 0.5", 1)[1].split("##", 1)[0]
    head = next(line for line in threshold_table.splitlines() if line.startswith("| Method"))
    assert head.endswith("| AUC | FDR |")
    best = min(expected, key=lambda m: expected[m][0])
    assert f"| {best} |" in threshold_table and f"{expected[best][0]:.2f} ± {expected[best][1]:.2f}" in threshold_table
    assert "| FDR |" in md.split("## Per-fold results", 1)[1]  # a row of each method's per-fold table

    html = write_leaderboard(report, tmp_path / "board")["html"].read_text()
    section = html.split("<h2>At the paper's threshold 0.5</h2>", 1)[1]
    heads = re.findall(r"<th[^>]*>([^<]*)</th>", section.split("</thead>", 1)[0])
    column = heads.index("FDR")
    row = re.search(rf"<tr[^>]*><td[^>]*>{best}</td>.*?</tr>", section).group(0)
    assert "best" in re.findall(r'<td class="([^"]*)">', row)[column]  # the lowest FDR is marked

    assert "fdr" in sort_keys() and "fdr" in sort_by_help()
    res = CliRunner().invoke(
        main, ["report", *map(str, runs), "--sort-by", "fdr", "--format", "csv", "--n-boot", "200"]
    )
    assert res.exit_code == 0, res.output
    assert list(pd.read_csv(io.StringIO(res.stdout))["method"]) == list(csv.index)
    res = CliRunner().invoke(main, ["report", *map(str, runs), "--sort-by", "speed", "--n-boot", "200"])
    assert res.exit_code == 2 and "fdr" in res.output and "Traceback" not in res.output


def test_report_help_lists_every_sort_key():
    res = CliRunner().invoke(main, ["report", "--help"], terminal_width=2000)
    assert res.exit_code == 0
    listed = " ".join(res.output.split())
    for key in sort_keys():
        assert re.search(rf"\b{key}\b", listed), key


def test_the_table_is_consistent_with_what_computes_it():
    """Every spec names a statistic or pooled key that is computed (finite on data of both classes,
    with breasts), names are unique where they are looked up, and fold metrics are the ones
    reported as mean ± std."""
    assert len(set(sort_keys())) == len(sort_keys())
    rng = np.random.default_rng(0)
    y, s = np.r_[np.zeros(20, int), np.ones(10, int)], rng.random(30)
    predictions = pd.DataFrame(
        {
            "label": y,
            "score": s,
            "patient_id": np.arange(30) // 2,
            "fold": 0,
            "laterality": np.where(np.arange(30) % 2, "L", "R"),
        }
    )
    statistics, pooled = metrics.threshold_statistics(y, s), metrics.pooled_metrics(predictions, {0: 0.5})
    for spec in metric_specs.METRIC_SPECS:
        assert spec.interval in INTERVALS
        assert (spec.interval == FOLD_SPREAD) == (not spec.pooled), spec.name
        assert np.isfinite((pooled if spec.pooled else statistics)[spec.compute]), spec.name
    fold_names = [spec.name for spec in metric_specs.metric_specs(pooled=False)]
    assert len(set(fold_names)) == len(fold_names)
    with pytest.raises(ValueError, match="unknown level"):
        MetricSpec("x", "X", "image", "auc", FOLD_SPREAD, ())


def _without(run: Path, keys: tuple[str, ...]) -> None:
    for path in (run / "folds").glob("*/metrics.json"):
        stored = json.loads(path.read_text())
        path.write_text(json.dumps({k: v for k, v in stored.items() if k not in keys}))


def test_a_run_written_before_a_fold_metric_reports_it_from_its_predictions(tmp_path):
    """A committed run whose metrics.json lacks youden and op_accuracy, as a version before them
    wrote it: reported (it was refused as 'edited'), with the values the run itself computed; a
    changed score is still refused."""
    older = tmp_path / "older"
    shutil.copytree(COMMITTED_RUN, older)
    _without(older, ("youden", "op_accuracy"))
    run = load_run(older)
    assert run.warnings == []
    for k in run.completed_folds:
        written = json.loads((COMMITTED_RUN / "folds" / str(k) / "metrics.json").read_text())
        assert run.fold_metrics[k]["youden"] == pytest.approx(written["youden"], abs=1e-12)
        assert run.fold_metrics[k]["op_accuracy"] == pytest.approx(written["op_accuracy"], abs=1e-12)
    fresh = build_report([COMMITTED_RUN], n_boot=100).table
    assert build_report([older], n_boot=100).table.drop(columns="run").equals(fresh.drop(columns="run"))

    path = older / "folds" / "2" / "predictions.csv"
    pred = pd.read_csv(path, dtype=str, keep_default_na=False)
    low = pred["score"].astype(float).idxmin()
    pred.loc[low, "score"] = "0.99"  # a benign-looking image now called malignant
    pred.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"was edited after the run: fold 2: metrics.json disagrees"):
        load_run(older)
