"""``ssl-bench bench``: run every method x fold of a benchmark file and print the leaderboard."""
from __future__ import annotations

import sys

import click
from rich.markup import escape

from .. import components
from ..bench.plan import BENCH_OUT, default_out
from ..config import parse_image_sizes
from ..console import make_console, working
from ..errors import ConfigError, UserError
from ..fileio import OutOfSpace
from .run_cmd import (LABEL_FRACTION_HELP, PRETEXT_DATA_HELP, SPLIT_HELP, SPLITS, TEST_DATASET_HELP,
                      collect_flags, command_line, log_options, parse_fractions, stop_on_sigterm)


out_console = make_console()
err_console = make_console(stderr=True)


def resume_command() -> str:
    """The command line that resumes this bench (the same one, with --resume)."""
    return command_line(("--resume",))


def _seeds(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got '{text}'") from None


def _cohort_roots(items: tuple[str, ...]) -> dict[str, str]:
    roots = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name.strip() or not folder.strip():
            raise ConfigError(f"--cohort-root expects NAME=DIR (a cohort of the bench file's external section), got '{item}'")
        roots[name.strip()] = folder.strip()
    return roots


@click.command("bench")
@click.argument("bench_file", type=click.Path(dir_okay=False))
@click.option("--profile", type=click.Choice(["smoke", "quick", "paper"]), default=None,
              help="Settings preset applied on top of every method (default: paper on CUDA, else quick).")
@click.option("--only", multiple=True, metavar="METHOD", help="Run only these methods (repeatable).")
@click.option("--folds", "data__folds", type=int, default=None)
@click.option("--seed", type=int, default=None)
@click.option("--seeds", default=None, help="Several seeds, e.g. 0,1,2 (one run directory per method and seed).")
@click.option("--dataset", "data__dataset", default=None)
@click.option("--data-root", "data__root", default=None)
@click.option("--split", "data__split", type=click.Choice(SPLITS), default=None, help=SPLIT_HELP)
@click.option("--test-dataset", "data__test_dataset", default=None, metavar="NAME", help=TEST_DATASET_HELP)
@click.option("--test-data-root", "data__test_root", default=None, help="Folder of the --test-dataset.")
@click.option("--pretext-data", "pretext_data__dataset", default=None, metavar="DATASET", help=PRETEXT_DATA_HELP)
@click.option("--pretext-data-root", "pretext_data__root", default=None, help="Folder of the --pretext-data dataset.")
@click.option("--device", default=None)
@click.option("--out", default=None,
              help="Parent folder of the run directories and the leaderboard (default: "
                   f"{BENCH_OUT}/<bench file name>, e.g. {BENCH_OUT}/table2 for benchmarks/table2.yaml).")
@click.option("--resume", is_flag=True, help="Finish the missing jobs of an earlier, interrupted bench.")
@click.option("--executor", default="local", show_default=True, help="local | ray (ssl-bench list executors).")
@click.option("--jobs-per-gpu", type=int, default=None,
              help="Local: concurrent jobs per GPU (default 1; = params.local.jobs_per_gpu).")
@click.option("--retries", type=int, default=None,
              help="Retries of a failing job before it is recorded as failed (default 1; = params.<executor>.retries).")
@click.option("--ray-address", default=None, help="Ray cluster address ('auto' = the running cluster).")
@click.option("--gpus-per-job", type=float, default=None,
              help="Ray: GPUs per job (fractions allowed; default 1 if the cluster has GPUs, else 0).")
@click.option("--cpus-per-job", type=float, default=None, help="Ray: CPUs per job (default 1).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config key for every method; params.<executor>.<option> sets the executor.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="Paper numbers to show beside ours (e.g. benchmarks/table2_paper.csv).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--baseline", default=None, metavar="METHOD",
              help="The method the others are tested against (default: the bench file's 'baseline', "
                   "the first of its list that finished; without one, no p-values).")
@click.option("--explain", default=3, show_default=True, type=int, metavar="N",
              help="Grad-CAM overlays of each finished run's N most confident true positives, false "
                   "positives and false negatives, shown in the HTML leaderboard (0: none).")
@click.option("--label-fraction", "label_fraction", default=None, metavar="F[,F...]",
              help=LABEL_FRACTION_HELP + " Replaces the bench file's label_fractions.")
@click.option("--image-size", "image_size", default=None, metavar="HxW[,HxW...]",
              help="Run every method at each image size, e.g. 64x32,96x48 (one run directory per "
                   "method and size, named -<H>x<W>; the report adds the resolution curve). Replaces "
                   "the bench file's image_sizes, which override the profile's size.")
@click.option("--cohort-root", "cohort_roots", multiple=True, metavar="NAME=DIR",
              help="Folder of a cohort of the bench file's external section (e.g. --cohort-root "
                   "INbreast=/data/inbreast), replacing the file's root; repeatable.")
@log_options
def bench(bench_file, profile, only, seeds, resume, executor, jobs_per_gpu, retries, ray_address,
          gpus_per_job, cpus_per_job, sets, reference, quiet, baseline, explain, label_fraction, image_size,
          cohort_roots, **kwargs):
    """Run a benchmark file (e.g. benchmarks/table2.yaml): all methods x folds, then the leaderboard.

    Interrupted or failed jobs are finished by rerunning the same command with --resume;
    completed folds are never recomputed.
    """
    if explain < 0:  # before any training
        raise UserError(f"--explain must be 0 or more, got {explain}")
    sizes = parse_image_sizes(image_size, "--image-size") if image_size else None  # a typo costs no torch import
    roots = _cohort_roots(cohort_roots)
    # torch, scikit-learn and matplotlib load only when a command runs, so --help stays fast
    with working("loading torch, timm and scikit-learn", err_console, enabled=not quiet):
        from ..bench.job import import_extra_modules, last_line
        from ..bench.runner import run_bench_jobs
        from ..benchmark import plan_benchmark, write_leaderboards
        from ..report.render import curves, print_report

    import_extra_modules()  # SSL_BENCH_IMPORT: extra component modules (also imported by every job)
    kwargs["out"] = kwargs["out"] or default_out(bench_file)
    plan, runner = plan_benchmark(
        bench_file, profile=profile, flags=collect_flags(kwargs), sets=sets, only=only, seeds=_seeds(seeds),
        label_fractions=parse_fractions(label_fraction), baseline=baseline, executor=executor,
        image_sizes=sizes, cohort_roots=roots,
        executor_flags=dict(retries=retries, jobs_per_gpu=jobs_per_gpu, address=ray_address,
                            gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job))
    first = plan.configs[0]
    if plan.external is None:
        grid = f"{len(plan.configs)} method(s) x {first.data.folds} folds"
        data = f"dataset {first.data.dataset}"
    else:  # the cohorts' runs: cross-validations (the bench's folds) and external tests (one fold)
        grid = f"{len(plan.configs)} runs ({first.data.folds}-fold cross-validations and external tests)"
        data = ("cohorts " + ", ".join(c.name for c in plan.external.train) + " -> "
                + ", ".join(c.name for c in plan.external.test))
    out_console.print(
        escape(f"bench {bench_file}: {grid} · profile ") + f"[bold]{escape(first.profile)}[/] · "
        + escape(f"{data} · {runner.describe()}"),
        highlight=False, soft_wrap=True,
    )
    try:
        with stop_on_sigterm():
            result = run_bench_jobs(plan, runner, resume=resume, console=err_console, show_progress=not quiet)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted[/]: " + escape(f"running jobs were stopped; completed jobs (folds) are kept "
                                                f"in {first.out}; this command finishes the missing ones: "
                                                f"{resume_command()}"),
            highlight=False, soft_wrap=True,
        )
        sys.exit(130)
    except OutOfSpace as exc:  # one line (the group prints it, exit 1)
        raise exc.keeping(f"completed jobs (folds) are kept in {first.out}",
                          rerun=f"finish the missing ones with: {resume_command()}") from None
    outcome = write_leaderboards(plan, result, reference, explain)
    for note in outcome.saliency_notes:
        err_console.print(f"[yellow]{escape(note)}[/]", highlight=False, soft_wrap=True)
    for seed, report in outcome.reports.items():  # --seeds: one leaderboard per seed, in seed-<s>/
        if seed in outcome.baseline_notes:
            err_console.print(f"[yellow]{escape(outcome.baseline_notes[seed])}[/]", highlight=False, soft_wrap=True)
        paths = outcome.paths[seed]
        print_report(report, out_console, sections=("leaderboard", "notes", "external"))
        out_console.print(f"leaderboard: {paths['md']}, {paths['html']}, {paths['png']}",
                          highlight=False, markup=False, soft_wrap=True)
        if "external_csv" in paths:
            out_console.print(f"external validation: {paths['external_csv']}", highlight=False, markup=False,
                              soft_wrap=True)
        for axis in curves(report):  # label efficiency, resolution
            out_console.print(f"{axis.title.lower()}: {paths[f'{axis.name}_png']}, {paths[f'{axis.name}_csv']}",
                              highlight=False, markup=False, soft_wrap=True)
    if outcome.seed_paths:
        out_console.print(f"leaderboard across seeds: {outcome.seed_paths['md']}, {outcome.seed_paths['csv']}",
                          highlight=False, markup=False, soft_wrap=True)
    if outcome.failed:
        by_name = {components.run_name(r.config): r for r in result.runs}
        attempts = runner.retries + 1
        err_console.print(f"[bold red]{len(outcome.failed)} of {len(result.outcomes)} job(s) failed[/] "
                          f"after {attempts} attempt(s) each:")
        for o in outcome.failed:
            path = by_name[o.job.run_name].rundir.failure_path(o.job.fold)
            err_console.print(f"  - {o.job.label}: {last_line(o.error)}\n    traceback: {path}",
                              highlight=False, markup=False, soft_wrap=True)
        err_console.print(f"Fix the cause, then rerun only the failed jobs with:\n  {resume_command()}",
                          highlight=False, markup=False, soft_wrap=True)
        sys.exit(1)
