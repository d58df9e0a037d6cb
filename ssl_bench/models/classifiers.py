"""Rebuilding a downstream classifier from what ``model.pt`` says it is: one place for timm
backbones and the toolkit's own (non-timm) classifiers.

A transfer's classifier is a timm backbone (``fit`` returns ``ctx.new_backbone()``), or a module
of this package that says what it is through an ``architecture`` attribute: a dict of plain values
with its ``name`` (a key of :data:`CLASSIFIERS`) and its constructor's options, e.g.
``{"name": "nonspatial", "bins": 32, "threshold": 0.05}``. A timm backbone has no such attribute.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UserError
from .backbones import create_backbone
from .frozen_probe import KnnProbeClassifier, LinearProbeClassifier
from .nonspatial import NonSpatialClassifier

#: the non-timm classifiers a ``model.pt`` may name in ``architecture["name"]``
CLASSIFIERS: dict[str, type[nn.Module]] = {
    "nonspatial": NonSpatialClassifier,
    "linear_probe": LinearProbeClassifier,
    "knn_probe": KnnProbeClassifier,
}


def build_classifier(backbone: str | None, architecture: dict[str, Any] | None = None,
                     in_chans: int = 1, num_classes: int = 1,
                     image_size: tuple[int, int] | list[int] | None = None) -> nn.Module:
    """A fresh, untrained classifier of the given architecture, ready for ``load_state_dict``:
    ``create_backbone(backbone, in_chans, num_classes, image_size)`` when ``architecture`` is
    ``None`` (``image_size``, the ``model.pt`` record's, sizes the backbones built for one input
    size, ViTs), else the named classifier of :data:`CLASSIFIERS` built with the dict's other
    entries."""
    if architecture is None:
        if not backbone:
            raise UserError("the model names neither a timm backbone nor a classifier architecture")
        return create_backbone(backbone, in_chans=in_chans, num_classes=num_classes, image_size=image_size)
    name = architecture.get("name") if isinstance(architecture, dict) else None
    if name not in CLASSIFIERS:
        raise UserError(f"unknown classifier architecture {name!r}; this ssl-bench knows "
                        f"{', '.join(CLASSIFIERS)} and timm backbones (upgrade ssl-bench?)")
    if (in_chans, num_classes) != (1, 1):
        raise UserError(f"classifier '{name}' has 1 input channel and 1 output, not {in_chans} and {num_classes}")
    options = {k: v for k, v in architecture.items() if k not in ("name", "module")}
    try:
        return CLASSIFIERS[name](**options)
    except (TypeError, ValueError) as exc:
        raise UserError(f"cannot build classifier '{name}' with {options}: {exc}") from None
