"""The executor interface: run a list of benchmark jobs and report each outcome as it arrives."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable

from ..job import Job, JobOutcome


class Executor(ABC):
    """Base class of registered executors (``local``, ``ray``)."""

    def __init__(self, retries: int = 1):
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries

    @abstractmethod
    def run(self, jobs: list[Job], on_outcome: Callable[[JobOutcome], None]) -> None:
        """Run every job (retrying failures) and call ``on_outcome`` once per job, in any order.

        Contract: a job runs :func:`ssl_bench.bench.job.run_job_attempt` (or ``run_job_with_retries``)
        wherever the executor places it, and a raising job is retried ``self.retries`` times
        before its outcome carries the last traceback. ``on_outcome`` is called from the thread
        that called ``run``, as jobs finish. On ``KeyboardInterrupt`` (or any exception) ``run``
        stops every queued and running job before re-raising, so nothing goes on in the
        background; a stopped job leaves no complete fold (fold writes are atomic).
        """

    def describe(self) -> str:
        return type(self).__name__
