"""Downstream backbones: any timm model, created offline, plus the few calls the toolkit makes on it.

Backbones are not registered in ``NETWORKS``: every name in ``timm.list_models()`` works
(``timm.create_model``). The toolkit uses a backbone only through timm's uniform API (timm >= 1.0):

- :func:`encode_multiscale`: ``model.forward_intermediates(x)`` -> ``(intermediates, final)``,
  the multi-scale maps (shallow to deep, input to :class:`~ssl_bench.models.heads.UNetDecoder`)
  and ``final``, which equals ``model.forward_features(x)`` (checked for resnet18/50,
  test_resnet, efficientnet_b0, convnext_atto, mobilenetv3, regnet, densenet, swin, vit: timm
  applies the final norm / head conv there too);
- :func:`pooled_features`: ``model.forward_head(final, pre_logits=True)``, the pooled vector of
  width :func:`num_pooled_features` (what TSBN's D branch and the ``embedding`` pretext heads
  read);
- :func:`classifier_logits`: ``model.forward_head(final)``, squeezed to ``(B,)`` for one class.
"""
from __future__ import annotations

import contextlib
import difflib
import logging
import os
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from ssl_bench.errors import ConfigError

__all__ = [
    "create_backbone",
    "encode_multiscale",
    "pooled_features",
    "classifier_logits",
    "num_pooled_features",
]


def create_backbone(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    in_chans: int = 1,
    num_classes: int = 1,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, in_chans=..., num_classes=...)``, optionally with local weights.

    Args:
        name: a timm model name (``resnet50``, ``resnet50.a1_in1k``, ...); ``hf-hub:`` names are
            refused since they need the network.
        pretrained: path of a local weights file (``.pth``/``.pt`` state dict, a checkpoint
            dict with ``state_dict``/``model``/``state_dict_ema``, or ``.safetensors``); ``None``
            or ``""`` for random initialisation. Loaded through timm (``pretrained=True,
            pretrained_cfg_overlay=dict(file=path)``), which adapts a 3-channel stem to
            ``in_chans`` (summed over RGB for ``in_chans=1``) and drops the classifier weights
            unless ``num_classes`` equals the model's pretrained class count (1000 for
            ImageNet models), so the classifier is freshly initialised in the usual case.
            Nothing is ever downloaded.
        in_chans: input channels (1 for mammograms).
        num_classes: classifier outputs (1: a single malignancy logit).
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Raises:
        ConfigError: unknown model name (with close matches), missing weights file, or a file
            that cannot be loaded into this model.
    """
    if name.startswith(("hf-hub:", "hf_hub:")):
        raise ConfigError(
            f"backbone '{name}' would be downloaded from the Hugging Face hub; download the "
            "weights yourself and pass the timm architecture name with the weights file"
        )
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown timm backbone '{name}'.{hint} Run 'ssl-bench list backbones' to see all."
        )
    if not pretrained:
        return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)

    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(f"pretrained weights file not found: {path}")
    # source=None: never let a registry default (hf-hub) take priority over the local file.
    overlay = dict(file=str(path), source=None, custom_load=False)
    try:
        with _quiet_matching_stem():
            return timm.create_model(
                name,
                pretrained=True,
                pretrained_cfg_overlay=overlay,
                in_chans=in_chans,
                num_classes=num_classes,
                **kwargs,
            )
    except Exception as exc:  # corrupt file, wrong architecture, ...: one clear message
        detail = str(exc).strip()
        if len(detail) > 400:
            detail = detail[:400] + " ..."
        raise ConfigError(
            f"could not load pretrained weights {path} into backbone '{name}': "
            f"{type(exc).__name__}: {detail}"
        ) from exc


class _DropMatchingStemNotice(logging.Filter):
    """timm warns when a file's stem already has ``in_chans`` channels (our own 1-channel
    checkpoints): expected here, so that one message is dropped; other warnings pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "weights already match the model" not in record.getMessage()


@contextlib.contextmanager
def _quiet_matching_stem():
    logger, notice = logging.getLogger("timm.models._builder"), _DropMatchingStemNotice()
    logger.addFilter(notice)
    try:
        yield
    finally:
        logger.removeFilter(notice)


def encode_multiscale(model: nn.Module, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """``(intermediates, final)``: the multi-scale feature maps, shallow to deep (NCHW), and the
    output of ``model.forward_features(x)``, from one ``model.forward_intermediates(x)`` pass."""
    final, intermediates = model.forward_intermediates(x)
    return list(intermediates), final


def pooled_features(model: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logits vector ``(B, num_pooled_features(model))`` from ``final``."""
    return model.forward_head(final, pre_logits=True)


def classifier_logits(model: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """Classifier logits from ``final``: ``(B,)`` when ``num_classes == 1``, else ``(B, K)``."""
    return model.forward_head(final).squeeze(-1)


def num_pooled_features(model: nn.Module) -> int:
    """Width of :func:`pooled_features`.

    ``model.head_hidden_size`` where timm defines it (it differs from ``model.num_features`` for
    models with a pre-logits layer, e.g. mobilenetv3: 576 vs 1024), else ``model.num_features``.
    """
    return int(getattr(model, "head_hidden_size", None) or model.num_features)
