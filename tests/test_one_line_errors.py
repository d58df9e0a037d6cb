"""Failures of the environment and of damaged files are one line, never a traceback (issue 25,
items 10 and 11): a full disk under --out, the pretext-pool cache or the image cache (exit 1: the
environment, the same command finishes once there is space; complete folds and cache shards kept,
nothing half-written left where it would be read). An --out that cannot be written (predict,
data synth) and a run directory's damaged files (a binary folds.csv, a .lock that is a folder, a
config.yaml edited after the run) are one line, exit 2; a fold checkpoint without its state is
dropped with one warning line and the fold trains from the start.

The disk fills through :func:`full_disk`: a file whose path matches is created, then its writes go
to ``/dev/full``, the kernel's full device (every write fails with ``ENOSPC``), whoever writes it:
the toolkit's fold writer (``pathlib``), ``fileio.atomic_write`` and torch or numpy inside it."""
from __future__ import annotations

import builtins
import errno
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


def test_a_full_disk_quota_is_named_and_torch_s_wrapped_error_too(tmp_path):
    import torch

    def over_quota(fh):
        raise OSError(errno.EDQUOT, os.strerror(errno.EDQUOT))

    with pytest.raises(fileio.OutOfSpace) as info:
        fileio.atomic_write(tmp_path / "a.bin", over_quota)
    assert str(info.value) == f"disk quota exceeded writing {tmp_path / 'a.bin'}; free space and rerun the same command"
    with pytest.raises(fileio.OutOfSpace, match="no space left on device writing"):  # torch's RuntimeError
        fileio.atomic_write(tmp_path / "b.pt", lambda fh: torch.save({"w": torch.zeros(1000)}, _Full(fh)))
    assert list(tmp_path.iterdir()) == []  # neither target nor temporary


class _Full:
    """A file object whose device is full (torch.save reports it as its zip writer's RuntimeError)."""

    def __init__(self, fh):
        self.fh = fh

    def write(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def flush(self):
        pass


# ------------------------------------------------------------------ item 11: damaged files, bad --out


def read_only(monkeypatch, folder) -> None:
    """``folder`` is read-only, as for a user without write permission (the tests run as root,
    whom ``chmod 555`` does not stop): creating anything in it is ``PermissionError``, whichever
    call creates it (``os.open``, ``os.mkdir``, ``open``)."""
    folder = os.path.realpath(folder)
    real_os_open, real_mkdir, real_io_open = os.open, os.mkdir, io.open

    def inside(path) -> bool:
        return not isinstance(path, int) and os.path.realpath(os.path.dirname(os.fspath(path))) == folder

    def denied(path):
        return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def os_open(path, flags, *args, **kwargs):
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and inside(path):
            raise denied(path)
        return real_os_open(path, flags, *args, **kwargs)

    def mkdir(path, *args, **kwargs):
        if inside(path):
            raise denied(path)
        return real_mkdir(path, *args, **kwargs)

    def io_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and inside(file):
            raise denied(file)
        return real_io_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", os_open)
    monkeypatch.setattr(os, "mkdir", mkdir)
    monkeypatch.setattr(io, "open", io_open)
    monkeypatch.setattr(builtins, "open", io_open)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """One synthetic mammogram to score."""
    from ssl_bench.data.synthetic_mammo import write_png_set

    folder = tmp_path_factory.mktemp("image")
    write_png_set(folder, image_size=(64, 32), n_patients=2, n_benign=2, n_malignant=2)
    return sorted((folder / "images").iterdir())[0]


def test_predict_out_in_a_missing_folder_makes_it(smoke_run, image, tmp_path):
    out = tmp_path / "missing" / "x.csv"
    result = CliRunner().invoke(main, ["predict", "--run", str(smoke_run.path), str(image), "--format", "csv",
                                       "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines()[0].startswith("file,p_malignant,p_calibrated,threshold,malignant,fold_0")


def test_predict_out_under_a_file_is_one_line(smoke_run, image, tmp_path):
    (tmp_path / "afile").write_text("")
    out = tmp_path / "afile" / "x.csv"
    result = CliRunner().invoke(main, ["predict", "--run", str(smoke_run.path), str(image), "--format", "csv",
                                       "--out", str(out)])
    assert one_line(result, 2) == f"error: cannot write --out {out}: {tmp_path / 'afile'} is a file, not a folder"


def test_predict_out_in_a_read_only_folder_is_one_line(smoke_run, image, tmp_path, monkeypatch):
    (tmp_path / "ro").mkdir()
    out = tmp_path / "ro" / "x.csv"
    read_only(monkeypatch, tmp_path / "ro")
    result = CliRunner().invoke(main, ["predict", "--run", str(smoke_run.path), str(image), "--format", "csv",
                                       "--out", str(out)])
    assert one_line(result, 2) == f"error: cannot write --out {out}: Permission denied"
    assert list((tmp_path / "ro").iterdir()) == []


@pytest.mark.parametrize("where", ["read-only", "under a file"])
def test_data_synth_out_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, where):
    if where == "read-only":
        out = tmp_path / "ro"
        out.mkdir()
        read_only(monkeypatch, out)
        reason = "Permission denied"
    else:
        (tmp_path / "afile").write_text("")
        out = tmp_path / "afile" / "sub"
        reason = f"{tmp_path / 'afile'} is a file, not a folder"
    result = CliRunner().invoke(main, ["data", "synth", "--out", str(out), "--image-size", "64x32",
                                       "--set", "params.synthetic.n_patients=2", "--set", "params.synthetic.n_benign=2",
                                       "--set", "params.synthetic.n_malignant=2"])
    assert one_line(result, 2) == f"error: cannot write to --out {out}: {reason}"


def test_a_binary_folds_csv_is_one_line(run_copy):
    (run_copy.path / "folds.csv").write_bytes(bytes(range(256)) * 8)
    line = one_line(CliRunner().invoke(main, [*SMOKE, "--out", str(run_copy.path.parent)]), 2)
    assert line.startswith(f"error: {run_copy.path / 'folds.csv'} is damaged (not a folds table"), line
    assert line.endswith("restore it, or delete it and the run writes it again from the data")


def test_a_lock_that_is_a_folder_is_one_line(run_copy):
    (run_copy.path / ".lock").mkdir()
    line = one_line(CliRunner().invoke(main, [*SMOKE, "--out", str(run_copy.path.parent)]), 2)
    assert line == (f"error: {run_copy.path / '.lock'} is a folder, not the lock file ssl-bench keeps there; "
                    f"remove it and rerun (ssl-bench keeps nothing in it)")
    assert not run_copy.fold_done(1)


def test_a_checkpoint_without_its_state_is_dropped_and_the_fold_trains_from_the_start(run_copy):
    from ssl_bench.config import config_from_dict
    from ssl_bench.experiment.fold_checkpoint import fold_checkpoint

    cfg = config_from_dict(run_copy.read_config())
    fold_checkpoint(run_copy, 1, cfg, "cpu").save({"stage_index": 0, "stage": "finetune"})  # stamped, keys missing
    args = [*SMOKE, "--out", str(run_copy.path.parent), "--device", "cpu", "--set", "train.checkpoint_every=1"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, (result.output, result.exception)
    warned = [line for line in result.output.splitlines() if line.startswith("warning: fold 1")]
    assert warned == [f"warning: fold 1 (checkpoint {run_copy.checkpoint_path(1)}) lacks epoch, history, modules, "
                      f"optimizers, pretext, rng: deleted, the fold trains from the start"], result.output
    assert run_copy.fold_done(1) and not run_copy.checkpoint_path(1).exists()


def edit_image_size(rundir: RunDir, size: list[int]) -> None:
    import yaml

    config = yaml.safe_load((rundir.path / "config.yaml").read_text())
    config["data"]["image_size"] = size
    (rundir.path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def test_a_vit_run_whose_config_was_edited_is_one_line_in_predict(tmp_path, image):
    """A ViT is built for one input size: an edited data.image_size was timm's AssertionError."""
    args = ["run", "--pretext", "mae", "--transfer", "finetune", "--profile", "smoke", "--folds", "2", "--fold", "0",
            "--backbone", "vit_tiny_patch16_224", "--out", str(tmp_path), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    rundir = RunDir(tmp_path / "mae-finetune")
    edit_image_size(rundir, [128, 32])
    result = CliRunner().invoke(main, ["predict", "--run", str(rundir.path), str(image)])
    assert one_line(result, 2) == (
        f"error: the run's config does not match its model: {rundir.path / 'config.yaml'} has data.image_size "
        f"128x32, {rundir.model_path(0)} was trained at 64x32 (was config.yaml edited?); restore the config to "
        f"score with this run")


def test_a_cnn_run_whose_config_was_edited_is_one_line_in_predict(run_copy, image):
    """A CNN scores any size: an edited data.image_size silently scored images of another size."""
    edit_image_size(run_copy, [128, 64])
    result = CliRunner().invoke(main, ["predict", "--run", str(run_copy.path), str(image)])
    assert "the run's config does not match its model" in one_line(result, 2)
