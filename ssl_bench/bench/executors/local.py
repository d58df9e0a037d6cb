"""The local executor: jobs in this process one by one, or packed N at a time per GPU.

With ``jobs_per_gpu=1`` jobs run in the driver process (the dataset is decoded once). With
``jobs_per_gpu=N > 1`` N worker processes (spawned, so CUDA is safe) run jobs concurrently on the
same device: at TSBN's batch of 4 one job leaves most of a large GPU idle. Each job seeds itself
and sets the config's ``threads``, so results equal running the jobs one by one (on the CPU,
bit-identical when ``threads`` is fixed, as in the smoke profile).

Ctrl-C: workers ignore SIGINT; the driver cancels the queued jobs and kills the workers, so no
job goes on in the background. Workers also die with the driver (Linux ``PR_SET_PDEATHSIG``) after
a ``kill -9``. A fold a killed worker was writing stays in its ``folds/.<k>.tmp-*`` folder, which
the next ``--resume`` removes; it never counts as complete.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
import sys
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Callable

from ...registry import EXECUTORS
from ..job import IMPORT_ENV, Job, JobOutcome, run_job_with_retries
from .base import Executor


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _worker_init(parent: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver handles Ctrl-C
    _die_with_parent()
    if os.getppid() != parent:  # the driver died before prctl took effect
        os._exit(1)


@EXECUTORS.register("local")
class LocalExecutor(Executor):
    """Run jobs on this machine: in-process, or N concurrent worker processes per GPU."""

    def __init__(self, retries: int = 1, jobs_per_gpu: int = 1):
        super().__init__(retries)
        if jobs_per_gpu < 1:
            raise ValueError("jobs_per_gpu must be >= 1")
        self.jobs_per_gpu = jobs_per_gpu

    def describe(self) -> str:
        if self.jobs_per_gpu == 1:
            return "local (one job at a time)"
        return f"local ({self.jobs_per_gpu} concurrent jobs)"

    def run(self, jobs: list[Job], on_outcome: Callable[[JobOutcome], None]) -> None:
        if self.jobs_per_gpu == 1:
            for job in jobs:
                on_outcome(run_job_with_retries(job, self.retries))
            return
        if not jobs:
            return
        imports = os.environ.get(IMPORT_ENV, "")
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            max_workers=min(self.jobs_per_gpu, len(jobs)), mp_context=ctx,
            initializer=_worker_init, initargs=(os.getpid(),),
        )
        pending = {pool.submit(run_job_with_retries, job, self.retries, imports) for job in jobs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_outcome(fut.result())
        except BaseException:
            _terminate(pool)
            raise
        pool.shutdown(wait=True)


def _terminate(pool: ProcessPoolExecutor) -> None:
    """Cancel queued jobs and kill the running ones (their folds stay incomplete)."""
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for p in processes:
        if p.is_alive():
            p.kill()
    for p in processes:
        p.join(timeout=5)
