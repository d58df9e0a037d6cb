"""The paper's equations (docs/architecture.md, "Formulas"), against hand-computed values."""
import math

import pytest
import torch

from ssl_bench.training.context import weighted_bce
from ssl_bench.pretext.gsim import GrayScaleMapping, gsim_target
from ssl_bench.transfer.collaborative import collaborative_loss
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


def test_collaborative_loss_eq2():
    p = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0], [1.0, -1.0]])
    # sum_i ||p_i - d_i||^2 = (1 + 4) + (1 + 1)
    assert collaborative_loss(p, d).item() == pytest.approx(7.0)


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
