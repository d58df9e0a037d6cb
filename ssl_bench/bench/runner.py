"""The benchmark runner: every method x fold of a plan, through an executor, resumable.

Each method gets its run directory (:mod:`ssl_bench.experiment.rundir`) prepared by the driver (config, folds),
then the missing (method, fold) jobs go to the executor. A completed fold is never recomputed or
rewritten; a job that still fails after its retries is recorded with its traceback in
``<run>/failed/fold-<k>.txt`` while the other jobs go on. Summaries and the leaderboard are
written at the end from whatever folds are complete.

Resume: rerunning the same bench with ``resume=True`` after a failure, Ctrl-C, crash or ``kill -9``
of the driver runs only the missing folds. Leftovers of a killed process (``folds/.<k>.tmp-*``
folders, half-written ``.<file>.*`` temporaries) are never complete folds and are removed first.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from .. import components
from ..console import make_console, progress_bar
from ..errors import UserError
from ..experiment import provenance
from ..experiment.run import PreparedRun, prepare_run, write_summary
from ..fileio import atomic_write_text
from ..training.device import device_name, resolve_device
from .executors.base import Executor
from .job import Job, JobOutcome
from .plan import BenchPlan


@dataclass
class BenchResult:
    runs: list[PreparedRun]
    outcomes: list[JobOutcome] = field(default_factory=list)
    skipped: int = 0  # jobs already complete before this invocation
    summaries: dict[str, dict | None] = field(default_factory=dict)  # run name -> summary

    @property
    def failed(self) -> list[JobOutcome]:
        return [o for o in self.outcomes if not o.ok]

    @property
    def run_dirs(self) -> list[Path]:
        return [r.rundir.path for r in self.runs]


def job_config(cfg) -> dict:
    """The config a job receives, with ``out`` absolute (the run directories every executor
    writes). The other paths stay as given, as the run records them; the Ray executor, whose tasks
    run in other folders, makes every path field absolute for them (``config.absolute_paths``)."""
    config = cfg.to_dict()
    config["out"] = str(Path(cfg.out).expanduser().resolve())
    return config


def failure_text(outcome: JobOutcome) -> str:
    attempts = "".join(f"  {line}\n" for line in outcome.history)
    return (
        f"{outcome.job.label} failed after {outcome.attempts} attempt(s)\n"
        f"{attempts}\ntraceback of the last attempt:\n{outcome.error}"
    )


def prepare_bench(plan: BenchPlan, resume: bool,
                  console: Console | None = None) -> tuple[list[PreparedRun], list[Job], int]:
    """Every method's run directory prepared (its data loaded once: every method reads the same,
    which the first says on ``console``), the missing jobs, the number of complete ones."""
    runs: list[PreparedRun] = []
    jobs: list[Job] = []
    done = 0
    for cfg in plan.configs:
        run = prepare_run(cfg, console=None if runs else console)
        complete = run.rundir.completed_folds(cfg.data.folds)
        if complete and not resume:
            raise UserError(
                f"{run.rundir.path} already holds {len(complete)} completed fold(s); rerun with "
                f"--resume to finish the missing jobs (completed folds are never recomputed), "
                f"or choose another --out"
            )
        done += len(complete)
        runs.append(run)
        config = job_config(cfg)
        jobs.extend(Job(components.display_name(cfg), components.run_name(cfg), k, config)
                    for k in run.folds_to_run)
    first: dict[int, PreparedRun] = {}  # every method of one seed must use the same folds
    for run in runs:
        ref = first.setdefault(run.config.seed, run)
        if run.loaded is ref.loaded and not (run.fold_of == ref.fold_of).all():
            raise UserError("methods of one bench got different folds; use one seed and split")
    return runs, jobs, done


def run_bench_jobs(plan: BenchPlan, executor: Executor, resume: bool = False, console: Console | None = None,
              show_progress: bool = True) -> BenchResult:
    console = console or make_console(stderr=True)
    started = provenance.now()
    runs, jobs, done = prepare_bench(plan, resume, console if show_progress else None)
    by_name = {components.run_name(r.config): r for r in runs}
    result = BenchResult(runs, skipped=done)
    total = len(jobs) + done
    if done:
        console.print(f"resuming: {done} of {total} jobs already complete", highlight=False)
    progress = progress_bar("[bold]bench[/]", console=console, enabled=show_progress, eta_label=True)

    def on_outcome(outcome: JobOutcome) -> None:
        result.outcomes.append(outcome)
        run = by_name[outcome.job.run_name]
        path = run.rundir.failure_path(outcome.job.fold)
        if outcome.ok:
            assert outcome.metrics is not None
            path.unlink(missing_ok=True)
            info = escape(f"{outcome.job.label}: AUC {outcome.metrics['auc']:.3f} ({outcome.seconds:.0f}s)")
        else:
            atomic_write_text(path, failure_text(outcome))
            info = f"[red]{escape(outcome.job.label)} FAILED[/]"  # the info column reads rich markup
        progress.update(task, advance=1, info=info)

    with progress:
        task = progress.add_task("bench", total=total, completed=done, done_before=done,
                                 info=escape(executor.describe()))
        t0 = time.perf_counter()
        executor.run(jobs, on_outcome)
    label = device_name(resolve_device(plan.configs[0].device)) if plan.configs else "cpu"
    for run in runs:
        result.summaries[components.run_name(run.config)] = write_summary(run, label, started)
    if jobs and show_progress:
        console.print(f"{len(jobs)} job(s) in {time.perf_counter() - t0:.0f}s", highlight=False)
    return result
