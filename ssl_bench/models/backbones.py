"""Downstream backbones: any timm model, randomly initialised, from a local weights file or from
timm's pretrained weights (ImageNet, a tag, a hub repository), plus the few calls the toolkit
makes on it.

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

ImageNet initialisation (``pretrained="imagenet"``, TSBN section III.B) goes through timm's own
download (``timm.create_model(name, pretrained=True)``: the Hugging Face hub, whose cache is
``$HF_HUB_CACHE``, default ``$HF_HOME/hub`` = ``~/.cache/huggingface/hub``; weights timm only knows
by URL go to torch's hub cache). Which weights: :data:`IMAGENET_WEIGHTS` where the paper's choice
matters (``resnet50`` -> the torchvision-era ``resnet50.tv_in1k``), else timm's default pretrained
tag of the architecture; a tag in the name (``resnet50.a1_in1k``) is used as given. Before timm
downloads, one short probe (:data:`PROBE_TIMEOUT_S`) checks that the weights' host answers; without
an answer, or with ``HF_HUB_OFFLINE=1``, only the cache is read, and weights that are not there
raise one :class:`~ssl_bench.errors.ConfigError` line naming the ways out, instead of the hub's
retries (about 47 s measured without network). :func:`fetch_weights`
(``ssl-bench weights fetch``) fills the cache where there is a network.

Foundation models' weights come the same way (:func:`pretrained_weights`): ``pretrained`` may be a
timm tag of the backbone's architecture (``vit_small_patch14_dinov2.lvd142m``, DINOv2's LVD-142M
weights, Oquab et al. 2023; ``resnet50.tv_in1k``) or a timm repository on the Hugging Face hub
(``hf-hub:org/name``), whose ``config.json`` (read through timm, from the cache when offline) must
name the backbone's architecture and build it with no arguments of its own, since ``model.pt``
rebuilds the backbone from its name alone; its pretrained config (mean, std, first layer,
classifier) is the weights'. What a ``pretrained`` value names is decided once, by
:func:`ssl_bench.config.weights_source`.

A ViT built for the run's image size whose patch does not divide it (DINOv2's 14-px patches at
64x32 or 768x384) is built for the size rounded up to whole patches and pads each image
(:func:`image_size_kwargs`), so that no row or column of the mammogram is dropped.

Pretrained weights see the inputs they were trained on. ImageNet weights were trained on RGB images
normalised with their dataset's mean and std (timm's ``pretrained_cfg`` ``mean``/``std``, what
``timm.data.resolve_data_config`` gives: ImageNet's ``(0.485, 0.456, 0.406)`` /
``(0.229, 0.224, 0.225)`` for ResNets, ``0.5``/``0.5`` for many ViTs), while a mammogram is one
grey channel in [0, 1]. Summing the RGB stem into one channel (timm's ``adapt_input_conv``) and
feeding it [0, 1] without normalisation gives the stem about 0.226 times the response it was
trained with, without its offset: BatchNorm in train mode hides part of it, the frozen ImageNet
control (``linear``, ``knn``: eval mode) does not. So a backbone built on pretrained weights keeps
timm's RGB stem unchanged (``in_chans=3``) and the module named by the weights' ``first_conv``
(``conv1`` for a ResNet, ``stem.0`` for a ConvNeXt, ``patch_embed.proj`` for a ViT) is replaced by
:class:`NormalisedInput`: the grey image replicated to RGB, normalised ``(x - mean) / std`` with
the weights' mean and std (buffers: ``<first_conv>.mean``, ``<first_conv>.std``), then the original
convolution (``<first_conv>.conv``). The result equals timm's RGB model on the grey image
replicated and normalised, up to float rounding (``tests/test_imagenet_input.py``: ResNet-18 and
-50, ConvNeXt, a deep stem, a ViT), at the zero-padded border too (folding the
normalisation into a 1-channel stem would not be exact there: its zero padding would stand for a
normalised value of ``-mean / std`` instead of 0; and the stem would need a bias it may lack). The
normalisation is part of the module, so every path that runs the backbone (training, the frozen
probes, ``ssl-bench predict``, fold checkpoints, the pretext cache, MAE's ViT) gets it without
knowing; :func:`input_normalisation` reads it back (``model.pt`` records it, as ``input_norm``) and
``create_backbone(..., input_norm=...)`` builds the same structure without weights, for
``load_state_dict``. A randomly initialised backbone has no normalisation: it is
``timm.create_model(name, in_chans=1, ...)`` unchanged. :func:`timm_state_dict` gives either as
timm's own state dict (the stem unwrapped, the normalisation apart), which ``ssl-bench export``
writes (:mod:`ssl_bench.models.backbone_file`) and a file's provenance brings back.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
import inspect
import logging
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Sequence, cast

import huggingface_hub
import numpy as np
import timm
import torch
from huggingface_hub import constants as hub_constants
from timm.models import (
    PretrainedCfg,
    get_pretrained_cfg,
    is_model_pretrained,
    load_model_config_from_hf,
    split_model_name_tag,
)
from torch import nn

from ssl_bench.config import HUB_PREFIXES, IMAGENET, weights_source
from ssl_bench.errors import ConfigError, exception_line
from ssl_bench.models.backbone_file import exported_input_norm

__all__ = [
    "IMAGENET",
    "IMAGENET_WEIGHTS",
    "TimmWeights",
    "create_backbone",
    "takes_image_size",
    "image_size_kwargs",
    "check_pretrained",
    "imagenet_weights",
    "pretrained_weights",
    "named_weights",
    "fetch_weights",
    "timm_state_dict",
    "encode_multiscale",
    "pooled_features",
    "classifier_logits",
    "num_pooled_features",
    "NormalisedInput",
    "input_normalisation",
    "check_input_norm",
]


IMAGENET_WEIGHTS: dict[str, str] = {
    # TSBN (section III.B) starts its ResNet50 from ImageNet; in the paper's time that meant the
    # torchvision weights, which timm ships as resnet50.tv_in1k (timm's default, a1_in1k, is a
    # later recipe). Architectures not listed here get timm's default pretrained tag.
    "resnet50": "resnet50.tv_in1k",
}
"""Pretrained tag used for ``imagenet`` where the paper's choice differs from timm's default."""

PROBE_TIMEOUT_S = 5.0
"""Seconds the weights' host has to answer before only the local cache is read."""


def _source(pretrained: str | os.PathLike[str] | None) -> str:
    """What ``pretrained`` names (:func:`ssl_bench.config.weights_source`); a path object is a file."""
    return "file" if isinstance(pretrained, os.PathLike) else weights_source(pretrained)


def create_backbone(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    in_chans: int = 1,
    num_classes: int = 1,
    image_size: Sequence[int] | None = None,
    input_norm: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, in_chans=..., num_classes=...)``, randomly initialised, from a
    local weights file or from timm's pretrained weights (ImageNet, a tag, a hub repository); a
    backbone built on pretrained weights normalises its input as those weights expect (see the
    module docstring).

    Args:
        name: a timm model name (``resnet50``, ``resnet50.a1_in1k``, ...); ``hf-hub:`` names are
            refused (a hub repository is weights: ``pretrained="hf-hub:..."`` with its architecture here).
        pretrained: ``None``, ``""`` or ``"none"`` for random initialisation
            (``timm.create_model(name, in_chans=in_chans, ...)``, nothing else); ``"imagenet"``
            for timm's ImageNet weights (:func:`imagenet_weights` says which); a timm tag of the
            same architecture (``resnet50.tv_in1k``, ``vit_small_patch14_dinov2.lvd142m``) or a timm
            repository on the Hugging Face hub (``hf-hub:timm/vit_small_patch14_dinov2.lvd142m``,
            whose ``config.json`` must name the same architecture), downloaded by timm into the
            Hugging Face cache unless already there (:func:`pretrained_weights`); else the path of a
            local weights file (``.pth``/``.pt`` state dict, a checkpoint dict with
            ``state_dict``/``model``/``state_dict_ema``, or ``.safetensors``, such as
            ``ssl-bench export`` writes), read by timm's ``load_state_dict`` and
            loaded through timm (``pretrained=True``, the state dict in
            ``pretrained_cfg_overlay``) with the architecture's (or the name's tag's) pretrained
            config. RGB weights are loaded into timm's RGB model unchanged and its
            ``first_conv`` becomes a :class:`NormalisedInput` with the pretrained config's mean
            and std (``timm.data.resolve_data_config``): the grey input is replicated to RGB and
            normalised as the weights' training images were. A file written from a backbone of
            this toolkit brings its own input: one with a :class:`NormalisedInput` (its
            ``<first_conv>.mean``/``.std``, or the ``input_norm`` of the provenance an exported
            file carries, :mod:`ssl_bench.models.backbone_file`) is rebuilt with it, one with a
            1-channel stem (a randomly initialised backbone's) loads into timm's 1-channel model
            unchanged, without normalisation. Either way timm drops the classifier weights unless
            ``num_classes`` equals the weights' class count (1000 for ImageNet), so the
            classifier is freshly initialised in the usual case.
        in_chans: input channels (1 for mammograms; with pretrained RGB weights 1, replicated, or 3).
        num_classes: classifier outputs (1: a single malignancy logit).
        image_size: the run's ``(height, width)``; passed as ``img_size`` to the models that
            take one (:func:`takes_image_size`: ViTs, Swin, ...; pretrained position embeddings
            are resampled by timm), ignored by the others (CNNs take any size); a ViT whose patch
            does not divide it is built padded (:func:`image_size_kwargs`).
        input_norm: with ``pretrained=None`` only: ``{"mean": [...], "std": [...]}`` (what
            :func:`input_normalisation` of a pretrained backbone returns, and ``model.pt``
            records) builds that backbone's structure, RGB stem behind a :class:`NormalisedInput`,
            randomly initialised, for ``load_state_dict``; ``None``: the plain timm model.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Returns:
        The timm model, ``in_chans`` input channels (behind a :class:`NormalisedInput` when
        built on RGB weights), ``num_classes`` outputs.

    Raises:
        ConfigError: unknown model name (with close matches), an architecture without ImageNet
            weights, a tag or hub repository of another architecture, weights that cannot be
            fetched (no network and not cached: one line with the ways out), a missing weights
            file, one that cannot be loaded into this model, or weights whose first layer cannot
            take a normalised grey image.
    """
    if name.startswith(HUB_PREFIXES):
        raise ConfigError(
            f"backbone '{name}' is a Hugging Face hub repository, not a timm architecture: pass the "
            f"architecture as the backbone and the repository as the weights (--pretrained {name})"
        )
    _check_model_name(name)
    if "img_size" not in kwargs:
        kwargs.update(image_size_kwargs(name, image_size))
    source = _source(pretrained)
    if source == "none":
        if input_norm is None:
            return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)
        norm = check_input_norm(input_norm)
        mean, std = norm["mean"], norm["std"]
        model = timm.create_model(name, pretrained=False, in_chans=len(mean), num_classes=num_classes, **kwargs)
        return _normalise_input(model, name, mean, std, in_chans)
    if input_norm is not None:
        raise ValueError("input_norm is for a backbone built without weights (pretrained=None); "
                         "pretrained weights bring their own")
    if source != "file":
        weights = pretrained_weights(name, str(pretrained))
        model = _load_timm(weights, in_chans=in_chans, num_classes=num_classes, **kwargs)
        return _normalise_input(model, name, *_weights_mean_std(model), in_chans)

    assert pretrained is not None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(_file_not_found(path))
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:  # corrupt file, not a state dict, ...: one clear message
        raise ConfigError(
            f"could not load pretrained weights {path} into backbone '{name}': {exception_line(exc, limit=400)}"
        ) from exc
    channels = _weights_channels(name)
    stem, own = _file_stem(state, _first_convs(get_pretrained_cfg(name), name), channels)
    if stem == "grey":  # a 1-channel stem of our own: loaded as it is, no normalisation
        return _load_file(path, name, state, in_chans=in_chans, num_classes=num_classes, **kwargs)
    _check_in_chans(name, in_chans, channels)
    model = _load_file(path, name, state, in_chans=channels, num_classes=num_classes, **kwargs)
    exported = exported_input_norm(path)  # an ssl-bench export keeps its stem's normalisation apart
    if own is None and exported is not None:
        own = (exported["mean"], exported["std"])
    mean, std = own if own is not None else _weights_mean_std(model)
    return _normalise_input(model, name, mean, std, in_chans)


def _load_file(path: Path, name: str, state: dict, **create_kwargs: Any) -> nn.Module:
    """``timm.create_model(name, pretrained=True, ...)`` on the state dict read from ``path``."""
    # source=None: never let a registry default (hf-hub) take priority over the local file.
    overlay = dict(state_dict=state, source=None, custom_load=False)
    try:
        with _quiet_matching_stem():
            model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=overlay, **create_kwargs)
    except Exception as exc:  # wrong architecture, ...: one clear message
        raise ConfigError(
            f"could not load pretrained weights {path} into backbone '{name}': {exception_line(exc, limit=400)}"
        ) from exc
    pretrained_cfg = cast(dict, model.pretrained_cfg)
    pretrained_cfg.pop("state_dict", None)  # timm keeps the overlay in the config: not the weights
    pretrained_cfg["file"] = str(path)
    return model


# ---------------------------------------------------------------------------------------------
# The weights' input normalisation


class NormalisedInput(nn.Module):
    """A pretrained backbone's first layer behind the input its weights were trained on: the
    image (1 grey channel in [0, 1], replicated to the weights' channels, or already those
    channels) normalised ``(x - mean) / std`` per channel, then the original layer ``conv``.

    ``mean`` and ``std`` (the weights' ``pretrained_cfg``, one value per channel) are buffers of
    the state dict. A stem after a space-to-depth rearrangement (TResNet: 16 cells of 3 channels
    each, timm's channel order ``cell * 3 + channel``, the order of its ``adapt_input_conv``) gets
    each cell normalised the same way. ``in_channels`` is what this module takes (1 for a grey
    image), ``out_channels`` the layer's.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, conv: nn.Module, mean: Any, std: Any, in_chans: int = 1):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(-1).clone()
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(-1).clone()
        channels, conv_in = mean_t.numel(), getattr(conv, "in_channels", None)
        if std_t.numel() != channels or not bool((std_t > 0).all()):
            raise ValueError(f"input normalisation needs one mean and one positive std per channel, "
                             f"got mean {mean!r}, std {std!r}")
        if not isinstance(conv_in, int) or conv_in % channels:
            raise ValueError(f"a first layer of {conv_in} input channels does not take {channels}-channel images")
        if in_chans not in (1, channels):
            raise ValueError(f"{channels}-channel weights take 1 (replicated) or {channels} input channels, "
                             f"not {in_chans}")
        self.conv = conv
        self.cells = conv_in // channels
        self.in_chans = int(in_chans)
        self.in_channels = self.cells * self.in_chans
        self.out_channels = getattr(conv, "out_channels", None)
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.cells == 1:  # (B, 1, H, W) broadcasts to (B, C, H, W)
            x = (x - self.mean.view(1, -1, 1, 1)) / self.std.view(1, -1, 1, 1)
        else:
            b, _, h, w = x.shape
            x = x.reshape(b, self.cells, self.in_chans, h, w)
            x = ((x - self.mean.view(1, 1, -1, 1, 1)) / self.std.view(1, 1, -1, 1, 1)).flatten(1, 2)
        return self.conv(x)

    def normalisation(self) -> dict[str, list[float]]:
        """``{"mean": [...], "std": [...]}``, plain floats."""
        def plain(t: torch.Tensor) -> list[float]:  # the shortest decimal of each float32: 0.485, not 0.48500001
            return [float(str(np.float32(v))) for v in t.detach().cpu().tolist()]

        return {"mean": plain(self.mean), "std": plain(self.std)}

    def extra_repr(self) -> str:
        n = self.normalisation()
        return f"in_chans={self.in_chans}, mean={tuple(round(v, 4) for v in n['mean'])}, " \
               f"std={tuple(round(v, 4) for v in n['std'])}"


def input_normalisation(model: nn.Module) -> dict[str, list[float]] | None:
    """The input normalisation of a backbone built on pretrained weights (``{"mean": [...],
    "std": [...]}``, what ``create_backbone(..., input_norm=...)`` rebuilds), searched in
    ``model`` and its submodules (a frozen probe's backbone); ``None`` when it has none."""
    found = [m.normalisation() for m in model.modules() if isinstance(m, NormalisedInput)]
    if not found:
        return None
    if any(f != found[0] for f in found[1:]):
        raise ValueError(f"{type(model).__name__} holds input normalisations that differ: {found}")
    return found[0]


def timm_state_dict(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, list[float]] | None]:
    """A backbone's state dict in timm's own keys, and its input normalisation apart.

    A backbone built on pretrained weights holds its first layer in a :class:`NormalisedInput`
    (keys ``<first_conv>.conv.*``, ``<first_conv>.mean``, ``<first_conv>.std``); here those keys
    are timm's again (``<first_conv>.*``, what ``timm.create_model(name)`` has) and the mean and
    std are returned as :func:`input_normalisation` gives them. Any other backbone's state dict is
    timm's already.

    Args:
        model: a timm backbone, with or without :class:`NormalisedInput` stems.

    Returns:
        ``(state, input_norm)``: tensors detached on the CPU, and ``{"mean", "std"}`` or None.
    """
    state = {k: t.detach().cpu() for k, t in model.state_dict().items()}
    for first in [n for n, m in model.named_modules() if isinstance(m, NormalisedInput)]:
        _unwrap_normalised(state, first)
    return state, input_normalisation(model)


def _unwrap_normalised(state: dict, first: str) -> tuple[list[float], list[float]]:
    """Rename a :class:`NormalisedInput`'s keys at ``first`` to timm's, in place; its (mean, std)."""
    mean, std = state.pop(f"{first}.mean").tolist(), state.pop(f"{first}.std").tolist()
    prefix = f"{first}.conv."
    for key in [k for k in state if k.startswith(prefix)]:
        state[f"{first}.{key[len(prefix):]}"] = state.pop(key)
    return mean, std


def check_input_norm(input_norm: Any) -> dict[str, list[float]]:
    """An input normalisation as :func:`input_normalisation` returns it, ``{"mean": [...],
    "std": [...]}`` (plain floats, one per channel, each std positive), checked.

    Raises:
        ValueError: anything else.
    """
    try:
        mean = [float(v) for v in input_norm["mean"]]
        std = [float(v) for v in input_norm["std"]]
    except (TypeError, KeyError, ValueError):
        raise ValueError(f"input_norm must be a dict of a 'mean' and a 'std' list, got {input_norm!r}") from None
    if not mean or len(mean) != len(std) or not all(v > 0 for v in std):
        raise ValueError(f"input_norm needs one mean and one positive std per channel, got {input_norm!r}")
    return {"mean": mean, "std": std}


def _weights_mean_std(model: nn.Module) -> tuple[list[float], list[float]]:
    """The mean and std the weights of ``model`` expect, from its timm ``pretrained_cfg``."""
    data = timm.data.resolve_data_config({}, model=model)
    return [float(v) for v in data["mean"]], [float(v) for v in data["std"]]


def _weights_channels(name: str) -> int:
    """The image channels the pretrained config of ``name`` was trained on (3: RGB)."""
    cfg = get_pretrained_cfg(name)
    size = getattr(cfg, "input_size", None) or (3,)
    return int(size[0])


def _check_in_chans(name: str, in_chans: int, channels: int) -> None:
    if in_chans not in (1, channels):
        raise ConfigError(f"backbone '{name}': its {channels}-channel pretrained weights take 1 input channel "
                          f"(replicated) or {channels}, not {in_chans}")


def _first_convs(cfg: Any, name: str) -> tuple[str, ...]:
    """The module name(s) of the weights' first layer (timm's ``first_conv``)."""
    first = cfg.get("first_conv") if isinstance(cfg, dict) else getattr(cfg, "first_conv", None)
    names = (first,) if isinstance(first, str) else tuple(first or ())
    if not names:
        raise ConfigError(f"backbone '{name}': timm names no first layer (first_conv) for its pretrained weights, "
                          "so their input normalisation has nowhere to go; use --pretrained none")
    return names


def _file_stem(state: dict, first_convs: tuple[str, ...], channels: int) -> tuple[str, Any]:
    """What kind of stem a weights file holds, and the input normalisation it brings:
    ``("normalised", (mean, std))`` for a backbone of this toolkit built on pretrained weights (its
    :class:`NormalisedInput` keys are renamed to timm's in ``state``, in place), ``("grey", None)``
    for a 1-channel stem of ours (input channels not a multiple of ``channels``), else
    ``("rgb", None)``: weights for timm's RGB model (ImageNet's, or any timm checkpoint)."""
    own = None
    for first in first_convs:
        if f"{first}.mean" in state and f"{first}.std" in state and f"{first}.conv.weight" in state:
            own = _unwrap_normalised(state, first)
    if own is not None:
        return "normalised", own
    weight = state.get(f"{first_convs[0]}.weight")
    if isinstance(weight, torch.Tensor) and weight.ndim == 4 and weight.shape[1] % channels:
        return "grey", None
    return "rgb", None


def _normalise_input(model: nn.Module, name: str, mean: list[float], std: list[float], in_chans: int) -> nn.Module:
    """Put each of ``model``'s first layers (``pretrained_cfg["first_conv"]``) behind a
    :class:`NormalisedInput` of ``mean``/``std`` taking ``in_chans`` channels."""
    for first in _first_convs(getattr(model, "pretrained_cfg", None) or {}, name):
        try:
            conv = model.get_submodule(first)
        except AttributeError:
            raise ConfigError(f"backbone '{name}' has no module '{first}', which timm names as the first "
                              "layer of its pretrained weights; use --pretrained none") from None
        try:
            wrapped = NormalisedInput(conv, mean, std, in_chans)
        except ValueError as exc:
            raise ConfigError(f"backbone '{name}': cannot normalise the input of its pretrained weights' first "
                              f"layer '{first}' ({exc}); use --pretrained none") from None
        parent, _, child = first.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, wrapped)
    return model


def takes_image_size(name: str) -> bool:
    """True for the timm models built for one input size, which take it as ``img_size`` (their
    pretrained config says ``fixed_input_size``: ViTs, Swin, ...; timm's own convention)."""
    cfg = get_pretrained_cfg(name)
    return bool(cfg is not None and getattr(cfg, "fixed_input_size", False))


def image_size_kwargs(name: str, image_size: Sequence[int] | None) -> dict[str, Any]:
    """The ``timm.create_model`` arguments that build backbone ``name`` for the run's images.

    None for a model that takes any size (CNNs); ``img_size`` for one built for one size
    (:func:`takes_image_size`). A ViT whose patch does not divide that size (DINOv2's 14-px
    patches at 64x32 or 768x384) would drop the last rows and columns that fill no whole patch;
    it is built instead for the size rounded up to whole patches, with timm's
    ``dynamic_img_pad`` (each image padded at the bottom and right with zeros, a mammogram's
    background, to that size) and ``dynamic_img_size`` (so the patch embedding takes the run's
    size): every pixel is seen, and the position embedding is used as built (one per patch of the
    padded grid; pretrained ones are resampled to it once, when loaded).

    Args:
        name: a timm model name.
        image_size: the run's ``(height, width)``; None: no size.

    Returns:
        The keyword arguments (empty, ``img_size``, or ``img_size`` rounded up with
        ``dynamic_img_size`` and ``dynamic_img_pad``).
    """
    if image_size is None or not takes_image_size(name):
        return {}
    size = tuple(int(v) for v in image_size)
    patch = _patch_size(name)
    if patch is None or all(s % p == 0 for s, p in zip(size, patch)):
        return {"img_size": size}
    padded = tuple(-(-s // p) * p for s, p in zip(size, patch))
    return {"img_size": padded, "dynamic_img_size": True, "dynamic_img_pad": True}


@functools.lru_cache(maxsize=None)
def _patch_size(name: str) -> tuple[int, int] | None:
    """The patch of a ViT that can pad its input (a timm model class taking ``dynamic_img_size``
    and ``dynamic_img_pad``: ViTs, DINOv2, EVA), read from the model built on the meta device (no
    memory, no weights); None for any other model."""
    try:
        with torch.device("meta"):
            probe = timm.create_model(name, pretrained=False)
    except Exception:  # a model that cannot be built on the meta device: timm's own sizing
        return None
    patch = getattr(getattr(probe, "patch_embed", None), "patch_size", None)
    takes = inspect.signature(type(probe).__init__).parameters
    if patch is None or not {"dynamic_img_size", "dynamic_img_pad"} <= set(takes):
        return None
    return int(patch[0]), int(patch[1])


def _check_model_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown timm backbone '{name}'.{hint} Run 'ssl-bench list backbones' to see all."
        )



# ---------------------------------------------------------------------------------------------
# Pretrained weights through timm: ImageNet, a tag, a hub repository

#: ``model_args`` of a hub repository's ``config.json`` that the run sets itself (its own input
#: channels, classes and image size); any other would build an architecture that its timm name
#: alone does not rebuild (``model.pt``, ``ssl-bench predict``), so such a repository is refused
_RUN_MODEL_ARGS = ("in_chans", "num_classes", "img_size")


@dataclasses.dataclass(frozen=True)
class TimmWeights:
    """The pretrained weights timm loads for a backbone, and where it keeps them.

    timm 1.0 takes weights from the Hugging Face hub when the pretrained config names a hub
    repository (``hf_hub_id``), else from its URL (torch's hub cache); the same order here. A hub
    repository asked by name (``hf-hub:org/name``) also needs its ``config.json``, which names the
    architecture and the weights' pretrained config (mean, std, first layer, classifier).
    """

    name: str  # the backbone as asked, e.g. resnet50
    tagged: str  # the timm name with its pretrained tag (resnet50.tv_in1k), or hf-hub:org/name
    hub_id: str | None  # Hugging Face repository (``timm/resnet50.tv_in1k``), possibly ``@revision``
    url: str | None  # used when there is no hub repository
    hub_filename: str | None = None  # the pretrained config's file in the repository, if not the default
    asked: str = IMAGENET  # model.pretrained as given: "imagenet", a timm tag or an hf-hub: name

    @property
    def from_hub_name(self) -> bool:
        """True for a repository asked by name (``hf-hub:...``), whose ``config.json`` timm reads."""
        return self.tagged.startswith(HUB_PREFIXES)

    @property
    def what(self) -> str:
        """How messages name these weights."""
        return "the ImageNet weights" if self.asked == IMAGENET else f"the pretrained weights '{self.asked}'"

    @property
    def fetch_name(self) -> str:
        """What ``ssl-bench weights fetch`` takes to fetch these weights."""
        return self.name if self.asked == IMAGENET else self.asked

    @property
    def source_url(self) -> str:
        """What the probe asks: the hub's endpoint (``HF_ENDPOINT``), or the weights' URL."""
        return hub_constants.ENDPOINT if self.hub_id else str(self.url)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.source_url).netloc or self.source_url

    @property
    def cache_dir(self) -> Path:
        """The cache timm reads: ``HF_HUB_CACHE`` (``$HF_HOME/hub``) or torch's hub checkpoints."""
        if self.hub_id:
            return Path(hub_constants.HF_HUB_CACHE)
        return Path(torch.hub.get_dir()) / "checkpoints"

    @property
    def cache_env(self) -> str:
        return "HF_HOME or HF_HUB_CACHE" if self.hub_id else "TORCH_HOME"

    def _hub_files(self) -> list[str]:
        # timm tries the safetensors twin of a .bin file first (timm.models._hub.load_state_dict_from_hf)
        filename = self.hub_filename or "pytorch_model.bin"
        if filename == "pytorch_model.bin":
            return ["model.safetensors", filename]
        if filename.endswith(".bin"):
            return [filename[: -len(".bin")] + ".safetensors", filename]
        return [filename]

    def _in_hub_cache(self, filename: str) -> Path | None:
        assert self.hub_id is not None
        repo, _, revision = self.hub_id.partition("@")
        found = huggingface_hub.try_to_load_from_cache(repo, filename, revision=revision or None)
        return Path(found) if isinstance(found, str) and os.path.isfile(found) else None

    def cached(self) -> Path | None:
        """The cached weights file, or None when timm would have to download it (for a repository
        asked by name, also when its ``config.json`` is not cached)."""
        if self.hub_id:
            if self.from_hub_name and self._in_hub_cache("config.json") is None:
                return None
            for filename in self._hub_files():
                found = self._in_hub_cache(filename)
                if found is not None:
                    return found
            return None
        if self.url:
            path = self.cache_dir / os.path.basename(urllib.parse.urlsplit(self.url).path)
            return path if path.is_file() else None
        return None


def imagenet_weights(name: str) -> TimmWeights:
    """Which ImageNet weights ``pretrained="imagenet"`` loads for backbone ``name``.

    A tag in the name is used as given (``resnet50.a1_in1k``); else :data:`IMAGENET_WEIGHTS`
    (``resnet50`` -> ``resnet50.tv_in1k``), else timm's default pretrained tag.

    Args:
        name: a timm model name, with or without a pretrained tag.

    Returns:
        The weights, as timm names and fetches them.

    Raises:
        ConfigError: unknown name, unknown tag, or an architecture timm has no weights for.
    """
    if name.startswith(HUB_PREFIXES):
        raise ConfigError(f"backbone '{name}': ImageNet weights are looked up by timm architecture name")
    _check_model_name(name)
    arch, tag = split_model_name_tag(name)
    tagged = name if tag else IMAGENET_WEIGHTS.get(arch)
    if tagged is None:
        default = get_pretrained_cfg(arch)
        tagged = f"{arch}.{default.tag}" if default is not None and default.tag else arch
    if not is_model_pretrained(tagged):
        if not tag and arch not in IMAGENET_WEIGHTS:
            raise ConfigError(f"timm has no pretrained weights for backbone '{name}'")
        tags = timm.list_pretrained(f"{arch}.*")
        hint = f"; its tags: {', '.join(tags[:8])}{' ...' if len(tags) > 8 else ''}" if tags else ""
        raise ConfigError(f"timm has no pretrained weights '{tagged}' for backbone '{name}'{hint}")
    cfg = get_pretrained_cfg(tagged)
    assert cfg is not None
    if not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"timm lists no download for the pretrained weights '{tagged}' of backbone '{name}'")
    return TimmWeights(name, tagged, cfg.hf_hub_id or None, cast("str | None", cfg.url or None),
                       cfg.hf_hub_filename or None)


def pretrained_weights(backbone: str, pretrained: str) -> TimmWeights:
    """The timm weights a ``model.pretrained`` of ``"imagenet"``, a tag or a hub repository
    (:func:`ssl_bench.config.weights_source`) names for ``backbone``.

    ``"imagenet"``: :func:`imagenet_weights`. A tag (``resnet50.tv_in1k``,
    ``vit_small_patch14_dinov2.lvd142m``) must be of the backbone's architecture; a foundation
    model's weights come this way (DINOv2's are ``vit_small_patch14_dinov2.lvd142m``, the LVD-142M
    pretraining of Oquab et al. 2023, not ImageNet). A hub repository (``hf-hub:org/name[@revision]``,
    a timm checkpoint with its ``config.json``) is checked against the backbone when it is loaded,
    since only its ``config.json`` names the architecture.

    Args:
        backbone: the run's timm backbone (``model.backbone``).
        pretrained: the ``model.pretrained`` value.

    Returns:
        The weights, as timm names and fetches them.

    Raises:
        ConfigError: an unknown backbone or tag, a tag of another architecture, a value that names
            no timm weights (a file or none).
    """
    source = weights_source(pretrained)
    if source == IMAGENET:
        return imagenet_weights(backbone)
    _check_model_name(backbone)
    if source == "tag":
        arch, tag_arch = split_model_name_tag(backbone)[0], split_model_name_tag(pretrained)[0]
        if tag_arch != arch:
            raise ConfigError(f"--pretrained {pretrained} are weights of the architecture '{tag_arch}', not of the "
                              f"backbone '{backbone}'; pass --backbone {tag_arch}")
        return dataclasses.replace(imagenet_weights(pretrained), name=backbone, asked=pretrained)
    if source == "hub":
        repo = pretrained.split(":", 1)[1].strip()
        if not repo:
            raise ConfigError(f"--pretrained {pretrained} names no Hugging Face hub repository (hf-hub:org/name)")
        return TimmWeights(backbone, f"hf-hub:{repo}", repo, None, asked=pretrained)
    raise ValueError(f"model.pretrained {pretrained!r} names no timm weights (it is a {source})")


def named_weights(name: str) -> TimmWeights:
    """The weights ``ssl-bench weights fetch NAME`` fetches: a hub repository's
    (``hf-hub:org/name``), else :func:`imagenet_weights` (a backbone's ImageNet weights, or the
    weights of a tag in the name: ``resnet50.tv_in1k``, ``vit_small_patch14_dinov2.lvd142m``).

    Args:
        name: a timm model name, with or without a tag, or an ``hf-hub:`` repository.

    Returns:
        The weights.

    Raises:
        ConfigError: as :func:`imagenet_weights`.
    """
    if name.startswith(HUB_PREFIXES):
        repo = name.split(":", 1)[1].strip()
        if not repo:
            raise ConfigError(f"'{name}' names no Hugging Face hub repository (hf-hub:org/name)")
        return TimmWeights(name, f"hf-hub:{repo}", repo, None, asked=name)
    weights = imagenet_weights(name)
    return weights if not split_model_name_tag(name)[1] else dataclasses.replace(weights, asked=name)


def fetch_weights(name: str) -> tuple[TimmWeights, Path]:
    """Download the weights :func:`named_weights` names through timm into the cache timm reads
    (``ssl-bench weights fetch``); returns the weights and the cached file.

    Args:
        name: a timm model name, with or without a tag, or an ``hf-hub:`` repository.

    Returns:
        The weights and their file in the cache.

    Raises:
        ConfigError: as :func:`create_backbone` with those weights.
    """
    weights = named_weights(name)
    _load_timm(weights, fetching=True)  # timm's own download, at its defaults (3 channels, 1000 classes)
    path = weights.cached()
    if path is None:
        raise ConfigError(
            f"timm loaded '{weights.tagged}' but its file is not in {weights.cache_dir} "
            "(TIMM_USE_OLD_CACHE set?); cannot say where the weights are"
        )
    return weights, path


def _load_timm(weights: TimmWeights, fetching: bool = False, in_chans: int | None = None,
               **create_kwargs: Any) -> nn.Module:
    """``timm.create_model(weights.tagged, pretrained=True, ...)`` (fetching: at timm's defaults),
    or, for the run's backbone, that architecture with the weights' pretrained config, with as
    many input channels as the weights have (``in_chans`` checked against them); failing at once
    and in one line when the weights are neither reachable nor cached."""
    why = _offline_reason(weights)
    if why is not None and weights.cached() is None:
        raise ConfigError(_cannot_fetch(weights, why, fetching))
    try:
        with _hub_offline(why is not None):  # unreachable but cached: read the cache, no retries
            if fetching:
                return timm.create_model(weights.tagged, pretrained=True)
            cfg = _hub_pretrained_cfg(weights) if weights.from_hub_name else None
            channels = int(((cfg or {}).get("input_size") or (_weights_channels(weights.tagged),))[0])
            _check_in_chans(weights.name, int(in_chans or 1), channels)
            if cfg is None:
                return timm.create_model(weights.tagged, pretrained=True, in_chans=channels, **create_kwargs)
            return timm.create_model(weights.name, pretrained=True, pretrained_cfg=cfg, in_chans=channels,
                                     **create_kwargs)
    except ConfigError:
        raise
    except Exception as exc:
        if _is_fetch_error(exc):
            raise ConfigError(_cannot_fetch(weights, why or exception_line(exc, limit=400), fetching)) from exc
        raise ConfigError(
            f"could not load {weights.what} ('{weights.tagged}') into backbone '{weights.name}': {exception_line(exc, limit=400)}"
        ) from exc


def _hub_pretrained_cfg(weights: TimmWeights) -> dict[str, Any]:
    """The pretrained config of a hub repository asked by name (its ``config.json``, through
    timm), checked to be of the backbone's architecture and to build nothing its name does not."""
    assert weights.hub_id is not None
    pretrained_cfg, arch, model_args = load_model_config_from_hf(weights.hub_id)
    want = split_model_name_tag(weights.name)[0]
    if split_model_name_tag(arch)[0] != want:
        raise ConfigError(f"--pretrained {weights.asked} holds weights of the architecture '{arch}' (its config.json), "
                          f"not of the backbone '{weights.name}'; pass --backbone {arch}")
    extra = sorted(set(model_args) - set(_RUN_MODEL_ARGS))
    if extra:
        raise ConfigError(f"--pretrained {weights.asked} builds '{arch}' with arguments of its own "
                          f"({', '.join(extra)} in its config.json), which the backbone's name alone does not "
                          f"rebuild; use a repository without them, or download its weights as a file")
    known = {f.name for f in dataclasses.fields(PretrainedCfg)}
    return {k: v for k, v in pretrained_cfg.items() if k in known}


def _offline_reason(weights: TimmWeights) -> str | None:
    """Why only the cache can be read (``HF_HUB_OFFLINE``, or the probe), else None."""
    if hub_constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    unreachable = _unreachable(weights.source_url)
    return None if unreachable is None else f"no network ({unreachable})"


def check_pretrained(name: str, pretrained: str | os.PathLike[str] | None) -> None:
    """The checks of :func:`create_backbone` that build nothing, for a run to make before it
    loads any data: the weights file exists, or the timm weights (ImageNet, a tag, a hub
    repository) exist for ``name`` and are cached or reachable (one probe).

    Args:
        name: the run's timm backbone.
        pretrained: its ``model.pretrained``.

    Raises:
        ConfigError: the same one line :func:`create_backbone` would raise.
    """
    source = _source(pretrained)
    if source == "none":
        return
    if source != "file":
        weights = pretrained_weights(name, str(pretrained))
        why = _offline_reason(weights)
        if why is not None and weights.cached() is None:
            raise ConfigError(_cannot_fetch(weights, why, fetching=False))
        return
    assert pretrained is not None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(_file_not_found(path))


def _file_not_found(path: Path) -> str:
    return (f"pretrained weights file not found: {path} (--pretrained takes a weights file, '{IMAGENET}', "
            f"a timm tag such as resnet50.tv_in1k, an hf-hub: repository or 'none')")


def _cannot_fetch(weights: TimmWeights, why: str, fetching: bool) -> str:
    of = "" if weights.name == weights.asked else f" of backbone '{weights.name}'"
    head = (
        f"could not fetch {weights.what}{of} (timm '{weights.tagged}' "
        f"from {weights.host}: {why}) and they are not in the cache {weights.cache_dir}. "
    )
    if fetching:
        return head + (
            f"Run 'ssl-bench weights fetch {weights.fetch_name}' on a machine with network and copy its "
            f"cache here (or point {weights.cache_env} at it)"
        )
    return head + (
        f"Pass a local weights file (--pretrained PATH), or run 'ssl-bench weights fetch "
        f"{weights.fetch_name}' on a machine with network and copy its cache here (or point "
        f"{weights.cache_env} at it), or use --pretrained none for random initialisation"
    )


def _is_fetch_error(exc: BaseException | None) -> bool:
    """A failure to reach or find the weights (the hub's ``LocalEntryNotFoundError`` and HTTP
    errors, urllib's, connection errors of the HTTP clients), as opposed to one loading them."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        module = type(exc).__module__.split(".")[0]
        if isinstance(exc, OSError) or module in ("huggingface_hub", "httpx", "httpcore", "requests", "urllib3"):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


@functools.lru_cache(maxsize=None)
def _unreachable(url: str) -> str | None:
    """None when ``url``'s server answers a HEAD request within :data:`PROBE_TIMEOUT_S` (any HTTP
    status counts), else why not. Asked once per process and URL; a thread bounds the DNS
    lookup too, which the socket timeout does not."""
    outcome: list[str | None] = []

    def probe() -> None:
        try:
            urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=PROBE_TIMEOUT_S).close()
            outcome.append(None)
        except urllib.error.HTTPError:  # the server answered, with an error status
            outcome.append(None)
        except urllib.error.URLError as exc:
            outcome.append(" ".join(str(exc.reason).split()))
        except Exception as exc:
            outcome.append(exception_line(exc, limit=120))

    thread = threading.Thread(target=probe, name="ssl-bench-weights-probe", daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    return outcome[0] if outcome else f"no answer within {PROBE_TIMEOUT_S:g} s"


@contextlib.contextmanager
def _hub_offline(on: bool):
    """The Hugging Face hub's offline mode (what ``HF_HUB_OFFLINE=1`` sets) for the block:
    files come from the cache or fail at once, without the hub's retries."""
    if not on:
        yield
        return
    saved = hub_constants.HF_HUB_OFFLINE
    hub_constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hub_constants.HF_HUB_OFFLINE = saved


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
    final, intermediates = cast(Any, model).forward_intermediates(x)
    return list(intermediates), final


def pooled_features(model: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """Pooled pre-logits vector ``(B, num_pooled_features(model))`` from ``final``."""
    return cast(Any, model).forward_head(final, pre_logits=True)


def classifier_logits(model: nn.Module, final: torch.Tensor) -> torch.Tensor:
    """Classifier logits from ``final``: ``(B,)`` when ``num_classes == 1``, else ``(B, K)``."""
    return cast(Any, model).forward_head(final).squeeze(-1)


def num_pooled_features(model: nn.Module) -> int:
    """Width of :func:`pooled_features`.

    ``model.head_hidden_size`` where timm defines it (it differs from ``model.num_features`` for
    models with a pre-logits layer, e.g. mobilenetv3: 576 vs 1024), else ``model.num_features``.
    """
    return int(getattr(model, "head_hidden_size", None) or cast(Any, model).num_features)
