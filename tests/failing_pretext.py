"""Test plugin: a pretext task ``flaky`` that fails on one fold, for the fault-handling tests.

It is the supervised baseline (``none``) except that building it inside a bench job for fold
``fail_fold`` raises, after appending one line to the file ``counter`` (so tests can count the
attempts across processes), as long as ``counter`` holds fewer than ``fail_times`` lines; later
attempts succeed. Building it in the driver (config validation) never fails.

Worker processes and Ray tasks import it through the job hook: run the bench with
``SSL_BENCH_IMPORT=failing_pretext`` and ``tests/`` on ``PYTHONPATH``.
"""
from __future__ import annotations

from pathlib import Path

from ssl_bench.bench.job import current_job
from ssl_bench.pretext.none import NoPretext
from ssl_bench.registry import PRETEXTS


class InjectedFailure(RuntimeError):
    """The failure this plugin raises on purpose."""


if "flaky" not in PRETEXTS.names():

    @PRETEXTS.register("flaky")
    class FlakyPretext(NoPretext):
        """``none`` that raises on fold ``fail_fold`` of a bench job (test plugin)."""

        def __init__(self, fail_fold: int = 0, counter: str = "", fail_times: int = 99):
            job = current_job()
            if job is None or job["fold"] != fail_fold:
                return
            if counter:
                path = Path(counter)
                if path.is_file() and len(path.read_text().splitlines()) >= fail_times:
                    return
                with open(path, "a") as fh:
                    fh.write(f"{job['run_name']} fold {job['fold']} attempt {job['attempt']}\n")
            raise InjectedFailure(f"injected failure on fold {fail_fold}")
