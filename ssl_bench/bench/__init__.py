"""Benchmarks: a benchmark file turned into jobs (plan.py), run through an executor (runner.py,
job.py, executors/), resumable."""
