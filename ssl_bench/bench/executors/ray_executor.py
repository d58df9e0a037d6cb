"""The Ray executor: every (method, fold, seed) job is one Ray task, on one machine or a cluster.

``ssl-bench bench FILE --executor ray [--ray-address ADDR] [--gpus-per-job F] [--cpus-per-job F]``

- No ``--ray-address`` (and no ``RAY_ADDRESS`` in the environment): a private local Ray instance is
  started for this bench and shut down at its end. ``auto``: the cluster started with
  ``ray start`` on this machine; ``HOST:PORT`` or ``ray://HOST:PORT``: that cluster.
- Each job asks for ``--gpus-per-job`` GPUs (fractions pack several jobs on one GPU; default 1 when
  the cluster has GPUs, else 0) and ``--cpus-per-job`` CPUs. Results stream back as jobs finish.
- Jobs write their fold files straight into the output folder, so ``--out`` must be on storage
  that the driver and every node mount at the same path (NFS, a cluster file system). This is
  checked before the first job: the driver writes a probe file, a task on every node reads it and
  writes its own, and the driver reads those back; a node that cannot is a clear error.
- A task does not run in the driver's working folder: every relative path of a job's config
  (the config's path fields: data roots, the cache, a weights file, ...) is made absolute
  against the driver's working folder, so the files must sit at that path on every node too.
- Faults: a job that raises is resubmitted as a fresh task (possibly on another node) up to
  ``--retries`` times, then reported failed with its traceback. A worker process or node lost
  mid-job is Ray's business: the task is rerun by Ray itself (``max_retries``, default 3, counted
  apart from ``--retries``); a fold a lost node was writing stays incomplete and is redone.
- Ctrl-C cancels every queued and running task (``ray.cancel(force=True)``); a ``kill -9`` of the
  driver ends its Ray job, which kills its tasks. ``--resume`` then finishes the missing jobs.

``ray`` is imported only when this executor runs: ``pip install "ssl-bench[ray]"``.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import socket
import time
import uuid
import warnings
from pathlib import Path
from typing import Any, Callable

from ...config import absolute_paths
from ...errors import UserError
from ...registry import EXECUTORS
from ..job import IMPORT_ENV, Attempt, Job, JobOutcome, run_job_attempt, last_line
from .base import Executor

PROBE_PREFIX = ".ssl-bench-probe-"


def _import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(
            'the ray executor needs Ray: pip install "ssl-bench[ray]" (or pip install "ray[default]")'
        ) from None
    return ray


def probe_node(out_dirs: list[str], token: str, node_id: str) -> list[str]:
    """Runs on one node: read the driver's probe file and write one back; returns problems."""
    problems = []
    for d in out_dirs:
        host = socket.gethostname()
        try:
            seen = (Path(d) / f"{PROBE_PREFIX}{token}").read_text()
        except OSError as exc:
            problems.append(f"{host} cannot read the driver's probe file in {d} ({exc.strerror or exc})")
            continue
        if seen != token:
            problems.append(f"{host} sees another file at {d}")
            continue
        try:
            (Path(d) / f"{PROBE_PREFIX}{token}-{node_id}").write_text(host)
        except OSError as exc:
            problems.append(f"{host} cannot write to {d} ({exc.strerror or exc})")
    return problems


def portable(job: Job) -> Job:
    """The job with every relative path of its config made absolute against the driver's working
    folder (:func:`~ssl_bench.config.absolute_paths`: data roots, cache, weights file, ...), which
    a Ray worker does not share."""
    return dataclasses.replace(job, config=absolute_paths(job.config))


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """One Ray task per job, on a private local Ray instance or a Ray cluster (--ray-address)."""

    def __init__(self, retries: int = 1, address: str | None = None, gpus_per_job: float | None = None,
                 cpus_per_job: float = 1.0, node_retries: int = 3, probe_timeout: float = 120.0):
        super().__init__(retries)
        if gpus_per_job is not None and (gpus_per_job < 0 or (gpus_per_job > 1 and gpus_per_job != int(gpus_per_job))):
            raise UserError(f"--gpus-per-job must be a fraction up to 1 or a whole number, got {gpus_per_job}")
        if cpus_per_job < 0:
            raise UserError(f"--cpus-per-job must be >= 0, got {cpus_per_job}")
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.gpus_per_job = gpus_per_job
        self.cpus_per_job = cpus_per_job
        self.node_retries = node_retries
        self.probe_timeout = probe_timeout

    def describe(self) -> str:
        where = f"cluster {self.address}" if self.address else "local Ray instance"
        gpus = "auto" if self.gpus_per_job is None else f"{self.gpus_per_job:g}"
        return f"ray ({where}; {gpus} GPU, {self.cpus_per_job:g} CPU per job)"

    # ---- connection ------------------------------------------------------------------------
    def _connect(self, ray) -> bool:
        """Connect to (or start) Ray; True when this call did and must shut it down."""
        if ray.is_initialized():
            return False  # e.g. a test or notebook that called ray.init() itself
        try:
            ray.init(
                address=self.address or "local",
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=True,
                logging_level=logging.ERROR,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UserError(f"cannot connect to Ray at {self.address or 'a new local instance'}: {exc}") from None
        return True

    def _resources(self, ray) -> tuple[float, float]:
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        max_gpu = max((n["Resources"].get("GPU", 0.0) for n in nodes), default=0.0)
        max_cpu = max((n["Resources"].get("CPU", 0.0) for n in nodes), default=0.0)
        gpus = self.gpus_per_job if self.gpus_per_job is not None else (1.0 if max_gpu > 0 else 0.0)
        if gpus > max_gpu:
            raise UserError(f"--gpus-per-job {gpus:g}: no Ray node has that many GPUs (largest: {max_gpu:g})")
        if self.cpus_per_job > max_cpu:
            raise UserError(
                f"--cpus-per-job {self.cpus_per_job:g}: no Ray node has that many CPUs (largest: {max_cpu:g})"
            )
        return gpus, self.cpus_per_job

    def check_shared_storage(self, ray, out_dirs: list[Path]) -> None:
        """Every live node must see the driver's output folders (see module docstring)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        token = uuid.uuid4().hex
        for d in out_dirs:
            (d / f"{PROBE_PREFIX}{token}").write_text(token)
        probe = ray.remote(probe_node)
        try:
            refs = {}
            for node in (n for n in ray.nodes() if n.get("Alive")):
                strategy = NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=False)
                ref = probe.options(num_cpus=0, scheduling_strategy=strategy, max_retries=0).remote(
                    [str(d) for d in out_dirs], token, node["NodeID"])
                refs[ref] = node
            ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=self.probe_timeout)
            problems = []
            for ref in ready:
                node = refs[ref]
                try:
                    found = ray.get(ref)
                except ray.exceptions.RayError as exc:
                    found = [f"node {node['NodeManagerAddress']} could not run the probe ({last_line(str(exc))}; "
                             f"is ssl-bench installed there?)"]
                if not found:
                    found = [
                        f"the driver cannot see the file node {node['NodeManagerAddress']} wrote in {d}"
                        for d in out_dirs if not (d / f"{PROBE_PREFIX}{token}-{node['NodeID']}").is_file()
                    ]
                problems += found
            if problems:
                raise UserError(
                    "the output folder is not shared between the driver and every Ray node: "
                    + "; ".join(problems)
                    + ". Put --out on storage every node mounts at the same path (e.g. NFS)."
                )
            if not ready:
                raise UserError(f"no Ray node ran the storage probe within {self.probe_timeout:.0f}s")
            late = [refs[r]["NodeManagerAddress"] for r in refs if r not in ready]
            if late:
                warnings.warn(f"Ray node(s) {', '.join(late)} did not run the shared-storage probe within "
                              f"{self.probe_timeout:.0f}s; jobs placed there fail if they cannot see --out", stacklevel=2)
        finally:
            for d in out_dirs:
                for p in d.glob(f"{PROBE_PREFIX}{token}*"):
                    p.unlink(missing_ok=True)

    # ---- running ---------------------------------------------------------------------------
    def run(self, jobs: list[Job], on_outcome: Callable[[JobOutcome], None]) -> None:
        if not jobs:
            return
        ray = _import_ray()
        started = self._connect(ray)
        pending: dict = {}
        try:
            gpus, cpus = self._resources(ray)
            out_dirs = sorted({Path(j.config["out"]) for j in jobs})
            self.check_shared_storage(ray, out_dirs)
            task = ray.remote(run_job_attempt).options(
                num_gpus=gpus, num_cpus=cpus, max_retries=self.node_retries, retry_exceptions=False,
            )
            imports = os.environ.get(IMPORT_ENV, "")
            jobs = [portable(job) for job in jobs]
            state: dict[Job, dict[str, Any]] = {j: {"attempt": 0, "history": [], "start": time.perf_counter()}
                                                for j in jobs}

            def submit(job: Job) -> None:
                state[job]["attempt"] += 1
                pending[task.remote(job.config, job.fold, state[job]["attempt"], imports)] = job

            for job in jobs:
                submit(job)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                for ref in ready:
                    job = pending.pop(ref)
                    try:
                        result: Attempt = ray.get(ref)
                    except ray.exceptions.RayError as exc:  # worker/node lost beyond Ray's retries
                        result = Attempt(None, f"Ray could not run the task: {exc}", 0.0, "?")
                    s = state[job]
                    if result.error is None:
                        on_outcome(JobOutcome(job, result.metrics, None, time.perf_counter() - s["start"],
                                              s["attempt"], s["history"]))
                        continue
                    s["history"].append(f"attempt {s['attempt']} on {result.host}: {last_line(result.error)}")
                    if s["attempt"] <= self.retries:
                        submit(job)
                    else:
                        on_outcome(JobOutcome(job, None, result.error, time.perf_counter() - s["start"],
                                              s["attempt"], s["history"]))
        except BaseException:
            for ref in pending:
                try:
                    ray.cancel(ref, force=True)
                except Exception:  # already finished or gone
                    pass
            raise
        finally:
            if started:
                ray.shutdown()
