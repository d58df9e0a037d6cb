"""The contract of a transfer strategy (:class:`ssl_bench.transfer.base.TransferStrategy`), and the tiny
:class:`~ssl_bench.training.context.FitContext` it is trained on."""
from __future__ import annotations

import io
from typing import Any

import torch
from torch import nn

from .. import components
from ..components import NEEDS
from ..config import build_config
from ..errors import UserError
from ..experiment.model_file import model_record
from ..models.classifiers import classifier_from_record
from ..registry import PRETEXTS, TRANSFERS
from ..training.context import FitContext
from ..training.view_pairs import takes_view_pairs
from ..transfer.base import TransferStrategy
from .common import PRETEXT_KINDS, SAMPLE_PRETEXTS, backbone_for, build_component, check_common, expect, fail


def tiny_fit_context(pretext: Any, image_size: tuple[int, int] = (64, 32), n_images: int = 8, **overrides: Any):
    """A :class:`~ssl_bench.training.context.FitContext` on ``n_images`` random images (half of them
    malignant) with the ``smoke`` profile, one epoch per stage, batch 4, on the CPU; its backbone
    is the smoke profile's unless the task refuses it (then the first of
    :data:`~ssl_bench.testing.common.CONTRACT_BACKBONES` it accepts).

    ``pretext``: a task instance or a registered name. ``overrides``: dotted config keys with
    ``__`` for ``.`` (``train__epochs=2``)."""
    flags = {"device": "cpu", "data.image_size": tuple(image_size), "train.epochs": 1,
             "train.pretext_epochs": 1, "train.batch_size": 4}
    flags.update({k.replace("__", "."): v for k, v in overrides.items()})
    name = pretext if isinstance(pretext, str) else None
    if name:
        flags["pretext"] = name
    cfg = build_config("smoke", flags=flags)
    if name:
        pretext = components.create(PRETEXTS, name, cfg)
    if "model.backbone" not in flags:  # a task that trains only some backbones (MAE: a ViT) gets one
        backbone = backbone_for(pretext, cfg.model.backbone, f"pretext '{name or type(pretext).__name__}'")
        if backbone != cfg.model.backbone:
            cfg = build_config("smoke", flags={**flags, "model.backbone": backbone})
    g = torch.Generator().manual_seed(0)
    images = torch.rand(n_images, 1, *image_size, generator=g).half()
    labels = (torch.arange(n_images) % 2).float()
    return FitContext(config=cfg, pretext=pretext, images=images, labels=labels, device=torch.device("cpu"))


def check_transfer(
    name_or_cls: Any,
    pretexts: list[str] | tuple[str, ...] | None = None,
    image_size: tuple[int, int] = (64, 32),
    **options: Any,
) -> dict[str, nn.Module]:
    """Check a transfer strategy (:class:`ssl_bench.transfer.base.TransferStrategy`); returns
    ``{pretext name: trained classifier}``.

    - a ``TransferStrategy`` subclass whose ``accepts`` is a non-empty subset of
      ``image``/``embedding``/``masked``/``none``; ``check()`` refuses a pretext of a kind it does not
      accept with a ``UserError`` (one clear CLI line);
    - for each pretext (default: one built-in task per accepted kind, :data:`SAMPLE_PRETEXTS`),
      ``fit(ctx)`` on a tiny :func:`tiny_fit_context` returns an ``nn.Module`` on the CPU that maps
      ``(B, 1, H, W)`` to finite ``(B, 1)`` logits in eval mode (a classifier that declares
      ``takes_view_pairs``, as its transfer must then too, maps a breast's views ``(B, 2, H, W)``,
      the second view of one unit blank: a missing view), and whose ``state_dict``
      round-trips through its ``model.pt`` record (``torch.load(weights_only=True)``) into a fresh
      classifier built by ``classifier_from_record`` (a timm backbone, with the input
      normalisation of its pretrained weights if any, or the classifier its ``architecture``
      names) that gives the same logits (what ``model.pt``
      and ``ssl-bench predict`` rely on).
    """
    name, cls, what = check_common(TRANSFERS, name_or_cls)
    transfer = build_component(cls, what, **options)
    expect(isinstance(transfer, TransferStrategy), what, f"must be a TransferStrategy subclass, got {type(transfer).__name__}")
    accepts = tuple(transfer.accepts)
    unknown = [n for n in getattr(transfer, "needs", ()) if n not in NEEDS]
    expect(not unknown, what, f"needs {unknown!r}, but the toolkit provides only {sorted(NEEDS)}")
    expect(bool(accepts) and set(accepts) <= set(PRETEXT_KINDS), what,
            f"accepts must be a non-empty subset of {PRETEXT_KINDS}, got {accepts!r}")
    for kind in set(PRETEXT_KINDS) - set(accepts):
        refused = PRETEXTS.create(SAMPLE_PRETEXTS[kind])
        try:
            transfer.check(SAMPLE_PRETEXTS[kind], refused)
        except UserError:
            pass
        else:
            fail(what, f"check() accepted a pretext of kind '{kind}', which is not in accepts {accepts}")

    results = {}
    for pretext_name in pretexts or [SAMPLE_PRETEXTS[k] for k in accepts]:
        torch.manual_seed(0)
        ctx = tiny_fit_context(pretext_name, image_size)
        where = f"{what} with pretext '{pretext_name}'"
        transfer = build_component(cls, what, **options)
        try:
            transfer.check(pretext_name, ctx.pretext)
        except UserError as exc:
            fail(where, f"check() refused a pretext of kind '{ctx.pretext.kind}' that accepts lists: {exc}")
        classifier = transfer.fit(ctx)
        expect(isinstance(classifier, nn.Module), where, f"fit() must return an nn.Module, got {type(classifier).__name__}")
        devices = {p.device.type for p in classifier.parameters()}
        expect(devices <= {"cpu"}, where, f"fit() must return the classifier on ctx.device (cpu), found {devices}")
        pairs = takes_view_pairs(classifier)
        expect(pairs == bool(getattr(transfer, "takes_view_pairs", False)), where,
               f"the classifier {'declares' if pairs else 'does not declare'} takes_view_pairs, the transfer "
               f"{'does not' if pairs else 'does'}: the run pairs a breast's views by the transfer's declaration")
        x = torch.rand(3, 2 if pairs else 1, *image_size, generator=torch.Generator().manual_seed(2))
        if pairs:
            x[2, 1] = 0  # a unit without its MLO view
        classifier.eval()
        with torch.no_grad():
            logits = classifier(x)
        expect(isinstance(logits, torch.Tensor) and tuple(logits.shape) == (3, 1), where,
                f"the classifier must map (B, {x.shape[1]}, H, W) to (B, 1) logits, got "
                f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        expect(bool(torch.isfinite(logits).all()), where, "the classifier's logits are not finite")
        buffer = io.BytesIO()  # what a run saves as model.pt, and how predict rebuilds it
        torch.save(model_record(ctx.config.model.backbone, ctx.config.data.image_size, classifier), buffer)
        buffer.seek(0)
        record = torch.load(buffer, weights_only=True)
        fresh = classifier_from_record(record)
        try:
            fresh.load_state_dict(record["state_dict"], strict=True)
        except RuntimeError as exc:
            fail(where, f"the classifier's state_dict does not load into a fresh classifier built from its "
                  f"model.pt record (backbone {record['backbone']!r}, architecture "
                  f"{record['architecture']!r}, input_norm {record['input_norm']!r}), which is how model.pt "
                  f"is reloaded: {exc}")
        with torch.no_grad():
            again = fresh.eval()(x)
        expect(torch.allclose(again, logits, atol=1e-5), where,
               "the classifier rebuilt from its model.pt record does not give the trained one's logits")
        results[pretext_name] = classifier
    return results
