"""SLOW (starts Ray: about half a minute on 2 cores) - the one Ray Train test: finetune's pretext
stage on 2 Ray Train workers (DDP over gloo, ``train.pretext_workers=2``) gives the weights, the
losses and the random state of one process training on the same global batches.

The network is BatchNorm-free on purpose: torch has SyncBatchNorm on GPUs only, so on the CPU each
worker would normalise over its half of a batch and the two runs would differ by that, not by a
fault of the data-parallel stage (on GPUs the stage turns BatchNorm into SyncBatchNorm). Hence a
ConvNeXt backbone (LayerNorm; timm's ``test_convnext``) and a pretext task whose head is one linear
layer (regressing each image's mean intensity, an MSE averaged over the batch, so the average of
the workers' half-batch losses and gradients is the global batch's).
"""
from __future__ import annotations

import copy
import sys

import pytest
import torch
from torch import nn

from ssl_bench.config import build_config
from ssl_bench.experiment.fold import build_parts
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext.base import PretextBatch, PretextTask
from ssl_bench.registry import PRETEXTS
from ssl_bench.training.context import FitContext
from ssl_bench.transfer.finetune import pretext_stage

ray = pytest.importorskip("ray")

if "mean_intensity" not in PRETEXTS.names():

    @PRETEXTS.register("mean_intensity")
    class MeanIntensity(PretextTask):
        """Regress each image's mean intensity from its pooled features (a BatchNorm-free test task)."""

        kind = "embedding"

        def prepare(self, images, labels):
            return PretextBatch([images], images.mean(dim=(1, 2, 3)))

        def loss(self, outputs, targets):
            return nn.functional.mse_loss(outputs[0].squeeze(1), targets)

        def build_embedding_head(self, in_features):
            return nn.Linear(in_features, 1)


def trained(tmp_path, workers: int):
    cfg = build_config("smoke", {"pretext": "mean_intensity", "transfer": "finetune"},
                       {"model.backbone": "test_convnext", "train.pretext_workers": workers, "out": str(tmp_path),
                        "train.batch_size": 8})
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(32, 1, 64, 32, generator=gen).half()  # 4 full batches: halves of 4 images
    labels = (torch.arange(32) % 3 == 0).float()
    pretext, _ = build_parts(cfg)
    ctx = FitContext(config=cfg, pretext=pretext, images=images, labels=labels, device=torch.device("cpu"))
    torch.manual_seed(0)
    model = PretextModel(ctx.new_backbone(), pretext)
    start = copy.deepcopy(model.state_dict())
    pretext_stage(ctx, model, epochs=2)
    return start, model.state_dict(), ctx.history, torch.get_rng_state()


def test_two_ray_train_workers_train_like_one_process(tmp_path):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        start1, one, history1, rng1 = trained(tmp_path, 1)
        start2, two, history2, rng2 = trained(tmp_path, 2)
    finally:
        ray.shutdown()
    for name in start1:
        assert torch.equal(start1[name], start2[name]), name  # the same start
    moved = max(float((one[k] - start1[k]).abs().max()) for k in one if one[k].is_floating_point())
    assert moved > 1e-3  # the weights did train
    for name in one:
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-5, msg=name)
    assert [r["epoch"] for r in history2] == [1, 2] and all(r["stage"] == "pretext" for r in history2)
    for r1, r2 in zip(history1, history2):
        assert r2["pretext"] == pytest.approx(r1["pretext"], rel=1e-4)  # the workers' mean = the batch mean
    assert torch.equal(rng1, rng2)  # later stages draw what they would have drawn
    assert not (tmp_path / ".ray-train").exists()  # checkpoints were read back and removed


def test_each_worker_gets_its_half_of_every_global_batch():
    """(No Ray.) The shares the workers train on: the halves of the batches one process draws,
    always equal (losses gathered across the workers need that): a last batch of 5 is cut to 4."""
    from ssl_bench.training.batches import FoldBatches

    images = torch.rand(21, 1, 8, 4).half()
    labels = torch.arange(21, dtype=torch.float32)

    def batches(share):
        torch.manual_seed(3)
        data = FoldBatches(images, labels, batch_size=8, share=share)
        return data.steps_per_epoch(), list(data.epoch())

    steps, whole = batches((0, 1))
    steps0, first = batches((0, 2))
    steps1, second = batches((1, 2))
    assert steps == steps0 == steps1 == 3  # 8 + 8 + 5: the last batch still gives each worker 2 images
    for (x, y), (x0, y0), (x1, y1) in zip(whole, first, second):
        assert len(y0) == len(y1) == len(y) // 2 and torch.equal(torch.cat([y0, y1]), y[: len(y) // 2 * 2])
        if len(y) == 8:  # a cut batch draws its augmentation for 4 images, not 5
            assert torch.equal(torch.cat([x0, x1]), x)
    assert FoldBatches(images, labels, batch_size=8, share=(0, 4)).steps_per_epoch() == 2  # 5 < 2 x 4: dropped


def test_the_ray_extra_brings_everything_ray_train_needs():
    """(No Ray start.) ``pip install "ssl-bench[ray]"`` (in the test extra) installs Ray Train's own
    requirements: on a fresh install without them, ``--pretext-workers`` could not start."""
    from ssl_bench.training.distributed import _import_ray_train, missing_ray_train_requirements

    assert missing_ray_train_requirements() == []
    assert _import_ray_train() is ray


def test_a_missing_ray_train_requirement_is_named(monkeypatch):
    """Ray Train's own error says only 'some dependencies are missing'; ours names them, read from
    Ray's metadata (the ``train`` extra's requirements that are not installed)."""
    import importlib.metadata

    from ssl_bench.errors import UserError
    from ssl_bench.training import distributed

    requires = ['pyarrow-that-is-not-installed>=17.0.0; extra == "train"', 'numpy; extra == "train"',
                'another-absent-package; extra == "tune"', 'packaging']
    monkeypatch.setattr(importlib.metadata, "requires", lambda name: requires if name == "ray" else [])
    assert distributed.missing_ray_train_requirements() == ["pyarrow-that-is-not-installed>=17.0.0"]

    monkeypatch.setitem(sys.modules, "ray.train.torch", None)  # ray.train.torch cannot be imported
    with pytest.raises(UserError, match=r"needs Ray Train \(missing pyarrow-that-is-not-installed>=17.0.0\): "
                                        r'pip install "ssl-bench\[ray\]"'):
        distributed._import_ray_train()
