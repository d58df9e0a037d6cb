"""The SSL zoo: the shared views, SimCLR's memory bank, Barlow Twins, VICReg, BYOL, MoCo, DINO.

For each method: the loss wiring equals lightly's (and a written-out reference) on fixed tensors,
the contract checker passes, and a few steps on a tiny backbone lower the pretext loss; for the
momentum methods the teacher update and (MoCo) the queue's rotation."""
from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, DINOLoss, NegativeCosineSimilarity, NTXentLoss, VICRegLoss
from lightly.models.utils import update_momentum
from lightly.utils.scheduler import cosine_schedule

from _steps import losses_before_and_after
from ssl_bench.errors import ToolkitWarning
from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext import moco, simclr, views
from ssl_bench.pretext.barlowtwins import BarlowTwins
from ssl_bench.pretext.base import PretextTask
from ssl_bench.pretext.byol import BYOL
from ssl_bench.errors import ConfigError
from ssl_bench.pretext.dino import DINO
from ssl_bench.pretext.moco import MoCo
from ssl_bench.pretext.momentum import cosine_momentum, ema_update
from ssl_bench.pretext.simclr import SimCLR
from ssl_bench.pretext.vicreg import VICReg
from ssl_bench.registry import PRETEXTS
from ssl_bench.testing import check_pretext


def breast_like(b=8, h=64, w=32, seed=0):
    """Tissue on the left with a random texture, background on the right."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    base = ((1 - xx) * (0.6 + 0.4 * yy)) * (xx < 0.7)
    tex = 0.3 * torch.rand(b, 1, h, w, generator=g)
    return (base * (0.7 + tex)).clamp(0, 1)


def pretext_losses(task, steps: int = 10, lr: float = 1e-3, seed: int = 0) -> tuple[float, float]:
    """The pretext loss of one prepared batch before and after ``steps`` Adam steps on it of a
    tiny backbone + the task's head (the finetune transfer's pretext stage, in miniature, with
    the teacher's momentum update after each step)."""
    torch.manual_seed(seed)
    model = PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), task).train()
    return losses_before_and_after(task, model, task.prepare(breast_like(), torch.zeros(8)), steps, lr)


# ---------------------------------------------------------------- shared views


def test_simclr_uses_the_shared_views_module():
    assert simclr.MammoViews is views.MammoViews
    assert simclr.resized_crop is views.resized_crop
    assert simclr.sample_crop_boxes is views.sample_crop_boxes
    for cls in (SimCLR, BarlowTwins, VICReg):
        assert isinstance(cls().views, views.MammoViews)


def test_view_pair_is_the_old_simclr_prepare():
    images = breast_like(4)
    torch.manual_seed(3)
    pair = SimCLR().prepare(images, torch.zeros(4)).inputs
    torch.manual_seed(3)
    v = views.MammoViews()
    assert torch.equal(pair[0], v(images)) and torch.equal(pair[1], v(images))


def test_smaller_views_for_local_crops():
    images = breast_like(3)
    out = views.MammoViews(crop_scale=(0.05, 0.4), out_scale=0.5)(images)
    assert out.shape == (3, 1, 32, 16) and float(out.min()) >= 0 and float(out.max()) <= 1
    with pytest.raises(ValueError):
        views.MammoViews(out_scale=0)


# ---------------------------------------------------------------- SimCLR memory bank


def test_simclr_memory_bank_is_lightlys_and_rotates():
    torch.manual_seed(0)
    task = SimCLR(memory_bank_size=16, out_dim=8)
    torch.manual_seed(0)
    ref = NTXentLoss(temperature=0.5, memory_bank_size=(16, 8))
    assert torch.equal(task.criterion.memory_bank.bank, ref.memory_bank.bank)
    z0, z1 = torch.randn(4, 8, requires_grad=True), torch.randn(4, 8)
    bank_before = task.criterion.memory_bank.bank.clone()
    assert float(task.loss([z0, z1], None).detach()) == pytest.approx(float(ref(z0, z1).detach()), rel=1e-6)
    bank = task.criterion.memory_bank.bank
    assert torch.allclose(bank[:4], F.normalize(z1, dim=1))  # the second views enter the queue
    assert torch.equal(bank[4:], bank_before[4:]) and int(task.criterion.memory_bank.bank_ptr) == 4
    # without a bank: plain in-batch NT-Xent
    assert SimCLR().criterion.memory_bank.size == (0,)
    with pytest.raises(ValueError):
        SimCLR(memory_bank_size=-1)


def test_simclr_with_memory_bank_passes_the_contract():
    check_pretext("simclr", memory_bank_size=32, hidden_dim=16, out_dim=8)


# ---------------------------------------------------------------- Barlow Twins, VICReg


def barlow_reference(z0, z1, lam):
    n = z0.shape[0]
    a = (z0 - z0.mean(0)) / z0.std(0, unbiased=False)
    b = (z1 - z1.mean(0)) / z1.std(0, unbiased=False)
    c = a.T @ b / n
    on = ((torch.diagonal(c) - 1) ** 2).sum()
    off = (c**2).sum() - (torch.diagonal(c) ** 2).sum()
    return on + lam * off


def vicreg_reference(z0, z1, lam, mu, nu, eps=1e-4):
    def var(z):
        return F.relu(1 - torch.sqrt(z.var(0) + eps)).mean()

    def cov(z):
        d = z.shape[1]
        c = torch.cov(z.T)
        return ((c**2).sum() - (torch.diagonal(c) ** 2).sum()) / d

    return lam * F.mse_loss(z0, z1) + mu * 0.5 * (var(z0) + var(z1)) + nu * (cov(z0) + cov(z1))


def test_barlowtwins_loss_is_lightlys():
    torch.manual_seed(0)
    z0, z1 = torch.randn(6, 10), torch.randn(6, 10)
    task = BarlowTwins(lambda_param=0.01)
    got = task.loss([z0.bfloat16(), z1.bfloat16()], None)
    assert got.dtype == torch.float32
    got = float(task.loss([z0, z1], None))
    assert got == pytest.approx(float(BarlowTwinsLoss(lambda_param=0.01)(z0, z1)), rel=1e-6)
    assert got == pytest.approx(float(barlow_reference(z0, z1, 0.01)), rel=1e-4)
    head = BarlowTwins(hidden_dim=32, out_dim=16).build_embedding_head(24)
    assert head(torch.randn(5, 24)).shape == (5, 16)
    with pytest.raises(ValueError):
        task.loss([z0], None)
    with pytest.raises(ValueError):
        BarlowTwins(out_dim=0)


def test_vicreg_loss_is_lightlys():
    torch.manual_seed(0)
    z0, z1 = torch.randn(6, 10), torch.randn(6, 10)
    task = VICReg(lambda_param=20, mu_param=10, nu_param=2)
    got = float(task.loss([z0, z1], None))
    assert got == pytest.approx(float(VICRegLoss(20, 10, 2)(z0, z1)), rel=1e-6)
    assert got == pytest.approx(float(vicreg_reference(z0, z1, 20, 10, 2)), rel=1e-4)
    assert VICReg(hidden_dim=32, out_dim=16).build_embedding_head(24)(torch.randn(5, 24)).shape == (5, 16)
    with pytest.raises(ValueError):
        VICReg(mu_param=-1)


@pytest.mark.parametrize("name", ["barlowtwins", "vicreg"])
def test_contract(name):
    assert PRETEXTS.get(name).__doc__
    check_pretext(name, hidden_dim=32, out_dim=32)


@pytest.mark.parametrize("cls", [BarlowTwins, VICReg])
def test_a_few_steps_lower_the_loss(cls):
    before, after = pretext_losses(cls(hidden_dim=64, out_dim=64))
    assert after < 0.9 * before


# ---------------------------------------------------------------- the teacher (momentum) update


def test_ema_update_is_lightlys_update_momentum_also_with_a_tensor_momentum():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(5, 3), torch.nn.Linear(5, 3)
    ref = copy.deepcopy(teacher)
    update_momentum(student, ref, 0.9)
    ema_update(student, teacher, torch.tensor(0.9))
    for a, b in zip(teacher.parameters(), ref.parameters()):
        assert torch.allclose(a, b, atol=1e-7)
    ema_update(student, teacher, 0.5)  # a float goes to lightly's function itself
    update_momentum(student, ref, 0.5)
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(teacher.parameters(), ref.parameters()))


@pytest.mark.parametrize("total", [1, 2, 10])
def test_cosine_momentum_is_lightlys_cosine_schedule(total):
    for step in range(total + 2):
        got = float(cosine_momentum(torch.tensor(float(step)), total, 0.99, 1.0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = cosine_schedule(step, total, 0.99, 1.0)
        assert got == pytest.approx(want, abs=1e-6)
    assert float(cosine_momentum(torch.tensor(5.0), None, 0.9)) == pytest.approx(0.9)


def test_teacher_is_built_and_the_momentum_update_applied():
    torch.manual_seed(0)
    task = BYOL(hidden_dim=32, out_dim=16, momentum=0.9)
    model = PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), task).train()
    # BYOL's teacher copies the projector, not the predictor, and gets no gradient or optimiser
    assert not hasattr(model.teacher_head, "prediction")
    teacher = list(model.teacher_backbone.parameters()) + list(model.teacher_head.parameters())
    assert all(not p.requires_grad for p in teacher)
    student = list(model.backbone.parameters()) + list(model.head.projection.parameters())
    assert all(torch.equal(a, b) for a, b in zip(student, teacher))  # starts as a copy
    batch = task.prepare(breast_like(4), torch.zeros(4))
    outputs = model(batch.inputs)
    assert len(outputs) == 4 and not outputs[2].requires_grad and outputs[0].requires_grad
    task.loss(outputs, None).backward()
    assert all(p.grad is None for p in teacher)
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5).step()
    old = [p.detach().clone() for p in teacher]
    model.start_teacher(10)
    m = cosine_schedule(0, 10, 0.9, 1.0)
    model.after_step()
    for t, s, o in zip(teacher, student, old):
        assert torch.allclose(t, m * o + (1 - m) * s, atol=1e-6)
    assert not all(torch.equal(t, o) for t, o in zip(teacher, old))
    assert float(model.teacher_steps) == 1.0


def test_moco_momentum_follows_the_cosine_schedule_to_1():
    torch.manual_seed(0)
    task = MoCo(queue_size=8, hidden_dim=32, out_dim=16)
    assert (task.momentum_start, task.momentum_end) == (0.99, 1.0)
    model = PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), task).train()
    student = list(model.backbone.parameters()) + list(model.head.parameters())
    teacher = list(model.teacher_backbone.parameters()) + list(model.teacher_head.parameters())
    assert len(student) == len(teacher)
    total = 5
    model.start_teacher(total)
    for step in range(total):
        with torch.no_grad():  # the network moves away from the key encoder
            for p in student:
                p.add_(torch.randn_like(p))
        old = [t.detach().clone() for t in teacher]
        model.after_step()
        m = cosine_schedule(step, total, 0.99, 1.0)
        for t, s, o in zip(teacher, student, old):
            assert torch.allclose(t, m * o + (1 - m) * s, atol=1e-5)
        assert all(torch.equal(t, o) for t, o in zip(teacher, old)) == (m == 1.0)
    assert m == 1.0  # lightly's schedule ends at 1: the last step leaves the key encoder as it was


def test_no_teacher_for_other_tasks():
    model = PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), SimCLR())
    assert not model.has_teacher and not hasattr(model, "teacher_backbone")
    model.start_teacher(5)
    model.after_step()  # no-ops


# ---------------------------------------------------------------- BYOL, MoCo


def test_byol_loss_is_lightlys():
    torch.manual_seed(0)
    p0, p1, z0, z1 = (torch.randn(6, 10) for _ in range(4))
    got = float(BYOL().loss([p0, p1, z0, z1], None))
    ncs = NegativeCosineSimilarity()
    assert got == pytest.approx(float(0.5 * (ncs(p0, z1) + ncs(p1, z0))), rel=1e-6)
    cos = 0.5 * (F.cosine_similarity(p0, z1).mean() + F.cosine_similarity(p1, z0).mean())
    assert got == pytest.approx(-float(cos), rel=1e-5)
    assert BYOL().loss([p0.bfloat16(), p1, z0, z1], None).dtype == torch.float32
    with pytest.raises(ValueError):
        BYOL().loss([p0, p1], None)
    with pytest.raises(ValueError):
        BYOL(momentum=1.5)


def moco_reference(q0, q1, k0, k1, queue, temperature):
    """MoCo's symmetrised InfoNCE written out: each query (normalised) against the key of its
    image's other view, its positive, and the rows of ``queue`` (the queue before the step), its
    negatives; cross-entropy with target 0, averaged over the batch and the two directions."""
    losses = []
    for q, k in ((q0, k1), (q1, k0)):
        q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
        logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / temperature
        losses.append(F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long)))
    return 0.5 * (losses[0] + losses[1])


def test_moco_scores_both_directions_against_the_queue_before_the_step():
    # an aligned state: each image's queries and keys (both views) are one unit vector, so a query
    # meeting its own image's key among the negatives (a queue updated between the two terms)
    # shows as a higher loss
    torch.manual_seed(0)
    b, dim, t = 4, 10, 0.2
    task = MoCo(queue_size=3 * b, out_dim=dim, temperature=t)
    u = F.normalize(torch.randn(b, dim), dim=1)
    before = F.normalize(torch.randn(3 * b, dim), dim=1)
    task.queue.copy_(before)
    q0, q1 = u.clone().requires_grad_(True), u.clone().requires_grad_(True)  # training
    got = task.loss([q0, q1, u.clone(), u.clone()], None)
    want = moco_reference(u, u, u, u, before, t)
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5)
    got.backward()
    assert q0.grad is not None and q1.grad is not None
    # after the step: this batch's keys (k1's, then k0's) in the oldest slots, the rest kept
    assert torch.allclose(task.queue[: 2 * b], torch.cat([u, u]))
    assert torch.equal(task.queue[2 * b :], before[2 * b :])


def test_moco_loss_is_the_reference_and_each_key_enters_the_queue_once():
    torch.manual_seed(0)
    b, dim, t = 3, 10, 0.2
    task = MoCo(queue_size=4 * b, out_dim=dim, temperature=t)
    keys = []
    for _step in range(2):
        before = task.queue.clone()
        q0, q1 = torch.randn(b, dim, requires_grad=True), torch.randn(b, dim, requires_grad=True)
        k0, k1 = torch.randn(b, dim), torch.randn(b, dim)
        got = task.loss([q0, q1, k0, k1], None)
        want = moco_reference(q0, q1, k0, k1, before, t)
        assert float(got.detach()) == pytest.approx(float(want.detach()), rel=1e-5)
        keys.append(F.normalize(torch.cat([k1, k0]), dim=1))
    # two steps of 2B keys went round the queue of 4B once: it holds exactly those keys, each
    # once, oldest first, and its write pointer is back at the start
    assert torch.allclose(task.queue, torch.cat(keys))
    same = (task.queue @ torch.cat(keys).T) > 1 - 1e-5
    assert torch.equal(same, torch.eye(4 * b, dtype=torch.bool))
    assert int(task.criterion.memory_bank.bank_ptr) == 0
    # scoring without a gradient (evaluation) uses the queue and leaves it alone
    frozen = task.queue.clone()
    with torch.no_grad():
        q0, q1, k0, k1 = (torch.randn(b, dim) for _ in range(4))
        got = task.loss([q0, q1, k0, k1], None)
    assert float(got) == pytest.approx(float(moco_reference(q0, q1, k0, k1, frozen, t)), rel=1e-5)
    assert torch.equal(task.queue, frozen)
    with pytest.raises(ValueError):
        MoCo(queue_size=0)


def test_moco_warns_once_when_the_queue_holds_an_epoch_of_keys(monkeypatch):
    monkeypatch.setattr(moco, "_WARNED_QUEUE_SIZES", set())

    def caught_by(queue_size, n_images):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            MoCo(queue_size=queue_size).start_stage(n_images)
        return caught

    # 2 keys per image per step: 100 images put 200 keys in the queue each epoch
    assert caught_by(199, 100) == [] and caught_by(256, 129) == []
    caught = caught_by(200, 100)
    assert len(caught) == 1 and issubclass(caught[0].category, ToolkitWarning)
    message = str(caught[0].message)
    assert "queue_size=200" in message and "100 images" in message and "(200 here)" in message
    assert "\n" not in message
    # the next folds of the run (a fresh task each, about as many images) add no line
    assert caught_by(200, 100) == [] and caught_by(200, 99) == []
    assert len(caught_by(1000, 100)) == 1  # another queue size: its own line


@pytest.mark.parametrize("name", ["byol", "moco"])
def test_momentum_contract(name):
    assert PRETEXTS.get(name).uses_teacher
    check_pretext(name, hidden_dim=32, out_dim=16)


@pytest.mark.parametrize("task", [BYOL(hidden_dim=64, out_dim=32), MoCo(hidden_dim=64, out_dim=32, queue_size=64)],
                         ids=["byol", "moco"])
def test_momentum_methods_lower_the_loss(task):
    before, after = pretext_losses(task)
    assert after < before - 0.1


# ---------------------------------------------------------------- DINO


def test_dino_loss_is_lightlys_with_the_centre_updated_in_place():
    torch.manual_seed(0)
    task = DINO(local_crops=2, out_dim=10, teacher_temp=0.05, student_temp=0.2, center_momentum=0.8)
    ref = DINOLoss(output_dim=10, warmup_teacher_temp=0.05, teacher_temp=0.05, student_temp=0.2,
                   center_momentum=0.8)
    centre = task.criterion.center
    for _ in range(2):  # the second call uses the updated centre
        student = [torch.randn(4, 10) for _ in range(4)]
        teacher = [torch.randn(4, 10) for _ in range(2)]
        got = float(task.loss(student + teacher, None))
        assert got == pytest.approx(float(ref(teacher, student)), rel=1e-6)
        assert torch.allclose(task.criterion.center, ref.center)
    assert task.criterion.center is centre and float(centre.abs().sum()) > 0  # in place
    # written out: teacher view t against every student view s != t
    c = centre.clone()
    t = [F.softmax((x - c) / 0.05, -1) for x in teacher]
    s = [F.log_softmax(x / 0.2, -1) for x in student]
    pairs = [-(t[i] * s[j]).sum(-1).mean() for i in range(2) for j in range(4) if i != j]
    assert float(task.loss(student + teacher, None)) == pytest.approx(float(sum(pairs) / len(pairs)), rel=1e-5)
    with pytest.raises(ValueError):
        task.loss(student, None)
    with pytest.raises(ValueError):
        DINO(local_scale=0.5, crop_scale=0.4)


def test_dino_multi_crop_and_the_teacher_sees_the_global_views_only():
    torch.manual_seed(0)
    task = DINO(local_crops=3, hidden_dim=32, bottleneck_dim=8, out_dim=16)
    batch = task.prepare(breast_like(4), torch.zeros(4))
    assert [tuple(v.shape) for v in batch.inputs] == [(4, 1, 64, 32)] * 2 + [(4, 1, 32, 16)] * 3
    model = PretextModel(create_backbone("test_resnet", in_chans=1, num_classes=1), task).train()
    head, teacher = model.head, model.teacher_head
    assert all(torch.equal(a, b) for a, b in zip(head.state_dict().values(), teacher.state_dict().values()))
    outputs = model(batch.inputs)
    assert len(outputs) == 5 + 2 and all(o.shape == (4, 16) for o in outputs)
    assert all(o.requires_grad for o in outputs[:5]) and not any(o.requires_grad for o in outputs[5:])
    task.loss(outputs, None).backward()
    assert all(p.grad is None for p in model.teacher_backbone.parameters())
    DINO(local_crops=0).prepare(breast_like(2), torch.zeros(2))  # two-view DINO


def test_dino_contract_and_a_few_steps_lower_the_loss():
    check_pretext("dino", hidden_dim=32, bottleneck_dim=8, out_dim=16)
    before, after = pretext_losses(DINO(hidden_dim=64, bottleneck_dim=16, out_dim=64))
    assert after < 0.9 * before


# ---------------------------------------------------------------- the bench file


def test_ssl_zoo_bench_file_has_every_pretext_with_finetune_on_the_same_folds():
    from pathlib import Path

    from ssl_bench.bench.plan import load_plan

    plan = load_plan(Path(__file__).resolve().parents[1] / "benchmarks" / "ssl_zoo.yaml", profile="smoke")
    builtin = {n for n in PRETEXTS.names() if PRETEXTS.get(n).__module__.startswith("ssl_bench.")}
    assert {c.pretext for c in plan.configs} == builtin
    assert {c.transfer for c in plan.configs} == {"finetune"}
    assert len({(c.seed, c.data.folds, c.data.split, c.data.dataset) for c in plan.configs}) == 1
    bank = [c for c in plan.configs if c.pretext == "simclr" and c.params.get("simclr", {}).get("memory_bank_size")]
    assert len(bank) == 1


# ---------------------------------------------------------------- the transfers drive the teacher


@pytest.mark.parametrize("transfer", ["finetune", "multitask"])
def test_transfers_start_and_step_the_teacher(monkeypatch, transfer):
    from ssl_bench.testing import check_transfer

    calls = {"start": [], "step": 0, "moved": 0, "stage": []}
    start, step = PretextModel.start_teacher, PretextModel.after_step
    monkeypatch.setattr(PretextTask, "start_stage", lambda self, n_images: calls["stage"].append(n_images))

    def counting_start(self, total_steps):
        calls["start"].append(total_steps)
        return start(self, total_steps)

    def counting_step(self):
        before = [p.detach().clone() for p in self.teacher_backbone.parameters()]
        step(self)
        calls["step"] += 1
        calls["moved"] += any(not torch.equal(a, b) for a, b in zip(before, self.teacher_backbone.parameters()))

    monkeypatch.setattr(PretextModel, "start_teacher", counting_start)
    monkeypatch.setattr(PretextModel, "after_step", counting_step)
    check_transfer(transfer, pretexts=["byol"])
    assert len(calls["start"]) == 1 and calls["start"][0] >= 1
    # the task heard how many images its loss trains on, once, before the stage
    assert len(calls["stage"]) == 1 and calls["stage"][0] >= 2
    # one update per optimiser step; the cosine schedule reaches m = 1 at the last step (lightly's
    # cosine_schedule), so every update but the last moves the teacher
    assert calls["step"] >= 2 and calls["moved"] >= calls["step"] - 1


def test_dino_refuses_local_crops_on_a_vit_in_one_line_before_the_run():
    """A ViT is built for the run's image size: DINO's smaller local crops stopped it with an
    assertion deep in timm, mid-stage; now one line before any data, and two-view DINO runs."""
    with pytest.raises(ConfigError, match="local_crops=0") as err:
        DINO().check_backbone("vit_tiny_patch16_224")
    assert "\n" not in str(err.value)
    DINO(local_crops=0).check_backbone("vit_tiny_patch16_224")
    DINO().check_backbone("resnet18")
