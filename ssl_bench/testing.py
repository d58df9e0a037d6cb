"""Contract checks for components: does a pretext task, transfer, network, dataset or executor do
what the toolkit expects of its kind? Meant for pytest, in-tree and in plugin packages::

    from ssl_bench.testing import check_pretext

    def test_my_task_meets_the_contract():
        check_pretext("my_task")                  # the registered name, or the class
        check_pretext("my_task", strength=0.5)    # with options

Every ``check_*`` builds the component with the given options (defaults otherwise), exercises
it on tiny random data on the CPU, and raises :class:`ContractError` (an ``AssertionError``, so
pytest shows it as a plain test failure) saying what was expected and what was found. On success
it returns what it built (the task, the trained classifier, the network, the loaded dataset, the
executor) for further checks of your own. Checked for every kind:

- registered in its registry (the class or factory is found under the name);
- documented: its own docstring has a summary line (``ssl-bench list`` shows it);
- every option (constructor keyword, except the arguments the toolkit passes itself) has a
  default, and defaults are plain config values (``None``, bool, int, float, str, or a
  list/tuple of those), since ``params.<name>.<option>`` comes from YAML or ``--set``.

Kind-specific checks are listed in each function's docstring. :func:`check_component` dispatches
on the kind; :func:`isolated_registries` undoes registrations made inside it (for tests that
register throw-away components).
"""
from __future__ import annotations

import contextlib
import inspect
import io
import tempfile
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from .components import options as component_options
from .registry import DATASETS, EXECUTORS, NETWORKS, PRETEXTS, REGISTRIES, TRANSFERS, Registry, summary

__all__ = [
    "ContractError",
    "check_component",
    "check_dataset",
    "check_executor",
    "check_network",
    "check_pretext",
    "check_transfer",
    "isolated_registries",
    "tiny_fit_context",
    "PRETEXT_KINDS",
    "SAMPLE_PRETEXTS",
]

#: the pretext kinds the transfers know
PRETEXT_KINDS = ("image", "embedding", "none")
#: a built-in pretext task of each kind, used to train a transfer under test
SAMPLE_PRETEXTS = {"image": "gsim", "embedding": "simclr", "none": "none"}
#: constructor arguments the toolkit passes itself (not user options)
FIXED_ARGUMENTS = {
    "datasets": ("root", "image_size", "cache_dir", "on_bad_image", "workers"),
    "networks": ("in_chans", "out_chans"),
}
_PLAIN = (type(None), bool, int, float, str)


class ContractError(AssertionError):
    """A component does not meet the interface contract of its kind."""


def _fail(what: str, message: str) -> None:
    raise ContractError(f"{what}: {message}")


def _expect(condition: bool, what: str, message: str) -> None:
    if not condition:
        _fail(what, message)


# ------------------------------------------------------------------------------------ common
def _resolve(registry: Registry, name_or_obj: Any) -> tuple[str, Any]:
    """(registered name, registered object) for a name or a registered class/factory."""
    kind = registry.kind[:-1]
    if isinstance(name_or_obj, str):
        if name_or_obj not in registry:
            _fail(f"{kind} '{name_or_obj}'", f"not registered; registered {registry.kind}: {', '.join(registry.names())}")
        return name_or_obj, registry.get(name_or_obj)
    for name in registry.names():
        if registry.get(name) is name_or_obj:
            return name, name_or_obj
    label = getattr(name_or_obj, "__qualname__", repr(name_or_obj))
    _fail(f"{kind} {label}", f"not registered; decorate it with @{registry.kind.upper()}.register(\"name\")")
    raise AssertionError  # unreachable


def _check_common(registry: Registry, name_or_obj: Any) -> tuple[str, Any, str]:
    name, obj = _resolve(registry, name_or_obj)
    what = f"{registry.kind[:-1]} '{name}'"
    _expect(bool(summary(obj)), what, "has no docstring; its first line is the summary `ssl-bench list` shows")
    fixed = FIXED_ARGUMENTS.get(registry.kind, ())
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters
    for arg in fixed:
        _expect(
            arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values()),
            what,
            f"its constructor must accept '{arg}' (the toolkit passes {', '.join(fixed)})",
        )
    for p in params.values():
        if p.name == "self" or p.name in fixed or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        _expect(p.default is not p.empty, what, f"option '{p.name}' has no default; every option needs one")
        _expect(
            _plain(p.default),
            what,
            f"option '{p.name}' defaults to {p.default!r} ({type(p.default).__name__}); defaults must be "
            "None, bool, int, float, str or a list/tuple of those (they come from YAML and --set)",
        )
    return name, obj, what


def _plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_plain(v) for v in value)
    return isinstance(value, _PLAIN)


def _build(obj: Any, what: str, **kwargs: Any) -> Any:
    try:
        return obj(**kwargs)
    except Exception as exc:
        _fail(what, f"cannot be built with {kwargs or 'its defaults'}: {type(exc).__name__}: {exc}")


def _finite_scalar(loss: Any, what: str, where: str) -> None:
    _expect(isinstance(loss, torch.Tensor), what, f"{where} must return a torch.Tensor, got {type(loss).__name__}")
    _expect(loss.dim() == 0, what, f"{where} must return a scalar, got shape {tuple(loss.shape)}")
    _expect(loss.dtype == torch.float32, what, f"{where} must be float32 (compute it in fp32: outputs arrive "
            f"in bf16 under CUDA autocast), got {loss.dtype}")
    _expect(bool(torch.isfinite(loss)), what, f"{where} is not finite: {loss.item()}")
    _expect(loss.requires_grad, what, f"{where} has no gradient (is it detached from the outputs?)")


def _grads_ok(params: list[torch.Tensor], what: str, where: str) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    _expect(bool(grads), what, f"no gradient reaches {where}")
    _expect(all(bool(torch.isfinite(g).all()) for g in grads), what, f"non-finite gradient in {where}")
    _expect(any(bool(g.abs().sum() > 0) for g in grads), what, f"the gradient in {where} is zero everywhere")


def _random_images(batch: int, size: tuple[int, int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, *size, generator=g)
    labels = torch.arange(batch, dtype=torch.float32) % 2  # both classes, float32 like FitContext
    return images, labels


# ----------------------------------------------------------------------------------- pretext
def check_pretext(
    name_or_cls: Any,
    image_size: tuple[int, int] = (64, 32),
    batch_size: int = 4,
    backbone: str | None = "test_resnet",
    **options: Any,
):
    """Check a pretext task (:class:`ssl_bench.pretext.base.PretextTask`); returns the instance.

    - a ``PretextTask`` subclass; ``kind`` in ``image``/``embedding``/``none``; ``uses_labels`` a
      bool; ``trains`` is False only for kind ``none`` (nothing else is checked for it);
    - ``prepare(images (B,1,H,W) float32 in [0,1], labels (B,) float32)`` returns a
      ``PretextBatch`` whose ``inputs`` is a non-empty list of finite floating ``(b, 1, h, w)``
      tensors; it leaves ``images`` unchanged, and draws its randomness from torch's global
      generator (same seed, same batch);
    - image kind: one input per view of the input's shape, targets of the same shape (a tensor,
      or a list with one per view);
    - embedding kind: ``build_embedding_head(F)`` is an ``nn.Module`` mapping ``(N, F)`` to
      ``(N, *)``;
    - ``loss(outputs, targets)`` is a finite float32 scalar with a gradient into the outputs /
      the head, also when the outputs are bf16 (CUDA autocast);
    - with ``backbone`` (a timm name; ``None`` skips it): the task trains a real backbone through
      :class:`ssl_bench.models.pretext_model.PretextModel`, as the finetune and multitask
      transfers use it (gradients reach the backbone).
    """
    from .pretext.base import PretextBatch, PretextTask

    name, cls, what = _check_common(PRETEXTS, name_or_cls)
    task = _build(cls, what, **options)
    _expect(isinstance(task, PretextTask), what, f"must be a PretextTask subclass, got {type(task).__name__}")
    _expect(task.kind in PRETEXT_KINDS, what, f"kind must be one of {PRETEXT_KINDS}, got {task.kind!r}")
    _expect(isinstance(task.uses_labels, bool), what, f"uses_labels must be a bool, got {task.uses_labels!r}")
    if task.kind == "none":
        _expect(task.trains is False, what, "a task of kind 'none' must have trains == False")
        return task
    _expect(task.trains is True, what, f"trains must be True for a task of kind '{task.kind}'")

    images, labels = _random_images(batch_size, tuple(image_size))
    original = images.clone()
    torch.manual_seed(0)
    batch = task.prepare(images, labels)
    _expect(torch.equal(images, original), what, "prepare() changed its input images in place")
    _expect(isinstance(batch, PretextBatch), what, f"prepare() must return a PretextBatch, got {type(batch).__name__}")
    inputs = batch.inputs
    _expect(isinstance(inputs, (list, tuple)) and len(inputs) > 0, what,
            f"PretextBatch.inputs must be a non-empty list of tensors, got {type(inputs).__name__}")
    for i, v in enumerate(inputs):
        _expect(isinstance(v, torch.Tensor), what, f"inputs[{i}] is a {type(v).__name__}, not a tensor")
        _expect(v.dim() == 4 and v.shape[1] == 1 and v.shape[0] > 0, what,
                f"inputs[{i}] must be (b, 1, h, w), got {tuple(v.shape)}")
        _expect(v.is_floating_point(), what, f"inputs[{i}] must be floating point, got {v.dtype}")
        _expect(bool(torch.isfinite(v).all()), what, f"inputs[{i}] has non-finite values")
        _expect(v.device == images.device, what, f"inputs[{i}] is on {v.device}, the images on {images.device}")
    torch.manual_seed(0)
    again = task.prepare(images, labels)
    same = all(torch.equal(a, b) for a, b in zip(inputs, again.inputs)) and _same(batch.targets, again.targets)
    _expect(same, what, "prepare() is not reproducible under torch.manual_seed: draw all randomness from torch's "
            "global generator (the runner seeds it per fold), not from numpy/random or a private generator")

    if task.kind == "image":
        for i, v in enumerate(inputs):
            _expect(v.shape == images.shape, what, f"inputs[{i}] must have the images' shape "
                    f"{tuple(images.shape)} for an image task, got {tuple(v.shape)}")
        targets = batch.targets if isinstance(batch.targets, (list, tuple)) else [batch.targets]
        _expect(len(targets) in (1, len(inputs)), what, f"{len(targets)} targets for {len(inputs)} views")
        for t in targets:
            _expect(isinstance(t, torch.Tensor) and t.shape == images.shape, what,
                    f"image-task targets must have the input's shape {tuple(images.shape)}, got "
                    f"{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}")
        outputs = [torch.rand(v.shape, generator=torch.Generator().manual_seed(1)).requires_grad_() for v in inputs]
        loss = task.loss(outputs, batch.targets)
        _finite_scalar(loss, what, "loss()")
        loss.backward()
        _grads_ok(outputs, what, "the outputs")
        half = task.loss([o.detach().bfloat16() for o in outputs], batch.targets)
        _expect(half.dtype == torch.float32, what, f"loss() of bf16 outputs must be float32, got {half.dtype}")
    else:
        features = 24
        head = task.build_embedding_head(features)
        _expect(isinstance(head, nn.Module), what, f"build_embedding_head() must return an nn.Module, got {type(head).__name__}")
        sizes = [v.shape[0] for v in inputs]
        x = torch.randn(sum(sizes), features, generator=torch.Generator().manual_seed(1))
        head.train()
        out = head(x)
        _expect(isinstance(out, torch.Tensor) and out.dim() >= 2 and out.shape[0] == x.shape[0], what,
                f"the embedding head must map (N, {features}) to (N, *), got "
                f"{tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__}")
        outputs = list(out.split(sizes))
        loss = task.loss(outputs, batch.targets)
        _finite_scalar(loss, what, "loss()")
        loss.backward()
        _grads_ok(list(head.parameters()), what, "the embedding head")
        half = task.loss([o.detach().bfloat16() for o in outputs], batch.targets)
        _expect(half.dtype == torch.float32, what, f"loss() of bf16 outputs must be float32, got {half.dtype}")

    if backbone:
        _check_with_backbone(task, what, backbone, images, labels)
    return task


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor):
        return a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return type(a) is type(b)


def _check_with_backbone(task, what: str, backbone: str, images: torch.Tensor, labels: torch.Tensor) -> None:
    from .models.backbones import create_backbone
    from .models.pretext_model import PretextModel

    torch.manual_seed(0)
    model = PretextModel(create_backbone(backbone, in_chans=1, num_classes=1), task).train()
    batch = task.prepare(images, labels)
    outputs = model(batch.inputs)
    _expect(len(outputs) == len(batch.inputs), what, f"{len(outputs)} outputs for {len(batch.inputs)} views")
    loss = task.loss(outputs, batch.targets)
    _finite_scalar(loss, what, f"loss() on a {backbone} backbone")
    loss.backward()
    _grads_ok(list(model.backbone.parameters()), what, f"the {backbone} backbone")
    logits = model.logits(images)
    _expect(logits.shape[0] == images.shape[0], what, f"classifier logits of shape {tuple(logits.shape)}")


# ---------------------------------------------------------------------------------- transfer
def tiny_fit_context(pretext: Any, image_size: tuple[int, int] = (64, 32), n_images: int = 8, **overrides: Any):
    """A :class:`~ssl_bench.engine.context.FitContext` on ``n_images`` random images (half of them
    malignant) with the ``smoke`` profile, one epoch per stage, batch 4, on the CPU.

    ``pretext``: a task instance or a registered name. ``overrides``: dotted config keys with
    ``__`` for ``.`` (``train__epochs=2``)."""
    from .config import build_config
    from .engine.context import FitContext

    flags = {"device": "cpu", "data.image_size": tuple(image_size), "train.epochs": 1,
             "train.pretext_epochs": 1, "train.batch_size": 4}
    flags.update({k.replace("__", "."): v for k, v in overrides.items()})
    name = pretext if isinstance(pretext, str) else None
    if name:
        flags["pretext"] = name
    cfg = build_config("smoke", flags=flags)
    if name:
        from . import components

        pretext = components.create(PRETEXTS, name, cfg)
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
      ``image``/``embedding``/``none``; ``check()`` refuses a pretext of a kind it does not
      accept with a ``UserError`` (one clear CLI line);
    - for each pretext (default: one built-in task per accepted kind, :data:`SAMPLE_PRETEXTS`),
      ``fit(ctx)`` on a tiny :func:`tiny_fit_context` returns an ``nn.Module`` on the CPU that maps
      ``(B, 1, H, W)`` to finite ``(B, 1)`` logits in eval mode, and whose ``state_dict``
      round-trips through ``torch.load(weights_only=True)`` into a fresh
      ``create_backbone(config.model.backbone, in_chans=1, num_classes=1)`` (what ``model.pt``
      and ``ssl-bench predict`` rely on).
    """
    from .errors import UserError
    from .models.backbones import create_backbone
    from .transfer.base import TransferStrategy

    name, cls, what = _check_common(TRANSFERS, name_or_cls)
    transfer = _build(cls, what, **options)
    _expect(isinstance(transfer, TransferStrategy), what, f"must be a TransferStrategy subclass, got {type(transfer).__name__}")
    accepts = tuple(transfer.accepts)
    _expect(bool(accepts) and set(accepts) <= set(PRETEXT_KINDS), what,
            f"accepts must be a non-empty subset of {PRETEXT_KINDS}, got {accepts!r}")
    for kind in set(PRETEXT_KINDS) - set(accepts):
        refused = PRETEXTS.create(SAMPLE_PRETEXTS[kind])
        try:
            transfer.check(SAMPLE_PRETEXTS[kind], refused)
        except UserError:
            pass
        else:
            _fail(what, f"check() accepted a pretext of kind '{kind}', which is not in accepts {accepts}")

    results = {}
    for pretext_name in pretexts or [SAMPLE_PRETEXTS[k] for k in accepts]:
        torch.manual_seed(0)
        ctx = tiny_fit_context(pretext_name, image_size)
        where = f"{what} with pretext '{pretext_name}'"
        transfer = _build(cls, what, **options)
        try:
            transfer.check(pretext_name, ctx.pretext)
        except UserError as exc:
            _fail(where, f"check() refused a pretext of kind '{ctx.pretext.kind}' that accepts lists: {exc}")
        classifier = transfer.fit(ctx)
        _expect(isinstance(classifier, nn.Module), where, f"fit() must return an nn.Module, got {type(classifier).__name__}")
        devices = {p.device.type for p in classifier.parameters()}
        _expect(devices <= {"cpu"}, where, f"fit() must return the classifier on ctx.device (cpu), found {devices}")
        x = torch.rand(3, 1, *image_size, generator=torch.Generator().manual_seed(2))
        classifier.eval()
        with torch.no_grad():
            logits = classifier(x)
        _expect(isinstance(logits, torch.Tensor) and tuple(logits.shape) == (3, 1), where,
                f"the classifier must map (B, 1, H, W) to (B, 1) logits, got "
                f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        _expect(bool(torch.isfinite(logits).all()), where, "the classifier's logits are not finite")
        buffer = io.BytesIO()
        torch.save(classifier.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        fresh = create_backbone(ctx.config.model.backbone, in_chans=1, num_classes=1)
        try:
            fresh.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            _fail(where, f"the classifier's state_dict does not load into a fresh '{ctx.config.model.backbone}' "
                  f"backbone (in_chans=1, num_classes=1), which is how model.pt is reloaded: {exc}")
        results[pretext_name] = classifier
    return results


# ----------------------------------------------------------------------------------- network
def check_network(
    name_or_cls: Any,
    image_size: tuple[int, int] = (64, 32),
    batch_size: int = 2,
    any_size: bool = True,
    **options: Any,
) -> nn.Module:
    """Check a pretext network of ``NETWORKS`` (used by the collab transfer); returns it.

    - built as ``cls(in_chans=1, out_chans=1, **options)``, an ``nn.Module``;
    - ``encoder_channels``: a positive int;
    - ``forward(x (B,1,H,W))`` is ``(B, 1, H, W)`` (linear output), finite, floating;
    - ``encode(x)`` is ``(B, encoder_channels, h, w)``;
    - both hold at ``image_size`` and (``any_size``) at a size that is no multiple of 16 (the
      configured image size can be any ``HxW >= 16``);
    - gradients flow from both outputs into the parameters.
    """
    name, cls, what = _check_common(NETWORKS, name_or_cls)
    net = _build(cls, what, in_chans=1, out_chans=1, **options)
    _expect(isinstance(net, nn.Module), what, f"must build an nn.Module, got {type(net).__name__}")
    channels = getattr(net, "encoder_channels", None)
    _expect(isinstance(channels, int) and channels > 0, what, f"encoder_channels must be a positive int, got {channels!r}")
    for attr in ("encode", "forward"):
        _expect(callable(getattr(net, attr, None)), what, f"has no {attr}() method")
    h, w = image_size
    sizes = [(h, w)] + ([(h - 6, w - 2)] if any_size and min(h - 6, w - 2) >= 16 else [])
    net.train()
    for size in sizes:
        x = torch.rand(batch_size, 1, *size, generator=torch.Generator().manual_seed(0))
        net.zero_grad(set_to_none=True)
        y = net(x)
        _expect(isinstance(y, torch.Tensor) and tuple(y.shape) == (batch_size, 1, *size), what,
                f"forward() of a {(batch_size, 1, *size)} input must have the same shape, got "
                f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
        _expect(y.is_floating_point() and bool(torch.isfinite(y).all()), what, "forward() output is not finite floats")
        e = net.encode(x)
        _expect(isinstance(e, torch.Tensor) and e.dim() == 4 and e.shape[:2] == (batch_size, channels), what,
                f"encode() must be (B, encoder_channels={channels}, h, w), got "
                f"{tuple(e.shape) if isinstance(e, torch.Tensor) else type(e).__name__} for input {tuple(x.shape)}")
        (y.float().mean() + e.float().mean()).backward()
        _grads_ok(list(net.parameters()), what, "the network's parameters")
    return net


# ----------------------------------------------------------------------------------- dataset
def check_dataset(
    name_or_cls: Any,
    root: str | None = None,
    image_size: tuple[int, int] = (64, 32),
    cache_dir: str | None = None,
    **options: Any,
):
    """Check a dataset (:class:`ssl_bench.data.base.MammoDataset`) by loading it; returns the
    :class:`~ssl_bench.data.base.LoadedDataset`.

    - built as ``cls(root=..., image_size=..., cache_dir=..., on_bad_image="fail", workers=1,
      **options)``, a ``MammoDataset``; ``load()`` returns a ``LoadedDataset``;
    - the sample table has exactly the columns ``SAMPLE_COLUMNS`` in order, at least one row,
      unique string ``image_id``s, non-empty string ``patient_id``s, integer labels in {0, 1},
      ``laterality`` in ``L``/``R``/empty, string ``view`` and ``path``;
    - images: a float16 ``numpy`` array ``(N, H, W)`` at ``image_size``, finite, in [0, 1].

    ``cache_dir`` defaults to a temporary folder deleted afterwards.
    """
    from .data.base import SAMPLE_COLUMNS, LoadedDataset, MammoDataset

    name, cls, what = _check_common(DATASETS, name_or_cls)
    with contextlib.ExitStack() as stack:
        if cache_dir is None:
            cache_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="ssl_bench_check_"))
        ds = _build(cls, what, root=root, image_size=tuple(image_size), cache_dir=cache_dir,
                    on_bad_image="fail", workers=1, **options)
        _expect(isinstance(ds, MammoDataset), what, f"must be a MammoDataset subclass, got {type(ds).__name__}")
        loaded = ds.load()
    _expect(isinstance(loaded, LoadedDataset), what, f"load() must return a LoadedDataset, got {type(loaded).__name__}")
    table, images = loaded.samples, loaded.images
    _expect(list(table.columns) == list(SAMPLE_COLUMNS), what,
            f"sample table columns must be {list(SAMPLE_COLUMNS)}, got {list(table.columns)}")
    n = len(table)
    _expect(n > 0, what, "load() returned no samples")
    ids = table["image_id"].tolist()
    _expect(all(isinstance(v, str) and v for v in ids), what, "image_id must be non-empty strings")
    _expect(len(set(ids)) == n, what, "image_id values must be unique")
    _expect(all(isinstance(v, str) and v for v in table["patient_id"]), what, "patient_id must be non-empty strings")
    labels = table["label"].tolist()
    _expect(all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v in (0, 1) for v in labels), what,
            f"label must be the integers 0 (benign) / 1 (malignant), got {sorted(set(map(repr, labels)))[:5]}")
    bad_side = set(table["laterality"]) - {"L", "R", ""}
    _expect(not bad_side, what, f"laterality must be 'L', 'R' or '', got {sorted(map(repr, bad_side))}")
    for column in ("view", "path"):
        _expect(all(isinstance(v, str) for v in table[column]), what, f"{column} must be strings")
    _expect(isinstance(images, np.ndarray), what, f"images must be a numpy array, got {type(images).__name__}")
    _expect(images.dtype == np.float16, what, f"images must be float16, got {images.dtype}")
    _expect(images.shape == (n, *image_size), what, f"images must be (N, H, W) = {(n, *image_size)}, got {images.shape}")
    _expect(bool(np.isfinite(images).all()), what, "images have non-finite values")
    lo, hi = float(images.min()), float(images.max())
    _expect(lo >= 0.0 and hi <= 1.0, what, f"images must be in [0, 1], found [{lo}, {hi}]")
    return loaded


# ---------------------------------------------------------------------------------- executor
def check_executor(name_or_cls: Any, **options: Any):
    """Check an executor (:class:`ssl_bench.bench.executors.base.Executor`); returns it.

    Registered, documented, options with defaults (``retries`` among them), an ``Executor``
    subclass that builds with its defaults and whose ``describe()`` is a non-empty string. Running
    jobs is left to the executor's own tests (it may need a cluster)."""
    from .bench.executors.base import Executor

    name, cls, what = _check_common(EXECUTORS, name_or_cls)
    _expect("retries" in component_options(cls), what, "must accept the 'retries' option")
    executor = _build(cls, what, **options)
    _expect(isinstance(executor, Executor), what, f"must be an Executor subclass, got {type(executor).__name__}")
    text = executor.describe()
    _expect(isinstance(text, str) and bool(text), what, f"describe() must return a non-empty string, got {text!r}")
    return executor


# ------------------------------------------------------------------------------------ generic
_CHECKS = {
    "pretexts": check_pretext,
    "transfers": check_transfer,
    "networks": check_network,
    "datasets": check_dataset,
    "executors": check_executor,
}


def check_component(kind: str, name_or_obj: Any, **kwargs: Any) -> Any:
    """``check_<kind>(name_or_obj, **kwargs)`` for ``kind`` in ``pretexts``, ``transfers``,
    ``networks``, ``datasets``, ``executors`` (singular accepted too)."""
    key = kind if kind in _CHECKS else f"{kind}s"
    if key not in _CHECKS:
        raise ValueError(f"unknown component kind '{kind}'; one of {', '.join(_CHECKS)}")
    return _CHECKS[key](name_or_obj, **kwargs)


@contextlib.contextmanager
def isolated_registries() -> Iterator[None]:
    """Undo, on exit, every registration and removal made inside the block (built-ins and
    plugins are loaded first, so they stay)."""
    from .registry import ensure_loaded

    ensure_loaded()
    saved = {kind: dict(reg._entries) for kind, reg in REGISTRIES.items()}
    try:
        yield
    finally:
        for kind, reg in REGISTRIES.items():
            reg._entries.clear()
            reg._entries.update(saved[kind])
