"""The plain PyTorch training loops ``benchmarks/speed.py`` measures ssl_bench against.

Written out without any ssl_bench training code (only its networks, so both sides train the same
architectures): the TSBN-U step (GSIM/MSE step of the U-Net, then ResNet50 forward + weighted
BCE + collaborative loss, eq. 1-4, as ``ssl_bench/transfer/collaborative.py``) and the supervised
ResNet50 step. ``tests/test_fast_path.py`` checks that ssl_bench's fast path ends with exactly
the weights these loops give from the same seed and batches (CPU, fp32).

On CUDA a "plain" loop here uses bf16 autocast and channels_last (as the issue's reference
figures), Adam's default (foreach) implementation and torch's default cuDNN settings;
``tuned=True`` adds fused Adam (the caller sets ``cudnn.benchmark``).
"""
from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F


def build_tsbn_networks(cfg):
    """U-Net, backbone, branches P and D, created in the order ``CollaborativeTransfer.fit``
    creates them (so the same seed gives the same initial weights)."""
    from ssl_bench import components
    from ssl_bench.models.backbones import create_backbone, num_pooled_features
    from ssl_bench.models.heads import ProjectionMLP
    from ssl_bench.registry import NETWORKS

    unet = components.create(NETWORKS, cfg.model.pretext_net, cfg, in_chans=1, out_chans=1)
    backbone = create_backbone(cfg.model.backbone, pretrained=None, in_chans=1, num_classes=1)
    p = cfg.component_params("collab")
    hidden, proj = int(p.get("hidden_dim", 512)), int(p.get("proj_dim", 128))
    branch_p = ProjectionMLP(unet.encoder_channels, hidden, proj)
    branch_d = ProjectionMLP(num_pooled_features(backbone), hidden, proj)
    return unet, backbone, branch_p, branch_d


class ReferenceTSBN:
    """Plain PyTorch TSBN-U step: GSIM MSE step of the U-Net, then the downstream step with
    ``alpha * L_CT + L_BCE`` (eq. 2-4), written out without any ssl_bench training code."""

    def __init__(self, unet, backbone, branch_p, branch_d, cfg, device, amp_dtype=None, tuned=False):
        t = cfg.train
        self.unet, self.backbone, self.p, self.d = (
            m.to(device).train() for m in (unet, backbone, branch_p, branch_d)
        )
        if device.type == "cuda" and t.channels_last:
            for m in (self.unet, self.backbone, self.p, self.d):
                m.to(memory_format=torch.channels_last)
        extra = {"fused": True} if tuned else {}
        self.opt_p = torch.optim.Adam(self.unet.parameters(), lr=t.lr, weight_decay=t.weight_decay, **extra)
        down = [*self.backbone.parameters(), *self.p.parameters(), *self.d.parameters()]
        self.opt_d = torch.optim.Adam(down, lr=t.lr, weight_decay=t.weight_decay, **extra)
        self.gsim_d = float(cfg.component_params("gsim").get("d", 0.2))
        self.alpha = float(cfg.component_params("collab").get("alpha", 4e-3))
        self.pos_weight = torch.tensor(t.pos_weight, device=device)
        self.device, self.amp_dtype = device, amp_dtype

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def __call__(self, x, y):
        target = x - (1 - 2 * y.view(-1, 1, 1, 1)) * (self.gsim_d / 2)  # eq. 1
        with self.autocast():
            out = self.unet(x)
        l_mse = F.mse_loss(out.float(), target.float())
        self.opt_p.zero_grad(set_to_none=True)
        l_mse.backward()
        self.opt_p.step()
        with torch.no_grad(), self.autocast():
            enc = self.unet.encode(x)
        with self.autocast():
            feats = self.backbone.forward_features(x)
            logits = self.backbone.forward_head(feats)
            p = self.p(enc)
            q = self.d(self.backbone.forward_head(feats, pre_logits=True))
        l_ct = ((p.float() - q.float()) ** 2).sum(dim=1).mean()  # eq. 2, as a batch mean
        l_bce = F.binary_cross_entropy_with_logits(
            logits.float().reshape(-1), y.float(), pos_weight=self.pos_weight
        )  # eq. 3
        loss = self.alpha * l_ct + l_bce  # eq. 4
        self.opt_d.zero_grad(set_to_none=True)
        loss.backward()
        self.opt_d.step()
        return {"pretext": l_mse.detach(), "ct": l_ct.detach(), "bce": l_bce.detach()}


class ReferenceSupervised:
    """Plain PyTorch supervised step: backbone forward, weighted BCE, Adam."""

    def __init__(self, backbone, cfg, device, amp_dtype=None, tuned=False):
        t = cfg.train
        self.net = backbone.to(device).train()
        if device.type == "cuda" and t.channels_last:
            self.net.to(memory_format=torch.channels_last)
        extra = {"fused": True} if tuned else {}
        self.opt = torch.optim.Adam(self.net.parameters(), lr=t.lr, weight_decay=t.weight_decay, **extra)
        self.pos_weight = torch.tensor(t.pos_weight, device=device)
        self.device, self.amp_dtype = device, amp_dtype

    def __call__(self, x, y):
        ctx = torch.autocast(self.device.type, dtype=self.amp_dtype) if self.amp_dtype else contextlib.nullcontext()
        with ctx:
            logits = self.net(x)
        loss = F.binary_cross_entropy_with_logits(
            logits.float().reshape(-1), y.float(), pos_weight=self.pos_weight
        )
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"bce": loss.detach()}


def reference_batches(images, labels, batch, device, channels_last=True):
    """One shuffled epoch of full batches, as a plain loop would draw them."""
    order = torch.randperm(images.shape[0], device=device)
    for start in range(0, images.shape[0] - batch + 1, batch):
        idx = order[start : start + batch]
        x = images.index_select(0, idx)
        if device.type == "cuda" and channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        yield x, labels.index_select(0, idx)
