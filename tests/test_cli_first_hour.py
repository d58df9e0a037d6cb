"""A newcomer's first hour (issue 28, items 3 and 4): a bench writes apart from single runs, and
the terminal says what it is doing (what loads, the time left, how to resume after Ctrl-C, no
library warnings through the bars)."""
from __future__ import annotations

from click.testing import CliRunner

from ssl_bench.cli import main

TINY_BENCH = "methods:\n  Tiny: {pretext: none, transfer: finetune}\n"


def test_bench_writes_into_bench_runs_named_after_its_file(tmp_path, monkeypatch):
    """Item 3: `ssl-bench bench tiny.yaml` writes bench-runs/tiny/ (never run's runs/), says so in
    --help, and `ssl-bench report bench-runs/tiny` reports the runs inside it."""
    help_text = " ".join(CliRunner().invoke(main, ["bench", "--help"]).output.split())
    assert "(default: bench-runs/<bench file name>, e.g. bench-runs/table2 for benchmarks/table2.yaml)" in help_text
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_BENCH)
    result = CliRunner().invoke(main, ["bench", "tiny.yaml", "--profile", "smoke", "--folds", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "bench-runs" / "tiny" / "Tiny" / "summary.json").is_file()
    assert (tmp_path / "bench-runs" / "tiny" / "leaderboard.csv").is_file()
    assert not (tmp_path / "runs").exists()
    report = CliRunner().invoke(main, ["report", "bench-runs/tiny", "--format", "md"], env={"COLUMNS": "300"})
    assert report.exit_code == 0, report.output
    assert "Reported the run directory inside bench-runs/tiny: Tiny." in report.stdout
