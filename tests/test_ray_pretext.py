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
import timm
import torch
from torch import nn

from ssl_bench.config import build_config
from ssl_bench.experiment.fold import build_parts
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext.base import PretextBatch, PretextTask
from ssl_bench.registry import PRETEXTS
from ssl_bench.training.batches import FoldBatches
from ssl_bench.training.context import FitContext
from ssl_bench.training.stages import pretext_stage, train_pretext

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


def test_every_worker_gets_the_global_batches_of_one_process():
    """(No Ray.) Every worker gets the whole global batch, as one process draws it (order and
    augmentation), and keeps its contiguous half: the halves are always equal (losses gathered
    across the workers need that), so a last batch of 5 is cut to 4 for 2 workers."""
    images = torch.rand(21, 1, 8, 4).half()
    labels = torch.arange(21, dtype=torch.float32)

    def batches(share):
        torch.manual_seed(3)
        data = FoldBatches(images, labels, batch_size=8, share=share)
        return data, data.steps_per_epoch(), list(data.epoch())

    _, steps, whole = batches((0, 1))
    data0, steps0, first = batches((0, 2))
    data1, steps1, second = batches((1, 2))
    assert steps == steps0 == steps1 == len(whole) == len(first) == 3  # 8 + 8 + 5: each worker gets 2 of the last
    for (x, y), (x0, y0), (x1, y1) in zip(whole, first, second):
        assert torch.equal(x0, x1) and torch.equal(y0, y1)  # every worker: the same global batch
        assert torch.equal(y0, y[: len(y) // 2 * 2])
        if len(y) == 8:  # a cut batch draws its augmentation for 4 images, not 5
            assert torch.equal(x0, x)
        half = len(y0) // 2
        assert torch.equal(data0.share_of(y0, len(y0)), y0[:half])
        assert torch.equal(data1.share_of(y1, len(y1)), y1[half:])
    assert FoldBatches(images, labels, batch_size=8, share=(0, 4)).steps_per_epoch() == 2  # 5 < 2 x 4: dropped


class Recorder(nn.Module):
    """Stands in for the pretext network: records the views a step feeds it; one weight, so that
    the step's optimiser has something to train. With a masked task's ``head``, also the true
    pixels of the patches the head hides when it is fed those views, in the step."""

    def __init__(self, head: nn.Module | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(()))
        self.fed: list[list[torch.Tensor]] = []
        self.head, self.hidden = head, []

    def forward(self, views):
        self.fed.append([v.detach().clone() for v in views])
        if self.head is not None:
            self.hidden.append(hidden_patches(self.head, views))
        return [v * self.weight for v in views]

    def start_teacher(self, total_steps):
        pass

    def after_step(self):
        pass


class RecordedTask(PretextTask):
    """A registered task's ``prepare`` as it is; ``loss`` records the targets it is given."""

    def __init__(self, task: PretextTask):
        self.task, self.targets = task, []

    def prepare(self, images, labels):
        return self.task.prepare(images, labels)

    def loss(self, outputs, targets):
        self.targets.append(None if targets is None else targets.detach().clone())
        return sum(o.float().mean() for o in outputs)


#: pretext tasks whose ``prepare`` draws random views (and GSIM, whose targets are per image):
#: (name, options)
VIEW_CASES = {
    "simclr": ("simclr", {}),
    "dino": ("dino", {"local_crops": 2}),  # local views of another size
    "gsim": ("gsim", {}),  # (B, 1, H, W) targets from the labels
    "context_restoration": ("context_restoration", {}),
    "rotation-all": ("rotation", {"all_rotations": True}),  # targets: 4 views' classes, view by view
    "rotation-one": ("rotation", {"all_rotations": False}),  # one random rotation per image
    "mae": ("mae", {"decoder_dim": 32, "decoder_heads": 2}),  # the patches it hides, per image
    # the patches each anchor keeps and the context and target blocks: inputs, per image
    "msn": ("msn", {"focal_views": 1, "hidden_dim": 16, "out_dim": 8, "num_prototypes": 8}),
    "ijepa": ("ijepa", {"predictor_dim": 16, "predictor_heads": 2, "min_keep": 2}),
}
VIEW_SEED = 5


def view_task(case: str, images) -> tuple[PretextTask, nn.Module | None]:
    """The case's task and, for a masked task, its head on a small ViT built for the images
    (``test_vit`` with 4x4 patches: 8 x 4 of them on 32x16 images)."""
    name, options = VIEW_CASES[case]
    task = PRETEXTS.create(name, **options)
    if task.kind != "masked":
        return task, None
    vit = timm.create_model("test_vit", in_chans=1, num_classes=1, img_size=tuple(images.shape[-2:]), patch_size=4)
    head = task.build_masked_head(vit).eval()  # the patch grid, for prepare's masks
    return task, head if name == "mae" else None  # MSN's and I-JEPA's masks are inputs, checked with the views


@torch.no_grad()
def hidden_patches(head: nn.Module, views) -> torch.Tensor:
    """The true pixels of the patches a masked task's head hides, per image, fed ``views``."""
    return head(views[0].float(), *views[1:])[1].clone()


def fed_views(case: str, images, labels, share):
    """finetune's pretext step over one epoch (batches of 8, augmented) as worker ``share``
    runs it, from the random state of ``torch.manual_seed(VIEW_SEED)``: per step, the views fed to
    the network and the targets given to the loss; and the random state after the epoch."""
    name, _ = VIEW_CASES[case]
    inner, head = view_task(case, images)
    task = RecordedTask(inner)
    cfg = build_config("smoke", {"pretext": name, "transfer": "finetune"}, {"train.batch_size": 8})
    assert cfg.train.augment
    ctx = FitContext(config=cfg, pretext=task, images=images, labels=labels, device=torch.device("cpu"))
    ctx.data.share = share
    net = Recorder(head)
    torch.manual_seed(VIEW_SEED)
    train_pretext(ctx, net, net, epochs=1, stage="pretext")
    return net.fed, task.targets, torch.get_rng_state(), net.hidden, head


def view_by_view(targets: torch.Tensor, views: int) -> torch.Tensor:
    """``(views, B, ...)``: targets laid out view by view, ``B`` rows each (rotation's classes)."""
    return targets.reshape(views, -1, *targets.shape[1:])


@pytest.mark.parametrize("case", list(VIEW_CASES))
def test_workers_keep_their_halves_of_the_views_one_process_draws(case):
    """(No Ray.) The pretext task's random views of a global batch, drawn in the step: one process
    draws them for the whole batch; each of 2 workers, starting from the same random state, must
    train on its half of exactly those (not views drawn for its half alone, which would also give
    both workers' i-th images the same draws), and score its half of the targets. For a last
    batch cut to 4 images (21 = 8 + 8 + 5), the reference is one process drawing the views of the
    4 images the workers train on; and the random state after the epoch is one process's. MAE's
    random views are the patches its head hides: each worker's must be its half of one process's."""
    images = torch.rand(21, 1, 32, 16, generator=torch.Generator().manual_seed(2)).half()
    labels = torch.arange(21, dtype=torch.float32)  # GSIM reads labels % 2
    one_views, one_targets, _, one_hidden, _ = fed_views(case, images, labels, (0, 1))
    (views0, targets0, rng0, hidden0, _), (views1, targets1, rng1, hidden1, _) = [
        fed_views(case, images, labels, (r, 2)) for r in (0, 1)]
    assert [len(v[0]) for v in one_views] == [8, 8, 5] and len(views0) == len(views1) == 3
    for step in (0, 1):  # full batches: one process's own
        assert_halves_join(views0[step], views1[step], targets0[step], targets1[step],
                           one_views[step], one_targets[step], step)
        if one_hidden:
            assert_hidden_join(hidden0[step], hidden1[step], one_hidden[step], step)

    # the cut batch: one process drawing the views of the 4 images the workers train on
    task, head = view_task(case, images)
    torch.manual_seed(VIEW_SEED)
    drawn = [task.prepare(x, y) for x, y in FoldBatches(images, labels, 8, share=(0, 2)).epoch()]
    assert [len(b.inputs[0]) for b in drawn] == [8, 8, 4]
    assert_halves_join(views0[2], views1[2], targets0[2], targets1[2], drawn[2].inputs, drawn[2].targets, 2)
    if head is not None:
        assert len(hidden0) == len(hidden1) == 3
        assert_hidden_join(hidden0[2], hidden1[2], hidden_patches(head, drawn[2].inputs), 2)
    assert torch.equal(rng0, torch.get_rng_state()) and torch.equal(rng1, rng0)  # later stages draw alike


def assert_hidden_join(hidden0, hidden1, hidden, step):
    """Worker 0's and worker 1's hidden patches ``(B/2, n_masked, D)`` are the halves of one
    process's ``hidden`` (as sets per image: the order of an image's hidden patches is free)."""
    assert len(hidden0) == len(hidden1) == len(hidden) // 2, f"step {step}"
    ours, one = torch.cat([hidden0, hidden1]), hidden
    assert ours.shape == one.shape and ours.shape[1] > 1, f"step {step}"
    for i, (a, b) in enumerate(zip(ours, one)):
        assert sorted(map(tuple, a.tolist())) == sorted(map(tuple, b.tolist())), f"step {step}, image {i}"


def assert_halves_join(views0, views1, targets0, targets1, views, targets, step):
    """Worker 0's and worker 1's views and targets are the halves of ``views`` and ``targets``."""
    assert len(views0) == len(views1) == len(views)
    for v, (half0, half1, whole) in enumerate(zip(views0, views1, views)):
        assert len(half0) == len(half1) == len(whole) // 2, f"step {step}, view {v}"
        torch.testing.assert_close(torch.cat([half0, half1]), whole, rtol=0, atol=0,
                                   msg=lambda m: f"step {step}, view {v}: {m}")
    if targets is None:
        assert targets0 is None and targets1 is None
        return
    k = len(targets) // len(views[0])  # 1, or rotation's 4 views of classes
    joined = torch.cat([view_by_view(targets0, k), view_by_view(targets1, k)], dim=1)
    torch.testing.assert_close(joined, view_by_view(targets, k), rtol=0, atol=0,
                               msg=lambda m: f"step {step}, targets: {m}")


def test_a_share_of_anything_a_pretext_task_returns():
    """(No Ray.) Worker 1 of 2, batch of 4: rows 2-3 of every per-image tensor, rows 2-3 of each
    view's block of a view-by-view tensor, inside lists, tuples, dicts and a PretextBatch; what is
    not per image is shared as it is."""
    from collections import namedtuple

    from ssl_bench.training.batches import cut_to_share

    Pair = namedtuple("Pair", "a b")
    images = torch.arange(4.0).view(4, 1, 1, 1)
    blocks = torch.tensor([0, 1, 2, 3, 10, 11, 12, 13, 20, 21, 22, 23])  # 3 views x 4 images
    other, scalar = torch.arange(5), torch.tensor(7.0)
    value = PretextBatch([images, images + 100],
                         {"t": (blocks, Pair(images, None)), "n": [other, scalar, 3, None]})
    got = cut_to_share(value, 4, 1, 2)
    assert isinstance(got, PretextBatch) and len(got.inputs) == 2
    assert torch.equal(got.inputs[0].flatten(), torch.tensor([2.0, 3.0]))
    assert torch.equal(got.inputs[1].flatten(), torch.tensor([102.0, 103.0]))
    assert torch.equal(got.targets["t"][0], torch.tensor([2, 3, 12, 13, 22, 23]))
    assert isinstance(got.targets["t"][1], Pair) and got.targets["t"][1].b is None
    assert torch.equal(got.targets["t"][1].a.flatten(), torch.tensor([2.0, 3.0]))
    assert got.targets["n"][0] is other and got.targets["n"][1] is scalar and got.targets["n"][2:] == [3, None]
    assert cut_to_share(value, 4, 0, 1) is value  # one process: the whole batch
    with pytest.raises(ValueError, match="no equal shares"):
        cut_to_share(images, 4, 0, 3)


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
