"""Bench executors: the same smoke grid gives bit-identical fold results one job at a time, in
``--jobs-per-gpu 2`` worker processes and as tasks on a real local Ray instance; a failing job is
retried, recorded with its traceback, and the other jobs complete.

The grids have 2 folds: the jobs still outnumber the workers (each worker process runs several
jobs of several methods in turn, so state that one job leaves behind would show in the next), and
a fold of 5 exercises nothing a fold of 2 does not.

The failing jobs come from the test plugin ``failing_pretext`` (pretext ``flaky``), imported by the
driver and by every worker through ``SSL_BENCH_IMPORT``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.config import build_config, path_fields

ROOT = Path(__file__).resolve().parents[1]
TABLE2 = ROOT / "benchmarks" / "table2.yaml"
METHODS = list(yaml.safe_load(TABLE2.read_text())["methods"])
FOLD_FILES = ("metrics.json", "predictions.csv")
SMOKE_GRID = ["--profile", "smoke", "--folds", "2", "--quiet", "--explain", "0"]


def fold_bytes(out: Path, method: str) -> dict[str, bytes]:
    folds = sorted((out / method / "folds").iterdir())
    return {f"{d.name}/{f}": (d / f).read_bytes() for d in folds if not d.name.startswith(".") for f in FOLD_FILES}


def summary_numbers(out: Path, method: str) -> dict:
    s = json.loads((out / method / "summary.json").read_text())
    return {k: s[k] for k in ("mean", "std", "oof_auc", "per_fold")}


def plugin_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "tests"), env.get("PYTHONPATH")]))
    env["SSL_BENCH_IMPORT"] = "failing_pretext"
    return env


def bench_with_failures(path: Path, counter_dir: Path, fail_times: int = 99) -> Path:
    """table2.yaml plus method ``Broken``: pretext ``flaky`` failing on fold 0 ``fail_times`` times."""
    data = yaml.safe_load(TABLE2.read_text())
    data["methods"]["Broken"] = {
        "pretext": "flaky", "transfer": "finetune",
        "params": {"flaky": {"fail_fold": 0, "fail_times": fail_times, "counter": str(counter_dir / "Broken.txt")}},
    }
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture
def plugin(monkeypatch):
    """The test plugin imported in this process (as the bench driver does), unregistered after."""
    from ssl_bench.testing import isolated_registries

    monkeypatch.setenv("SSL_BENCH_IMPORT", "failing_pretext")
    with isolated_registries():
        yield
    sys.modules.pop("failing_pretext", None)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The smoke Table II grid (7 methods + Non-spatial, x 2 folds), one job at a time in this process."""
    out = tmp_path_factory.mktemp("local")
    result = CliRunner().invoke(main, ["bench", str(TABLE2), *SMOKE_GRID, "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_ray_matches_local_and_records_failures(reference, tmp_path):
    """All 8 rows x 2 folds as Ray tasks on a local Ray instance started by the executor, plus one
    always-failing job (18 jobs, one worker process per core): the 16 Table II folds equal
    the local executor's byte for byte, the failing job is resubmitted once (--retries 1), recorded
    with its traceback, and the exit code is non-zero."""
    bench = bench_with_failures(tmp_path / "bench.yaml", tmp_path)
    out = tmp_path / "ray"
    proc = subprocess.run(
        ["ssl-bench", "bench", str(bench), *SMOKE_GRID, "--executor", "ray", "--out", str(out)],
        env=plugin_env(), capture_output=True, text=True, timeout=400,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    for method in METHODS:
        assert fold_bytes(out, method) == fold_bytes(reference, method), method
        assert summary_numbers(out, method) == summary_numbers(reference, method), method
    assert (tmp_path / "Broken.txt").read_text().count("\n") == 2  # first try + one retry
    failure = (out / "Broken" / "failed" / "fold-0.txt").read_text()
    assert "after 2 attempt(s)" in failure and "InjectedFailure" in failure and "Traceback" in failure
    assert sorted(p.name for p in (out / "Broken" / "folds").iterdir()) == ["1"]
    assert "1 of 18 job(s) failed" in proc.stderr and "--resume" in proc.stderr
    assert not list(out.glob(".ssl-bench-probe-*"))  # the shared-storage probe cleans up


def test_jobs_per_gpu_matches_one_by_one(reference, tmp_path):
    """--jobs-per-gpu 2: two spawned worker processes on the CPU, identical fold files."""
    methods = ["GM-M-ResNet", "TSBN-R"]
    args = ["bench", str(TABLE2), *SMOKE_GRID, "--out", str(tmp_path), "--jobs-per-gpu", "2"]
    result = CliRunner().invoke(main, args + [a for m in methods for a in ("--only", m)])
    assert result.exit_code == 0, result.output
    for method in methods:
        assert fold_bytes(tmp_path, method) == fold_bytes(reference, method), method


def test_failing_job_retried_recorded_then_resumed(tmp_path, plugin):
    """Local executor, 2 folds: ``Broken`` fails on fold 0 three times. Run 1: two attempts, the
    failure is recorded, the other jobs complete, exit 1. Rerun with --resume: only that job runs;
    it fails once more, succeeds on its retry, the failure record goes and the exit code is 0."""
    bench = bench_with_failures(tmp_path / "bench.yaml", tmp_path, fail_times=3)
    args = ["bench", str(bench), *SMOKE_GRID, "--out", str(tmp_path / "out"), "--only", "ResNet", "--only", "Broken"]
    run1 = CliRunner().invoke(main, args)
    assert run1.exit_code == 1, run1.output
    counter = tmp_path / "Broken.txt"
    assert counter.read_text().splitlines() == ["Broken fold 0 attempt 1", "Broken fold 0 attempt 2"]
    failure = tmp_path / "out" / "Broken" / "failed" / "fold-0.txt"
    assert "InjectedFailure: injected failure on fold 0" in failure.read_text()
    assert (tmp_path / "out" / "Broken" / "folds" / "1" / "model.pt").is_file()
    assert (tmp_path / "out" / "ResNet" / "summary.json").is_file()
    assert not (tmp_path / "out" / "Broken" / "summary.json").exists()
    assert "1 of 4 job(s) failed" in run1.output and "Broken fold 0" in run1.output

    run2 = CliRunner().invoke(main, args + ["--resume"])
    assert run2.exit_code == 0, run2.output
    assert "resuming: 3 of 4 jobs already complete" in run2.output
    assert counter.read_text().count("\n") == 3  # one more failure, then the retry succeeded
    assert not failure.exists()
    assert json.loads((tmp_path / "out" / "Broken" / "summary.json").read_text())["folds"] == 2


def test_ray_missing_or_misconfigured_is_a_user_error(tmp_path):
    args = ["bench", str(TABLE2), "--profile", "smoke", "--out", str(tmp_path), "--quiet", "--explain", "0"]
    r = CliRunner().invoke(main, args + ["--jobs-per-gpu", "2", "--executor", "ray"])
    assert r.exit_code == 2 and "--jobs-per-gpu does not apply to the 'ray' executor" in r.output
    assert "gpus_per_job" in r.output and "--executor local" in r.output
    r = CliRunner().invoke(main, args + ["--ray-address", "auto"])
    assert r.exit_code == 2 and "--executor ray" in r.output
    r = CliRunner().invoke(main, args + ["--executor", "ray", "--gpus-per-job", "1.5"])
    assert r.exit_code == 2 and "whole number" in r.output


def test_missing_ray_names_the_extra(monkeypatch):
    from ssl_bench.bench.executors import ray_executor
    from ssl_bench.errors import UserError

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(UserError, match=r'pip install "ssl-bench\[ray\]"'):
        ray_executor._import_ray()


RELATIVE = {"out": "runs", "data.root": "data", "data.test_root": "test-data", "data.cache_dir": "cache",
            "pretext_data.root": "pool", "model.pretrained": "weights/w.pth", "log.uri": "tb"}


@pytest.mark.parametrize("key", sorted(path_fields()))
def test_ray_jobs_carry_absolute_paths(key, tmp_path, monkeypatch):
    """(No Ray.) A Ray task runs in another working folder: each relative path field of a job's
    config (``config.path_fields``) reaches it absolute, against the driver's working folder; the
    rest of the config is unchanged."""
    from ssl_bench.bench.executors.ray_executor import portable
    from ssl_bench.bench.job import Job

    monkeypatch.chdir(tmp_path)
    flags = {"data.test_dataset": "inbreast", "pretext_data.dataset": "synthetic", "out": str(tmp_path),
             key: RELATIVE[key]}
    job = Job("m", "m", 0, build_config("smoke", flags=flags).to_dict())
    shipped = portable(job)
    *sections, name = key.split(".")
    sent, given = shipped.config, job.config
    for section in sections:
        sent, given = sent[section], given[section]
    assert given[name] == RELATIVE[key] and sent[name] == str(tmp_path.resolve() / RELATIVE[key])
    sent[name] = given[name]
    assert shipped.config == job.config and shipped == job


@pytest.mark.parametrize("key, value", [("model.pretrained", "imagenet"), ("model.pretrained", None),
                                        ("log.uri", "http://server:5000"), ("data.cache_dir", "~/cache")])
def test_ray_jobs_keep_keywords_uris_and_home_paths(key, value, tmp_path, monkeypatch):
    from ssl_bench.bench.executors.ray_executor import portable
    from ssl_bench.bench.job import Job

    monkeypatch.chdir(tmp_path)
    config = build_config("smoke", flags={"out": str(tmp_path), key: value}).to_dict()
    assert portable(Job("m", "m", 0, config)).config == config


def test_storage_probe_reports_an_unshared_folder(tmp_path):
    """What a node that does not see the driver's output folder reports (run here in-process)."""
    from ssl_bench.bench.executors.ray_executor import PROBE_PREFIX, probe_node

    assert probe_node([str(tmp_path)], "abc", "node1") != []  # the driver's probe file is missing
    (tmp_path / f"{PROBE_PREFIX}abc").write_text("abc")
    assert probe_node([str(tmp_path)], "abc", "node1") == []
    assert (tmp_path / f"{PROBE_PREFIX}abc-node1").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--jobs-per-gpu", "0"], "cannot build 'local'"),
    (["--set", "params.local.jobs_per_gpu=0"], "jobs_per_gpu must be >= 1"),
    (["--set", "params.local.jobs_pergpu=2"], "unknown option 'jobs_pergpu' for 'local'"),
    (["--set", "params.local.retries=many"], "params.local.retries: expected an integer"),
])
def test_bad_executor_options_are_one_line(tmp_path, extra, message):
    """Executors are built like every other component: flags, then params.<executor>.*, checked."""
    args = ["bench", str(TABLE2), "--profile", "smoke", "--out", str(tmp_path), "--quiet", "--explain", "0", "--only", "ResNet"]
    r = CliRunner().invoke(main, args + extra)
    assert r.exit_code == 2, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert "Traceback" not in r.output


def test_executor_params_override_flags():
    from ssl_bench.bench.executors import build_executor
    from ssl_bench.config import build_config

    cfg = build_config("smoke", sets=["params.local.jobs_per_gpu=3"])
    runner = build_executor("local", cfg, retries=2, jobs_per_gpu=1)
    assert (runner.jobs_per_gpu, runner.retries) == (3, 2)  # --set wins over the flag, as everywhere
