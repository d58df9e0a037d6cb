"""What the toolkit reads back is checked against the checksum written with it: a fold checkpoint,
a pretext-stage cache entry and a ``model.pt`` (the image cache: tests/test_sharded_cache.py). A
red team flipped bytes in such files and the toolkit used them without a word (one fold's AUC went
0.536 -> 0.464). Each test damages a file as a disk or a bad copy does, inside a tensor's data so
that torch still loads it, and checks that it is never used."""
from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.errors import ToolkitWarning, UserError
from ssl_bench.experiment.fold_checkpoint import fold_checkpoint
from ssl_bench.experiment.model_file import load_model_record, model_bytes, model_record
from ssl_bench.experiment.rundir import RunDir
from ssl_bench.models.backbones import create_backbone
from ssl_bench.training.pretext_cache import read_checkpoint, write_checkpoint
from ssl_bench.training.state_digest import state_digest

#: a tensor whose bytes are found in the file written, so that the test flips one of its bytes
MARKED = torch.arange(1, 65, dtype=torch.float32) * 1.2345


def flip_inside(path, tensor: torch.Tensor) -> None:
    """Flip one byte of ``tensor``'s data where ``path`` stores it (torch stores it uncompressed)."""
    data = bytearray(path.read_bytes())
    at = data.find(tensor.numpy().tobytes())
    assert at >= 0, "the tensor's bytes are not in the file"
    data[at + 5] ^= 0x01
    path.write_bytes(bytes(data))


def state():
    return {"epoch": 3, "stage": "pretext", "weights": {"w": MARKED.clone(), "b": torch.zeros(2, dtype=torch.bfloat16)},
            "steps": torch.tensor(7), "flags": torch.tensor([True, False]), "groups": [{"lr": 0.1, "params": [0, 1]}],
            "none": None}


def test_state_digest_survives_a_round_trip_and_sees_every_value(tmp_path):
    torch.save(state(), tmp_path / "s.pt")
    assert state_digest(torch.load(tmp_path / "s.pt", weights_only=True)) == state_digest(state())
    seen = {state_digest(state())}
    for edit in (lambda s: s["weights"]["w"].__setitem__(63, s["weights"]["w"][63].item() * (1 + 2 ** -20)),
                 lambda s: s["weights"]["b"].__setitem__(0, 1.0),
                 lambda s: s["flags"].__setitem__(1, True),
                 lambda s: s.__setitem__("epoch", 4),
                 lambda s: s.__setitem__("epoch", 3.0),  # a float 3.0 is another value than the int 3
                 lambda s: s["groups"][0].__setitem__("lr", 0.10000000000000002),
                 lambda s: s.__setitem__("steps", torch.tensor([7])),  # same bytes, another shape
                 lambda s: s.__setitem__("steps", torch.tensor(7, dtype=torch.int32)),
                 lambda s: s.__setitem__("none", 0)):
        edited = state()
        edit(edited)
        seen.add(state_digest(edited))
    assert len(seen) == 10


def test_a_fold_checkpoint_with_a_flipped_byte_is_deleted_in_one_line(tmp_path):
    rundir = RunDir.create(tmp_path, "run")
    cfg = build_config("smoke", flags={"out": str(tmp_path)})
    checkpoint = fold_checkpoint(rundir, 0, cfg, "cpu")
    checkpoint.save(state())
    assert state_digest(checkpoint.load()) == state_digest(state())
    flip_inside(checkpoint.path, MARKED)
    assert torch.load(checkpoint.path, weights_only=True)["state"]["epoch"] == 3  # torch alone sees nothing
    with pytest.warns(ToolkitWarning, match=rf"^fold 0 \(checkpoint {re.escape(str(checkpoint.path))}\) is damaged \(its "
                                            r"checksum does not match its content\): deleted, the fold trains from the start$"):
        assert checkpoint.load() is None
    assert not checkpoint.path.exists()
    checkpoint.save(state())
    checkpoint.path.write_bytes(checkpoint.path.read_bytes()[:-100])  # truncated
    with pytest.warns(ToolkitWarning, match=r"\) cannot be read \(.+\): deleted, the fold trains from the start$"):
        assert checkpoint.load() is None


def test_a_pretext_cache_entry_with_a_flipped_byte_is_dropped_in_one_line(tmp_path):
    module = torch.nn.Linear(64, 1, bias=False)
    with torch.no_grad():
        module.weight.copy_(MARKED)
    path = tmp_path / "k1.pt"
    write_checkpoint(path, "k1", module)
    assert torch.equal(read_checkpoint(path, "k1")["weight"], module.weight)
    flip_inside(path, MARKED)
    with pytest.warns(ToolkitWarning, match=rf"^pretext-stage cache {re.escape(str(path))} is damaged \(its checksum does "
                                            r"not match its content\): dropped, the stage is trained again$"):
        assert read_checkpoint(path, "k1") is None
    write_checkpoint(path, "k1", module)
    with pytest.warns(ToolkitWarning, match="holds another stage than its name says"):
        assert read_checkpoint(path, "k2") is None


def test_a_model_file_with_a_flipped_byte_is_refused(tmp_path):
    torch.manual_seed(0)
    classifier = create_backbone("test_resnet")
    record = model_record("test_resnet", (64, 32), classifier)
    path = tmp_path / "model.pt"
    path.write_bytes(model_bytes(record))
    assert load_model_record(path)["state_sha256"] == record["state_sha256"]
    weight = next(t for t in record["state_dict"].values() if t.numel() >= 64 and t.dtype == torch.float32)
    flip_inside(path, weight)
    with pytest.raises(UserError, match=rf"^{re.escape(str(path))} is damaged: the checksum of its weights does not match"):
        load_model_record(path)
    del record["state_sha256"]  # a file of version 3, written before the checksum: read as before
    path.write_bytes(model_bytes(dict(record, version=3)))
    assert load_model_record(path)["version"] == 3


def test_data_prepare_repairs_a_damaged_cache(tmp_path):
    args = ["data", "prepare", "--dataset", "synthetic", "--image-size", "32x16", "--cache-dir", str(tmp_path),
            "--set", "params.synthetic.n_patients=6", "--set", "params.synthetic.n_benign=10",
            "--set", "params.synthetic.n_malignant=4"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    shard = next(tmp_path.rglob("*.npy"))
    data = bytearray(shard.read_bytes())
    data[-7] ^= 0x40
    shard.write_bytes(bytes(data))
    repaired = CliRunner().invoke(main, args)
    assert repaired.exit_code == 0, repaired.output
    said = " ".join(repaired.output.split())
    assert f"warning: cache: shard {shard} is damaged" in said and "dropped, its images are made again" in said
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "warning" not in again.output  # repaired for good
