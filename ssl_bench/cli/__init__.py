"""The ``ssl-bench`` command line: a thin click layer over the library, rendered with rich.

Each command lives in its own module of this package and is attached to :func:`main` below. The
command modules import torch, scikit-learn and matplotlib inside the commands, so that ``--help``
stays fast.

Errors a user can cause (:class:`ssl_bench.errors.UserError`) end with one red line and exit 2; a
full device or disk quota (:class:`ssl_bench.fileio.OutOfSpace`: the environment, not the command)
with one red line and exit 1.
"""
from __future__ import annotations

import sys

import click
from rich.markup import escape

from .. import __version__
from ..console import make_console
from ..errors import UserError
from ..fileio import OutOfSpace
from .bench_cmd import bench
from .data_cmd import data
from .explain_cmd import explain
from .export_cmd import export
from .list_cmd import list_components, show_toolkit_warnings
from .power_cmd import power
from .predict_cmd import predict
from .report_cmd import report
from .run_cmd import ARGV_KEY, run
from .weights_cmd import weights


console = make_console(stderr=True)


class _Group(click.Group):
    """A click group that turns user errors into one clear line instead of a traceback, and keeps
    the arguments it was given for the commands to print the command line that resumes them."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta[ARGV_KEY] = list(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context):
        try:
            with show_toolkit_warnings(console):
                return super().invoke(ctx)
        except UserError as exc:
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(2)
        except OutOfSpace as exc:  # the environment: the same command finishes once there is space
            console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
            sys.exit(1)
        except KeyboardInterrupt:
            console.print("[yellow]interrupted[/]")
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ssl-bench")
def main() -> None:
    """Benchmark self-supervised pretext tasks and transfer strategies on mammography."""


for _command in (list_components, run, data, predict, explain, export, bench, report, power, weights):
    main.add_command(_command)
