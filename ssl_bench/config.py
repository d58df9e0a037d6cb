"""Typed run configuration: dataclasses, profiles, YAML load/save and ``--set key=value`` overrides.

Precedence, lowest first: dataclass defaults < profile < ``--config FILE`` < command-line flags <
``--set``. A saved ``config.yaml`` is fully resolved, so rerunning it reproduces the run.

Component options (a pretext's ``d``, a network's ``width``, ...) live under ``params.<component
name>`` and are checked against that component's constructor signature when the run is built.

Values the TSBN paper leaves open are documented defaults of the components that use them:
GSIM offset ``d`` = 0.2 (``params.gsim.d``, :mod:`ssl_bench.pretext.gsim`); collaborative weight
``alpha`` = 4e-3 (on L_CT as a batch mean), P/D branches = 2-layer MLPs into a 128-d space, one
pretext step then one downstream step per batch (``params.collab``,
:mod:`ssl_bench.transfer.collaborative`); the epochs of each profile are below.

This module knows nothing of components or devices: the default profile for a device is asked
of the caller (``default_profile`` in :func:`build_config`), so reading a config needs no torch.

Each setting declares once, where it is defined, what it changes (its role, :func:`setting`):
the results (the default), nothing but where files go and how fast (``VOLATILE``), only the
downstream stage (``DOWNSTREAM``), or which loaded images are used (``SAMPLING``). Run identity
(:func:`ssl_bench.experiment.rundir.config_key`), the cached pretext stage's key, the image
dataset's key and path resolution are derived from the roles (:func:`settings`,
:func:`without_roles`), so a new setting enters every key it should without an edit elsewhere.
Fields that hold a file system path are declared with :func:`path_field`; :func:`absolute_paths`
makes their relative values absolute for a process that runs in another working folder (a Ray
task: :mod:`ssl_bench.bench.executors.ray_executor`).

A saved ``config.yaml`` carries ``schema`` (:data:`CONFIG_SCHEMA`); :func:`migrate` turns a
config saved under an earlier schema into the current one, with the values its run used for the
settings that came later (one place for every backfill).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import re
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from .errors import ConfigError
from .fileio import atomic_write_text

#: ``model.pretrained`` asking for timm's ImageNet weights (loaded by models/backbones.py)
IMAGENET = "imagenet"
#: ``model.pretrained`` values meaning a random initialisation (compared stripped, lower case)
NO_WEIGHTS = ("", "none", "null")
#: prefixes of a ``model.pretrained`` naming a timm model repository on the Hugging Face hub
HUB_PREFIXES = ("hf-hub:", "hf_hub:")
#: endings of weights files: a value shaped like a timm tag (``name.tag``) that ends so is a file
WEIGHTS_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors", ".ckpt", ".tar", ".npz", ".pkl", ".h5")
#: the kinds of ``model.pretrained`` value (:func:`weights_source`)
WEIGHT_SOURCES = ("none", IMAGENET, "tag", "hub", "file")
_TIMM_TAG = re.compile(r"[A-Za-z0-9_]+\.[A-Za-z0-9_]+")

#: the metadata key of a field declared by :func:`path_field`
PATH = "path"
#: the metadata key of a setting's role (:func:`setting`)
ROLE = "role"
#: the roles: the setting decides a run's results (every setting not declared otherwise)
RESULT = "result"
#: where files go, how fast it runs, how often it is saved: never the results (two invocations
#: writing the same run directory may differ in them; not in any key)
VOLATILE = "volatile"
#: a ``train.*`` setting that only the downstream stage reads (not in a cached pretext stage's key)
DOWNSTREAM = "downstream"
#: a ``data.*`` setting that chooses among the loaded images (folds, label fraction, test set),
#: not how they are loaded (not in the image dataset's key)
SAMPLING = "sampling"
ROLES = (RESULT, VOLATILE, DOWNSTREAM, SAMPLING)


def _always(value: str) -> bool:
    return True


def setting(default: Any = dataclasses.MISSING, *, role: str = RESULT,
            default_factory: Any = dataclasses.MISSING, path: Callable[[str], bool] | None = None) -> Any:
    """A config field with its ``role`` (one of :data:`ROLES`) and, for one holding a file system
    path, ``path(value)``: whether a value is a path (relative: to the working folder).

    Args:
        default: the field's default.
        role: what the setting changes, one of :data:`ROLES`.
        default_factory: as in :func:`dataclasses.field`.
        path: for a field holding a path, the test of whether a value is one; None for other fields.

    Returns:
        A :func:`dataclasses.field` with the role (and the path test) in its metadata.

    Raises:
        ValueError: ``role`` is not one of :data:`ROLES`.
    """
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
    metadata: dict[str, Any] = {ROLE: role}
    if path is not None:
        metadata[PATH] = path
    return field(default=default, default_factory=default_factory, metadata=metadata)


def path_field(default: Any = None, *, default_factory: Any = dataclasses.MISSING,
               when: Callable[[str], bool] = _always, role: str = RESULT) -> Any:
    """A config field holding a file system path (relative: to the working folder), for
    :func:`path_fields`; ``when(value)`` says whether a value is a path (``model.pretrained`` may
    be a keyword instead).

    Args:
        default: the field's default.
        default_factory: as in :func:`dataclasses.field`; used instead of ``default`` when given.
        when: the test of whether a value is a path (default: every value is).
        role: what the setting changes, one of :data:`ROLES`.

    Returns:
        The field, as :func:`setting` makes it.
    """
    if default_factory is not dataclasses.MISSING:
        return setting(default_factory=default_factory, role=role, path=when)
    return setting(default, role=role, path=when)


def role_of(f: dataclasses.Field) -> str:
    """The role a config field declares (:data:`RESULT` unless declared otherwise).

    Args:
        f: a field of a config dataclass.

    Returns:
        One of :data:`ROLES`.
    """
    return f.metadata.get(ROLE, RESULT)


def settings(section: Any, leaving: tuple[str, ...] = ()) -> dict[str, Any]:
    """A config (or one of its sections) as a plain dict, nested sections as dicts, without the
    fields whose role is in ``leaving``: ``settings(cfg.train, (VOLATILE, DOWNSTREAM))`` is what a
    pretext stage depends on of the training settings.

    Args:
        section: a :class:`Config` or one of its section dataclasses.
        leaving: the roles whose fields are left out, in nested sections too.

    Returns:
        A new dict; the values are deep copies.
    """
    out: dict[str, Any] = {}
    for f in dataclasses.fields(section):
        if role_of(f) in leaving:
            continue
        value = getattr(section, f.name)
        out[f.name] = settings(value, leaving) if dataclasses.is_dataclass(value) else copy.deepcopy(value)
    return out


def without_roles(values: dict[str, Any], leaving: tuple[str, ...], cls: type | None = None) -> dict[str, Any]:
    """A copy of a config dict (as saved) without the fields of ``cls`` (default :class:`Config`)
    whose role is in ``leaving``; keys ``cls`` does not know are kept (a comparison sees them).

    Args:
        values: a config dict, as saved or as ``Config.to_dict()`` gives it.
        leaving: the roles whose fields are left out, in nested sections too.
        cls: the config class whose fields declare the roles; default :class:`Config`.

    Returns:
        A new dict; the values are deep copies.
    """
    cls = Config if cls is None else cls
    hints = _field_types(cls)
    declared = {f.name: f for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        f = declared.get(key)
        if f is not None and role_of(f) in leaving:
            continue
        if f is not None and dataclasses.is_dataclass(hints[key]) and isinstance(value, dict):
            value = without_roles(value, leaving, hints[key])
        out[key] = copy.deepcopy(value)
    return out


def weights_source(value: str | None) -> str:
    """What a ``model.pretrained`` value names, one of :data:`WEIGHT_SOURCES`: ``"none"``
    (:data:`NO_WEIGHTS`: random initialisation), ``"imagenet"`` (:data:`IMAGENET`), ``"tag"``
    (timm pretrained weights by tag, ``name.tag`` such as ``resnet50.tv_in1k`` or
    ``vit_small_patch14_dinov2.lvd142m``: letters, digits and ``_`` around one dot, not ending in
    one of :data:`WEIGHTS_SUFFIXES`), ``"hub"`` (a timm repository on the Hugging Face hub,
    ``hf-hub:org/name``) or ``"file"`` (anything else: a weights file's path; ``./name.tag``
    for a file named like a tag).

    Args:
        value: a ``model.pretrained`` value (None: random initialisation).

    Returns:
        One of :data:`WEIGHT_SOURCES`.
    """
    text = "" if value is None else str(value).strip()
    if text.lower() in NO_WEIGHTS:
        return "none"
    if text.lower() == IMAGENET:
        return IMAGENET
    if text.startswith(HUB_PREFIXES):
        return "hub"
    if _TIMM_TAG.fullmatch(text) and not text.lower().endswith(WEIGHTS_SUFFIXES):
        return "tag"
    return "file"


def weights_file(value: str) -> bool:
    """Whether a ``model.pretrained`` value is a weights file (:func:`weights_source`), not
    :data:`IMAGENET`, one of :data:`NO_WEIGHTS`, a timm tag or a hub repository.

    Args:
        value: a ``model.pretrained`` value.
    """
    return weights_source(value) == "file"


def not_uri(value: str) -> bool:
    """Whether a ``log.uri`` is a local folder, not a URI with a scheme (``http://host:5000``,
    ``sqlite:///run.db``; a one-letter scheme is a Windows drive).

    Args:
        value: a ``log.uri`` value.
    """
    return len(urllib.parse.urlsplit(value).scheme) < 2


@dataclass
class DataConfig:
    """The ``data.*`` settings: the images, their folds, and how they are loaded and cached."""

    dataset: str = "synthetic"
    root: str | None = path_field()
    image_size: tuple[int, int] = (768, 384)  # (height, width)
    # "patient": folds grouped by patient; "image": image-level folds; "official": the dataset's own
    # train/test split as one fold (fold 0 = its test set; data/splits.py official_folds)
    split: str = setting("patient", role=SAMPLING)
    folds: int = setting(5, role=SAMPLING)  # 1 with split "official" or a test_dataset (set by build_config)
    # share of each fold's training patients used (stratified, grouped by patient, nested across
    # fractions; data/splits.py label_subset); the held-out folds never change
    label_fraction: float = setting(1.0, role=SAMPLING)
    on_bad_image: str = "fail"  # "fail" | "skip"
    cache_dir: str = path_field(
        default_factory=lambda: os.environ.get("SSL_BENCH_CACHE_DIR", "~/.cache/ssl_bench"), role=VOLATILE)
    workers: int = setting(0, role=VOLATILE)  # decoding processes; 0 = one per CPU core
    # training images resident on the device, or streamed from the cache (training/images.py):
    # "auto" streams a dataset whose resident copies pass memory_budget_gb (0: half the free memory)
    streaming: str = setting("auto", role=VOLATILE)  # "auto" | "on" | "off"
    memory_budget_gb: float = setting(0.0, role=VOLATILE)
    loader_workers: int = setting(2, role=VOLATILE)  # DataLoader processes of the streaming path (0: read in-process)
    # train on all of `dataset`, test on all of `test_dataset` (one fold, identical preprocessing)
    test_dataset: str | None = setting(None, role=SAMPLING)
    test_root: str | None = path_field(role=SAMPLING)
    # the names a bench's external study gives the training and the test data (its cohorts,
    # bench/external.py), which the external-validation table shows; labels, never the results
    cohort: str | None = setting(None, role=VOLATILE)
    test_cohort: str | None = setting(None, role=VOLATILE)


@dataclass
class PretextDataConfig:
    """The pool the pretext stage trains on instead of the fold's training images (its labels are
    ignored unless the pretext task uses labels); ``None``: the fold's training images."""

    dataset: str | None = None
    root: str | None = path_field()


@dataclass
class ModelConfig:
    """The ``model.*`` settings: the backbone, its initialisation and the collab transfer's pretext network."""

    backbone: str = "resnet50"  # any timm model name
    # backbone initialisation: None/"none" random, "imagenet" timm's ImageNet weights (downloaded
    # into the Hugging Face cache unless there; models/backbones.py), timm weights by tag
    # ("resnet50.tv_in1k", "vit_small_patch14_dinov2.lvd142m") or hub repository ("hf-hub:org/name"),
    # or a local weights file (weights_source says which); pretrained weights get the input
    # normalisation they were trained with (their mean/std)
    pretrained: str | None = path_field(when=weights_file)
    pretext_net: str = "unet"  # NETWORKS name used by the collab transfer


@dataclass
class TrainConfig:
    """The ``train.*`` settings of both stages: epochs, optimiser, schedule, precision, checkpoints."""

    epochs: int = setting(30, role=DOWNSTREAM)  # supervised / downstream epochs
    pretext_epochs: int = 30  # pretext stage of finetune
    # Ray Train workers of finetune's pretext stage (data-parallel; training/distributed.py); 1: this process
    pretext_workers: int = 1
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 5e-4
    pos_weight: float = setting(15.0, role=DOWNSTREAM)  # eq. 3, weight of the malignant class in the BCE
    # "constant" (the paper states none) | "cosine": each stage's learning rate follows a half
    # cosine from lr down to 0 over its epochs (Loshchilov & Hutter, SGDR, ICLR 2017)
    schedule: str = "constant"
    # with data.label_fraction below 1: "steps" trains the fold's labelled subset for as many
    # optimiser steps as all its training images would get (epochs scaled by their ratio;
    # experiment/label_budget.py); "epochs": the same epochs, so fewer labels also mean less training
    label_budget: str = "steps"
    precision: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "fp32" | "bf16"
    channels_last: bool = True
    compile: bool = False
    cuda_graphs: bool = False  # capture each training step in a CUDA graph (CUDA only; training/cuda_graphs.py)
    augment: bool = True  # random vertical flips and small intensity jitter
    # save a fold's whole training state every N epochs of each stage, so that a killed run
    # resumes the fold where it stopped, with the same results (folds/.<k>.checkpoint.pt); 0 = off
    checkpoint_every: int = setting(0, role=VOLATILE)  # a resumed fold equals an uninterrupted one
    # every N epochs of a pretext stage, a k-NN and a linear probe of the backbone's features on a
    # patient-grouped split of the fold's training images, in history.csv (training/online_probe.py); 0 = off
    probe_every: int = setting(0, role=VOLATILE)  # the probes read the network, never change it


#: experiment trackers the training history can stream to (ssl_bench/training/tracking.py)
LOG_BACKENDS = ("none", "tensorboard", "mlflow")


@dataclass
class LogConfig:
    """Where each epoch of the training history goes besides the fold's history.csv."""

    backend: str = "none"  # one of LOG_BACKENDS
    # tensorboard: parent folder of the event files (default: the run directory's logs/);
    # mlflow: the tracking URI (default: a file store in the run directory's mlruns/)
    uri: str | None = path_field(when=not_uri)


@dataclass
class Config:
    """A run's whole configuration: the method, its sections and the component options (``params``)."""

    pretext: str = "none"
    transfer: str = "finetune"
    name: str | None = None  # run directory name; default from the method
    method: str | None = None  # display name (Table II row) when run from a bench
    profile: str = "quick"
    seed: int = 0
    fold: int | None = setting(None, role=VOLATILE)  # run only this fold (0-based)
    device: str = setting("auto", role=VOLATILE)
    threads: int = setting(0, role=VOLATILE)  # CPU threads for torch; 0 = torch's default
    out: str = path_field("runs", role=VOLATILE)
    data: DataConfig = field(default_factory=DataConfig)
    pretext_data: PretextDataConfig = field(default_factory=PretextDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    log: LogConfig = setting(default_factory=LogConfig, role=VOLATILE)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)

    def component_params(self, name: str) -> dict[str, Any]:
        """The options set for component ``name`` (``params.<name>``).

        Args:
            name: the component's registry name.

        Returns:
            A new dict of the options as set; ``{}`` when none are.
        """
        return dict(self.params.get(name, {}))

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain dicts (:func:`dataclasses.asdict`), ``data.image_size`` as a list.

        Returns:
            A new dict, without the ``schema`` key that :func:`save_yaml` adds.
        """
        d = dataclasses.asdict(self)
        d["data"]["image_size"] = list(self.data.image_size)
        return d


#: the learning-rate schedules of ``train.schedule`` (training/builders.py applies them)
SCHEDULES = ("constant", "cosine")

#: the training budgets of ``train.label_budget`` (experiment/label_budget.py applies them)
LABEL_BUDGETS = ("steps", "epochs")

# Profiles: dotted overrides applied on top of the defaults.
PROFILES: dict[str, dict[str, Any]] = {
    # seconds on a CPU: tiny images and networks, few images; for tests
    "smoke": {
        "data.image_size": (64, 32),
        "model.backbone": "test_resnet",
        "threads": 1,  # tiny tensors: thread start-up costs more than it saves
        "train.epochs": 2,
        "train.pretext_epochs": 1,
        "train.batch_size": 8,
        "train.lr": 1e-3,
        "params.synthetic": {"n_patients": 24, "n_benign": 40, "n_malignant": 20},
        "params.unet": {"width": 4},
        "params.rdn": {"preset": "compact", "num_blocks": 2, "num_layers": 2, "growth": 4,
                       "features": 8},
        "params.collab": {"proj_dim": 16, "hidden_dim": 32},
    },
    # minutes on a CPU: small images, a ResNet-10 (measured learnable on the synthetic set)
    "quick": {
        "data.image_size": (128, 64),
        "model.backbone": "resnet10t",
        "train.epochs": 8,
        "train.pretext_epochs": 4,
        "train.batch_size": 16,
        "train.lr": 5e-4,
        # few epochs at a constant rate end wherever the last batches left the malignant bias, so
        # folds disagree on their score scales: TSBN-U, 14 constant epochs, pooled AUC 0.73 against
        # a mean fold AUC of 0.88; 10 cosine epochs: pooled 0.87 (2-core CPU, phantom version 5); 8 keep
        # the README's first command (install + TSBN-U) under 10 minutes on an idle 2-core CPU
        "train.schedule": "cosine",
        "params.unet": {"width": 8},
        "params.rdn": {"preset": "compact", "num_blocks": 3, "num_layers": 3, "growth": 8,
                       "features": 16},
    },
    # the TSBN paper's settings (meant for a GPU)
    "paper": {
        "data.image_size": (768, 384),
        "model.backbone": "resnet50",
        "model.pretrained": "imagenet",  # section III.B: the downstream ResNet50 starts from ImageNet
        "train.epochs": 30,
        "train.pretext_epochs": 30,
        "train.batch_size": 4,
        "train.lr": 1e-4,
        "train.weight_decay": 5e-4,
        "train.pos_weight": 15.0,
        "train.checkpoint_every": 5,  # a killed run loses at most 5 epochs of the fold it was training
        "train.cuda_graphs": True,  # H100: Table II projection 62 -> 39 min; falls back where a step syncs
        "data.folds": 5,
        "params.unet": {"width": 64},
        # RDN sized for time and memory at 768x384 (measured: see ssl_bench/models/rdn.py): D=4,
        # C=4, G=16, G0=32, receptive field 41 px; the standard RDN (D=16, C=8, G=64, G0=64,
        # checkpointed, 265 px) for users with the memory: --set params.rdn.preset=standard
        "params.rdn": {"preset": "compact"},
    },
}


# ---------------------------------------------------------------------------------------------
# setting values by dotted key, with type checking


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def coerce(value: Any, annotation: Any, key: str) -> Any:
    """Convert ``value`` (a YAML value or a command-line string) to ``annotation``'s type.

    Args:
        value: the value to convert.
        annotation: the field's type: bool, int, float, str, a tuple (an image size, through
            :func:`parse_image_size`) or a union of them; any other type takes ``value`` as it is.
        key: the dotted key, for the messages.

    Returns:
        The converted value; for a union allowing None, None from None, ``none``, ``null`` or ``""``.

    Raises:
        ConfigError: the value cannot be converted (an int refuses a bool and a fractional float, a str
            refuses a mapping or a list); for a union, the first member's message.
    """
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if annotation is tuple or origin is tuple:
        return parse_image_size(value, key)
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if annotation is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
    if annotation is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if annotation is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


#: bounds of each side of the preprocessed image (``data.image_size``, ``--image-size``). Below 16 px
#: the backbones' downsampling leaves nothing. Above: a mammogram is about 4500x2800 px at its
#: native resolution (the largest detectors and film scans about 7000x5500), and resizing it larger
#: adds no information, so 8192 a side holds any mammogram at full resolution; a bigger size only
#: allocates (a float16 100000x100000 image is 18.6 GiB, before a single file is read).
MIN_IMAGE_SIDE, MAX_IMAGE_SIDE = 16, 8192


def parse_image_size(value: Any, key: str = "image_size") -> tuple[int, int]:
    """``"768x384"``, ``[768, 384]`` or ``(768, 384)`` -> ``(768, 384)`` (height, width).

    Args:
        value: a ``HEIGHTxWIDTH`` string (``x``, ``X`` or ``,`` between the sides) or a pair of integers.
        key: the dotted key, for the messages.

    Returns:
        ``(height, width)``.

    Raises:
        ConfigError: not an image size, or a side outside :data:`MIN_IMAGE_SIDE`..:data:`MAX_IMAGE_SIDE`.
    """
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX,]\s*(\d+)\s*", value)
        if not m:
            raise ConfigError(f"{key}: expected HEIGHTxWIDTH such as 768x384, got {value!r}")
        h, w = int(m.group(1)), int(m.group(2))
    elif isinstance(value, (list, tuple)) and len(value) == 2:
        try:
            h, w = int(value[0]), int(value[1])
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected two integers, got {value!r}") from None
    else:
        raise ConfigError(f"{key}: expected HEIGHTxWIDTH such as 768x384, got {value!r}")
    if not (MIN_IMAGE_SIDE <= h <= MAX_IMAGE_SIDE and MIN_IMAGE_SIDE <= w <= MAX_IMAGE_SIDE):
        raise ConfigError(f"{key}: each side must be {MIN_IMAGE_SIDE} to {MAX_IMAGE_SIDE} pixels, got {h}x{w}")
    return (h, w)


def parse_image_sizes(value: Any, key: str = "image_sizes") -> tuple[tuple[int, int], ...]:
    """Several image sizes, each as :func:`parse_image_size` reads one: ``"64x32,96x48"`` (sizes
    separated by commas or spaces, each ``HEIGHTxWIDTH``) or a list of ``[height, width]`` pairs
    or ``HEIGHTxWIDTH`` strings (a bench file's ``image_sizes``).

    Args:
        value: the sizes as given.
        key: where they were given, for the messages (``--image-size``, ``<file>: image_sizes``).

    Returns:
        ``((height, width), ...)`` in the order given.

    Raises:
        ConfigError: no size, a size that is not a pair of whole numbers, one out of bounds, or
            the same size twice.
    """
    if isinstance(value, str):
        items: list[Any] = [part for part in re.split(r"[\s,]+", value.strip()) if part]
    elif isinstance(value, list):
        items = value
    else:
        raise ConfigError(f"{key}: expected a list of [height, width] pairs, got {value!r}")
    if not items:
        raise ConfigError(f"{key}: expected at least one image size, got {value!r}")
    sizes = []
    for item in items:
        if isinstance(item, (list, tuple)) and not (
                len(item) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in item)):
            raise ConfigError(f"{key}: each size is a pair of whole numbers [height, width], got {item!r}")
        sizes.append(parse_image_size(item, key))
    for size in sizes:
        if sizes.count(size) > 1:
            raise ConfigError(f"{key} lists {size[0]}x{size[1]} twice: {value!r}")
    return tuple(sizes)


def parse_scalar(text: str) -> Any:
    """A ``--set`` value for a component option: YAML scalar parsing (``3`` -> 3, ``true``...).

    Args:
        text: the value as given on the command line.

    Returns:
        The value :func:`yaml.safe_load` reads from ``text``, or ``text`` itself when it is not valid YAML.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def set_value(cfg: Config, key: str, value: Any) -> None:
    """Set a dotted key (``train.lr``, ``data.image_size``, ``params.gsim.d``) with type checks.

    Args:
        cfg: the config, changed in place.
        key: a dotted key; a section (``train``, ``params``, ``params.<name>``) takes a mapping whose
            entries are set one by one.
        value: converted by :func:`coerce` to the field's type; a component option given as a string is
            parsed by :func:`parse_scalar` (component options are checked when the run is built).

    Raises:
        ConfigError: an unknown key (the message lists the valid ones), a section given no mapping, or a
            value that cannot be converted.
    """
    parts = key.split(".")
    if parts[0] == "params":
        if len(parts) == 1:
            if not isinstance(value, dict):
                raise ConfigError("params: expected a mapping of component name -> options")
            for name, opts in value.items():
                set_value(cfg, f"params.{name}", opts)
            return
        name = parts[1]
        if len(parts) == 2:
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of option -> value, got {value!r}")
            for opt, v in value.items():
                set_value(cfg, f"params.{name}.{opt}", v)
            return
        if len(parts) != 3:
            raise ConfigError(f"{key}: component options are params.<component>.<option>")
        if isinstance(value, str):
            value = parse_scalar(value)
        cfg.params.setdefault(name, {})[parts[2]] = value
        return
    target: Any = cfg
    for i, part in enumerate(parts):
        fields = _field_types(type(target))
        if part not in fields:
            where = ".".join(parts[:i]) or "the top level"
            valid = ", ".join(sorted(_valid_keys(type(target), ".".join(parts[:i]))))
            raise ConfigError(f"unknown config key '{key}' (at {where}). Valid keys: {valid}")
        if i == len(parts) - 1:
            if dataclasses.is_dataclass(fields[part]):
                if not isinstance(value, dict):
                    raise ConfigError(f"{key}: expected a mapping, got {value!r}")
                for sub, v in value.items():
                    set_value(cfg, f"{key}.{sub}", v)
            else:
                setattr(target, part, coerce(value, fields[part], key))
        else:
            if not dataclasses.is_dataclass(fields[part]):
                raise ConfigError(f"unknown config key '{key}': '{part}' has no sub-keys")
            target = getattr(target, part)


def _valid_keys(cls: type, prefix: str = "") -> list[str]:
    keys = []
    for name, tp in _field_types(cls).items():
        full = f"{prefix}.{name}" if prefix else name
        if dataclasses.is_dataclass(tp):
            keys.extend(_valid_keys(typing.cast(type, tp), full))
        elif name == "params" and cls is Config:
            keys.append("params.<component>.<option>")
        else:
            keys.append(full)
    return keys


def valid_keys() -> list[str]:
    """Every dotted key of :class:`Config` that :func:`set_value` sets one value of.

    Returns:
        The keys in field order, sections flattened; ``params.<component>.<option>`` stands for the
        component options.
    """
    return _valid_keys(Config)


def path_fields(cls: type | None = None, prefix: str = "") -> dict[str, Callable[[str], bool]]:
    """The dotted keys of :class:`Config`'s fields declared by :func:`path_field` (``data.root``,
    ...), each with its test of whether a value is a path.

    Args:
        cls: the config class or a section class; default :class:`Config`.
        prefix: put before each key (the section's dotted name followed by ``.``).

    Returns:
        Dotted key -> the field's test of whether a value is a path.
    """
    cls = Config if cls is None else cls
    found: dict[str, Callable[[str], bool]] = {}
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            found.update(path_fields(hints[f.name], f"{prefix}{f.name}."))
        elif PATH in f.metadata:
            found[f"{prefix}{f.name}"] = f.metadata[PATH]
    return found


def absolute_paths(values: dict[str, Any], base: str | Path | None = None, cls: type | None = None) -> dict[str, Any]:
    """A copy of a config's ``values`` (``Config.to_dict()``; ``cls``: its class, default
    :class:`Config`) with each relative path of :func:`path_fields` made absolute against ``base``
    (default: the working folder), for a process that runs in another folder. Paths from ``~``
    stay as they are (each machine's home).

    Args:
        values: a config dict, as ``Config.to_dict()`` gives it.
        base: the folder relative paths are against (``~`` expanded); default the working folder.
        cls: the config class whose fields declare the paths; default :class:`Config`.

    Returns:
        A new dict; an empty value, or one the field's test says is no path (a URI, ``imagenet``), is kept.
    """
    values = copy.deepcopy(values)
    for key, is_path in path_fields(cls).items():
        *sections, name = key.split(".")
        where: Any = values
        for section in sections:
            where = where.get(section) if isinstance(where, dict) else None
        if not isinstance(where, dict):
            continue
        value = where.get(name)
        if isinstance(value, str) and value and is_path(value) and not os.path.isabs(os.path.expanduser(value)):
            where[name] = str((Path(base if base is not None else Path.cwd()).expanduser() / value).resolve())
    return values


def apply_mapping(cfg: Config, mapping: dict[str, Any], prefix: str = "") -> None:
    """Apply a nested mapping (from YAML) or a flat dotted one (a profile) onto ``cfg``.

    Args:
        cfg: the config, changed in place.
        mapping: key -> value; each key is set through :func:`set_value`.
        prefix: a dotted key put before each key of ``mapping``.

    Raises:
        ConfigError: as :func:`set_value`.
    """
    for key, value in mapping.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        set_value(cfg, full, value)


def parse_set_option(item: str) -> tuple[str, str]:
    """Split one ``--set key=value`` item at its first ``=``.

    Args:
        item: the item as given on the command line.

    Returns:
        ``(key, value)``: the key stripped of spaces, the value as given.

    Raises:
        ConfigError: the item has no ``=``.
    """
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got '{item}'")
    key, value = item.split("=", 1)
    return key.strip(), value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The top-level mapping of a YAML file (an empty file reads as ``{}``).

    Args:
        path: the file.

    Returns:
        The mapping as :func:`yaml.safe_load` reads it.

    Raises:
        ConfigError: the file does not exist, cannot be read, is not UTF-8 text, is not valid YAML, or
            holds no mapping at the top level.
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise ConfigError(f"{p} is not a YAML text file (it is not valid UTF-8)") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p} is not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    return data


def build_config(
    profile: str | None = None,
    file_values: dict[str, Any] | None = None,
    flags: dict[str, Any] | None = None,
    sets: list[str] | tuple[str, ...] = (),
    profile_over_file: bool = False,
    default_profile: Callable[[str], str] | None = None,
) -> Config:
    """Resolve a config: defaults < profile < file < flags < ``--set``.

    ``profile=None`` takes the file's profile, else ``default_profile(device)`` (the training
    layer's :func:`~ssl_bench.training.device.default_profile`: paper on CUDA, else quick).
    ``profile_over_file`` swaps the first two (bench files: the profile applies on top of the
    methods' settings, so ``--profile smoke`` shrinks every method).

    Args:
        profile: a key of :data:`PROFILES`, or None.
        file_values: a config file's values; a run's saved ``config.yaml`` (with ``schema``, or with every
            key of :data:`SAVED_KEYS`) goes through :func:`migrate` first.
        flags: command-line values by dotted key; None values are left out.
        sets: ``--set key=value`` items, applied in order.
        profile_over_file: apply the file first and the profile over it.
        default_profile: device (``flags``' or the file's ``device``, else ``auto``) -> profile name.

    Returns:
        The validated config; with one given split (:func:`single_fold`) ``data.folds`` is 1.

    Raises:
        ConfigError: an unknown profile or key, a value that cannot be converted, or a setting
            :func:`validate` refuses.
        TypeError: no profile is given or in the file, and no ``default_profile``.
    """
    file_values = copy.deepcopy(file_values or {})
    if "schema" in file_values or SAVED_KEYS <= set(file_values):  # a run's config.yaml: as it ran
        file_values = migrate(file_values)
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    device = flags.get("device") or file_values.get("device") or "auto"
    profile = profile or file_values.get("profile")
    if not profile:
        if default_profile is None:
            raise TypeError("build_config needs a profile or a default_profile function")
        profile = default_profile(device)
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile '{profile}'; choose one of {', '.join(PROFILES)}")
    cfg = Config()
    file_values.pop("profile", None)
    layers = [PROFILES[profile], file_values]
    for layer in reversed(layers) if profile_over_file else layers:
        apply_mapping(cfg, layer)
    apply_mapping(cfg, flags)
    for item in sets:
        key, value = parse_set_option(item)
        set_value(cfg, key, value)
    cfg.profile = profile
    if single_fold(cfg):
        cfg.data.folds = 1  # the split is given, not drawn: one fold whatever the profile says
    validate(cfg)
    return cfg


#: the layout of a saved config (``schema`` in ``config.yaml``); 1: saved before it was recorded
CONFIG_SCHEMA = 2
#: the top-level keys of a fully resolved config: a file with all of them and no ``schema`` is a
#: run's ``config.yaml`` of schema 1 (a config a user writes gives a few settings)
SAVED_KEYS = frozenset({"pretext", "transfer", "profile", "seed", "fold", "device", "threads", "out", "data",
                        "model", "train", "params"})


def migrate(values: dict[str, Any]) -> dict[str, Any]:
    """A saved config (a run's ``config.yaml``, fully resolved) as the current schema describes
    it: without its ``schema`` key, and with the settings introduced after it was saved set to
    the values its run used. Every backfill lives here; a config of a later schema is refused.

    Args:
        values: the saved config as read from YAML; a config without ``schema`` is of schema 1.

    Returns:
        A new dict of the current schema (``values`` is not changed).

    Raises:
        ConfigError: ``schema`` is not a positive integer, or is later than :data:`CONFIG_SCHEMA`.
    """
    values = copy.deepcopy(values)
    schema = values.pop("schema", 1)
    if not isinstance(schema, int) or isinstance(schema, bool) or schema < 1:
        raise ConfigError(f"config schema must be a positive integer, got {schema!r}")
    if schema > CONFIG_SCHEMA:
        raise ConfigError(f"the config is of schema {schema}; this ssl-bench reads up to schema {CONFIG_SCHEMA} "
                          f"(upgrade ssl-bench)")
    if schema < 2:
        for section in ("data", "train"):
            if values.get(section) is None:
                values[section] = {}
        data, train = values["data"], values["train"]
        if not (isinstance(data, dict) and isinstance(train, dict)):
            return values  # not a config this toolkit wrote: what reads it says what is wrong
        data.setdefault("label_fraction", 1.0)  # runs before label fractions used every label
        train.setdefault("label_budget", "epochs")  # ... and before budgets trained a fraction for the same epochs
        data.setdefault("test_dataset", None)  # runs before test datasets: cross-validation
        data.setdefault("test_root", None)
        if not values.get("pretext_data"):  # runs before pretext pools: the fold's own images
            values["pretext_data"] = {"dataset": None, "root": None}
        train.setdefault("pretext_workers", 1)  # runs before data-parallel pretext stages: one process
        train.setdefault("schedule", "constant")  # runs before schedules: a constant learning rate
    return values


def config_from_dict(values: dict[str, Any]) -> Config:
    """A fully resolved config (``Config.to_dict()``, or a run's config.yaml of any schema, through
    :func:`migrate`) as a Config.

    Args:
        values: the config dict.

    Returns:
        A validated :class:`Config`; settings missing from ``values`` keep their defaults.

    Raises:
        ConfigError: as :func:`migrate`, :func:`set_value` and :func:`validate`.
    """
    cfg = Config()
    apply_mapping(cfg, migrate(values))
    validate(cfg)
    return cfg


def single_fold(cfg: Config) -> bool:
    """Whether the run has one given train/test split instead of k drawn folds: the dataset's
    official split (``data.split = official``) or a test dataset (``data.test_dataset``).

    Args:
        cfg: the run's config.
    """
    return cfg.data.split == "official" or bool(cfg.data.test_dataset)


def _same_folder(a: str | None, b: str | None) -> bool:
    """Whether two dataset roots name the same folder (both unset: the same generated data)."""
    if not a or not b:
        return not a and not b
    return os.path.realpath(os.path.expanduser(a)) == os.path.realpath(os.path.expanduser(b))


def validate(cfg: Config) -> None:
    """Check what the types alone do not: allowed values, ranges and combinations of settings.

    Args:
        cfg: the config to check.

    Raises:
        ConfigError: the first invalid setting or combination found, in one line naming it.
    """
    parse_image_size(cfg.data.image_size, "data.image_size")  # within the bounds, however it was set
    if cfg.data.split not in ("patient", "image", "official"):
        raise ConfigError(f"data.split must be 'patient', 'image' or 'official', got '{cfg.data.split}'")
    if cfg.data.split == "official" and cfg.data.test_dataset:
        raise ConfigError("--split official and --test-dataset cannot be combined: a test dataset is "
                          "the test set (training uses all of the training dataset)")
    if cfg.data.test_root and not cfg.data.test_dataset:
        raise ConfigError("--test-data-root needs --test-dataset NAME")
    if cfg.data.test_dataset == cfg.data.dataset and _same_folder(cfg.data.test_root, cfg.data.root):
        raise ConfigError(f"--test-dataset {cfg.data.test_dataset} is the training dataset (--dataset "
                          f"{cfg.data.dataset}{', same root' if cfg.data.root else ''}): the model would be tested on "
                          f"the images it was trained on; give a test dataset disjoint from the training data, "
                          f"or drop --test-dataset for cross-validation")
    if cfg.pretext_data.root and not cfg.pretext_data.dataset:
        raise ConfigError("--pretext-data-root needs --pretext-data DATASET")
    if not (math.isfinite(cfg.data.label_fraction) and 0 < cfg.data.label_fraction <= 1):
        raise ConfigError(f"data.label_fraction must be in (0, 1], got {cfg.data.label_fraction!r}")
    if cfg.data.streaming not in ("auto", "on", "off"):
        raise ConfigError(f"data.streaming must be auto, on or off, got '{cfg.data.streaming}'")
    if not (math.isfinite(cfg.data.memory_budget_gb) and cfg.data.memory_budget_gb >= 0):
        raise ConfigError(f"data.memory_budget_gb must be at least 0 (0: from the free memory), "
                          f"got {cfg.data.memory_budget_gb!r}")
    if cfg.data.loader_workers < 0:
        raise ConfigError(f"data.loader_workers must be at least 0, got {cfg.data.loader_workers}")
    if cfg.data.workers < 0:
        raise ConfigError(f"data.workers must be at least 0 (0: one decoding process per CPU core), "
                          f"got {cfg.data.workers}")
    if single_fold(cfg):
        if cfg.data.folds != 1:
            raise ConfigError(f"data.folds must be 1 with split 'official' or a test dataset, got {cfg.data.folds}")
    elif cfg.data.folds < 2:
        raise ConfigError(f"data.folds must be at least 2, got {cfg.data.folds}")
    if cfg.fold is not None and not 0 <= cfg.fold < cfg.data.folds:
        raise ConfigError(f"fold must be in 0..{cfg.data.folds - 1}, got {cfg.fold}")
    if cfg.train.schedule not in SCHEDULES:
        raise ConfigError(f"train.schedule must be {' or '.join(SCHEDULES)}, got '{cfg.train.schedule}'")
    if cfg.train.label_budget not in LABEL_BUDGETS:
        raise ConfigError(f"train.label_budget must be {' or '.join(LABEL_BUDGETS)}, got '{cfg.train.label_budget}'")
    if cfg.train.precision not in ("auto", "fp32", "bf16"):
        raise ConfigError(f"train.precision must be auto, fp32 or bf16, got '{cfg.train.precision}'")
    if cfg.device not in ("auto", "cpu", "cuda") and not re.fullmatch(r"cuda:\d+", cfg.device):
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:N, got '{cfg.device}'")
    for key in ("epochs", "batch_size"):
        if getattr(cfg.train, key) < 1:
            raise ConfigError(f"train.{key} must be at least 1")
    if cfg.train.pretext_workers < 1:
        raise ConfigError(f"train.pretext_workers must be at least 1, got {cfg.train.pretext_workers}")
    workers, batch = cfg.train.pretext_workers, cfg.train.batch_size
    if workers > 1 and (batch % workers or batch < 2 * workers):
        raise ConfigError(f"train.batch_size={batch} must be a multiple of train.pretext_workers={workers}, "
                          f"at least {2 * workers}: each worker trains on an equal share of every batch, "
                          f"2 images or more")
    if cfg.train.pretext_epochs < 0:
        raise ConfigError("train.pretext_epochs must be at least 0")
    if cfg.train.probe_every < 0:
        raise ConfigError(f"train.probe_every must be at least 0 (0 = no online probes), got {cfg.train.probe_every}")
    if cfg.train.checkpoint_every < 0:
        raise ConfigError(f"train.checkpoint_every must be at least 0 (0 = no checkpoints), "
                          f"got {cfg.train.checkpoint_every}")
    for key, low, strict in (("lr", 0.0, True), ("weight_decay", 0.0, False), ("pos_weight", 0.0, True)):
        value = getattr(cfg.train, key)
        if not math.isfinite(value) or value < low or (strict and value == low):
            bound = "greater than" if strict else "at least"
            raise ConfigError(f"train.{key} must be a finite number {bound} {low:g}, got {value!r}")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be in 0..{2**32 - 1}, got {cfg.seed}")
    if cfg.log.backend not in LOG_BACKENDS:
        raise ConfigError(f"log.backend must be one of {', '.join(LOG_BACKENDS)}, got '{cfg.log.backend}'")
    if cfg.threads < 0:
        raise ConfigError(f"threads must be at least 0 (0 = torch's default), got {cfg.threads}")
    if cfg.name is not None:
        check_path_name(cfg.name, "name")


def check_path_name(name: str, what: str = "name") -> str:
    """``name`` as one folder name inside an output folder: no separators, no ``..``, not absolute,
    not hidden (hidden names are the run directory's temporary files).

    Args:
        name: the name to check.
        what: what the name is, for the message (``run name``).

    Returns:
        ``name`` unchanged.

    Raises:
        ConfigError: ``name`` is empty, ``.`` or ``..``, starts with ``.``, or holds ``/``, ``\\``, ``:`` or NUL.
    """
    if not name or name in (".", "..") or name.startswith(".") or any(c in name for c in '/\\\0:'):
        raise ConfigError(f"{what} {name!r} cannot be used as a folder name: use letters, digits, "
                          f"'-', '_' or spaces, without '/', '\\', ':' or a leading '.'")
    return name


def save_yaml(cfg: Config, path: str | Path) -> None:
    """Write ``cfg`` fully resolved, with its :data:`CONFIG_SCHEMA` (read back through :func:`migrate`).

    Args:
        cfg: the config.
        path: the YAML file, written atomically (:func:`ssl_bench.fileio.atomic_write_text`).
    """
    atomic_write_text(path, yaml.safe_dump({"schema": CONFIG_SCHEMA, **cfg.to_dict()}, sort_keys=False))
