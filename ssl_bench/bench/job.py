"""One benchmark job: a (method, fold) pair, run in whatever process an executor chooses.

``execute_job`` takes only plain data (the resolved config as a dict and the fold index), so the
same function runs in the driver, in a worker process or as a Ray task, and gives the same result:
every job seeds itself from (seed, fold).
"""
from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Job:
    method: str
    run_name: str
    fold: int
    config: dict = field(compare=False, repr=False)

    @property
    def label(self) -> str:
        return f"{self.method} fold {self.fold}"


@dataclass
class JobOutcome:
    job: Job
    metrics: dict | None = None
    error: str | None = None  # traceback of the last failed attempt
    seconds: float = 0.0
    attempts: int = 1

    @property
    def ok(self) -> bool:
        return self.error is None


def execute_job(config: dict, fold: int) -> dict:
    """Train + evaluate one fold and write its files; returns the fold's metrics."""
    from ..config import config_from_dict
    from ..engine.device import resolve_device
    from ..engine.experiment import complete_fold, prepare_run

    cfg = config_from_dict(config)
    run = prepare_run(cfg)
    return complete_fold(run, fold, resolve_device(cfg.device))


def execute_with_retries(job: Job, retries: int) -> JobOutcome:
    """Run a job in this process, retrying a raising job ``retries`` times."""
    start = time.perf_counter()
    error = None
    for attempt in range(1, retries + 2):
        try:
            metrics = execute_job(job.config, job.fold)
            return JobOutcome(job, metrics, None, time.perf_counter() - start, attempt)
        except KeyboardInterrupt:
            raise
        except Exception:
            error = traceback.format_exc()
    return JobOutcome(job, None, error, time.perf_counter() - start, retries + 1)
