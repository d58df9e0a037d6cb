"""``ssl-bench weights fetch|list``: timm's pretrained weights for ``--pretrained imagenet|TAG|hf-hub:NAME``.

``fetch`` downloads through timm (``timm.create_model(tag, pretrained=True)``) into the cache timm
reads, the Hugging Face cache (``HF_HUB_CACHE``, default ``$HF_HOME/hub``), so that a machine
without network can run with ``--pretrained imagenet`` (or a tag, or a hub repository) once that
cache is copied there (or ``HF_HOME``/``HF_HUB_CACHE`` points at it). Each name is a backbone (its
ImageNet weights), a timm tag (``resnet50.tv_in1k``, ``vit_small_patch14_dinov2.lvd142m``) or an
``hf-hub:`` repository (:func:`ssl_bench.models.backbones.named_weights`). ``list`` says which
weights a name gets and whether they are cached. Both look nothing up beyond the names given.
"""
from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..config import PROFILES

out_console = Console()


@click.group("weights")
def weights() -> None:
    """Pretrained weights of the backbones (--pretrained imagenet|TAG|hf-hub:NAME): fetch them, see the cache."""


@weights.command("fetch")
@click.argument("names", nargs=-1, required=True, metavar="NAME...")
def fetch(names: tuple[str, ...]) -> None:
    """Download the weights of each NAME through timm into its cache: a backbone's ImageNet weights
    (resnet50), a timm tag (resnet50.tv_in1k, vit_small_patch14_dinov2.lvd142m) or a hub repository
    (hf-hub:timm/vit_small_patch14_dinov2.lvd142m). Run this where there is a network, then copy
    the cache to the machine that trains (or point HF_HOME / HF_HUB_CACHE at it)."""
    # torch and timm load only when a command runs, so --help stays fast
    from ..models.backbones import fetch_weights

    for name in names:
        weights_, path = fetch_weights(name)
        out_console.print(f"{name}: {weights_.tagged} -> {path}", highlight=False, markup=False, soft_wrap=True)
    out_console.print(f"cache: {weights_.cache_dir}", highlight=False, markup=False, soft_wrap=True)


@weights.command("list")
@click.argument("names", nargs=-1, metavar="[NAME...]")
def list_weights(names: tuple[str, ...]) -> None:
    """Which weights each NAME gets (a backbone: its ImageNet weights; a timm tag; an hf-hub:
    repository; default: the profiles' backbones) and where they are cached; contacts no server."""
    from ..models.backbones import named_weights

    names = names or tuple(dict.fromkeys(p["model.backbone"] for p in PROFILES.values()))
    table = Table(title="Pretrained weights (--pretrained imagenet|TAG|hf-hub:NAME)")
    for column in ("name", "timm weights", "source", "cached"):
        table.add_column(column)
    for name in names:
        w = named_weights(name)
        path = w.cached()
        table.add_row(*(Text(str(v)) for v in (name, w.tagged, w.hub_id or w.url or "")),
                      Text(str(path)) if path else Text("no", style="yellow"))
    out_console.print(table)
    out_console.print(f"cache: {w.cache_dir}", highlight=False, markup=False, soft_wrap=True)
