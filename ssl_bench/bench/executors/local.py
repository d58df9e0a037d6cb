"""The local executor: jobs in this process one by one, or packed N at a time per GPU.

With ``jobs_per_gpu=1`` jobs run in the driver process (the dataset is decoded once). With
``jobs_per_gpu=N > 1`` N worker processes (spawned, so CUDA is safe) run jobs concurrently on the
same device: at TSBN's batch of 4 one job leaves most of a large GPU idle. Each job seeds itself,
so results equal running the jobs one by one.
"""
from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable

from ...registry import EXECUTORS
from ..job import Job, JobOutcome, execute_with_retries
from .base import Executor


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
                on_outcome(execute_with_retries(job, self.retries))
            return
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=self.jobs_per_gpu, mp_context=ctx) as pool:
            futures = {pool.submit(execute_with_retries, job, self.retries): job for job in jobs}
            try:
                for fut in as_completed(futures):
                    on_outcome(fut.result())
            except KeyboardInterrupt:
                for fut in futures:
                    fut.cancel()
                raise
