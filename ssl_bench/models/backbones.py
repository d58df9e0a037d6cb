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
from typing import Any

import huggingface_hub
import timm
import torch
from huggingface_hub import constants as hub_constants
from timm.models import get_pretrained_cfg, is_model_pretrained, split_model_name_tag
from torch import nn

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
]


IMAGENET = "imagenet"
"""The ``pretrained`` value that asks for timm's ImageNet weights (``--pretrained imagenet``)."""

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
    return pretrained is None or str(pretrained).strip().lower() in ("", "none", "null")


def create_backbone(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    in_chans: int = 1,
    num_classes: int = 1,
    image_size: tuple[int, int] | list[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(name, in_chans=..., num_classes=...)``, randomly initialised, from a
    local weights file or from timm's ImageNet weights.

    Args:
        name: a timm model name (``resnet50``, ``resnet50.a1_in1k``, ...); ``hf-hub:`` names are
            refused (a hub repository is not an ImageNet tag of a timm architecture).
        pretrained: ``None``, ``""`` or ``"none"`` for random initialisation; ``"imagenet"`` for
            timm's ImageNet weights (:func:`imagenet_weights` says which; downloaded by timm
            into the Hugging Face cache unless already there); else the path of a local weights
            file (``.pth``/``.pt`` state dict, a checkpoint dict with ``state_dict``/``model``/
            ``state_dict_ema``, or ``.safetensors``), loaded through timm (``pretrained=True,
            pretrained_cfg_overlay=dict(file=path)``). Either way timm adapts a 3-channel stem to
            ``in_chans`` (``adapt_input_conv``: summed over RGB for ``in_chans=1``) and drops the
            classifier weights unless ``num_classes`` equals the weights' class count (1000 for
            ImageNet), so the classifier is freshly initialised in the usual case.
        in_chans: input channels (1 for mammograms).
        num_classes: classifier outputs (1: a single malignancy logit).
        image_size: the run's ``(height, width)``; passed as ``img_size`` to the models that
            take one (:func:`takes_image_size`: ViTs, Swin, ...; ImageNet position embeddings
            are resampled by timm), ignored by the others (CNNs take any size).
        **kwargs: passed to ``timm.create_model`` (e.g. ``drop_path_rate``).

    Raises:
        ConfigError: unknown model name (with close matches), an architecture without ImageNet
            weights, ImageNet weights that cannot be fetched (no network and not cached: one line
            with the ways out), a missing weights file, or one that cannot be loaded into this model.
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
        return timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=num_classes, **kwargs)
    if str(pretrained).strip().lower() == IMAGENET:
        return _load_imagenet(imagenet_weights(name), in_chans=in_chans, num_classes=num_classes, **kwargs)

    path = Path(pretrained).expanduser()
    if not path.is_file():
        raise ConfigError(_file_not_found(path))
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
        raise ConfigError(
            f"could not load pretrained weights {path} into backbone '{name}': {_one_line(exc)}"
        ) from exc


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
    if not (cfg.hf_hub_id or cfg.url):
        raise ConfigError(f"timm lists no download for the pretrained weights '{tagged}' of backbone '{name}'")
    return ImagenetWeights(name, tagged, cfg.hf_hub_id or None, cfg.url or None, cfg.hf_hub_filename or None)


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


def _is_fetch_error(exc: BaseException) -> bool:
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
