"""Named registries of pluggable components (pretext tasks, transfers, networks, datasets, executors).

Modelled on timm's registry (``timm/models/_registry.py``): a decorator registers a plain class or
factory under a name, and names can be listed with shell-style wildcards. Two differences: a name
registered twice raises, and an unknown name raises with the closest matches and the command
that lists all of them.

Built-in components live in ``ssl_bench``'s own modules and are imported the first time any
registry is used; third-party components come from the entry-point group ``ssl_bench.plugins``
(each entry point names a module whose decorators register). Plugins are loaded once, lazily; a
plugin that fails to import or clashes with an existing name produces one warning naming it.
"""
from __future__ import annotations

import difflib
import fnmatch
import importlib
import inspect
import warnings
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Callable, Iterator

from .errors import UserError

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
    """A name -> component table for one kind of component (e.g. ``pretexts``)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, obj: Any = None) -> Callable[[Any], Any] | Any:
        """Register ``obj`` under ``name``; used bare as a decorator ``@REG.register("name")``."""
        if obj is None:
            return lambda target: self.register(name, target)
        if name in self._entries:
            raise DuplicateNameError(
                f"{self.kind[:-1]} '{name}' is already registered "
                f"(by {self._entries[name].origin}); choose another name"
            )
        self._entries[name] = Entry(name, obj, _current_origin())
        return obj

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> Any:
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
        return self.get(name)(**kwargs)

    def entry(self, name: str) -> Entry:
        self.get(name)
        return self._entries[name]

    def names(self, pattern: str = "*") -> list[str]:
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

_origin_stack: list[str] = []
_loaded = False


def _current_origin() -> str:
    return _origin_stack[-1] if _origin_stack else "built-in"


def plugin_entry_points() -> list[metadata.EntryPoint]:
    return sorted(metadata.entry_points(group=PLUGIN_GROUP), key=lambda ep: ep.name)


def _distribution_label(ep: metadata.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return f"plugin {ep.name}"
    return f"{dist.metadata['Name']} {dist.version}"


def load_plugin(ep: metadata.EntryPoint) -> bool:
    """Import one plugin module; on failure warn once, naming the plugin, and roll back its names."""
    label = _distribution_label(ep)
    before = {kind: set(reg._entries) for kind, reg in REGISTRIES.items()}
    _origin_stack.append(label)
    try:
        importlib.import_module(ep.value.split(":")[0])
        return True
    except Exception as exc:  # a broken plugin must never break the toolkit
        for kind, reg in REGISTRIES.items():
            for name in set(reg._entries) - before[kind]:
                reg.unregister(name)
        warnings.warn(
            f"ssl-bench plugin '{ep.name}' ({label}) was not loaded: {type(exc).__name__}: {exc}",
            PluginWarning,
            stacklevel=2,
        )
        return False
    finally:
        _origin_stack.pop()


class PluginWarning(UserWarning):
    """A plugin could not be loaded; the rest of the toolkit keeps working."""


def ensure_loaded() -> None:
    """Import the built-in components, then every plugin, once per process."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in BUILTIN_MODULES:
        importlib.import_module(module)
    for ep in plugin_entry_points():
        load_plugin(ep)


def summary(obj: Any) -> str:
    """First line of a component's docstring."""
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
