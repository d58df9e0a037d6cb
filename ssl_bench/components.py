"""Build registered components from the config, checking their options against their signature.

A component's options are its constructor's keyword arguments. ``params.<name>.<option>`` in the
config sets them; an unknown option is a :class:`ConfigError` that names the valid ones, a value is
converted to the type of the option's default, and a constructor that rejects a value
(``ValueError``/``TypeError``) becomes one :class:`ConfigError` line too.

Components declare what they need instead of core code testing them by name: a transfer's
``needs`` (e.g. ``("pretext_network",)``) names entries of :data:`NEEDS`, each a registry and the
config key that picks the component from it. Core code checks and names runs from those
declarations, so a new transfer needs no edit outside its own file.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable

from .config import Config, coerce
from .errors import ConfigError
from .registry import NETWORKS, REGISTRIES, TRANSFERS, Registry

#: constructor arguments the toolkit passes itself, per kind of component: never user options
TOOLKIT_ARGUMENTS: dict[str, tuple[str, ...]] = {
    "datasets": ("root", "image_size", "cache_dir", "on_bad_image", "workers"),
    "networks": ("in_chans", "out_chans"),
}

#: what a component may declare in ``needs``: the registry it comes from and how the config picks it
NEEDS: dict[str, tuple[Registry, Callable[[Config], str]]] = {
    "pretext_network": (NETWORKS, lambda cfg: cfg.model.pretext_net),
}


def options(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Option name -> default of a component class or factory (its named parameters, not *args or **kwargs).

    Args:
        obj: a component class (its ``__init__`` is read) or a factory function.
        exclude: parameter names to leave out, besides ``self``, ``*args`` and ``**kwargs``.

    Returns:
        Each remaining parameter's name mapped to its default, ``None`` for one without a default.
    """
    target = obj.__init__ if inspect.isclass(obj) else obj
    out = {}
    for p in list(inspect.signature(target).parameters.values()):
        if p.name in ("self",) + exclude or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = p.default if p.default is not inspect.Parameter.empty else None
    return out


def user_options(kind: str, obj: Any) -> dict[str, Any]:
    """The options a user may set for a component of ``kind`` (without the toolkit's arguments).

    Args:
        kind: the registry's kind (``datasets``, ``networks``, ...); picks :data:`TOOLKIT_ARGUMENTS`.
        obj: the component class or factory.

    Returns:
        Option name -> default, as :func:`options` gives them.
    """
    return options(obj, exclude=TOOLKIT_ARGUMENTS.get(kind, ()))


def check_options(name: str, obj: Any, given: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Validate and type-convert ``given`` options of component ``name``.

    Args:
        name: the component's registry name, used in the messages (``params.<name>.<option>``).
        obj: the component class or factory whose signature declares the options.
        given: the options the user set (``params.<name>``).
        fixed: the arguments the toolkit passes itself; only their names are used (they are no options).

    Returns:
        ``given`` with each value converted to the type of the option's default where that default is a
        bool, int, float or str and the value is not None; other values as given.

    Raises:
        ConfigError: an option the component does not have (the message lists the valid ones), or a
            value that cannot be converted.
    """
    valid = options(obj, exclude=tuple(fixed))
    out = {}
    for key, value in given.items():
        if key not in valid:
            listing = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
            raise ConfigError(f"unknown option '{key}' for '{name}' (params.{name}.{key}); valid options: {listing}")
        default = valid[key]
        if isinstance(default, (bool, int, float, str)) and value is not None:
            value = coerce(value, type(default), f"params.{name}.{key}")
        out[key] = value
    return out


def build(registry: Registry, name: str, given: dict[str, Any], **fixed: Any) -> Any:
    """``registry.get(name)(**fixed, **given)`` with ``given`` checked; any rejection is one line.

    Args:
        registry: the registry ``name`` is looked up in.
        name: the component's registry name.
        given: the user's options, checked and converted by :func:`check_options`.
        **fixed: the toolkit's own constructor arguments, passed as they are.

    Returns:
        What the registered class or factory returns.

    Raises:
        UnknownNameError: ``name`` is not registered in ``registry``.
        ConfigError: an unknown or unconvertible option, or a constructor that raised ``TypeError`` or
            ``ValueError``.
    """
    obj = registry.get(name)
    kwargs = check_options(name, obj, given, fixed)
    try:
        return obj(**fixed, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build '{name}' with options {kwargs}: {exc}") from None


def create(registry: Registry, name: str, cfg: Config, **fixed: Any) -> Any:
    """Build component ``name`` with its ``params.<name>`` options from ``cfg``.

    Args:
        registry: the registry ``name`` is looked up in.
        name: the component's registry name.
        cfg: the config whose ``params.<name>`` holds the user's options.
        **fixed: the toolkit's own constructor arguments, passed as they are.

    Returns:
        The built component, as :func:`build` returns it.

    Raises:
        UnknownNameError: ``name`` is not registered in ``registry``.
        ConfigError: as :func:`build`.
    """
    return build(registry, name, cfg.component_params(name), **fixed)


def resolved_options(registry: Registry, name: str, cfg: Config) -> dict[str, Any]:
    """Every option component ``name`` is built with from ``cfg``: its constructor's defaults with
    its ``params.<name>`` over them, checked and converted as :func:`create` does (the toolkit's
    own arguments left out). ``cfg.component_params(name)`` holds only the options a user set.

    Args:
        registry: the registry holding the component; its kind picks the toolkit's arguments to leave out.
        name: the component's registry name.
        cfg: the config whose ``params.<name>`` overrides the defaults.

    Returns:
        Option name -> value; an option without a default and not set holds ``None``.

    Raises:
        UnknownNameError: ``name`` is not registered in ``registry``.
        ConfigError: an unknown option in ``params.<name>``, or a value that cannot be converted.
    """
    obj = registry.get(name)
    kind = next((k for k, reg in REGISTRIES.items() if reg is registry), "")
    fixed = TOOLKIT_ARGUMENTS.get(kind, ())
    return {**options(obj, exclude=fixed), **check_options(name, obj, cfg.component_params(name), dict.fromkeys(fixed))}


def check_params_section(cfg: Config) -> None:
    """Every ``params.<name>`` must name a registered component and only its options.

    A name registered in several registries is checked against each of its components.

    Args:
        cfg: the config whose ``params`` section is checked.

    Raises:
        ConfigError: a ``params.<name>`` naming no registered component (the message lists the known
            names), an option the component does not have, or a value that cannot be converted.
    """
    for name, given in cfg.params.items():
        owners = [(kind, reg) for kind, reg in REGISTRIES.items() if name in reg]
        if not owners:
            known = sorted(n for reg in REGISTRIES.values() for n in reg.names())
            raise ConfigError(f"params.{name}: no component named '{name}'. Known: {', '.join(known)}")
        for kind, reg in owners:
            check_options(name, reg.get(name), given, dict.fromkeys(TOOLKIT_ARGUMENTS.get(kind, ())))


def needed_components(cfg: Config) -> list[tuple[Registry, str]]:
    """``(registry, name)`` of every component the configured transfer declares it needs.

    Args:
        cfg: the config; ``cfg.transfer`` names the transfer, and each need's :data:`NEEDS` entry reads
            the component's name from it.

    Returns:
        One pair per entry of the transfer's ``needs``, in order; empty for a transfer without ``needs``.

    Raises:
        UnknownNameError: ``cfg.transfer`` is not a registered transfer.
    """
    needs = getattr(TRANSFERS.get(cfg.transfer), "needs", ())
    return [(NEEDS[need][0], NEEDS[need][1](cfg)) for need in needs]


def check_needed_components(cfg: Config) -> None:
    """Fail on an unknown name among the components the transfer needs (e.g. ``--pretext-net``).

    Args:
        cfg: the config naming the transfer and the components it needs.

    Raises:
        UnknownNameError: the transfer, or a component it needs, is not registered.
    """
    for registry, name in needed_components(cfg):
        registry.get(name)


def run_name(cfg: Config) -> str:
    """The run directory's name: ``cfg.name``, else ``<pretext>-<transfer>`` followed by the
    components the transfer needs (``gsim-collab-unet``) and :func:`data_suffix`; then ``-f<fraction>`` when
    ``data.label_fraction`` is below 1 (``simclr-linear-f0.25``), so the runs of one method at
    several label fractions are several run directories.

    Args:
        cfg: the run's config.

    Returns:
        The folder name (checked as a folder name where the run directory is created, not here).

    Raises:
        UnknownNameError: without ``cfg.name``, a transfer that is not registered.
    """
    base = cfg.name or "-".join([cfg.pretext, cfg.transfer, *(name for _, name in needed_components(cfg))]) \
        + data_suffix(cfg)
    return base + fraction_suffix(cfg)


def data_suffix(cfg: Config) -> str:
    """What the default run name adds for data other than k folds of one dataset:
    ``-pool-<dataset>`` (``--pretext-data``), ``-official`` (``--split official``),
    ``-test-<dataset>`` (``--test-dataset``).

    Args:
        cfg: the run's config.

    Returns:
        The parts that apply, in that order, each with its leading ``-``; ``""`` when none applies.
    """
    parts = []
    if cfg.pretext_data.dataset:
        parts.append(f"pool-{cfg.pretext_data.dataset}")
    if cfg.data.split == "official":
        parts.append("official")
    if cfg.data.test_dataset:
        parts.append(f"test-{cfg.data.test_dataset}")
    return "".join(f"-{p}" for p in parts)


def fraction_suffix(cfg: Config) -> str:
    """``-f0.25`` for a run on a fraction of the training labels, ``""`` for all of them.

    Args:
        cfg: the config; its ``data.label_fraction`` is read (formatted with ``:g``).

    Returns:
        ``-f<fraction>`` below 1, else ``""``.
    """
    f = float(cfg.data.label_fraction)
    return "" if f >= 1.0 else f"-f{f:g}"


def size_suffix(image_size: tuple[int, int] | list[int]) -> str:
    """``-768x384``: what a bench with ``image_sizes`` appends to the names of a method's runs at
    that size (:mod:`ssl_bench.bench.plan`), before any :func:`fraction_suffix`
    (``ResNet-768x384-f0.25``), so that the runs of one method at several sizes are several run
    directories and several leaderboard rows.

    Args:
        image_size: ``(height, width)`` in pixels.

    Returns:
        ``-<height>x<width>``.
    """
    height, width = image_size
    return f"-{int(height)}x{int(width)}"


def display_name(cfg: Config) -> str:
    """The method's name in tables: its bench row (``cfg.method``), else the run name.

    Args:
        cfg: the run's config.

    Returns:
        ``cfg.method`` followed by :func:`fraction_suffix`, or :func:`run_name` without a method.
    """
    if cfg.method:
        return cfg.method + fraction_suffix(cfg)
    return run_name(cfg)
