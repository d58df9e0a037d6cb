"""Resume inside a fold (``train.checkpoint_every``): a run killed after a checkpoint and started
again resumes the fold from it, with the same predictions, metrics, history and weights as a run
that was never interrupted (bit for bit on the CPU); the checkpoint file is hidden, keyed by the
configuration, kept while its fold is unfinished and removed once it is complete."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
from _resume import Killed, MemoryStore, assert_same_fold, losses
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.config import PROFILES, ConfigError, build_config
from ssl_bench.errors import ToolkitWarning
from ssl_bench.experiment.fold import train_and_score_fold
from ssl_bench.experiment.fold_checkpoint import fold_checkpoint
from ssl_bench.experiment.model_file import model_bytes
from ssl_bench.experiment.run import prepare_run
from ssl_bench.experiment.rundir import RunDir, config_key
from ssl_bench.training.checkpoint import load_optimizer_state

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.mark.parametrize("method, sets, kill_points", [
    # pretext epochs 1-2, fine-tuning epochs 3-4: killed mid-pretext, at the stage's end, mid-fine-tuning
    (("gsim", "finetune"), ["train.pretext_epochs=2", "train.epochs=2"], [(1, ("pretext", 1)),
                                                                         (2, ("pretext", 2)),
                                                                         (3, ("finetune", 1))]),
    # two networks, two optimisers, one stage; a learning rate that changes every epoch
    (("gsim", "collab"), ["train.epochs=3", "train.schedule=cosine"], [(1, ("collab", 1)),
                                                                       (2, ("collab", 2))]),
    # a momentum teacher and the pretext task's own state (MoCo's queue of keys)
    (("moco", "multitask"), ["train.epochs=2"], [(1, ("multitask", 1))]),
    # a stage over the fold's breast units (FitContext.train_on), after a pretext stage
    (("simclr", "multiview"), ["train.pretext_epochs=1", "train.epochs=2"], [(2, ("finetune", 1))]),
])
def test_a_fold_stopped_after_a_checkpoint_resumes_to_the_uninterrupted_result(tmp_path, method, sets,
                                                                                kill_points):
    pretext, transfer = method
    cfg = build_config("smoke", flags={"pretext": pretext, "transfer": transfer, "out": str(tmp_path)},
                       sets=["train.checkpoint_every=1", *sets])
    run = prepare_run(cfg)
    uninterrupted = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU)  # no store: never saves
    for kill_at, (stage, epoch) in kill_points:
        killed = MemoryStore(kill_at=kill_at)
        with pytest.raises(Killed):
            train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=killed)
        assert killed.saves[-1] == (stage, epoch)
        resumed_from = MemoryStore(blob=killed.blob)
        resumed = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=resumed_from)
        assert_same_fold(resumed, uninterrupted)
        # it resumed rather than trained again: only the epochs after the checkpoint were saved
        total = len(uninterrupted.history)
        assert len(resumed_from.saves) == total - kill_at


class ListSink:
    """A tracker (training/tracking.py's HistorySink) that keeps the rows it is sent."""

    def __init__(self):
        self.rows: list[dict] = []

    def log_epoch(self, row: dict) -> None:
        self.rows.append(dict(row))

    def close(self, failed: bool = False) -> None:
        pass


def test_a_resumed_fold_sends_the_tracker_its_whole_history(tmp_path):
    """Killed in fine-tuning epoch 2 after the pretext stage: the resumed attempt's tracker (whose
    event folder starts empty) gets every row of the fold's history, the restored ones included."""
    cfg = build_config("smoke", flags={"pretext": "gsim", "transfer": "finetune", "out": str(tmp_path)},
                       sets=["train.checkpoint_every=1", "train.pretext_epochs=2", "train.epochs=2"])
    run = prepare_run(cfg)
    killed = MemoryStore(kill_at=3)
    with pytest.raises(Killed):
        train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=killed, sink=ListSink())
    assert killed.saves[-1] == ("finetune", 1)
    sink = ListSink()
    resumed = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=MemoryStore(blob=killed.blob),
                       sink=sink)
    assert list(resumed.history["stage"]) == ["pretext", "pretext", "finetune", "finetune"]
    pd.testing.assert_frame_equal(pd.DataFrame(sink.rows)[list(resumed.history.columns)], resumed.history,
                                  check_exact=True)


def test_checkpoint_holds_every_network_optimiser_and_random_state(tmp_path):
    cfg = build_config("smoke", flags={"pretext": "gsim", "transfer": "collab", "out": str(tmp_path)},
                       sets=["train.checkpoint_every=1", "train.epochs=1"])
    run = prepare_run(cfg)
    store = MemoryStore()
    train_and_score_fold(cfg, run.loaded, run.fold_of, 0, CPU, checkpoint_store=store)
    state = store.load()
    assert (state["stage_index"], state["stage"], state["epoch"]) == (0, "collab", 1)
    assert len(state["modules"]) == 4  # pretext network, backbone, branches P and D
    assert len(state["optimizers"]) == 2  # the pretext network's and the downstream one
    assert all(o["state"] for o in state["optimizers"])  # Adam's moments after a step
    assert [row["epoch"] for row in state["history"]] == [1]
    assert set(state["rng"]) == {"torch", "numpy", "python"}  # CPU run: no CUDA state


def test_restored_optimiser_keeps_its_own_learning_rate_tensor():
    """A tensor learning rate (read by a captured CUDA graph, filled by the schedule) stays the
    same tensor, holding the saved value, so the graph and the schedule still see it."""
    weight = torch.nn.Parameter(torch.ones(2))
    saved_optimizer = torch.optim.Adam([weight], lr=torch.tensor(0.25))
    weight.grad = torch.ones(2)
    saved_optimizer.step()
    state = torch.load(io.BytesIO(save_bytes(saved_optimizer.state_dict())), weights_only=True)
    optimizer = torch.optim.Adam([weight], lr=torch.tensor(1.0))
    own = optimizer.param_groups[0]["lr"]
    load_optimizer_state(optimizer, state)
    assert optimizer.param_groups[0]["lr"] is own and own.item() == 0.25
    assert torch.equal(optimizer.state[weight]["exp_avg"], saved_optimizer.state[weight]["exp_avg"])


def save_bytes(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def cli_args(out: Path, method: tuple[str, str], every: int) -> list[str]:
    return ["run", "--pretext", method[0], "--transfer", method[1], "--profile", "smoke", "--fold", "0",
            "--out", str(out), "--quiet", "--set", f"train.checkpoint_every={every}",
            "--set", "train.pretext_epochs=2", "--set", "train.epochs=3"]


@pytest.mark.parametrize("method", [("gsim", "finetune"), ("gsim", "collab")])
def test_sigkill_mid_fold_then_rerun_resumes_from_the_checkpoint(tmp_path, method):
    killed_out = tmp_path / "killed"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    command = [sys.executable, "-m", "ssl_bench.cli", *cli_args(killed_out, method, every=1)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    checkpoints: list[Path] = []
    while not checkpoints:
        assert proc.poll() is None, f"the run ended before a checkpoint appeared: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.01)
        checkpoints = list(killed_out.glob("*/folds/.0.checkpoint.pt"))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    rundir = RunDir(checkpoints[0].parents[1])
    assert not rundir.fold_done(0), "the kill should land inside the fold"
    saved = torch.load(checkpoints[0], map_location="cpu", weights_only=True)
    assert saved["format"] == "ssl-bench-checkpoint" and saved["fold"] == 0
    stage, epoch = saved["state"]["stage"], saved["state"]["epoch"]
    epochs = 2 if stage == "pretext" else 3

    resumed = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert (f"resumed fold 0 (checkpoint {checkpoints[0]}) at stage '{stage}' after epoch {epoch} of "
            f"{epochs}") in " ".join(resumed.stderr.split())
    assert rundir.fold_done(0) and not checkpoints[0].exists()  # complete: nothing left to resume

    fresh_out = tmp_path / "fresh"
    uninterrupted = CliRunner().invoke(main, cli_args(fresh_out, method, every=0))
    assert uninterrupted.exit_code == 0, uninterrupted.output
    fresh = RunDir(fresh_out / rundir.path.name)
    for name in ("predictions.csv", "metrics.json"):
        assert (rundir.fold_dir(0) / name).read_bytes() == (fresh.fold_dir(0) / name).read_bytes(), name
    pd.testing.assert_frame_equal(losses(rundir.read_history(0)), losses(fresh.read_history(0)))


def smoke(tmp_path, *sets: str):
    return build_config("smoke", flags={"pretext": "gsim", "transfer": "finetune", "out": str(tmp_path)},
                        sets=list(sets))


def test_checkpoint_of_another_configuration_or_fold_is_never_used(tmp_path):
    rundir = RunDir.create(tmp_path, "run")
    cfg = smoke(tmp_path, "train.checkpoint_every=1")
    state = {"stage_index": 0, "stage": "pretext", "epoch": 1, "weights": torch.arange(3.0)}
    fold_checkpoint(rundir, 0, cfg, "cpu").save(state)
    loaded = fold_checkpoint(rundir, 0, cfg, "cpu").load()
    assert loaded["epoch"] == 1 and torch.equal(loaded["weights"], torch.arange(3.0))
    # how often it saves, where it writes and how many threads: the same results, the same key
    same = smoke(tmp_path / "elsewhere", "train.checkpoint_every=5", "threads=2")
    assert config_key(same) == config_key(cfg)
    assert fold_checkpoint(rundir, 0, same, "cpu").load() is not None
    # what decides the results: another key, and the checkpoint is not used (kept, said in one line)
    other = smoke(tmp_path, "train.checkpoint_every=1", "train.lr=0.002")
    assert config_key(other) != config_key(cfg)
    with pytest.warns(ToolkitWarning, match=r"\.0\.checkpoint\.pt\) was saved by another configuration: not used"):
        assert fold_checkpoint(rundir, 0, other, "cpu").load() is None
    # trained on another kind of device (other precision, fused optimisers): not used either
    with pytest.warns(ToolkitWarning, match="saved by a device other than cuda: not used"):
        assert fold_checkpoint(rundir, 0, cfg, "cuda").load() is None
    assert fold_checkpoint(rundir, 0, cfg, "cpu").load() is not None  # neither deleted it
    # another fold's name never reads it, and an unreadable file is deleted, not fatal
    rundir.checkpoint_path(0).rename(rundir.checkpoint_path(1))
    with pytest.warns(ToolkitWarning, match="saved by another fold: not used"):
        assert fold_checkpoint(rundir, 1, cfg, "cpu").load() is None
    rundir.checkpoint_path(1).write_bytes(b"not a checkpoint")
    with pytest.warns(ToolkitWarning, match=r"\.1\.checkpoint\.pt\) cannot be read \(.*\): deleted, the fold trains"):
        assert fold_checkpoint(rundir, 1, cfg, "cpu").load() is None
    assert not rundir.checkpoint_path(1).exists()


def test_leftovers_removal_keeps_the_checkpoint_of_an_unfinished_fold_only(tmp_path):
    rundir = RunDir.create(tmp_path, "run")
    cfg = smoke(tmp_path)
    for k in (0, 1):
        fold_checkpoint(rundir, k, cfg, "cpu").save({"epoch": 1})
    for name in ("metrics.json", "predictions.csv"):  # fold 1 is complete
        (rundir.fold_dir(1)).mkdir(parents=True, exist_ok=True)
        (rundir.fold_dir(1) / name).write_text("{}")
    half_written = rundir.path / "folds" / "..0.checkpoint.pt.abc123"  # a kill inside atomic_write
    half_written.write_bytes(b"partial")
    removed = rundir.remove_leftovers()
    assert sorted(p.name for p in removed) == sorted([half_written.name, ".1.checkpoint.pt"])
    assert rundir.checkpoint_path(0).is_file() and not rundir.checkpoint_path(1).exists()
    assert rundir.present_folds() == [1]  # the hidden checkpoint is no fold


def test_write_fold_removes_the_fold_checkpoint(tmp_path):
    rundir = RunDir.create(tmp_path, "run")
    fold_checkpoint(rundir, 0, smoke(tmp_path), "cpu").save({"epoch": 1})
    predictions = pd.DataFrame({"image_id": ["a"], "patient_id": ["p"], "label": [1], "score": [0.5],
                                "laterality": ["L"]})
    rundir.write_fold(0, {"auc": 0.5}, predictions, model_bytes({"state_dict": {}}))
    assert rundir.fold_done(0) and not rundir.checkpoint_path(0).exists()
    digest = hashlib.sha256((rundir.fold_dir(0) / "predictions.csv").read_bytes()).hexdigest()
    assert json.loads((rundir.fold_dir(0) / "metrics.json").read_text()) == {"auc": 0.5, "predictions_sha256": digest}


def test_checkpoint_every_is_a_non_negative_integer_and_paper_saves_every_5_epochs(tmp_path):
    assert smoke(tmp_path).train.checkpoint_every == 0
    assert PROFILES["paper"]["train.checkpoint_every"] == 5
    with pytest.raises(ConfigError, match="train.checkpoint_every must be at least 0"):
        smoke(tmp_path, "train.checkpoint_every=-1")
    with pytest.raises(ConfigError, match="train.checkpoint_every: expected an integer"):
        smoke(tmp_path, "train.checkpoint_every=often")
    result = CliRunner().invoke(main, ["run", "--profile", "smoke", "--out", str(tmp_path), "--quiet",
                                       "--set", "train.checkpoint_every=-2"])
    assert result.exit_code == 2
    assert "train.checkpoint_every must be at least 0" in result.output and "Traceback" not in result.output
