"""``ssl-bench bench``: run every method x fold of a benchmark file and print the leaderboard."""
from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.console import Console

from ..errors import ConfigError
from .run_cmd import collect_flags

out_console = Console()
err_console = Console(stderr=True)


def _seeds(text: str | None) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        return tuple(int(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"--seeds expects comma-separated integers, got '{text}'") from None


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
@click.option("--device", default=None)
@click.option("--out", default="runs", show_default=True)
@click.option("--resume", is_flag=True, help="Finish the missing jobs of an earlier, interrupted bench.")
@click.option("--executor", default="local", show_default=True, help="local | ray (ssl-bench list executors).")
@click.option("--jobs-per-gpu", type=int, default=1, show_default=True, help="Concurrent jobs per GPU (local).")
@click.option("--retries", type=int, default=1, show_default=True, help="Retries of a failing job.")
@click.option("--ray-address", default=None, help="Ray cluster address ('auto' = the running cluster).")
@click.option("--gpus-per-job", type=float, default=None, help="Ray: GPUs per job (fractions allowed).")
@click.option("--cpus-per-job", type=float, default=1.0, show_default=True, help="Ray: CPUs per job.")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a config key for every method.")
@click.option("--reference", type=click.Path(dir_okay=False), default=None,
              help="Paper numbers to show beside ours (e.g. benchmarks/table2_paper.csv).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def bench(bench_file, profile, only, seeds, resume, executor, jobs_per_gpu, retries, ray_address,
          gpus_per_job, cpus_per_job, sets, reference, quiet, **kwargs):
    """Run a benchmark file (e.g. benchmarks/table2.yaml): all methods x folds, then the leaderboard."""
    from .. import components
    from ..bench.plan import load_plan
    from ..bench.runner import run_bench
    from ..registry import EXECUTORS

    flags = collect_flags(kwargs)
    plan = load_plan(bench_file, profile, flags, tuple(sets), tuple(only), _seeds(seeds))
    options = {"retries": retries}
    if executor == "local":
        options["jobs_per_gpu"] = jobs_per_gpu
    elif executor == "ray":
        options.update(address=ray_address, gpus_per_job=gpus_per_job, cpus_per_job=cpus_per_job)
    cls = EXECUTORS.get(executor)
    runner = cls(**components.check_options(executor, cls, options, {}))
    first = plan.configs[0]
    out_console.print(
        f"bench {bench_file}: {len(plan.configs)} method(s) x {first.data.folds} folds · profile "
        f"[bold]{first.profile}[/] · dataset {first.data.dataset} · {runner.describe()}",
        highlight=False,
    )
    try:
        result = run_bench(plan, runner, resume=resume, console=err_console, show_progress=not quiet)
    except KeyboardInterrupt:
        err_console.print(
            "[yellow]interrupted.[/] Completed folds are saved; rerun the same command with "
            "--resume to finish the missing jobs."
        )
        sys.exit(130)
    out_dir = Path(first.out).expanduser()
    complete = [p for p, s in zip(result.run_dirs, result.summaries.values()) if s is not None]
    if complete:
        from ..bench.report import write_leaderboard

        paths = write_leaderboard(complete, out_dir, reference=reference, console=out_console)
        out_console.print(f"leaderboard: {paths['md']}, {paths['html']}, {paths['png']}", highlight=False)
    if result.failed:
        err_console.print(f"[bold red]{len(result.failed)} job(s) failed[/] (tracebacks in <run>/failed/):")
        for o in result.failed:
            err_console.print(f"  - {o.job.label}: {o.error.strip().splitlines()[-1]}", highlight=False)
        sys.exit(1)
