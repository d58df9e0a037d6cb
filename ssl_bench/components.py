"""Build registered components from the config, checking their options against their signature.

A component's options are its constructor's keyword arguments. ``params.<name>.<option>`` in the
config sets them; an unknown option is a :class:`ConfigError` that names the valid ones, and a value
is converted to the type of the option's default.
"""
from __future__ import annotations

import inspect
from typing import Any

from .config import Config, _coerce
from .errors import ConfigError
from .registry import Registry


def options(obj: Any, exclude: tuple[str, ...] = ()) -> dict[str, Any]:
    """Option name -> default of a component class or factory (keyword arguments only)."""
    target = obj.__init__ if inspect.isclass(obj) else obj
    out = {}
    for p in list(inspect.signature(target).parameters.values()):
        if p.name in ("self",) + exclude or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = p.default if p.default is not inspect.Parameter.empty else None
    return out


def check_options(name: str, obj: Any, given: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Validate and type-convert ``given`` options of component ``name``."""
    valid = options(obj, exclude=tuple(fixed))
    out = {}
    for key, value in given.items():
        if key not in valid:
            listing = ", ".join(f"{k}={v!r}" for k, v in valid.items()) or "none"
            raise ConfigError(f"unknown option '{key}' for '{name}' (params.{name}.{key}); valid options: {listing}")
        default = valid[key]
        if isinstance(default, (bool, int, float, str)) and value is not None:
            value = _coerce(value, type(default), f"params.{name}.{key}")
        out[key] = value
    return out


def create(registry: Registry, name: str, cfg: Config, **fixed: Any) -> Any:
    """``registry.create(name, **fixed, **params.<name>)`` with the options checked."""
    obj = registry.get(name)
    kwargs = check_options(name, obj, cfg.component_params(name), fixed)
    try:
        return obj(**fixed, **kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"cannot build '{name}' with options {kwargs}: {exc}") from None


def check_params_section(cfg: Config) -> None:
    """Every ``params.<name>`` must name a registered component and only its options."""
    from .registry import REGISTRIES

    fixed_by_kind = {
        "datasets": ("root", "image_size", "cache_dir", "on_bad_image", "workers"),
        "networks": ("in_chans", "out_chans"),
    }
    for name, given in cfg.params.items():
        owners = [(kind, reg) for kind, reg in REGISTRIES.items() if name in reg]
        if not owners:
            known = sorted(n for reg in REGISTRIES.values() for n in reg.names())
            raise ConfigError(f"params.{name}: no component named '{name}'. Known: {', '.join(known)}")
        for kind, reg in owners:
            fixed = dict.fromkeys(fixed_by_kind.get(kind, ()))
            check_options(name, reg.get(name), given, fixed)
