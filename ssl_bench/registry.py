"""Named registries of pluggable components (pretext tasks, transfers, networks, datasets, executors,
and the classifiers a ``model.pt`` names).

Modelled on timm's registry (``timm/models/_registry.py``): a decorator registers a plain class or
factory under a name, and names can be listed with shell-style wildcards. Two differences: a name
registered twice raises, and an unknown name raises with the closest matches and the command
that lists all of them. A registered class gets its registry name as its ``name`` attribute (used
in messages), so a component never repeats its own name.

Built-in components live in ``ssl_bench``'s own modules and are imported the first time any
registry is listed or looked up (``get``, ``create``, ``entry``, ``names``, ``in``); only
:func:`listing` (``ssl-bench list``) reads their names and summaries from the source files
instead, while no plugin is installed;
third-party components come from the entry-point group ``ssl_bench.plugins``: each entry point
names a module (``rotation = "ssl_bench_rotation"``) whose decorators register, imported once per
process, right after the built-ins. Every entry records its origin: ``built-in``, or the plugin
distribution's ``name version``. A plugin that fails to import, or registers a name that already
exists, produces one :class:`PluginWarning` naming it and the reason; whatever it had registered
is rolled back and the rest of the toolkit keeps working (:func:`plugin_status` lists the
outcome of every plugin).
"""
from __future__ import annotations

import ast
import difflib
import fnmatch
import functools
import importlib
import inspect
import re
import sys
import warnings
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, cast

from .errors import ToolkitWarning, UserError, exception_line

PLUGIN_GROUP = "ssl_bench.plugins"

# Modules whose decorators register the built-in components.
BUILTIN_MODULES = (
    "ssl_bench.data.builtin",
    "ssl_bench.pretext",
    "ssl_bench.transfer",
    "ssl_bench.models",
    "ssl_bench.bench.executors",
)


class UnknownNameError(UserError, KeyError):
    """A registry was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class DuplicateNameError(UserError, ValueError):
    """A name was registered twice in one registry."""


@dataclass(frozen=True)
class Entry:
    """One registered component and where it came from (``built-in`` or ``dist-name version``)."""

    name: str
    obj: Any
    origin: str


class Registry:
    """A name -> component table for one kind of component (e.g. ``pretexts``).

    Args:
        kind: the kind, plural (``pretexts``); messages name one component by it without its last letter.
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, obj: Any = None) -> Callable[[Any], Any] | Any:
        """Register ``obj`` under ``name``; used bare as a decorator ``@REG.register("name")``.

        A class (not a builtin type) gets ``name`` as its ``name`` attribute. A plugin's component
        registered before any registry was used loads the built-ins and plugins first, so that a clash
        is reported as this registration's.

        Args:
            name: the name to register under.
            obj: the class or factory to register; ``None`` returns a decorator that registers its target.

        Returns:
            ``obj`` itself, or with ``obj`` None the decorator.

        Raises:
            DuplicateNameError: ``name`` is already registered here (the message names by whom).
        """
        if obj is None:
            return lambda target: self.register(name, target)
        if not _loaded and ALL_REGISTRIES.get(self.kind) is self and not _is_builtin(obj):
            # a plugin imported directly, before any registry was used: load the built-ins (and
            # the other plugins) first, so that a clash is this plugin's error, not theirs
            ensure_loaded()
        if name in self._entries:
            raise DuplicateNameError(
                f"{self.kind[:-1]} '{name}' is already registered "
                f"(by {self._entries[name].origin}); choose another name"
            )
        self._entries[name] = Entry(name, obj, _current_origin(obj))
        if inspect.isclass(obj) and not obj.__module__ == "builtins":
            cast(Any, obj).name = name  # the registry owns the name; a component never repeats it
        return obj

    def unregister(self, name: str) -> None:
        """Remove ``name``; a name the registry does not hold is ignored.

        Args:
            name: the registered name.
        """
        self._entries.pop(name, None)

    def get(self, name: str) -> Any:
        """The component registered under ``name`` (built-ins and plugins are loaded first).

        Args:
            name: the registered name.

        Returns:
            The registered class or factory.

        Raises:
            UnknownNameError: no such name; the message suggests up to three close matches and the
                ``ssl-bench list <kind>`` command.
        """
        ensure_loaded()
        try:
            return self._entries[name].obj
        except KeyError:
            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
            raise UnknownNameError(
                f"unknown {self.kind[:-1]} '{name}'.{hint} "
                f"Run 'ssl-bench list {self.kind}' to see all."
            ) from None

    def create(self, name: str, **kwargs: Any) -> Any:
        """Call the component registered under ``name`` with ``kwargs``.

        Args:
            name: the registered name.
            **kwargs: passed to the class or factory unchecked (:func:`ssl_bench.components.build` checks).

        Returns:
            What the class or factory returns.

        Raises:
            UnknownNameError: no such name, as :meth:`get`.
        """
        return self.get(name)(**kwargs)

    def entry(self, name: str) -> Entry:
        """The :class:`Entry` of ``name``: the component and its origin.

        Args:
            name: the registered name.

        Returns:
            The entry recorded when ``name`` was registered.

        Raises:
            UnknownNameError: no such name, as :meth:`get`.
        """
        self.get(name)
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
        """The registered names matching ``pattern`` (built-ins and plugins are loaded first).

        Args:
            pattern: a shell-style wildcard (:func:`fnmatch.fnmatch`); ``*`` matches every name.

        Returns:
            The matching names, sorted.
        """
        ensure_loaded()
        return sorted(n for n in self._entries if fnmatch.fnmatch(n, pattern))

    def __contains__(self, name: object) -> bool:
        ensure_loaded()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())


PRETEXTS = Registry("pretexts")
TRANSFERS = Registry("transfers")
NETWORKS = Registry("networks")
DATASETS = Registry("datasets")
EXECUTORS = Registry("executors")
REGISTRIES = {r.kind: r for r in (PRETEXTS, TRANSFERS, NETWORKS, DATASETS, EXECUTORS)}
#: the non-timm classifiers a ``model.pt`` names in ``architecture["name"]``, which ``ssl-bench
#: predict`` rebuilds (:mod:`ssl_bench.models.classifiers`): a plugin whose transfer returns a
#: classifier of its own registers it here. Not a component the config picks (no ``params.<name>``,
#: not in ``ssl-bench list``), hence not in :data:`REGISTRIES`.
CLASSIFIERS = Registry("classifiers")
#: every registry a plugin may register into (what a failed plugin had registered is rolled back)
ALL_REGISTRIES = {**REGISTRIES, CLASSIFIERS.kind: CLASSIFIERS}

_origin_stack: list[str] = []
_loaded = False
_status: dict[str, "PluginStatus"] = {}


class PluginWarning(ToolkitWarning):
    """A plugin could not be loaded; the rest of the toolkit keeps working."""


@dataclass(frozen=True)
class PluginStatus:
    """What became of one plugin entry point: ``error`` is ``None`` when it loaded."""

    name: str  # the entry point's name
    origin: str  # ``dist-name version``
    module: str
    error: str | None = None


def _is_builtin(obj: Any) -> bool:
    module = getattr(obj, "__module__", None) or ""
    return module == "ssl_bench" or module.startswith("ssl_bench.")


def _current_origin(obj: Any = None) -> str:
    """Origin of a registration: the plugin being loaded, else the plugin that owns ``obj``'s
    module (a plugin imported directly, before the registries loaded it), else ``built-in``."""
    if _origin_stack:
        return _origin_stack[-1]
    top = (getattr(obj, "__module__", None) or "").split(".")[0]
    if top and not _is_builtin(obj):
        try:
            for ep in plugin_entry_points():
                if ep.module.split(".")[0] == top:
                    return _distribution_label(ep)
        except Exception:  # broken metadata must not break a registration
            pass
    return "built-in"


def plugin_entry_points() -> list[metadata.EntryPoint]:
    """The installed entry points of group ``ssl_bench.plugins``, by name.

    Returns:
        The entry points sorted by their name; empty when no plugin is installed.
    """
    return sorted(metadata.entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _distribution_label(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return f"plugin {ep.name}"
    return f"{dist.metadata['Name']} {dist.version}"



def load_plugin(ep: metadata.EntryPoint) -> bool:
    """Import one plugin module (``ep.load()``); on failure roll back whatever it registered and
    emit one :class:`PluginWarning` naming the plugin and the reason. True when it loaded.

    Its outcome is recorded for :func:`plugin_status`. ``KeyboardInterrupt`` propagates; any other
    exception, ``SystemExit`` included, is the plugin's failure.

    Args:
        ep: the plugin's entry point.

    Returns:
        True when the module loaded, or is being imported directly right now (that import reports its
        own errors); False when it failed.
    """
    label = _distribution_label(ep)
    importing = sys.modules.get(ep.module)
    if importing is not None and getattr(getattr(importing, "__spec__", None), "_initializing", False):
        return True  # imported directly and still running its own body: that import reports errors
    before = {kind: set(reg._entries) for kind, reg in ALL_REGISTRIES.items()}
    _origin_stack.append(label)
    try:
        ep.load()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # a broken plugin, even one calling sys.exit(), must not break the toolkit
        for kind, reg in ALL_REGISTRIES.items():
            for name in set(reg._entries) - before[kind]:
                reg.unregister(name)
        reason = exception_line(exc)
        _status[ep.name] = PluginStatus(ep.name, label, ep.module, reason)
        warnings.warn(
            f"ssl-bench plugin '{ep.name}' ({label}) was not loaded: {reason}",
            PluginWarning,
            stacklevel=2,
        )
        return False
    finally:
        _origin_stack.pop()
    _status[ep.name] = PluginStatus(ep.name, label, ep.module)
    return True


def ensure_loaded() -> None:
    """Import the built-in components, then every plugin, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True  # set first: a plugin that lists a registry while importing must not recurse
    try:
        for module in BUILTIN_MODULES:
            importlib.import_module(module)
    except BaseException:
        _loaded = False
        raise
    for ep in plugin_entry_points():
        load_plugin(ep)


def plugin_status() -> list[PluginStatus]:
    """Every plugin entry point seen by :func:`ensure_loaded`, loaded or not, by name.

    Returns:
        One :class:`PluginStatus` per plugin, sorted by entry-point name.
    """
    ensure_loaded()
    return [_status[name] for name in sorted(_status)]


def summary(obj: Any) -> str:
    """The summary of a component's own docstring: its first paragraph, on one line
    (a class without a docstring has none, even when its base class has one).

    Args:
        obj: a component class or factory.

    Returns:
        The summary, ``""`` when there is no docstring.
    """
    return first_paragraph(obj.__doc__ if isinstance(getattr(obj, "__doc__", None), str) else "")


# ---- listing without importing ---------------------------------------------------------------
# `ssl-bench list` needs only names, origins and summaries. The built-in components' modules
# import torch, timm and lightly (seconds); their names and docstrings are plain source text, so
# the listing reads them from the source files (ast) until something imports the registries.


@dataclass(frozen=True)
class Listed:
    """One row of a listing: a component's name, origin and docstring summary."""

    name: str
    origin: str
    summary: str


def _module_source(module: str) -> Path:
    """The source file of one of ssl_bench's own modules, found without importing it."""
    path = Path(__file__).parent.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _registered_in(tree: ast.Module) -> Iterator[tuple[str, str, str]]:
    """``(kind, name, summary)`` of each ``@REGISTRY.register("name")`` in a parsed module."""
    by_variable = {kind.upper(): kind for kind in REGISTRIES}
    for node in tree.body:
        if not isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            continue
        for deco in node.decorator_list:
            if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "register" and isinstance(deco.func.value, ast.Name)
                    and deco.func.value.id in by_variable and deco.args
                    and isinstance(deco.args[0], ast.Constant) and isinstance(deco.args[0].value, str)):
                yield by_variable[deco.func.value.id], deco.args[0].value, first_paragraph(ast.get_docstring(node))


@functools.lru_cache(maxsize=1)
def builtin_catalogue() -> dict[str, tuple[Listed, ...]]:
    """Kind -> the built-in components by name, read from :data:`BUILTIN_MODULES` and the sibling modules
    they import (``from . import a, b``), without importing any of them.

    Only ``@<REGISTRY>.register("name")`` decorators on top-level classes and functions are found; the
    result is computed once per process.

    Returns:
        Kind (a key of :data:`REGISTRIES`) -> its :class:`Listed` rows, origin ``built-in``, sorted by name.
    """
    found: dict[str, list[Listed]] = {kind: [] for kind in REGISTRIES}
    for module in BUILTIN_MODULES:
        source = _module_source(module)
        tree = ast.parse(source.read_text(encoding="utf-8"))
        files = [source] + [source.parent / f"{alias.name}.py" for node in tree.body
                            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None
                            for alias in node.names]
        for file in files:
            for kind, name, text in _registered_in(ast.parse(file.read_text(encoding="utf-8"))):
                found[kind].append(Listed(name, "built-in", text))
    return {kind: tuple(sorted(rows, key=lambda row: row.name)) for kind, rows in found.items()}


def listing(kind: str, pattern: str = "*") -> list[Listed]:
    """The components of one registry matching ``pattern``, by name. Read from the source files
    while nothing has imported the registries and no plugin is installed (plugins register by
    running their code, so they are imported, and the built-ins with them).

    Args:
        kind: a key of :data:`REGISTRIES` (``pretexts``, ``transfers``, ...).
        pattern: a shell-style wildcard (:func:`fnmatch.fnmatch`); ``*`` matches every name.

    Returns:
        One :class:`Listed` row per matching component, sorted by name.
    """
    if not _loaded and not plugin_entry_points():
        return [row for row in builtin_catalogue()[kind] if fnmatch.fnmatch(row.name, pattern)]
    reg = REGISTRIES[kind]
    return [Listed(name, reg.entry(name).origin, summary(reg.entry(name).obj)) for name in reg.names(pattern)]


def first_paragraph(doc: str | None) -> str:
    """A docstring's first paragraph on one line (``doc`` cleaned as :func:`inspect.cleandoc`).

    Args:
        doc: a docstring, or None.

    Returns:
        The text before the first blank line, whitespace runs joined to single spaces; ``""`` for None.
    """
    doc = inspect.cleandoc(doc) if doc else ""
    return " ".join(doc.split("\n\n")[0].split())


def args_section(doc: str | None) -> dict[str, str]:
    """Argument name -> description, each on one line, from the ``Args:`` (or ``Arguments:``)
    section of a Google-style docstring (``doc`` cleaned as :func:`inspect.cleandoc`); empty when
    there is no such section.

    An entry is a ``name: text`` line (``name (type): text`` and ``a, b: text`` too) indented under
    the section's heading; lines indented deeper than the entries continue the entry above them,
    and the section ends at the first non-blank line indented no deeper than its heading.

    Args:
        doc: a docstring, or None.

    Returns:
        Argument name -> its description joined to one line; ``a, b: text`` gives both names the text,
        and leading ``*``/``**`` are dropped from a name.
    """
    lines = [(len(line) - len(line.lstrip()), line.strip())
             for line in inspect.cleandoc(doc or "").splitlines()]
    heading = next((i for i, (_, text) in enumerate(lines) if text in ("Args:", "Arguments:")), None)
    out: dict[str, str] = {}
    if heading is None:
        return out
    names: list[str] = []
    entry_indent = None
    for indent, text in lines[heading + 1:]:
        if not text:
            continue
        if indent <= lines[heading][0]:
            break
        entry_indent = indent if entry_indent is None else entry_indent
        entry = re.fullmatch(r"(\*{0,2}\w+(?:\s*,\s*\w+)*)\s*(?:\([^)]*\))?\s*:(.*)", text)
        if indent <= entry_indent and entry:
            names = [name.strip().lstrip("*") for name in entry.group(1).split(",")]
            out.update({name: entry.group(2).strip() for name in names})
        else:
            out.update({name: f"{out[name]} {text}".strip() for name in names})
    return out
