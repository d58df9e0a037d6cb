"""Collaborative transfer: TSBN's bi-channel training of two different networks.

Gong, Wang and Shi, "Task-driven Self-supervised Bi-channel Networks for Diagnosis of Breast
Cancers with Mammography" (TSBN). A pretext network (``model.pretext_net``: U-Net -> TSBN-U, RDN
-> TSBN-R) learns the pretext task (GSIM) beside the downstream classifier (a timm backbone,
ResNet50 in the paper). Branch P maps the pretext encoder's pooled features ``e(x)``, branch D the downstream
encoder's pooled features ``c(x)``, into one shared space, and the collaborative loss (eq. 2)
``L_CT = sum_i ||P(e(x_i)) - D(c(x_i))||^2`` pulls them together, so the classifier inherits
what the task-driven pretext network sees.

Per batch the two networks are updated alternately (eq. 4): first the pretext network with its
pretext loss (``L_MSE`` for GSIM), then the downstream backbone, its classifier, P and D with
``L_D = alpha * L_CT + L_BCE`` (weighted BCE, eq. 3), the pretext features held fixed.

Our choices where the paper is silent (``params.collab``): P and D are 2-layer MLPs
(Linear-BN-ReLU-Linear) into a 128-d space ending in a BatchNorm without affine parameters, so the
shared space cannot collapse to a constant; ``alpha = 1e-3`` because eq. 2 sums over the batch and
the 128 dimensions (about 1e3 at the start of training at batch 4), which puts ``alpha * L_CT`` on
the scale of the BCE.
"""
from __future__ import annotations

import torch
from torch import nn

from ..training.context import FitContext, optimizer_step
from ..models.backbones import num_pooled_features, pooled_features
from ..models.heads import ProjectionMLP
from ..registry import TRANSFERS
from .base import TransferStrategy


def collaborative_loss(p: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """Eq. 2 of TSBN: ``sum_i sum_j (P(e(x_i))_j - D(c(x_i))_j)**2`` over batch ``i``, dims ``j``."""
    return ((p.float() - d.float()) ** 2).sum()


@TRANSFERS.register("collab")
class CollaborativeTransfer(TransferStrategy):
    """TSBN collaborative transfer: pretext network + downstream backbone joined by L_CT (eq. 2-4)."""

    accepts = ("image",)
    needs = ("pretext_network",)

    def __init__(self, alpha: float = 1e-3, proj_dim: int = 128, hidden_dim: int = 512):
        self.alpha = float(alpha)
        self.proj_dim = int(proj_dim)
        self.hidden_dim = int(hidden_dim)

    def fit(self, ctx: FitContext) -> nn.Module:
        pretext_net = ctx.new_pretext_network()
        backbone = ctx.new_backbone()
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
            """Classifier logits and L_CT: one function, so ``train.compile`` covers all of it."""
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
