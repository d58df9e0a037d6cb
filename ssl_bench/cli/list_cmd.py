"""``ssl-bench list``: the registered components (and timm backbones), with their origin.

``--verbose`` adds each component's options (``params.<name>.<option>``) with their defaults and
the description its docstring's ``Args:`` section gives each (:func:`option_descriptions`), the
pretext kind / the pretext kinds a transfer accepts, a network's receptive field where the network
declares one (``receptive_field_for()``, called with no arguments: the side in pixels for its
default options), the guide to laying out one's own data under the datasets (:data:`DATASETS_GUIDE`),
and the status of every plugin. A plugin that could not be loaded is reported as one ``warning:``
line on stderr (:func:`show_toolkit_warnings`).
"""
from __future__ import annotations

import contextlib
import inspect
import warnings
from pathlib import Path
from typing import Iterator

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..components import user_options
from ..console import make_console
from ..errors import ToolkitWarning
from ..registry import REGISTRIES, args_section, listing, plugin_status


KINDS = tuple(REGISTRIES) + ("backbones",)
#: printed under the datasets by ``--verbose``
DATASETS_GUIDE = "How to lay out your own data: docs/datasets.md"


def warning_line(message, category: type[Warning], filename: str) -> str:
    """A warning as one line: a :class:`~ssl_bench.errors.ToolkitWarning`'s message as it is; any
    other's (scikit-learn's ConvergenceWarning, Pillow's DecompressionBombWarning, torch's) with its
    lines joined, then its category and the library that raised it (the category's package, else
    the package of the file that warned): ``lbfgs failed to converge ... (ConvergenceWarning from
    sklearn)``."""
    text = " ".join(str(message).split())
    if issubclass(category, ToolkitWarning):
        return text
    origin = category.__module__.split(".")[0]
    if origin == "builtins":  # UserWarning, FutureWarning...: where it was raised
        parts = Path(filename).parts
        packages = [i for i, part in enumerate(parts) if part in ("site-packages", "dist-packages")]
        origin = parts[packages[-1] + 1] if packages and packages[-1] + 1 < len(parts) else Path(filename).stem
    return f"{text} ({category.__name__} from {origin})"


@contextlib.contextmanager
def show_toolkit_warnings(console: Console | None = None) -> Iterator[None]:
    """Print every warning shown inside the block as one clean line on ``console`` (stderr by
    default), :func:`warning_line` after ``warning:`` (``warning: ssl-bench plugin 'x' (dist 1.0)
    was not loaded: ...``), instead of Python's two lines (``file:line: Category: message`` and
    the source line, or a library's message of several lines). Which warnings are shown is
    Python's filters' choice, as before: none is silenced. Meant to wrap a CLI command (registries
    load plugins on first use, datasets warn when they load, scikit-learn and torch while a run
    trains)."""
    console = console or make_console(stderr=True)
    with warnings.catch_warnings():

        def show(message, category, filename, lineno, file=None, line=None):
            console.print(f"[yellow]warning:[/] {escape(warning_line(message, category, filename))}",
                          highlight=False, soft_wrap=True)

        warnings.showwarning = show
        yield


def option_descriptions(obj) -> dict[str, str]:
    """Option -> its description from the ``Args:`` sections of the classes the component declares
    in ``options_from`` (the options it passes on), then of its own docstrings: the class's and its
    ``__init__``'s (which wins), or a factory's (:func:`args_section`)."""
    sources = [*getattr(obj, "options_from", ()), obj]
    docs = [d for src in sources for d in [src.__doc__] + ([src.__init__.__doc__] if inspect.isclass(src) else [])]
    return {k: v for doc in docs if isinstance(doc, str) for k, v in args_section(doc).items() if v}


def _options_text(kind: str, obj) -> Text:
    """One line per option, ``option = default``, then `` — description`` where one is documented."""
    opts = user_options(kind, obj)
    if not opts:
        return Text("-")
    described = option_descriptions(obj)
    text = Text()
    for i, (option, default) in enumerate(opts.items()):
        text.append(("\n" if i else "") + f"{option} = {default!r}")
        if described.get(option):
            text.append(f" — {described[option]}", style="dim")
    return text


def _receptive_field_text(obj) -> str:
    """The receptive field a network declares (``receptive_field_for()``), if it declares one."""
    declared = getattr(obj, "receptive_field_for", None)
    if not callable(declared):
        return ""
    try:
        pixels = declared()
    except Exception as exc:  # a plugin's faulty declaration must not stop the listing
        return f"receptive field: not available ({type(exc).__name__}: {exc})"
    return f"receptive field: {pixels} px with the default options (it depends on the options)"


def _interface_text(kind: str, obj) -> str:
    if kind == "pretexts":
        return f"kind: {getattr(obj, 'kind', '?')}"
    if kind == "transfers":
        return "pretext kinds: " + ", ".join(getattr(obj, "accepts", ()))
    if kind == "networks":
        return _receptive_field_text(obj)
    return ""


def _plugin_lines() -> list[str]:
    lines = []
    for st in plugin_status():
        state = "loaded" if st.error is None else f"NOT loaded: {st.error}"
        lines.append(f"plugin {st.name} ({st.origin}, module {st.module}): {state}")
    return lines or ["no plugins installed (entry-point group ssl_bench.plugins)"]


@click.command("list")
@click.argument("kind", required=False, type=click.Choice(KINDS))
@click.option("--filter", "pattern", default="*", help="Wildcard on names, e.g. '*restor*'.")
@click.option("--verbose", "-v", is_flag=True,
              help="Show each component's options, their defaults and (from its docstring) what they do.")
def list_components(kind, pattern, verbose):
    """List pretexts, transfers, networks, datasets, executors or timm backbones."""
    console = make_console()
    if kind == "backbones":
        import timm

        names = timm.list_models(pattern)
        console.print(f"{len(names)} timm backbones (any works with --backbone):")
        console.print(", ".join(names), highlight=False)
        return
    with show_toolkit_warnings():
        for k in [kind] if kind else list(REGISTRIES):
            table = Table(title=k, title_justify="left", show_lines=verbose)
            table.add_column("name", style="bold")
            table.add_column("origin")
            table.add_column("description")
            if verbose:
                table.add_column("option = default — description")
                table.caption = "set an option with --set params.<name>.<option>=VALUE"
                table.caption_justify = "left"
            for listed in listing(k, pattern):  # names and summaries: no component is imported
                description = Text(listed.summary or "(no docstring)")
                row = [Text(listed.name), Text(listed.origin), description]
                if verbose:
                    obj = REGISTRIES[k].get(listed.name)
                    extra = _interface_text(k, obj)
                    if extra:
                        description.append("\n" + extra, style="dim")
                    row.append(_options_text(k, obj))
                table.add_row(*row)
            console.print(table)
            if verbose and k == "datasets":
                console.print(DATASETS_GUIDE, highlight=False, markup=False, soft_wrap=True)
        if verbose and not kind:
            for line in _plugin_lines():
                console.print(line, highlight=False, markup=False, soft_wrap=True)
