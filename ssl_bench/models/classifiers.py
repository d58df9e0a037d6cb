"""Rebuilding a downstream classifier from what ``model.pt`` says it is: one place for timm
backbones and the toolkit's own (non-timm) classifiers.

A transfer's classifier is a timm backbone (``fit`` returns ``ctx.new_backbone()``), or a module
of this package that says what it is through an ``architecture`` attribute: a dict of plain values
with its ``name`` (registered in :data:`ssl_bench.registry.CLASSIFIERS`, as a plugin's own
classifier may be) and its constructor's options, e.g.
``{"name": "knn_probe", "backbone": "resnet50", ...}``. A timm backbone has no such attribute.

A classifier that wraps a timm backbone holds it as ``backbone`` and declares which stage last
trained it as the class attribute ``backbone_stage`` (:data:`BACKBONE_STAGES`: the frozen probes
say ``"pretext"``), and ``backbone_head_trained = False`` when it scores through a head of its own
and never trained the backbone's (the multiview fusion); :func:`classifier_backbone` reads both
for ``ssl-bench export``, which exports an untrained head as none (``num_classes=0``).

A timm backbone built on pretrained weights normalises its input (a
:class:`~ssl_bench.models.backbones.NormalisedInput` stem); ``model.pt`` records that as
``input_norm``, for the backbone itself or the one a classifier wraps (the frozen probes), and
:func:`build_classifier` builds the same structure from it. :func:`classifier_from_record` reads
every field of a record that decides the structure: use it rather than picking fields.
"""
from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import UserError
from ..registry import CLASSIFIERS
from .backbones import check_input_norm, create_backbone


#: the backbone as the pretext stage left it (frozen since; with pretext ``none``, as initialised)
PRETEXT = "pretext"
#: the backbone trained further by the downstream stage with the classifier (fine-tuned)
FINETUNED = "finetuned"
BACKBONE_STAGES = (PRETEXT, FINETUNED)


def backbone_head_trained(classifier: nn.Module) -> bool:
    """Whether the backbone :func:`classifier_backbone` gives has a trained classifier head of its
    own: a timm classifier's is; a toolkit classifier says otherwise by ``backbone_head_trained``.
    (A pretext-stage backbone's head is never trained, whatever the classifier says.)"""
    return bool(getattr(type(classifier), "backbone_head_trained", True))


def classifier_backbone(classifier: nn.Module) -> tuple[nn.Module, str] | None:
    """The timm backbone a downstream classifier scores with, and the stage that last trained it.

    A classifier without an ``architecture`` is a timm backbone trained by the downstream stage
    (``finetune``, ``multitask``, ``collab``): itself, :data:`FINETUNED`. A toolkit classifier
    gives its ``backbone`` module at the stage its class declares (``backbone_stage``, one of
    :data:`BACKBONE_STAGES`).

    Args:
        classifier: a fold's classifier, as :func:`classifier_from_record` rebuilds it.

    Returns:
        ``(backbone, stage)``, or None for a classifier that wraps no timm backbone or declares
        no stage (the non-spatial trees).
    """
    if getattr(classifier, "architecture", None) is None:
        return classifier, FINETUNED
    backbone, stage = getattr(classifier, "backbone", None), getattr(type(classifier), "backbone_stage", None)
    if isinstance(backbone, nn.Module) and stage in BACKBONE_STAGES:
        return backbone, stage
    return None


def build_classifier(backbone: str | None, architecture: dict[str, Any] | None = None,
                     in_chans: int = 1, num_classes: int = 1,
                     image_size: tuple[int, int] | list[int] | None = None,
                     input_norm: dict[str, Any] | None = None) -> nn.Module:
    """A fresh, untrained classifier of the given architecture, ready for ``load_state_dict``:
    ``create_backbone(backbone, in_chans, num_classes, image_size, input_norm=input_norm)`` when
    ``architecture`` is ``None`` (``image_size``, the ``model.pt`` record's, sizes the backbones
    built for one input size, ViTs; ``input_norm``, the record's, gives a backbone built on
    pretrained weights its input normalisation), else the named classifier of
    :data:`~ssl_bench.registry.CLASSIFIERS` built with the dict's other entries; with ``input_norm`` that classifier
    wraps a timm backbone (``architecture["backbone"]``: the frozen probes), which is built with it
    and passed as ``module``."""
    if input_norm is not None:
        try:
            input_norm = check_input_norm(input_norm)
        except ValueError as exc:
            raise UserError(f"cannot build the classifier: {exc}") from None
    if architecture is None:
        if not backbone:
            raise UserError("the model names neither a timm backbone nor a classifier architecture")
        return create_backbone(backbone, in_chans=in_chans, num_classes=num_classes, image_size=image_size,
                               input_norm=input_norm)
    name = architecture.get("name") if isinstance(architecture, dict) else None
    if not isinstance(name, str) or name not in CLASSIFIERS:
        raise UserError(f"unknown classifier architecture {name!r}; this ssl-bench knows "
                        f"{', '.join(CLASSIFIERS.names())} and timm backbones (upgrade ssl-bench, or install "
                        f"the plugin whose transfer trained it)")
    if (in_chans, num_classes) != (1, 1):
        raise UserError(f"classifier '{name}' has 1 input channel and 1 output, not {in_chans} and {num_classes}")
    options = {k: v for k, v in architecture.items() if k not in ("name", "module")}
    if input_norm is not None:
        inner = options.get("backbone")
        if not isinstance(inner, str):
            raise UserError(f"classifier '{name}' wraps no timm backbone, so it cannot have an input normalisation")
        options["module"] = create_backbone(inner, in_chans=1, num_classes=1, image_size=options.get("image_size"),
                                            input_norm=input_norm)
    try:
        return CLASSIFIERS.get(name)(**options)
    except (TypeError, ValueError) as exc:
        options.pop("module", None)
        raise UserError(f"cannot build classifier '{name}' with {options}: {exc}") from None


def classifier_from_record(record: dict[str, Any]) -> nn.Module:
    """A fresh classifier of the structure a ``model.pt`` record describes
    (:func:`ssl_bench.experiment.model_file.load_model_record`: ``backbone``, ``architecture``,
    ``in_chans``, ``num_classes``, ``image_size``, ``input_norm``), ready for
    ``load_state_dict(record["state_dict"])``; fields a record of an older version lacks take their
    old meaning (no architecture: a timm backbone; no ``input_norm``: none)."""
    return build_classifier(record.get("backbone"), record.get("architecture"),
                            in_chans=record.get("in_chans", 1), num_classes=record.get("num_classes", 1),
                            image_size=record.get("image_size"), input_norm=record.get("input_norm"))
