"""The ``ssl-bench`` command line: a thin click layer over the library, rendered with rich.

Each command group lives in its own module of this package and is attached in :func:`_attach`.
Errors a user can cause (:class:`ssl_bench.errors.UserError`) end with one red line and exit 2.
"""
from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..errors import UserError

console = Console(stderr=True)


class _Group(click.Group):
    """A click group that turns user errors into one clear line instead of a traceback."""

    def invoke(self, ctx: click.Context):
        from .list_cmd import show_plugin_warnings

        try:
            with show_plugin_warnings(console):
                return super().invoke(ctx)
        except UserError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssl-bench")
def main() -> None:
    """Benchmark self-supervised pretext tasks and transfer strategies on mammography."""


def _attach() -> None:
    import importlib

    for module, command in (
        ("list_cmd", "list_components"),
        ("run_cmd", "run"),
        ("data_cmd", "data"),
        ("predict_cmd", "predict"),
        ("bench_cmd", "bench"),
        ("report_cmd", "report"),
    ):
        try:
            mod = importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{module}":
                continue  # command not built yet
            raise
        main.add_command(getattr(mod, command))


_attach()
