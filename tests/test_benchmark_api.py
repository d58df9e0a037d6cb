"""A bench file run to its leaderboards as one library call (ssl_bench/benchmark.py), which the
``ssl-bench bench`` command is built on: the same runs and leaderboard files, a report a notebook
can read, resume, and failed jobs returned rather than raised."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from ssl_bench.benchmark import run_benchmark
from ssl_bench.cli import main
from ssl_bench.errors import UserError

TABLE2 = Path(__file__).resolve().parents[1] / "benchmarks" / "table2.yaml"
ONLY = ("ResNet", "Non-spatial")


def test_run_benchmark_writes_what_the_command_writes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    outcome = run_benchmark(TABLE2, profile="smoke", flags={"data.folds": 2}, only=ONLY)
    assert outcome.out == Path("bench-runs/table2") and not outcome.failed
    report = outcome.reports[0]
    assert list(report.table["method"]) == ["ResNet", "Non-spatial"] and report.control == "Non-spatial"
    assert set(report.table["folds_done"]) == {2}
    paths = outcome.paths[0]
    written = pd.read_csv(paths["csv"])
    assert list(written["method"]) == list(report.table["method"])
    # saliency overlays for the CNN, one line (never a failure) for the control's trees
    assert len(pd.read_csv(outcome.out / "ResNet" / "saliency" / "saliency.csv")) > 0
    assert [n.split(":")[0] for n in outcome.saliency_notes] == ["no saliency overlays for Non-spatial"]
    assert "<h2>Saliency</h2>" in paths["html"].read_text()

    # the command on the same file and flags: the same fold files, the same leaderboard numbers
    cli = CliRunner().invoke(main, ["bench", str(TABLE2), "--profile", "smoke", "--folds", "2", "--quiet",
                                    "--out", str(tmp_path / "cli"), *[a for m in ONLY for a in ("--only", m)]])
    assert cli.exit_code == 0, cli.output
    for method in ONLY:
        for k in (0, 1):
            name = f"{method}/folds/{k}/predictions.csv"
            assert (tmp_path / "cli" / name).read_bytes() == (tmp_path / "bench-runs" / "table2" / name).read_bytes()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "cli" / "leaderboard.csv").drop(columns="run"),
                                  written.drop(columns="run"))  # the run column: where each run lies

    # a second call refuses to mix; with resume=True it finds everything done and runs nothing
    with pytest.raises(UserError, match="already holds 2 completed fold"):
        run_benchmark(TABLE2, profile="smoke", flags={"data.folds": 2}, only=ONLY)
    again = run_benchmark(TABLE2, profile="smoke", flags={"data.folds": 2}, only=ONLY, resume=True)
    assert again.result.skipped == 4 and again.result.outcomes == []
    pd.testing.assert_frame_equal(again.reports[0].table, report.table)


def test_roles_are_declared_by_the_bench_file_not_read_from_names(tmp_path):
    """The leaderboard's baseline and control come from the bench file's ``baseline:`` and
    ``control:``; a method merely named Non-spatial is no control."""
    import yaml

    from ssl_bench.benchmark import plan_benchmark
    from ssl_bench.errors import ConfigError

    plan, _ = plan_benchmark(TABLE2, profile="smoke", flags={"out": str(tmp_path)})
    assert plan.control == "Non-spatial" and plan.baselines == ("ResNet",)
    assert plan.control_run(0) == "Non-spatial" and plan.baseline_run(0) == "ResNet"
    data = yaml.safe_load(TABLE2.read_text())
    del data["control"], data["baseline"]
    bare = tmp_path / "bare.yaml"
    bare.write_text(yaml.safe_dump(data))
    plan, _ = plan_benchmark(bare, profile="smoke", flags={"out": str(tmp_path)})
    assert plan.control is None and plan.control_run(0) is None and plan.baseline_run(0) is None
    data["control"] = "Non-spatal"
    bare.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="control 'Non-spatal' is not one of its methods"):
        plan_benchmark(bare, profile="smoke", flags={"out": str(tmp_path)})
