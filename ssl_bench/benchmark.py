"""A benchmark file run to its leaderboards in one library call: what ``ssl-bench bench`` does,
for notebooks, scripts and tests.

    from ssl_bench.benchmark import run_benchmark

    outcome = run_benchmark("benchmarks/table2.yaml", profile="smoke")
    outcome.reports[0].table            # the leaderboard of seed 0 (a pandas DataFrame)
    outcome.paths[0]["md"]              # bench-runs/table2/leaderboard.md
    outcome.failed                      # jobs that failed after their retries

It composes the two halves that may not import each other (``bench/``: the plan, the executor and
the runs; ``report/``: the statistics and the leaderboard files), so it sits in a layer above
both, below the command line. :func:`plan_benchmark` and :func:`write_leaderboards` are the
steps around :func:`ssl_bench.bench.runner.run_bench_jobs`, for a caller (the CLI) that says what it
is doing between them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from rich.console import Console

from . import components
from .bench.executors import build_executor
from .bench.executors.base import Executor
from .bench.job import JobOutcome
from .bench.plan import BenchPlan, default_out, load_plan
from .bench.runner import BenchResult, run_bench_jobs
from .config import Config
from .errors import UserError
from .experiment.saliency import explain_run
from .report.external import external_pairs, external_table
from .report.leaderboard import Report, build_report
from .report.runs import RunResult, load_run
from .report.publish import write_leaderboard, write_seed_leaderboard
from .training.device import default_profile, resolve_device


@dataclass
class BenchmarkOutcome:
    """What a benchmark produced: its plan, the runs and job outcomes, and per seed the
    leaderboard (:class:`~ssl_bench.report.leaderboard.Report`) and the files written."""

    plan: BenchPlan
    result: BenchResult
    #: seed -> the leaderboard of that seed's completed runs
    reports: dict[int, Report] = field(default_factory=dict)
    #: seed -> the leaderboard files (``md``, ``html``, ``png``, ``csv``, ...), in ``<out>/seed-<s>/`` with several seeds
    paths: dict[int, dict[str, Path]] = field(default_factory=dict)
    #: with several seeds: the leaderboard across seeds (``md``, ``csv``)
    seed_paths: dict[str, Path] = field(default_factory=dict)
    #: seed -> one line when the baseline is not the bench file's first choice (which, and why)
    baseline_notes: dict[int, str] = field(default_factory=dict)
    #: one line per finished run that got no saliency overlays, and why (a ViT, the k-NN probe, ...)
    saliency_notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[JobOutcome]:
        """The jobs that still failed after their retries (their tracebacks are in each run's ``failed/``)."""
        return self.result.failed

    @property
    def out(self) -> Path:
        """The folder of the run directories and the leaderboards."""
        return Path(self.plan.configs[0].out).expanduser()


def plan_benchmark(bench_file: str | Path, *, profile: str | None = None, flags: dict[str, Any] | None = None,
                   sets: Sequence[str] = (), only: Sequence[str] = (), seeds: Sequence[int] = (),
                   label_fractions: Sequence[float] | None = None, baseline: str | None = None,
                   executor: str = "local", executor_flags: dict[str, Any] | None = None,
                   image_sizes: Sequence[tuple[int, int]] | None = None,
                   cohort_roots: dict[str, str] | None = None) -> tuple[BenchPlan, Executor]:
    """The resolved plan of ``bench_file`` and the executor that runs it.

    Args:
        bench_file: a benchmark file (``benchmarks/table2.yaml``).
        profile: ``smoke``, ``quick`` or ``paper``, applied on top of every method (None: paper on
            CUDA, else quick).
        flags: config keys for every method, dotted (``{"data.dataset": "inbreast", "out": ...}``);
            without ``out`` the runs go to ``bench-runs/<bench file name>/``.
        sets: ``key=value`` overrides for every method, as ``--set``.
        only: run only these methods.
        seeds: several seeds, one run directory per method and seed.
        label_fractions: replace the bench file's ``label_fractions``.
        image_sizes: ``(height, width)`` pairs that replace the bench file's ``image_sizes``.
        baseline: the method the others are tested against (default: the bench file's).
        cohort_roots: cohort name -> folder, replacing the folders of the bench file's
            ``external`` cohorts (``--cohort-root NAME=DIR``).
        executor: an ``EXECUTORS`` name (``local``, ``ray``).
        executor_flags: the executor's options (``retries``, ``jobs_per_gpu``, ``address``, ...).

    Returns:
        The plan (one config per method, image size, fraction and seed) and the executor.
    """
    flags = dict(flags or {})
    flags["out"] = flags.get("out") or default_out(bench_file)
    plan = load_plan(bench_file, profile, flags, tuple(sets), tuple(only), tuple(seeds), default_profile,
                     tuple(label_fractions or ()), baseline, tuple(image_sizes or ()), cohort_roots)
    return plan, build_executor(executor, plan.configs[0], **(executor_flags or {}))


def write_leaderboards(plan: BenchPlan, result: BenchResult, reference: str | Path | None = None,
                       explain: int = 3) -> BenchmarkOutcome:
    """The leaderboard of every seed's completed runs, written beside them (``<out>/`` or, with
    several seeds, ``<out>/seed-<s>/``, plus the leaderboard across seeds in ``<out>/``), after
    each finished run's saliency overlays (:func:`~ssl_bench.experiment.saliency.explain_run`).

    Args:
        plan: the benchmark's plan (:func:`plan_benchmark`).
        result: what :func:`~ssl_bench.bench.runner.run_bench_jobs` returned for it.
        reference: a CSV of published numbers to show beside ours (``benchmarks/table2_paper.csv``).
        explain: Grad-CAM overlays per kind (true/false positives, false negatives) of each
            finished run, which its leaderboard shows; 0: none. A run that cannot be explained
            gets a line in ``saliency_notes``, never a failure.

    With the bench file's ``external`` study, the leaderboard ranks the first training cohort's
    cross-validation runs and its report holds the external-validation table (``external``:
    :mod:`ssl_bench.report.external`), written as ``external.csv`` and a section of the
    leaderboard.

    Returns:
        The outcome, its reports and the files written; a seed without a completed run has none.
    """
    outcome = BenchmarkOutcome(plan, result)

    def finished(cfg: Config) -> bool:
        return result.summaries.get(components.run_name(cfg)) is not None

    by_seed: dict[int, list[Path]] = {}
    for run in result.runs:
        if finished(run.config) and plan.ranked(run.config):
            by_seed.setdefault(run.config.seed, []).append(run.rundir.path)
            if explain > 0:
                try:
                    explain_run(run.rundir.path, resolve_device(run.config.device), explain)
                except UserError as exc:  # the finished results stand; the overlays are an extra
                    outcome.saliency_notes.append(f"no saliency overlays for {components.run_name(run.config)}: {exc}")
    several_seeds = len({c.seed for c in plan.configs}) > 1
    for seed, complete in by_seed.items():
        note = plan.baseline_note(seed, finished)
        if note:
            outcome.baseline_notes[seed] = note
        outcome.reports[seed] = build_report(complete, reference=reference, baseline=plan.baseline_run(seed, finished),
                                             control=plan.control_run(seed, finished))
        if plan.external is not None:
            outcome.reports[seed].external = _external_table(plan, result, seed, finished, outcome.reports[seed].notes)
        outcome.paths[seed] = write_leaderboard(outcome.reports[seed],
                                                outcome.out / f"seed-{seed}" if several_seeds else outcome.out)
    if several_seeds and len(outcome.reports) > 1:
        outcome.seed_paths = write_seed_leaderboard(outcome.reports, outcome.out)
    return outcome


def _external_table(plan: BenchPlan, result: BenchResult, seed: int, finished: Callable[[Config], bool],
                    notes: list[str]) -> pd.DataFrame:
    """The external-validation table of ``seed``'s pairs whose two runs finished (a note for each
    other pair), found in the saved runs as ``ssl-bench report`` finds them
    (:func:`~ssl_bench.report.external.external_pairs`), which must be the pairs the plan declared."""
    assert plan.external is not None
    where = {components.run_name(r.config): r.rundir.path for r in result.runs}
    declared: set[tuple[str, str, str, Path, Path]] = set()
    loaded: dict[str, RunResult] = {}
    for pair in (p for p in plan.external.pairs if p.seed == seed):
        internal, external = components.run_name(pair.internal), components.run_name(pair.external)
        if finished(pair.internal) and finished(pair.external):
            declared.add((components.display_name(pair.internal), pair.train, pair.test, where[internal].resolve(), where[external].resolve()))
            for name in (internal, external):
                loaded.setdefault(name, load_run(where[name]))
        else:
            notes.append(f"External validation of {pair.row} from {pair.train} to {pair.test} left out: "
                         f"{internal if not finished(pair.internal) else external} did not finish.")
    pairs = external_pairs(list(loaded.values()))
    found = {(p.method, p.train, p.test, p.internal.path.resolve(), p.external.path.resolve()) for p in pairs}
    assert found == declared, f"the runs' configs pair {sorted(found)}, the plan declared {sorted(declared)}"
    return external_table(pairs)


def run_benchmark(bench_file: str | Path, *, resume: bool = False, reference: str | Path | None = None,
                  console: Console | None = None, show_progress: bool = False, explain: int = 3,
                  **options: Any) -> BenchmarkOutcome:
    """Run ``bench_file``'s methods x folds and write the leaderboards, as ``ssl-bench bench``.

    Args:
        bench_file: a benchmark file (``benchmarks/table2.yaml``).
        resume: finish the missing jobs of an earlier run into the same folder (complete folds are
            never recomputed); without it, a folder holding completed folds is refused.
        reference: a CSV of published numbers to show beside ours.
        console: where progress and notes go (default: stderr).
        show_progress: a progress bar with each job's AUC.
        explain: saliency overlays per kind of each finished run (:func:`write_leaderboards`).
        **options: the plan's options (:func:`plan_benchmark`: ``profile``, ``flags``, ``sets``,
            ``only``, ``seeds``, ``label_fractions``, ``image_sizes``, ``baseline``, ``executor``,
            ``executor_flags``, ``cohort_roots``).

    Returns:
        The :class:`BenchmarkOutcome`; failed jobs are in ``outcome.failed``, not raised.
    """
    plan, executor = plan_benchmark(bench_file, **options)
    result = run_bench_jobs(plan, executor, resume=resume, console=console, show_progress=show_progress)
    return write_leaderboards(plan, result, reference, explain)
