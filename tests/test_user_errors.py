"""Mistakes a user can make are one clear line and exit 2, never a traceback, and nothing is
written outside --out."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.errors import ConfigError, UserError
from ssl_bench.experiment.rundir import RunDir
from ssl_bench.fileio import OutOfSpace


@pytest.mark.parametrize("item, message", [
    ("train.lr=-1", "train.lr must be a finite number greater than 0"),
    ("train.lr=nan", "train.lr must be a finite number greater than 0, got nan"),
    ("train.weight_decay=-1", "train.weight_decay must be a finite number at least 0"),
    ("train.pos_weight=0", "train.pos_weight must be a finite number greater than 0"),
    ("seed=-1", "seed must be in 0..4294967295"),
    ("threads=-2", "threads must be at least 0"),
    ("name=../x", "cannot be used as a folder name"),
    ("name=/srv/victim", "cannot be used as a folder name"),
    ("name=.hidden", "cannot be used as a folder name"),
])
def test_bad_values_are_config_errors(item, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        build_config("smoke", sets=[item])


@pytest.mark.parametrize("args", [
    ["run", "--profile", "smoke", "--set", "train.lr=-1"],
    ["run", "--profile", "smoke", "--seed", "-1"],
    ["run", "--profile", "smoke", "--name", "../escape"],
])
def test_cli_user_errors_are_one_line(tmp_path, args):
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "escape").exists()


def test_binary_config_file_is_one_line(tmp_path):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    for command in (["run", "--profile", "smoke", "--config", str(binary)], ["bench", str(binary)]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code == 2 and "not a YAML text file" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1


def test_bench_method_named_like_a_path_writes_nothing_outside_out(tmp_path):
    bench = tmp_path / "bench.yaml"
    victim = tmp_path / "victim"
    bench.write_text(f"methods:\n  {victim}: {{pretext: none, transfer: finetune}}\n")
    result = CliRunner().invoke(main, ["bench", str(bench), "--profile", "smoke", "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and "cannot be used as a folder name" in result.output, result.output
    assert not victim.exists()


def test_run_directories_stay_inside_out(tmp_path):
    with pytest.raises(UserError, match="folder name"):
        RunDir.create(tmp_path, "../outside")
    assert RunDir.create(tmp_path, "inside").path == tmp_path / "inside"


class _NotTensors:  # what a pickle that runs code on load would hold instead of tensors
    pass


def test_unsafe_or_malformed_model_files_are_one_line(tmp_path):
    import torch

    from ssl_bench.experiment.model_file import load_model_record

    unsafe = tmp_path / "unsafe.pt"
    torch.save({"state_dict": _NotTensors()}, unsafe)
    with pytest.raises(UserError) as info:
        load_model_record(unsafe)
    text = str(info.value)
    assert text.startswith("not a ssl-bench model file") and "\n" not in text
    assert "weights_only" not in text
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a zip at all")
    with pytest.raises(UserError, match="not a ssl-bench model file"):
        load_model_record(garbage)
    wrong = tmp_path / "wrong.pt"
    torch.save({"format": "something-else"}, wrong)
    with pytest.raises(UserError, match="not a ssl-bench model file"):
        load_model_record(wrong)


def test_duplicate_image_ids_are_refused():
    import numpy as np
    import pandas as pd

    from ssl_bench.data.base import LoadedDataset
    from ssl_bench.errors import DataError

    table = pd.DataFrame({"image_id": ["a", "b", "a"], "patient_id": ["p", "p", "q"], "label": [0, 1, 0]})
    with pytest.raises(DataError, match="lists 1 image id.s. more than once .e.g. a."):
        LoadedDataset("demo", table, np.zeros((3, 16, 16), np.float16))


def test_rerunning_a_finished_run_says_so(tmp_path):
    args = ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--folds", "2",
            "--out", str(tmp_path)]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "all 2 folds are already done" in again.output, again.output


def test_a_second_process_on_the_same_run_directory_is_refused(tmp_path):
    """Two runs into one run directory at once used to mix their configurations silently."""
    import subprocess
    import sys
    import time

    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from ssl_bench.experiment.rundir import RunDir;"
         f"RunDir.create({str(tmp_path)!r}, 'race').claim(); print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        args = ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--name", "race",
                "--out", str(tmp_path), "--set", "train.lr=0.05"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, result.output
        assert f"is being written by another ssl-bench process (PID {holder.pid}" in result.output
        assert not (tmp_path / "race" / "config.yaml").exists()
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)  # the kernel released the lock with the process: the run goes ahead
    args = ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--name", "race",
            "--folds", "2", "--fold", "0", "--out", str(tmp_path), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0


def test_a_full_disk_is_one_line_and_leaves_no_half_fold(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    import pandas as pd

    from ssl_bench.experiment import fold_checkpoint as fold_checkpoint_module
    from ssl_bench.experiment.model_file import model_bytes

    run = RunDir.create(tmp_path, "full")
    preds = pd.DataFrame({"image_id": ["a"], "patient_id": ["p"], "label": [1], "score": [0.9]})
    model = model_bytes({"state_dict": {}})

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(Path, "write_bytes", full_disk)  # model.pt, the fold's largest file
        with pytest.raises(OutOfSpace, match=r"no space left on device writing .*: nothing of fold 0 was kept") as info:
            run.write_fold(0, {"auc": 0.5}, preds, model)
    assert "\n" not in str(info.value)
    assert not list((run.path / "folds").iterdir())  # neither folds/0 nor a temporary folder

    def torch_full_disk(obj, f, *args, **kwargs):  # torch wraps the OSError in its zip writer's error
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos") from OSError(
            errno.ENOSPC, "No space left on device")

    cfg = build_config("smoke", flags={"pretext": "none", "transfer": "finetune", "out": str(tmp_path)})
    with monkeypatch.context() as patch:
        patch.setattr(fold_checkpoint_module.torch, "save", torch_full_disk)
        with pytest.raises(OutOfSpace, match=r"no space left on device writing .*\.0\.checkpoint\.pt; free space") as info:
            fold_checkpoint_module.fold_checkpoint(run, 0, cfg, "cpu").save({"epoch": 1})
    assert "\n" not in str(info.value) and not run.checkpoint_path(0).exists()


def test_leftovers_of_a_killed_process_are_ignored_then_removed(tmp_path):
    leftover = tmp_path / "none-finetune" / "folds" / ".0.tmp-999999"
    leftover.mkdir(parents=True)
    (leftover / "metrics.json").write_text("{}")
    run = RunDir(tmp_path / "none-finetune")
    assert run.present_folds() == [] and run.folds_with_model() == []
    args = ["run", "--pretext", "none", "--transfer", "finetune", "--profile", "smoke", "--folds", "2",
            "--fold", "0", "--out", str(tmp_path), "--quiet"]
    assert CliRunner().invoke(main, args).exit_code == 0
    assert not leftover.exists() and run.fold_done(0)
