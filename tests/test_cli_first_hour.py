"""A newcomer's first hour (issue 28, items 3 and 4): a bench writes apart from single runs, and
the terminal says what it is doing (what loads, the time left, how to resume after Ctrl-C, no
library warnings through the bars)."""
from __future__ import annotations

import io
import warnings

from click.testing import CliRunner
from rich.console import Console

import ssl_bench.bench.executors.local as local
import ssl_bench.experiment.run as experiment_run
from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.console import TimeLeftColumn, progress_bar, working
from ssl_bench.experiment.run import prepare_run
from ssl_bench.testing import check_pretext

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


def _time_left(progress, task_id) -> str:
    column = next(c for c in progress.columns if isinstance(c, TimeLeftColumn))
    return column.render(progress.tasks[task_id]).plain


def test_slow_bars_get_a_time_left_from_the_mean_time_per_step():
    """Item 4b: rich estimates the time left from the last 30 s of steps only, so the folds bar
    (and a bench's jobs bar), one step every few minutes, showed -:--:-- for ever; the bars of
    console.progress_bar fall back to the mean time per step since the task started, not
    counting the steps a resumed bench had done before."""
    now = [0.0]
    progress = progress_bar(enabled=False)
    progress.get_time = lambda: now[0]
    folds = progress.add_task("folds", total=5, info="")
    assert _time_left(progress, folds) == "-:--:--"  # nothing done yet: nothing to go by
    for t in (100.0, 200.0):
        now[0] = t
        progress.update(folds, advance=1)
    assert progress.tasks[folds].time_remaining is None  # rich's own estimate: none
    assert _time_left(progress, folds) == "0:05:00"  # 3 folds left at 100 s each
    now[0] = 0.0
    resumed = progress.add_task("bench", total=5, completed=2, done_before=2, info="")
    now[0] = 100.0
    progress.update(resumed, advance=1)
    assert _time_left(progress, resumed) == "0:03:20"  # 2 jobs left at 100 s each
    fast = progress.add_task("steps", total=20, info="")
    for t in (101.0, 102.0, 103.0):
        now[0] = t
        progress.update(fast, advance=1)
    assert _time_left(progress, fast) == "0:00:17"  # rich's recent speed, where it has one


def _interrupt_call(monkeypatch, module, name, n):
    """``module.name`` runs as before until its ``n``-th call, which raises KeyboardInterrupt (Ctrl-C)."""
    real = getattr(module, name)
    calls = []

    def stopped(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, stopped)


def test_ctrl_c_in_run_says_what_is_kept_and_the_command_that_resumes(tmp_path, monkeypatch):
    """Item 4c: Ctrl-C during a run's first fold, then during its second: one line each, exit
    130, no traceback; the line's command (the same one) trains only the missing folds."""
    args = ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--folds", "3",
            "--out", str(tmp_path / "my runs"), "--quiet"]
    command = ("ssl-bench run --pretext none --transfer finetune --profile smoke --folds 3 "
               f"--out '{tmp_path}/my runs' --quiet")
    run = tmp_path / "my runs" / "none-finetune"
    with monkeypatch.context() as patch:
        _interrupt_call(patch, experiment_run, "run_and_write_fold", 1)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert result.stderr.strip().splitlines() == [
        f"interrupted: no fold was complete yet; the same command starts again: {command}"]
    with monkeypatch.context() as patch:
        _interrupt_call(patch, experiment_run, "run_and_write_fold", 2)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        f"interrupted: 1 of 3 folds of {run} is complete and kept; the same command resumes with the missing "
        f"ones: {command}"]
    kept = (run / "folds" / "0" / "metrics.json").stat().st_mtime_ns
    resumed = CliRunner().invoke(main, args)
    assert resumed.exit_code == 0, resumed.output
    assert (run / "summary.json").is_file() and (run / "folds" / "0" / "metrics.json").stat().st_mtime_ns == kept


def test_ctrl_c_in_bench_says_where_the_jobs_are_kept_and_the_resume_command(tmp_path, monkeypatch):
    """Item 4c: Ctrl-C during a bench's second job: one line naming the output folder and the
    command with --resume, exit 130, no traceback; that command finishes the missing job."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny.yaml").write_text(TINY_BENCH)
    args = ["bench", "tiny.yaml", "--profile", "smoke", "--folds", "2", "--quiet"]
    with monkeypatch.context() as patch:
        _interrupt_call(patch, local, "run_job_with_retries", 2)
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 130, result.output
    assert "Traceback" not in result.output
    assert result.stderr.strip().splitlines() == [
        "interrupted: running jobs were stopped; completed jobs (folds) are kept in bench-runs/tiny; this command "
        "finishes the missing ones: ssl-bench bench tiny.yaml --profile smoke --folds 2 --quiet --resume"]
    resumed = CliRunner().invoke(main, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming: 1 of 2 jobs already complete" in resumed.output


def test_a_dino_pretext_step_warns_nothing():
    """Item 4d: lightly's DINO head called torch's deprecated ``weight_norm``, whose FutureWarning
    printed through the progress bars once per fold; one step of the smoke DINO pretext stage
    (student and teacher heads built, forward, loss, backward, teacher update) warns nothing."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_pretext("dino")


def _terminal() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=200), buffer


def test_a_slow_step_says_what_it_is_doing_on_a_terminal_only():
    """Item 4a: a spinner line while a step without a bar runs (the imports), one line before a
    step that may show a bar of its own (a dataset decoding its files); nothing in a log or a
    pipe, nothing with --quiet (enabled=False)."""
    console, shown = _terminal()
    with working("loading torch", console):
        pass
    assert "loading torch" in shown.getvalue()
    console, shown = _terminal()
    with working("loading dataset", console, bars_inside=True):
        pass
    assert shown.getvalue() == "loading dataset\n"
    console, shown = _terminal()
    with working("loading torch", console, enabled=False):
        pass
    log = io.StringIO()
    with working("loading torch", Console(file=log, width=200)):
        pass
    assert shown.getvalue() == log.getvalue() == ""


def test_a_run_says_which_dataset_loads_and_where_its_cache_is(tmp_path):
    """Item 4a: the dataset, made once (seconds to minutes) and then read from the cache, is named
    with its image size and cache folder before it loads."""
    cfg = build_config("smoke", flags={"out": str(tmp_path), "device": "cpu",
                                       "data.cache_dir": str(tmp_path / "cache")})
    console, shown = _terminal()
    prepare_run(cfg, console=console)
    assert shown.getvalue() == (f"loading dataset synthetic at 64x32 (its images are made once, then read from the "
                                f"cache in {tmp_path / 'cache'})\n")
