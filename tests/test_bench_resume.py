"""Resume: a bench killed with SIGKILL midway and rerun with --resume finishes only the missing
jobs, never rewrites a fold completed before the kill, removes half-written leftovers, and ends
with the same fold files, summaries and leaderboard as an uninterrupted run."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

from ssl_bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
TABLE2 = ROOT / "benchmarks" / "table2.yaml"
METHODS = ["ResNet", "TSBN-U"]  # the baseline (p-values) and a collaborative method
FOLDS = 3  # 6 jobs: killed after 2, midway through the first method
FOLD_FILES = ("metrics.json", "predictions.csv", "model.pt")


def bench_args(out: Path) -> list[str]:
    args = ["bench", str(TABLE2), "--profile", "smoke", "--folds", str(FOLDS), "--out", str(out), "--quiet",
            "--explain", "0"]
    return args + [a for m in METHODS for a in ("--only", m)]


def complete_folds(out: Path) -> list[Path]:
    return [d for m in METHODS for d in sorted((out / m / "folds").glob("[0-9]*"))
            if all((d / f).is_file() for f in FOLD_FILES)]


def snapshot(folds: list[Path]) -> dict[Path, tuple[bytes, int]]:
    return {d / f: ((d / f).read_bytes(), (d / f).stat().st_mtime_ns) for d in folds for f in FOLD_FILES}


def results(out: Path) -> tuple[dict, pd.DataFrame]:
    files = {f"{m}/{d.name}/{f}": (d / f).read_bytes() for m in METHODS
             for d in sorted((out / m / "folds").iterdir()) for f in ("metrics.json", "predictions.csv")}
    summaries = {m: {k: v for k, v in json.loads((out / m / "summary.json").read_text()).items()
                     if k in ("mean", "std", "oof_auc", "per_fold")} for m in METHODS}
    board = pd.read_csv(out / "leaderboard.csv").drop(columns=["run"], errors="ignore")
    return {"files": files, "summaries": summaries}, board


def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    killed = tmp_path / "killed"
    proc = subprocess.Popen(["ssl-bench", *bench_args(killed)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(complete_folds(killed)) < 2:
        assert proc.poll() is None, f"bench ended before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no folds completed within 300 s"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    done_before = complete_folds(killed)
    jobs = len(METHODS) * FOLDS
    assert 2 <= len(done_before) < jobs, "the kill should land midway"
    before = snapshot(done_before)
    # what a process killed while writing a fold leaves behind: never a complete fold
    leftover = killed / "TSBN-U" / "folds" / f".{FOLDS - 1}.tmp-999999"
    leftover.mkdir(parents=True, exist_ok=True)
    (leftover / "metrics.json").write_text("{}")

    resumed = CliRunner().invoke(main, bench_args(killed) + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert f"resuming: {len(done_before)} of {jobs} jobs already complete" in resumed.output
    assert snapshot(done_before) == before  # same bytes, same mtime_ns: not rewritten
    assert not leftover.exists()
    assert len(complete_folds(killed)) == jobs

    fresh = tmp_path / "fresh"
    uninterrupted = CliRunner().invoke(main, bench_args(fresh))
    assert uninterrupted.exit_code == 0, uninterrupted.output
    got, got_board = results(killed)
    want, want_board = results(fresh)
    assert got == want
    pd.testing.assert_frame_equal(got_board, want_board)


def test_resume_without_flag_refuses_to_mix(tmp_path):
    out = tmp_path / "runs"
    args = ["bench", str(TABLE2), "--profile", "smoke", "--out", str(out), "--quiet", "--explain", "0", "--only", "ResNet",
            "--folds", "2"]
    assert CliRunner().invoke(main, args).exit_code == 0
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2 and "--resume" in again.output
    noop = CliRunner().invoke(main, args + ["--resume"])
    assert noop.exit_code == 0 and "resuming: 2 of 2 jobs already complete" in noop.output


def test_several_seeds_get_their_own_runs_and_leaderboards(tmp_path):
    args = ["bench", str(TABLE2), "--profile", "smoke", "--out", str(tmp_path), "--quiet", "--explain", "0", "--only", "ResNet",
            "--folds", "2", "--seeds", "0,1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    for seed in (0, 1):
        assert (tmp_path / f"ResNet-seed{seed}" / "summary.json").is_file()
        assert (tmp_path / f"seed-{seed}" / "leaderboard.csv").is_file()
