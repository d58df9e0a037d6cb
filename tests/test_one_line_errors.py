"""Failures of the environment and of damaged files are one line, never a traceback (issue 25,
items 10 and 11): a full disk under --out, the pretext-pool cache or the image cache (exit 1: the
environment, the same command finishes once there is space; complete folds and cache shards kept,
nothing half-written left where it would be read). A run's damaged files are one line, exit 2.

The disk fills through :func:`full_disk`: a file whose path matches is created, then its writes go
to ``/dev/full``, the kernel's full device (every write fails with ``ENOSPC``), whoever writes it:
the toolkit's fold writer (``pathlib``), ``fileio.atomic_write`` and torch or numpy inside it."""
from __future__ import annotations

import io
import os
import re
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

from ssl_bench import fileio
from ssl_bench.cli import main
from ssl_bench.experiment.rundir import RunDir

SMOKE = ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--folds", "2", "--quiet"]


def full_disk(monkeypatch, pattern: str) -> None:
    """Files whose path matches the regular expression ``pattern`` are on a full device: created
    (as a full device still creates an empty file), then written to ``/dev/full``. Atomic writes
    meet it in their temporary file, files opened by path (``io.open``, which ``pathlib`` uses) in
    the file itself."""
    real_open, real_create = io.open, fileio._create_beside

    def open_(file, mode="r", *args, **kwargs):
        if not isinstance(file, int) and any(c in mode for c in "wax+") and re.search(pattern, os.fspath(file)):
            real_open(file, mode, *args, **kwargs).close()
            return real_open("/dev/full", mode, *args, **kwargs)
        return real_open(file, mode, *args, **kwargs)

    def create_beside(path):
        fd, tmp = real_create(path)
        if re.search(pattern, str(path)):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, tmp

    monkeypatch.setattr(io, "open", open_)
    monkeypatch.setattr(fileio, "_create_beside", create_beside)


def one_line(result, code: int) -> str:
    """The error line of a command that must end with one line and exit ``code``, no traceback."""
    assert isinstance(result.exception, SystemExit) and result.exit_code == code, \
        (result.exit_code, result.output, result.exception)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert "Traceback" not in result.output and lines[-1].startswith("error: "), result.output
    return lines[-1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """A smoke run of fold 0 of 2 (fold 1 is left for the tests to train)."""
    out = tmp_path_factory.mktemp("one_line")
    result = CliRunner().invoke(main, [*SMOKE, "--fold", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return RunDir(out / "none-finetune")


@pytest.fixture
def run_copy(smoke_run, tmp_path):
    """A copy of the smoke run (tests change it), in ``tmp_path / "runs"``."""
    shutil.copytree(smoke_run.path, tmp_path / "runs" / "none-finetune", ignore=shutil.ignore_patterns(".lock"))
    return RunDir(tmp_path / "runs" / "none-finetune")


def fold_files(rundir: RunDir, k: int) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(rundir.fold_dir(k).iterdir())}


# ------------------------------------------------------------------------ item 10: a full disk


def test_a_full_disk_while_writing_a_fold_is_one_line_and_keeps_the_complete_folds(run_copy, monkeypatch):
    before = fold_files(run_copy, 0)
    full_disk(monkeypatch, r"/folds/\.1\.tmp-\d+/model\.pt$")
    result = CliRunner().invoke(main, [*SMOKE, "--out", str(run_copy.path.parent)])
    line = one_line(result, 1)
    assert re.match(r"error: no space left on device writing \S+/folds/\.1\.tmp-\d+/model\.pt: nothing of fold 1 "
                    r"was kept; 1 of 2 folds of \S+ is complete and kept; free space and rerun the same command",
                    line), line
    assert fold_files(run_copy, 0) == before  # the complete fold, untouched
    assert sorted(p.name for p in (run_copy.path / "folds").iterdir()) == ["0"]  # no half fold, no temporary
    monkeypatch.undo()  # space again: the same command finishes the run
    assert CliRunner().invoke(main, [*SMOKE, "--out", str(run_copy.path.parent)]).exit_code == 0
    assert run_copy.fold_done(1) and fold_files(run_copy, 0) == before


def test_a_full_disk_while_caching_the_pretext_stage_is_one_line(tmp_path, monkeypatch):
    from ssl_bench.data.synthetic_mammo import write_png_set

    pool = tmp_path / "pool"
    write_png_set(pool, image_size=(64, 32), n_patients=4, n_benign=6, n_malignant=4)
    full_disk(monkeypatch, r"/\.pretext-cache/")  # torch.save writes the stage through the file's write
    out = tmp_path / "runs"
    args = ["run", "--pretext", "simclr", "--transfer", "finetune", "--profile", "smoke", "--folds", "2",
            "--pretext-data", "folder", "--pretext-data-root", str(pool / "images"), "--out", str(out), "--quiet"]
    line = one_line(CliRunner().invoke(main, args), 1)
    assert re.match(r"error: no space left on device writing \S+/\.pretext-cache/[0-9a-f]+\.pt: no fold was "
                    r"complete yet; free space and rerun the same command", line), line
    assert [p.suffix for p in (out / ".pretext-cache").iterdir()] == [".lock"]  # no half stage to be read


def test_a_full_disk_while_preparing_the_image_cache_is_one_line(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    args = ["data", "prepare", "--dataset", "synthetic", "--image-size", "64x32", "--cache-dir", str(cache)]
    with monkeypatch.context() as patch:
        full_disk(patch, r"/shards/64x32/")  # np.save writes the shard through the file's write
        line = one_line(CliRunner().invoke(main, args), 1)
    assert re.match(r"error: no space left on device writing \S+/shards/64x32/[0-9a-f]+\.npy: no shard of the "
                    r"image cache in \S+ was complete yet; free space and rerun the same command$", line), line
    assert list((cache / "shards" / "64x32").iterdir()) == []  # no half shard to be read later
    assert CliRunner().invoke(main, args).exit_code == 0  # space again: it is built


def test_a_full_disk_in_a_later_shard_keeps_the_shards_before_it(tmp_path, monkeypatch):
    from ssl_bench.data import cache

    folder = tmp_path / "shards"
    folder.mkdir()
    keys = [f"k{i}" for i in range(6)]
    produce = lambda rows: [(i, np.full((4, 2), i, np.float16), "") for i in rows]  # noqa: E731
    monkeypatch.setattr(cache, "shard_rows", lambda size: 3)  # two shards of three images
    second = cache._digest(keys[3:])
    with monkeypatch.context() as patch:
        full_disk(patch, rf"/{second}\.npy$")
        with pytest.raises(fileio.OutOfSpace, match=rf"writing \S+/{second}\.npy: 1 of 2 shards of the image "
                                                    rf"cache in \S+ are complete and kept"):
            cache.sharded_images(folder, keys, keys, (4, 2), produce)
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{cache._digest(keys[:3])}.json",
                                                              f"{cache._digest(keys[:3])}.npy"])
    images, problems = cache.sharded_images(folder, keys, keys, (4, 2), produce)  # resumes at the second
    assert not problems and [float(images[i][0, 0]) for i in range(6)] == [0, 1, 2, 3, 4, 5]
