"""What every contract check shares: the error it raises, resolving a component from its registry,
the checks common to every kind (registered, documented, options with plain defaults) and tiny
random inputs."""
from __future__ import annotations

import inspect
from typing import Any

import torch

from ..components import TOOLKIT_ARGUMENTS
from ..errors import UserError
from ..registry import Registry, summary


PRETEXT_KINDS = ("image", "embedding", "masked", "none")
#: a built-in pretext task of each kind, used to train a transfer under test
SAMPLE_PRETEXTS = {"image": "gsim", "embedding": "simclr", "masked": "mae", "none": "none"}
#: the tiny timm backbones the checks train on: the first one a pretext task accepts
#: (``check_backbone``; MAE needs a ViT)
CONTRACT_BACKBONES = ("test_resnet", "test_vit")
PLAIN_TYPES = (type(None), bool, int, float, str)


class ContractError(AssertionError):
    """A component does not meet the interface contract of its kind."""


def fail(what: str, message: str) -> None:
    raise ContractError(f"{what}: {message}")


def expect(condition: bool, what: str, message: str) -> None:
    if not condition:
        fail(what, message)


def resolve(registry: Registry, name_or_obj: Any) -> tuple[str, Any]:
    """(registered name, registered object) for a name or a registered class/factory."""
    kind = registry.kind[:-1]
    if isinstance(name_or_obj, str):
        if name_or_obj not in registry:
            fail(f"{kind} '{name_or_obj}'", f"not registered; registered {registry.kind}: {', '.join(registry.names())}")
        return name_or_obj, registry.get(name_or_obj)
    for name in registry.names():
        if registry.get(name) is name_or_obj:
            return name, name_or_obj
    label = getattr(name_or_obj, "__qualname__", repr(name_or_obj))
    fail(f"{kind} {label}", f"not registered; decorate it with @{registry.kind.upper()}.register(\"name\")")
    raise AssertionError  # unreachable


def check_common(registry: Registry, name_or_obj: Any) -> tuple[str, Any, str]:
    name, obj = resolve(registry, name_or_obj)
    what = f"{registry.kind[:-1]} '{name}'"
    expect(bool(summary(obj)), what, "has no docstring; its first line is the summary `ssl-bench list` shows")
    fixed = TOOLKIT_ARGUMENTS.get(registry.kind, ())
    target = obj.__init__ if inspect.isclass(obj) else obj
    params = inspect.signature(target).parameters
    for arg in fixed:
        expect(
            arg in params or any(p.kind is p.VAR_KEYWORD for p in params.values()),
            what,
            f"its constructor must accept '{arg}' (the toolkit passes {', '.join(fixed)})",
        )
    for p in params.values():
        if p.name == "self" or p.name in fixed or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        expect(p.default is not p.empty, what, f"option '{p.name}' has no default; every option needs one")
        expect(
            is_plain(p.default),
            what,
            f"option '{p.name}' defaults to {p.default!r} ({type(p.default).__name__}); defaults must be "
            "None, bool, int, float, str or a list/tuple of those (they come from YAML and --set)",
        )
    return name, obj, what


def is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(is_plain(v) for v in value)
    return isinstance(value, PLAIN_TYPES)


def build_component(obj: Any, what: str, **kwargs: Any) -> Any:
    try:
        return obj(**kwargs)
    except Exception as exc:
        fail(what, f"cannot be built with {kwargs or 'its defaults'}: {type(exc).__name__}: {exc}")


def expect_finite_scalar(loss: Any, what: str, where: str) -> None:
    expect(isinstance(loss, torch.Tensor), what, f"{where} must return a torch.Tensor, got {type(loss).__name__}")
    expect(loss.dim() == 0, what, f"{where} must return a scalar, got shape {tuple(loss.shape)}")
    expect(loss.dtype == torch.float32, what, f"{where} must be float32 (compute it in fp32: outputs arrive "
            f"in bf16 under CUDA autocast), got {loss.dtype}")
    expect(bool(torch.isfinite(loss)), what, f"{where} is not finite: {loss.item()}")
    expect(loss.requires_grad, what, f"{where} has no gradient (is it detached from the outputs?)")


def expect_gradients(params: list[torch.Tensor], what: str, where: str) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    expect(bool(grads), what, f"no gradient reaches {where}")
    expect(all(bool(torch.isfinite(g).all()) for g in grads), what, f"non-finite gradient in {where}")
    expect(any(bool(g.abs().sum() > 0) for g in grads), what, f"the gradient in {where} is zero everywhere")


def random_images(batch: int, size: tuple[int, ...], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, *size, generator=g)
    labels = torch.arange(batch, dtype=torch.float32) % 2  # both classes, float32 like FitContext
    return images, labels


def backbone_for(task: Any, preferred: str, what: str) -> str:
    """``preferred`` if ``task`` can train it (``check_backbone``), else the first of
    :data:`CONTRACT_BACKBONES` it accepts."""
    refusals = []
    for name in (preferred, *CONTRACT_BACKBONES):
        try:
            task.check_backbone(name)
            return name
        except UserError as exc:
            refusals.append(str(exc))
    fail(what, f"accepts none of the backbones {(preferred, *CONTRACT_BACKBONES)}: {refusals[0]}")
    raise AssertionError  # unreachable
