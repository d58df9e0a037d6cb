"""The paper's equations (docs/architecture.md, "Formulas"), against hand-computed values."""
import math

import pytest
import torch

from ssl_bench.training.context import weighted_bce
from ssl_bench.pretext.gsim import GrayScaleMapping, gsim_target
from ssl_bench.models.heads import ProjectionMLP
from ssl_bench.transfer.collaborative import CollaborativeTransfer, collaborative_loss
from ssl_bench.transfer.multitask import multitask_loss


def test_gsim_target_eq1():
    t = torch.tensor([[[[0.0, 0.5]]], [[[0.3, 1.0]]]])  # two 1x1x2 images
    labels = torch.tensor([0, 1])
    out = gsim_target(t, labels, d=0.2)
    # benign (a=0): t - d/2 ; malignant (a=1): t + d/2
    assert torch.allclose(out, torch.tensor([[[[-0.1, 0.4]]], [[[0.4, 1.1]]]]))


def test_gsim_loss_is_mse_against_target():
    task = GrayScaleMapping(d=0.4)
    x = torch.full((2, 1, 2, 2), 0.5)
    batch = task.prepare(x, torch.tensor([0, 1]))
    assert torch.equal(batch.inputs[0], x)
    assert task.loss([batch.targets], batch.targets).item() == 0.0
    # output all 0.5: error is 0.2 on every pixel of both images
    assert task.loss([x], batch.targets).item() == pytest.approx(0.04)


def test_collaborative_loss_eq2_is_a_batch_mean():
    p = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    # eq. 2 sums ||p_i - d_i||^2 = (1 + 4) + (1 + 1) = 7 over the batch; L_CT averages it: 7 / 2
    assert collaborative_loss(p, d).item() == pytest.approx(3.5)
    p3 = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 1.0], [2.0, 2.0, 2.0]])
    d3 = torch.tensor([[0.0, 4.0, 0.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    # per image: 9 + 16 = 25, 0, 1 + 1 + 1 = 3 -> mean 28 / 3
    assert collaborative_loss(p3, d3).item() == pytest.approx(28 / 3)


def test_alpha_times_collaborative_loss_is_batch_size_invariant():
    g = torch.Generator().manual_seed(0)
    p, d = torch.randn(4, 128, generator=g), torch.randn(4, 128, generator=g)
    alpha = CollaborativeTransfer().alpha
    full = alpha * collaborative_loss(p, d)
    # the same four images twice (batch 8): the same weight per image
    doubled = alpha * collaborative_loss(torch.cat([p, p]), torch.cat([d, d]))
    torch.testing.assert_close(doubled, full)
    # its two halves (batches of 2): the mean of the halves' losses is the batch's
    halves = [alpha * collaborative_loss(p[i : i + 2], d[i : i + 2]) for i in (0, 2)]
    torch.testing.assert_close((halves[0] + halves[1]) / 2, full)
    # one image alone: its own squared distance
    torch.testing.assert_close(alpha * collaborative_loss(p[:1], d[:1]), alpha * (p[0] - d[0]).square().sum())


def test_default_alpha_equals_the_old_summed_loss_at_batch_4():
    # old: alpha 1e-3 on eq. 2 as written (a sum over the batch); new: 4e-3 on the batch mean.
    # At the paper profile's batch of 4 the downstream loss is the same.
    assert CollaborativeTransfer().alpha == 4e-3
    g = torch.Generator().manual_seed(1)
    p, d = torch.randn(4, 128, generator=g), torch.randn(4, 128, generator=g)
    summed = ((p - d) ** 2).sum()
    torch.testing.assert_close(4e-3 * collaborative_loss(p, d), 1e-3 * summed)


@pytest.mark.parametrize("batch", [4, 16])
def test_collaborative_loss_of_batch_normalised_branches(batch):
    # P and D end in a non-affine BatchNorm, so per image L_CT = 2 * sum_j (1 - r_j), r_j the batch
    # correlation of dimension j: about 2 * 128 whatever the batch size (the docstring's scale)
    torch.manual_seed(batch)
    branch_p, branch_d = ProjectionMLP(32, 64, 128).train(), ProjectionMLP(48, 64, 128).train()
    p, d = branch_p(torch.randn(batch, 32)), branch_d(torch.randn(batch, 48))
    pc, dc = p - p.mean(0), d - d.mean(0)
    r = (pc * dc).mean(0) / (pc.square().mean(0).sqrt() * dc.square().mean(0).sqrt())
    expected = 2 * (1 - r).sum()
    assert collaborative_loss(p, d).item() == pytest.approx(expected.item(), rel=1e-3)
    assert 0 <= collaborative_loss(p, d).item() <= 4 * 128


def test_weighted_bce_eq3():
    logits = torch.tensor([0.0, 2.0])
    labels = torch.tensor([1.0, 0.0])
    w = 15.0
    expected = (w * -math.log(0.5) + -math.log(1 - 1 / (1 + math.exp(-2.0)))) / 2
    assert weighted_bce(logits, labels, w).item() == pytest.approx(expected, rel=1e-6)


def test_downstream_loss_eq4_and_multitask_sum():
    # eq. 4: alpha * L_CT + L_BCE, as the collab transfer composes it
    alpha, l_ct, l_bce = 0.25, torch.tensor(8.0), torch.tensor(0.5)
    assert (alpha * l_ct + l_bce).item() == 2.5
    assert multitask_loss(torch.tensor(0.5), torch.tensor(2.0), 0.5).item() == 1.5
