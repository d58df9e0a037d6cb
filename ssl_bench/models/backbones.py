"""Downstream backbones: any timm model, randomly initialised, from a local weights file or from
timm's ImageNet weights, plus the few calls the toolkit makes on it.

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
retries (about 47 s measured without network). :func:`fetch_imagenet_weights`
(``ssl-bench weights fetch``) fills the cache where there is a network.

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
``timm.create_model(name, in_chans=1, ...)`` unchanged.
"""
from __future__ import annotations

import contextlib
import dataclasses
import difflib
import functools
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
from timm.models import get_pretrained_cfg, is_model_pretrained, split_model_name_tag
from torch import nn

from ssl_bench.config import IMAGENET, NO_WEIGHTS
from ssl_bench.errors import ConfigError

__all__ = [
    "IMAGENET",
    "IMAGENET_WEIGHTS",
    "ImagenetWeights",
    "create_backbone",
    "takes_image_size",
    "check_pretrained",
    "imagenet_weights",
    "fetch_imagenet_weights",
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


def _no_weights(pretrained: str | os.PathLike[str] | None) -> bool:
    return pretrained is None or str(pretrained).strip().lower() in NO_WEIGHTS


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
    local weights file or from timm's ImageNet weights; a backbone built on pretrained weights
    normalises its input as those weights expect (see the module docstring).

    Args:
        name: a timm model name (``resnet50``, ``resnet50.a1_in1k``, ...); ``hf-hub:`` names are
            refused (a hub repository is not an ImageNet tag of a timm architecture).
        pretrained: ``None``, ``""`` or ``"none"`` for random initialisation
            (``timm.create_model(name, in_chans=in_chans, ...)``, nothing else); ``"imagenet"``
            for timm's ImageNet weights (:func:`imagenet_weights` says which; downloaded by timm
            into the Hugging Face cache unless already there); else the path of a local weights
            file (``.pth``/``.pt`` state dict, a checkpoint dict with ``state_dict``/``model``/
            ``state_dict_ema``, or ``.safetensors``), read by timm's ``load_state_dict`` and
            loaded through timm (``pretrained=True``, the state dict in
            ``pretrained_cfg_overlay``) with the architecture's (or the name's tag's) pretrained
            config. RGB weights are loaded into timm's RGB model unchanged and its
            ``first_conv`` becomes a :class:`NormalisedInput` with the pretrained config's mean
            and std (``timm.data.resolve_data_config``): the grey input is replicated to RGB and
            normalised as the weights' training images were. A file written from a backbone of
            this toolkit brings its own input: one with a :class:`NormalisedInput` (its
            ``<first_conv>.mean``/``.std``) is rebuilt with it, one with a 1-channel stem (a
            randomly initialised backbone's) loads into timm's 1-channel model unchanged, without
            normalisation. Either way timm drops the classifier weights unless ``num_classes``
            equals the weights' class count (1000 for ImageNet), so the classifier is freshly
            initialised in the usual case.
        in_chans: input channels (1 for mammograms; with pretrained RGB weights 1, replicated, or 3).
        num_classes: classifier outputs (1: a single malignancy logit).
        image_size: the run's ``(height, width)``; passed as ``img_size`` to the models that
            take one (:func:`takes_image_size`: ViTs, Swin, ...; ImageNet position embeddings
            are resampled by timm), ignored by the others (CNNs take any size).
        input_norm: with ``pretrained=None`` only: ``{"mean": [...], "std": [...]}`` (what
            :func:`input_normalisation` of a pretrained backbone returns, and ``model.pt``
            records) builds that backbone's structure, RGB stem behind a :class:`NormalisedInput`,
            randomly initialised, for ``load_state_dict``; ``None``: the plain timm model.
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Raises:
        ConfigError: unknown model name (with close matches), an architecture without ImageNet
            weights, ImageNet weights that cannot be fetched (no network and not cached: one line
            with the ways out), a missing weights file, one that cannot be loaded into this model,
            or weights whose first layer cannot take a normalised grey image.
    """
    if name.startswith(("hf-hub:", "hf_hub:")):
        raise ConfigError(
            f"backbone '{name}' would be downloaded from the Hugging Face hub; download the "
            "weights yourself and pass the timm architecture name with the weights file"
        )
    _check_model_name(name)
    if image_size is not None and "img_size" not in kwargs and takes_image_size(name):
        kwargs["img_size"] = tuple(int(v) for v in image_size)
    if _no_weights(pretrained):
        if input_norm is None:
            return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)
        norm = check_input_norm(input_norm)
        mean, std = norm["mean"], norm["std"]
        model = timm.create_model(name, pretrained=False, in_chans=len(mean), num_classes=num_classes, **kwargs)
        return _normalise_input(model, name, mean, std, in_chans)
    if input_norm is not None:
        raise ValueError("input_norm is for a backbone built without weights (pretrained=None); "
                         "pretrained weights bring their own")
    if str(pretrained).strip().lower() == IMAGENET:
        weights = imagenet_weights(name)
        channels = _weights_channels(weights.tagged)
        _check_in_chans(name, in_chans, channels)
        model = _load_imagenet(weights, in_chans=channels, num_classes=num_classes, **kwargs)
        return _normalise_input(model, name, *_weights_mean_std(model), in_chans)

    assert pretrained is not None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(_file_not_found(path))
    try:
        state = timm.models.load_state_dict(str(path))
    except Exception as exc:  # corrupt file, not a state dict, ...: one clear message
        raise ConfigError(
            f"could not load pretrained weights {path} into backbone '{name}': {_one_line(exc)}"
        ) from exc
    channels = _weights_channels(name)
    stem, own = _file_stem(state, _first_convs(get_pretrained_cfg(name), name), channels)
    if stem == "grey":  # a 1-channel stem of our own: loaded as it is, no normalisation
        return _load_file(path, name, state, in_chans=in_chans, num_classes=num_classes, **kwargs)
    _check_in_chans(name, in_chans, channels)
    model = _load_file(path, name, state, in_chans=channels, num_classes=num_classes, **kwargs)
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
            f"could not load pretrained weights {path} into backbone '{name}': {_one_line(exc)}"
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
            own = (state.pop(f"{first}.mean").tolist(), state.pop(f"{first}.std").tolist())
            prefix = f"{first}.conv."
            for key in [k for k in state if k.startswith(prefix)]:
                state[f"{first}.{key[len(prefix):]}"] = state.pop(key)
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


def _check_model_name(name: str) -> None:
    if not timm.is_model(name):
        close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise ConfigError(
            f"unknown timm backbone '{name}'.{hint} Run 'ssl-bench list backbones' to see all."
        )


def _one_line(exc: BaseException, limit: int = 400) -> str:
    detail = " ".join(str(exc).split())
    if len(detail) > limit:
        detail = detail[:limit] + " ..."
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


# ---------------------------------------------------------------------------------------------
# ImageNet weights through timm


@dataclasses.dataclass(frozen=True)
class ImagenetWeights:
    """The ImageNet weights timm loads for a backbone, and where it keeps them.

    timm 1.0 takes weights from the Hugging Face hub when the pretrained config names a hub
    repository (``hf_hub_id``), else from its URL (torch's hub cache); the same order here.
    """

    name: str  # the backbone as asked, e.g. resnet50
    tagged: str  # the timm name with its pretrained tag, e.g. resnet50.tv_in1k
    hub_id: str | None  # Hugging Face repository (``timm/resnet50.tv_in1k``), possibly ``@revision``
    url: str | None  # used when there is no hub repository
    hub_filename: str | None = None  # the pretrained config's file in the repository, if not the default

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

    def cached(self) -> Path | None:
        """The cached weights file, or None when timm would have to download it."""
        if self.hub_id:
            repo, _, revision = self.hub_id.partition("@")
            for filename in self._hub_files():
                found = huggingface_hub.try_to_load_from_cache(repo, filename, revision=revision or None)
                if isinstance(found, str) and os.path.isfile(found):
                    return Path(found)
            return None
        if self.url:
            path = self.cache_dir / os.path.basename(urllib.parse.urlsplit(self.url).path)
            return path if path.is_file() else None
        return None


def imagenet_weights(name: str) -> ImagenetWeights:
    """Which ImageNet weights ``pretrained="imagenet"`` loads for backbone ``name``.

    A tag in the name is used as given (``resnet50.a1_in1k``); else :data:`IMAGENET_WEIGHTS`
    (``resnet50`` -> ``resnet50.tv_in1k``), else timm's default pretrained tag.

    Raises:
        ConfigError: unknown name, unknown tag, or an architecture timm has no weights for.
    """
    if name.startswith(("hf-hub:", "hf_hub:")):
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
    return ImagenetWeights(name, tagged, cfg.hf_hub_id or None, cast("str | None", cfg.url or None),
                           cfg.hf_hub_filename or None)


def fetch_imagenet_weights(name: str) -> tuple[ImagenetWeights, Path]:
    """Download backbone ``name``'s ImageNet weights through timm into the cache timm reads
    (``ssl-bench weights fetch``); returns the weights and the cached file.

    Raises:
        ConfigError: as :func:`create_backbone` with ``pretrained="imagenet"``.
    """
    weights = imagenet_weights(name)
    _load_imagenet(weights, fetching=True)  # timm's own download, at its defaults (3 channels, 1000 classes)
    path = weights.cached()
    if path is None:
        raise ConfigError(
            f"timm loaded '{weights.tagged}' but its file is not in {weights.cache_dir} "
            "(TIMM_USE_OLD_CACHE set?); cannot say where the weights are"
        )
    return weights, path


def _load_imagenet(weights: ImagenetWeights, fetching: bool = False, **create_kwargs: Any) -> nn.Module:
    """``timm.create_model(weights.tagged, pretrained=True, ...)``, failing at once and in one
    line when the weights are neither reachable nor cached."""
    why = _offline_reason(weights)
    if why is not None and weights.cached() is None:
        raise ConfigError(_cannot_fetch(weights, why, fetching))
    try:
        with _hub_offline(why is not None):  # unreachable but cached: read the cache, no retries
            return timm.create_model(weights.tagged, pretrained=True, **create_kwargs)
    except Exception as exc:
        if _is_fetch_error(exc):
            raise ConfigError(_cannot_fetch(weights, why or _one_line(exc), fetching)) from exc
        raise ConfigError(
            f"could not load the ImageNet weights '{weights.tagged}' into backbone '{weights.name}': "
            f"{_one_line(exc)}"
        ) from exc


def _offline_reason(weights: ImagenetWeights) -> str | None:
    """Why only the cache can be read (``HF_HUB_OFFLINE``, or the probe), else None."""
    if hub_constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE is set"
    unreachable = _unreachable(weights.source_url)
    return None if unreachable is None else f"no network ({unreachable})"


def check_pretrained(name: str, pretrained: str | os.PathLike[str] | None) -> None:
    """The checks of :func:`create_backbone` that build nothing, for a run to make before it
    loads any data: the weights file exists, or ImageNet weights exist for ``name`` and are
    cached or reachable (one probe).

    Raises:
        ConfigError: the same one line :func:`create_backbone` would raise.
    """
    if _no_weights(pretrained):
        return
    if str(pretrained).strip().lower() == IMAGENET:
        weights = imagenet_weights(name)
        why = _offline_reason(weights)
        if why is not None and weights.cached() is None:
            raise ConfigError(_cannot_fetch(weights, why, fetching=False))
        return
    assert pretrained is not None
    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(_file_not_found(path))


def _file_not_found(path: Path) -> str:
    return f"pretrained weights file not found: {path} (--pretrained takes a weights file, '{IMAGENET}' or 'none')"


def _cannot_fetch(weights: ImagenetWeights, why: str, fetching: bool) -> str:
    head = (
        f"could not fetch the ImageNet weights of backbone '{weights.name}' (timm '{weights.tagged}' "
        f"from {weights.host}: {why}) and they are not in the cache {weights.cache_dir}. "
    )
    if fetching:
        return head + (
            f"Run 'ssl-bench weights fetch {weights.name}' on a machine with network and copy its "
            f"cache here (or point {weights.cache_env} at it)"
        )
    return head + (
        f"Pass a local weights file (--pretrained PATH), or run 'ssl-bench weights fetch "
        f"{weights.name}' on a machine with network and copy its cache here (or point "
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
            outcome.append(_one_line(exc, limit=120))

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
