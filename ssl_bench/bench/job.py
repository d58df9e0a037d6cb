"""One benchmark job: a (method, fold) pair, run in whatever process an executor chooses.

``run_job`` takes only plain data (the resolved config as a dict and the fold index), so the
same function runs in the driver, in a worker process or as a Ray task, and gives the same result:
every job seeds itself from (seed, fold) and honours the config's ``threads``.

A job never rewrites the run directory's ``config.yaml`` or ``folds.csv`` (the driver wrote them
before any job started); it recomputes the folds and checks them against ``folds.csv``
(:func:`ssl_bench.experiment.run.open_prepared_run`), so a worker that sees another dataset or
another output folder fails loudly instead of writing wrong folds.

Extra modules for worker processes: ``SSL_BENCH_IMPORT=pkg.mod[,pkg.mod2]`` names modules that the
driver and every job import before running (their decorators register components), for code that
is importable but not installed as a ``ssl_bench.plugins`` entry point (e.g. a test's plugin).
"""
from __future__ import annotations

import importlib
import os
import socket
import time
import traceback
from dataclasses import dataclass, field

from ..config import config_from_dict
from ..experiment.run import run_and_write_fold, open_prepared_run
from ..training.device import resolve_device

IMPORT_ENV = "SSL_BENCH_IMPORT"

_current: dict | None = None


@dataclass(frozen=True)
class Job:
    method: str
    run_name: str
    fold: int
    config: dict = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.run_name} fold {self.fold}"  # run name = method, or method-seed<N>


@dataclass
class JobOutcome:
    job: Job
    metrics: dict | None = None
    error: str | None = None  # traceback of the last failed attempt
    seconds: float = 0.0
    attempts: int = 1
    history: list[str] = field(default_factory=list)  # one line per failed attempt

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Attempt:
    """What one try of a job returns (picklable, so it crosses process and Ray boundaries)."""

    metrics: dict | None
    error: str | None
    seconds: float
    host: str


def import_extra_modules(spec: str | None = None) -> list[str]:
    """Import the modules named in ``SSL_BENCH_IMPORT`` (comma-separated); returns their names."""
    spec = os.environ.get(IMPORT_ENV, "") if spec is None else spec
    names = [s.strip() for s in spec.split(",") if s.strip()]
    for name in names:
        importlib.import_module(name)
    return names


def current_job() -> dict | None:
    """``{"run_name", "method", "fold", "attempt"}`` of the job running in this process, else None
    (for plugins and logging: a component can tell which fold it is trained for)."""
    return dict(_current) if _current is not None else None


def run_job(config: dict, fold: int) -> dict:
    """Train + evaluate one fold and write its files (atomically); returns the fold's metrics.

    A fold that is already complete is read back, never recomputed or rewritten.
    """
    import_extra_modules()
    cfg = config_from_dict(config)
    run = open_prepared_run(cfg, where=socket.gethostname())
    return run_and_write_fold(run, fold, resolve_device(cfg.device))


def run_job_attempt(config: dict, fold: int, attempt: int = 1, imports: str | None = None) -> Attempt:
    """One try of a job; an exception becomes the ``error`` traceback (KeyboardInterrupt passes)."""
    global _current
    if imports:
        import_extra_modules(imports)
    start = time.perf_counter()
    _current = {"run_name": config.get("name"), "method": config.get("method"), "fold": fold, "attempt": attempt}
    try:
        metrics = run_job(config, fold)
        return Attempt(metrics, None, time.perf_counter() - start, socket.gethostname())
    except Exception:
        return Attempt(None, traceback.format_exc(), time.perf_counter() - start, socket.gethostname())
    finally:
        _current = None


def last_line(error: str) -> str:
    lines = [line for line in error.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "unknown error"


def run_job_with_retries(job: Job, retries: int, imports: str | None = None) -> JobOutcome:
    """Run a job in this process, retrying a raising job ``retries`` times."""
    start = time.perf_counter()
    history: list[str] = []
    error = None
    for attempt in range(1, retries + 2):
        result = run_job_attempt(job.config, job.fold, attempt, imports)
        if result.error is None:
            return JobOutcome(job, result.metrics, None, time.perf_counter() - start, attempt, history)
        error = result.error
        history.append(f"attempt {attempt} on {result.host}: {last_line(error)}")
    return JobOutcome(job, None, error, time.perf_counter() - start, retries + 1, history)
