"""The SSL zoo: the shared views, SimCLR's memory bank, Barlow Twins, VICReg, BYOL, MoCo, DINO.

For each method: the loss wiring equals lightly's (and a written-out reference) on fixed tensors,
the contract checker passes, and a few steps on a tiny backbone lower the pretext loss; for the
momentum methods the teacher update and (MoCo) the queue's rotation."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from lightly.loss import BarlowTwinsLoss, NTXentLoss, VICRegLoss

from ssl_bench.models.backbones import create_backbone
from ssl_bench.models.pretext_model import PretextModel
from ssl_bench.pretext import simclr, views
from ssl_bench.pretext.barlowtwins import BarlowTwins
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
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    batch = task.prepare(breast_like(), torch.zeros(8))

    def loss_now() -> float:
        with torch.no_grad():
            return float(task.loss(model(batch.inputs), batch.targets))

    before = loss_now()
    model.start_teacher(steps)
    for _ in range(steps):
        loss = task.loss(model(batch.inputs), batch.targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.after_step()
    return before, loss_now()


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
