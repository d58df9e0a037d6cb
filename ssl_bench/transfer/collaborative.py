"""Collaborative transfer: TSBN's bi-channel training of two different networks.

Gong, Wang and Shi, "Task-driven Self-supervised Bi-channel Networks for Diagnosis of Breast
Cancers with Mammography" (TSBN). A pretext network (``model.pretext_net``: U-Net -> TSBN-U, RDN
-> TSBN-R) learns the pretext task (GSIM) beside the downstream classifier (a timm backbone,
ResNet50 in the paper). Branch P maps the pretext encoder's pooled features ``e(x)``, branch D the
downstream encoder's pooled features ``c(x)``, into one shared space, and the collaborative loss
(eq. 2) pulls them together, so the classifier inherits what the task-driven pretext network sees.

Per batch the two networks are updated alternately (eq. 4): first the pretext network with its
pretext loss (``L_MSE`` for GSIM), then the downstream backbone, its classifier, P and D with
``L_D = alpha * L_CT + L_BCE`` (weighted BCE, eq. 3), the pretext features held fixed.

L_CT is a mean over the batch. The paper writes eq. 2 as a sum over the batch,
``sum_i ||P(e(x_i)) - D(c(x_i))||^2``, while its weighted BCE (eq. 3) is a batch mean; with the
sum, ``alpha * L_CT`` grows with the batch size while ``L_BCE`` does not, so ``alpha`` would mean
something different at every batch size. We use the same footing for both:
``L_CT = (1/B) sum_i ||P(e(x_i)) - D(c(x_i))||^2`` (the squared distance of one image's two
projections, summed over the ``proj_dim`` dimensions, averaged over the ``B`` images), which is
eq. 2 divided by ``B``. The ``ct`` loss in the progress and the history is this per-image mean.

Our choices where the paper is silent (``params.collab``): P and D are 2-layer MLPs
(Linear-BN-ReLU-Linear) into a ``proj_dim`` = 128-d space ending in a BatchNorm without affine
parameters, so the shared space cannot collapse to a constant. Because both ends are
batch-normalised (unit variance per dimension over the batch), the per-image ``L_CT`` is
``2 * sum_j (1 - r_j)`` with ``r_j`` the batch correlation of dimension ``j`` between P and D (up
to BatchNorm's ``eps``), between 0 and ``4 * proj_dim``: about ``2 * 128 = 256`` at the start of
training, when P and D are uncorrelated, whatever the batch size. ``alpha = 4e-3`` puts
``alpha * L_CT`` (about 1 at the start) on the scale of the BCE. It is the earlier ``alpha = 1e-3``
on the summed loss at the ``paper`` profile's batch of 4
(``1e-3 * sum = 1e-3 * 4 * mean = 4e-3 * mean``), so every full batch of the ``paper`` profile gets
the same ``L_D`` as before (up to rounding); only an epoch's last, smaller batch differs (the sum
weighted its images' L_CT by ``1e-3`` each, the mean weights them like any other batch's).
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..training.context import FitContext, optimizer_step
from ..models.backbones import num_pooled_features, pooled_features
from ..models.heads import ProjectionMLP
from ..registry import TRANSFERS
from .base import TransferStrategy


def collaborative_loss(p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """L_CT, eq. 2 of TSBN as a batch mean: ``(1/B) sum_i sum_j (P(e(x_i))_j - D(c(x_i))_j)**2``
    over the ``B`` images ``i`` of the batch and the dimensions ``j`` of the shared space.

    The paper sums over ``i``; the mean keeps ``alpha`` batch-size invariant (module docstring).
    """
    return ((p.float() - d.float()) ** 2).sum(dim=-1).mean()


@TRANSFERS.register("collab")
class CollaborativeTransfer(TransferStrategy):
    """TSBN collaborative transfer: pretext network + downstream backbone joined by L_CT (eq. 2-4).

    Args:
        alpha: weight of the collaborative loss in L_D = alpha * L_CT + L_BCE.
        proj_dim: width of the shared space that branches P and D project into.
        hidden_dim: hidden width of branches P and D (2-layer MLPs).
    """

    accepts = ("image",)
    needs = ("pretext_network",)
    losses = {**TransferStrategy.losses,
              "ct": "collaborative loss L_CT: squared distance of the two networks' projections (TSBN eq. 2, "
                    "mean over the batch)"}

    def __init__(self, alpha: float = 4e-3, proj_dim: int = 128, hidden_dim: int = 512):
        self.alpha = float(alpha)
        self.proj_dim = int(proj_dim)
        self.hidden_dim = int(hidden_dim)

    def fit(self, ctx: FitContext) -> nn.Module:
        pretext_net: Any = ctx.new_pretext_network()
        backbone: Any = ctx.new_backbone()
        branch_p = ProjectionMLP(pretext_net.encoder_channels, self.hidden_dim, self.proj_dim)
        branch_d = ProjectionMLP(num_pooled_features(backbone), self.hidden_dim, self.proj_dim)

        pnet = ctx.prepare(pretext_net)
        for m in (backbone, branch_p, branch_d):
            ctx.prepare(m, compile=False)  # used through `downstream` below
        opt_pretext = ctx.optimizer(pretext_net)
        opt_downstream = ctx.optimizer(backbone, branch_p, branch_d)
        pretext, alpha = ctx.pretext, self.alpha
        encode = ctx.compiled(pretext_net.encode)

        def downstream(x: torch.Tensor, encoded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """Classifier logits and L_CT (batch mean): one function, so ``train.compile`` covers
            all of it."""
            features = backbone.forward_features(x)
            logits = backbone.forward_head(features)
            l_ct = collaborative_loss(branch_p(encoded), branch_d(pooled_features(backbone, features)))
            return logits, l_ct

        downstream = ctx.compiled(downstream)

        def step(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
            batch = pretext.prepare(x, y)
            with ctx.autocast():
                outputs = [pnet(v) for v in batch.inputs]
            l_pretext = pretext.loss(outputs, batch.targets)
            optimizer_step(opt_pretext, l_pretext)

            with torch.no_grad(), ctx.autocast():
                encoded = encode(x)
            with ctx.autocast():
                logits, l_ct = downstream(x, encoded)
            l_bce = ctx.bce(logits, y)
            l_down = alpha * l_ct + l_bce
            optimizer_step(opt_downstream, l_down)
            return {"pretext": l_pretext, "ct": l_ct, "bce": l_bce}

        for m in (pretext_net, backbone, branch_p, branch_d):
            m.train()
        ctx.train("collab", ctx.config.train.epochs, step)
        return backbone
