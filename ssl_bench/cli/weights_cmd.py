"""``ssl-bench weights fetch|list``: timm's ImageNet weights for ``--pretrained imagenet``.

``fetch`` downloads through timm (``timm.create_model(tag, pretrained=True)``) into the cache timm
reads, the Hugging Face cache (``HF_HUB_CACHE``, default ``$HF_HOME/hub``), so that a machine
without network can run with ``--pretrained imagenet`` once that cache is copied there (or
``HF_HOME``/``HF_HUB_CACHE`` points at it). ``list`` says which weights a backbone gets and whether
they are cached. Both look nothing up beyond the names given.
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
    """ImageNet weights of the backbones (--pretrained imagenet): fetch them, see the cache."""


@weights.command("fetch")
@click.argument("names", nargs=-1, required=True, metavar="BACKBONE...")
def fetch(names: tuple[str, ...]) -> None:
    """Download the ImageNet weights of each BACKBONE (a timm name, e.g. resnet50) through timm
    into its cache; run this where there is a network, then copy the cache to the machine that
    trains (or point HF_HOME / HF_HUB_CACHE at it)."""
    # torch and timm load only when a command runs, so --help stays fast
    from ..models.backbones import fetch_imagenet_weights

    for name in names:
        weights_, path = fetch_imagenet_weights(name)
        out_console.print(f"{name}: {weights_.tagged} -> {path}", highlight=False, markup=False, soft_wrap=True)
    out_console.print(f"cache: {weights_.cache_dir}", highlight=False, markup=False, soft_wrap=True)


@weights.command("list")
@click.argument("names", nargs=-1, metavar="[BACKBONE...]")
def list_weights(names: tuple[str, ...]) -> None:
    """Which ImageNet weights each BACKBONE gets (default: the profiles' backbones) and where
    they are cached; contacts no server."""
    from ..models.backbones import imagenet_weights

    names = names or tuple(dict.fromkeys(p["model.backbone"] for p in PROFILES.values()))
    table = Table(title="ImageNet weights (--pretrained imagenet)")
    for column in ("backbone", "timm weights", "source", "cached"):
        table.add_column(column)
    for name in names:
        w = imagenet_weights(name)
        path = w.cached()
        table.add_row(*(Text(str(v)) for v in (name, w.tagged, w.hub_id or w.url or "")),
                      Text(str(path)) if path else Text("no", style="yellow"))
    out_console.print(table)
    out_console.print(f"cache: {w.cache_dir}", highlight=False, markup=False, soft_wrap=True)
