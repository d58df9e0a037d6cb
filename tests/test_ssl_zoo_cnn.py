"""The SSL zoo's SimSiam, NNCLR and SwAV (issue 27).

For each: the loss equals lightly's on fixed tensors, the reference computed with lightly's own
heads, modules and loss wired as lightly's example (SimSiam, NNCLR) or benchmark (SwAV) wires
them, given the same weights; the contract checker passes; a few optimiser steps on a tiny
backbone lower the pretext loss; the stateful tasks (NNCLR's support set, SwAV's queues and the
prototypes' image count) resume a killed fold to the uninterrupted result; and each trains one
smoke fold from the command line, which lists it."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from _resume import Killed, MemoryStore, assert_same_fold
from click.testing import CliRunner
from lightly.loss import NegativeCosineSimilarity, NTXentLoss, SwaVLoss
from lightly.models.modules import (
    NNCLRPredictionHead,
    NNCLRProjectionHead,
    NNMemoryBankModule,
    SimSiamPredictionHead,
    SimSiamProjectionHead,
    SwaVProjectionHead,
    SwaVPrototypes,
)
from lightly.models.modules.memory_bank import MemoryBankModule

from ssl_bench.cli import main
from ssl_bench.config import build_config
from ssl_bench.experiment.fold import train_and_score_fold
from ssl_bench.experiment.run import prepare_run
from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext.nnclr import NNCLR
from ssl_bench.pretext.simsiam import SimSiam
from ssl_bench.pretext.swav import SwAV
from ssl_bench.testing import check_pretext

FEATURES = 12


def views_of(task, b: int = 8, seed: int = 1) -> list[torch.Tensor]:
    """The task's views of ``b`` breast-like images (tissue on the left, textured), the same for a
    seed: a step's ``prepare`` call (SwAV normalises its prototypes there)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 32), indexing="ij")
    images = (((1 - xx) * (0.6 + 0.4 * yy)) * (xx < 0.7) * (0.7 + 0.3 * torch.rand(b, 1, 64, 32, generator=g)))
    torch.manual_seed(seed)
    return task.prepare(images.clamp(0, 1), torch.zeros(b)).inputs


def same_weights(ours: torch.nn.Module, lightlys: torch.nn.Module) -> torch.nn.Module:
    lightlys.load_state_dict(ours.state_dict())
    return lightlys


# ---------------------------------------------------------------- SimSiam


def test_simsiam_loss_and_gradients_are_lightlys_example():
    torch.manual_seed(0)
    task = SimSiam(hidden_dim=16, out_dim=8, predictor_dim=4)
    head = task.build_embedding_head(FEATURES).train()
    # lightly's example: z = projection(f), p = prediction(z), z detached; one view at a time
    projection = same_weights(head.projection, SimSiamProjectionHead(FEATURES, 16, 8)).train()
    prediction = same_weights(head.prediction, SimSiamPredictionHead(8, 4, 8)).train()
    f0, f1 = torch.randn(6, FEATURES), torch.randn(6, FEATURES)

    got = task.loss([head(f0), head(f1)], None)
    got.backward()
    got = got.detach()
    (z0, p0), (z1, p1) = ((z.detach(), prediction(z)) for z in (projection(f0), projection(f1)))
    criterion = NegativeCosineSimilarity()
    want = 0.5 * (criterion(z0, p1) + criterion(z1, p0))
    want.backward()
    assert float(got) == pytest.approx(float(want.detach()), rel=1e-6)
    cosines = F.cosine_similarity(p1, z0).mean() + F.cosine_similarity(p0, z1).mean()
    assert float(got) == pytest.approx(-0.5 * float(cosines.detach()), rel=1e-5)
    for ours, theirs in ((head.projection, projection), (head.prediction, prediction)):
        for a, b in zip(ours.parameters(), theirs.parameters()):
            torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7)
    assert task.loss([head(f0).bfloat16(), head(f1)], None).dtype == torch.float32
    with pytest.raises(ValueError):
        task.loss([head(f0)], None)
    with pytest.raises(ValueError):
        SimSiam(predictor_dim=0)


# ---------------------------------------------------------------- NNCLR


def test_nnclr_loss_and_support_set_are_lightlys_example():
    torch.manual_seed(0)
    task = NNCLR(memory_bank_size=10, temperature=0.3, hidden_dim=16, out_dim=8)
    head = task.build_embedding_head(FEATURES).train()
    projection = same_weights(head.projection, NNCLRProjectionHead(FEATURES, 16, 8)).train()
    prediction = same_weights(head.prediction, NNCLRPredictionHead(8, 16, 8)).train()
    support_set = NNMemoryBankModule(size=(10, 8))
    support_set.bank.copy_(task.support_set.bank)
    support_set.bank_ptr.zero_()
    criterion = NTXentLoss(temperature=0.3)
    for _step in range(3):  # 4 projections a step: the third wraps round the support set of 10
        f0, f1 = torch.randn(4, FEATURES), torch.randn(4, FEATURES)
        bank = support_set.bank.clone()
        got = task.loss([head(f0), head(f1)], None)
        # lightly's example, one view at a time
        (z0, p0), (z1, p1) = ((z.detach(), prediction(z)) for z in (projection(f0), projection(f1)))
        nn0, nn1 = support_set(z0, update=False), support_set(z1, update=True)
        want = 0.5 * (criterion(nn0, p1) + criterion(nn1, p0))
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-6)
        assert torch.equal(task.support_set.bank, support_set.bank)
        # the neighbour is the banked projection most cosine-similar to z0 (before the step)
        nearest = bank[(F.normalize(z0, dim=1) @ F.normalize(bank, dim=1).T).argmax(1)]
        assert torch.equal(nn0, nearest)
    # the second views' projections entered oldest first; the third step's last two did not fit
    assert torch.equal(task.support_set.bank[8:], z1[:2]) and int(task.support_set.bank_ptr) == 0
    frozen = task.support_set.bank.clone()
    with torch.no_grad():  # scoring without a gradient (evaluation) leaves the support set alone
        task.loss([head(f0), head(f1)], None)
    assert torch.equal(task.support_set.bank, frozen)
    with pytest.raises(ValueError):
        NNCLR(memory_bank_size=0)


# ---------------------------------------------------------------- SwAV


def test_swav_loss_queue_and_frozen_prototypes_are_lightlys_benchmark():
    """Four SGD steps of 4 images, epochs of 8 images (2 steps): the prototypes frozen in epoch 0,
    the queue of 8 used from the third step, when it holds only trained projections."""
    torch.manual_seed(0)
    b, dim, k, size = 4, 8, 6, 8
    task = SwAV(n_prototypes=k, queue_size=size, freeze_prototypes=1, temperature=0.2, hidden_dim=16, out_dim=dim,
                local_crops=2)
    head = task.build_embedding_head(FEATURES).train()
    task.start_stage(n_images=8)
    # lightly's ImageNet SwAV benchmark (training_step), with lightly's modules and our weights
    projection = same_weights(head.projection, SwaVProjectionHead(FEATURES, 16, dim)).train()
    prototypes = SwaVPrototypes(dim, k, n_steps_frozen_prototypes=1)
    prototypes.heads.load_state_dict(head.prototypes.heads.state_dict())
    queues = [MemoryBankModule(size=(size, dim), feature_dim_first=False) for _ in range(2)]
    for ours, theirs in zip(task.queues, queues):
        theirs.bank.copy_(ours.bank)
        theirs.bank_ptr.zero_()
    criterion = SwaVLoss(temperature=0.2)
    ours_sgd = torch.optim.SGD(head.parameters(), lr=0.5)
    theirs_sgd = torch.optim.SGD([*projection.parameters(), *prototypes.parameters()], lr=0.5)
    for step in range(4):
        features = [torch.randn(b, FEATURES) for _ in range(4)]
        views_of(task, b)  # the step's prepare: normalises the prototypes
        got = task.loss([head(f) for f in features], None)
        ours_sgd.zero_grad()
        got.backward()
        ours_sgd.step()

        epoch, trained = step * b // 8, step * b
        prototypes.normalize()
        z = [F.normalize(projection(f), dim=1, p=2) for f in features]
        with torch.no_grad():
            banks = [queue(view, update=True)[1] for queue, view in zip(queues, z[:2])]
            # lightly's benchmark waits one batch longer (batch_idx > batches in the queue)
            queued = [prototypes(bank, step=epoch) for bank in banks] if trained >= size else None
        logits = [prototypes(view, step=epoch) for view in z]
        want = criterion(logits[:2], logits[2:], queued)
        theirs_sgd.zero_grad()
        want.backward()
        theirs_sgd.step()

        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5), step
        assert (head.prototypes.heads[0].weight.grad is None) == (epoch == 0), step  # frozen in epoch 0
        assert int(head.prototypes.images_seen) == trained + b
        for ours, theirs in zip(task.queues, queues):
            assert torch.equal(ours.bank, theirs.bank)
    for a, b_ in zip(head.parameters(), [*projection.parameters(), *prototypes.parameters()]):
        torch.testing.assert_close(a, b_, rtol=1e-5, atol=1e-6)
    # the queue changed the loss: without it, the third step's codes are the batch's alone
    without_queue = float(criterion(logits[:2], logits[2:]).detach())
    assert queued is not None and without_queue != pytest.approx(float(want.detach()), rel=1e-3)
    with pytest.raises(ValueError):
        task.loss([head(f) for f in features[:3]], None)
    with pytest.raises(ValueError):
        SwAV(queue_size=-1)
    with pytest.raises(ValueError):
        SwAV(local_scale=0.5, crop_scale=0.4)


def test_swav_multi_crop_views_and_its_head_on_a_backbone():
    torch.manual_seed(0)
    task = SwAV(local_crops=3, n_prototypes=5, hidden_dim=16, out_dim=8, queue_size=0)
    views = views_of(task, 4)
    assert [tuple(v.shape) for v in views] == [(4, 1, 64, 32)] * 2 + [(4, 1, 32, 16)] * 3
    task.prototypes.heads[0].weight.data.mul_(3.0)
    views_of(task, 4)  # every step's prepare puts the prototypes back on the unit sphere
    torch.testing.assert_close(task.prototypes.heads[0].weight.norm(dim=1), torch.ones(5))
    model = PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), task).train()
    assert model.head.prototypes is task.prototypes  # the loss scores the queue with the head's prototypes
    outputs = model(views)
    assert len(outputs) == 5 and all(o.shape == (4, 8 + 5) for o in outputs)
    torch.testing.assert_close(outputs[0][:, :8].norm(dim=1), torch.ones(4))  # normalised projections
    assert set(task.stateful_modules()) == {"queues"}


@pytest.mark.parametrize("name, options", [
    ("nnclr", {"memory_bank_size": 16, "hidden_dim": 16, "out_dim": 8}),
    ("swav", {"queue_size": 8, "freeze_prototypes": 2, "local_crops": 1, "hidden_dim": 16, "out_dim": 8,
              "n_prototypes": 6}),
])
def test_contract_with_small_state(name, options):
    check_pretext(name, **options)


# ---------------------------------------------------------------- training


@pytest.mark.parametrize("task", [
    SimSiam(hidden_dim=64, out_dim=32, predictor_dim=16),
    NNCLR(memory_bank_size=32, hidden_dim=64, out_dim=32),
    SwAV(n_prototypes=16, queue_size=0, freeze_prototypes=0, hidden_dim=64, out_dim=32, local_crops=2),
], ids=["simsiam", "nnclr", "swav"])
def test_a_few_steps_lower_the_loss(task):
    """The pretext loss of one batch's views before and after 6 Adam steps on them of a tiny
    backbone + the task's head (the finetune transfer's pretext stage in miniature), scored against
    the state (support set) as it was before training."""
    torch.manual_seed(0)
    model = PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), task).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    state = {k: v.clone() for k, v in task.support_set.named_buffers()} if isinstance(task, NNCLR) else {}

    def loss_now() -> float:
        with torch.no_grad():
            return float(task.loss(model(views_of(task)), None))

    before = loss_now()
    for _ in range(6):
        loss = task.loss(model(views_of(task)), None)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for k, v in state.items():
        task.support_set.get_buffer(k).copy_(v)
    assert loss_now() < before - 0.1


# ---------------------------------------------------------------- a run: resume, smoke fold


@pytest.mark.parametrize("pretext, sets", [
    ("nnclr", ["params.nnclr.memory_bank_size=16", "params.nnclr.hidden_dim=32", "params.nnclr.out_dim=16"]),
    ("swav", ["params.swav.queue_size=16", "params.swav.local_crops=1", "params.swav.hidden_dim=32",
              "params.swav.out_dim=16", "params.swav.n_prototypes=8"]),
])
def test_a_fold_killed_in_the_pretext_stage_resumes_with_the_tasks_state(tmp_path, pretext, sets):
    """Killed after pretext epoch 1 of 2: the resumed fold equals the uninterrupted one, which it
    can only if the support set (NNCLR), the queues and the prototypes' image count (SwAV, whose
    prototypes are frozen in epoch 1 only) come back from the checkpoint."""
    cfg = build_config("smoke", flags={"pretext": pretext, "transfer": "finetune", "out": str(tmp_path)},
                       sets=["train.checkpoint_every=1", "train.pretext_epochs=2", "train.epochs=1", *sets])
    run = prepare_run(cfg)
    uninterrupted = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, torch.device("cpu"))
    killed = MemoryStore(kill_at=1)
    with pytest.raises(Killed):
        train_and_score_fold(cfg, run.loaded, run.fold_of, 0, torch.device("cpu"), checkpoint_store=killed)
    state = killed.load()
    assert state is not None and (state["stage"], state["epoch"]) == ("pretext", 1)
    if pretext == "nnclr":  # the support set holds projections (BatchNorm'd, not its random unit vectors)
        bank = state["pretext"]["support_set"]["buffers"]["bank"]
        assert not torch.allclose(bank.norm(dim=1), torch.ones(len(bank)))
    else:  # the prototypes counted the epoch's images, with the network
        seen = [m["state_dict"][k] for m in state["modules"] for k in m["state_dict"] if k.endswith("images_seen")]
        assert len(seen) == 1 and int(seen[0]) >= 40
        assert set(state["pretext"]) == {"queues"}
    resumed = train_and_score_fold(cfg, run.loaded, run.fold_of, 0, torch.device("cpu"),
                       checkpoint_store=MemoryStore(blob=killed.blob))
    assert_same_fold(resumed, uninterrupted)


@pytest.mark.parametrize("pretext", ["simsiam", "nnclr", "swav"])
def test_listed_and_one_smoke_fold_from_the_command_line(tmp_path, pretext):
    listed = CliRunner().invoke(main, ["list", "pretexts"], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and f"{pretext} " in listed.output
    result = CliRunner().invoke(main, ["run", "--pretext", pretext, "--transfer", "finetune", "--profile", "smoke",
                                       "--fold", "0", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{pretext}-finetune" / "folds" / "0" / "metrics.json").is_file()


def test_a_swav_queue_the_workers_cannot_share_is_one_line_before_any_data(tmp_path, monkeypatch):
    # each data-parallel worker scores its 1/workers slice of the queue; a queue that does not
    # divide would fail only once it filled, mid-stage, so the run refuses it before loading data
    monkeypatch.setattr("ssl_bench.experiment.run.load_evaluation_data",
                        lambda *a, **kw: pytest.fail("the data was loaded before the check"))
    result = CliRunner().invoke(main, ["run", "--pretext", "swav", "--transfer", "finetune", "--profile", "smoke",
                                       "--set", "train.pretext_workers=2", "--set", "train.batch_size=8",
                                       "--set", "params.swav.queue_size=15", "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and result.output.strip().splitlines()[-1:] == [
        "error: SwAV's params.swav.queue_size=15 must be a multiple of the 2 data-parallel workers "
        "(train.pretext_workers): each scores its slice of the queue"]
    assert not list(tmp_path.iterdir())
