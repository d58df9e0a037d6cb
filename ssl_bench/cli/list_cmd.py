"""``ssl-bench list``: the registered components (and timm backbones), with their origin."""
from __future__ import annotations

import click
from rich.console import Console
from rich.table import Table

from ..components import options
from ..registry import REGISTRIES, summary

KINDS = tuple(REGISTRIES) + ("backbones",)


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--filter", "pattern", default="*", help="Wildcard on names, e.g. '*restor*'.")
@click.option("--verbose", "-v", is_flag=True, help="Show each component's options and defaults.")
def list_components(kind, pattern, verbose):
    """List pretexts, transfers, networks, datasets, executors or timm backbones."""
    console = Console()
    if kind == "backbones":
        import timm

        names = timm.list_models(pattern)
        console.print(f"{len(names)} timm backbones (any works with --backbone):")
        console.print(", ".join(names), highlight=False)
        return
    for k in [kind] if kind else list(REGISTRIES):
        reg = REGISTRIES[k]
        table = Table(title=k, title_justify="left", show_lines=verbose)
        table.add_column("name", style="bold")
        table.add_column("origin")
        table.add_column("description")
        if verbose:
            table.add_column("options (params.<name>.<option>)")
        for name in reg.names(pattern):
            entry = reg.entry(name)
            row = [name, entry.origin, summary(entry.obj)]
            if verbose:
                fixed = ("root", "image_size", "cache_dir", "on_bad_image", "workers", "in_chans", "out_chans")
                opts = options(entry.obj, exclude=fixed)
                row.append("\n".join(f"{o} = {v!r}" for o, v in opts.items()) or "-")
            table.add_row(*row)
        console.print(table)
